"""Tracking, alignment and the preprocess pipeline on generated clips of a real face photo."""

import json
import shutil

import numpy as np
import pytest

from mediagen import astronaut_frames, make_face_video
from realtalk_cli import cli_args
from realtalk_cli.data.dataset import Dataset
from realtalk_cli.errors import UsageError
from realtalk_cli.media import VideoReader
from realtalk_cli.face import align
from realtalk_cli.face import mediapipe_mesh as mesh
from realtalk_cli.face.tracker import FaceTracker, OneEuroFilter, TrackerConfig, smooth_landmarks, track_frames
from realtalk_cli.pipelines import preprocess as pp


def test_landmarks_on_astronaut_photo():
    from skimage.data import astronaut

    img = astronaut()
    with FaceTracker() as tracker:
        faces = tracker.detect(img)
    assert len(faces) == 1 and faces[0].shape == (478, 3)
    # her face is around x 180-270, y 70-180 in the 512x512 photo; landmarks stay on it
    lo, hi = faces[0][:, :2].min(0), faces[0][:, :2].max(0)
    assert 160 < lo[0] < 200 and 250 < hi[0] < 290 and 50 < lo[1] < 100 and 160 < hi[1] < 200
    eye_r, eye_l = faces[0][33, :2], faces[0][263, :2]
    assert eye_r[0] < eye_l[0]  # subject's right eye is on the image left


def test_tracking_follows_synthetic_head_motion():
    frames = list(astronaut_frames(30, (192, 160), motion=1.5))
    track = track_frames(frames)
    assert track.found.all() and track.landmarks.shape == (30, 478, 3)
    # the nose tip moves with the synthetic motion; crops remove it
    nose = track.landmarks[:, 1, :2]
    assert np.ptp(nose, 0).max() > 4
    a = align.crop_transforms(track.landmarks, track.found, align.AlignConfig(crop_size=64))
    nose_crop = align.transform_points(track.landmarks, a)[:, 1, :2]
    assert np.ptp(nose_crop, 0).max() < 0.5 * np.ptp(nose, 0).max() * 64 / 100


def test_one_euro_smooths_noise_but_follows_motion():
    rng = np.random.default_rng(0)
    f = OneEuroFilter(25.0, min_cutoff=2.0, beta=5.0, d_cutoff=1.0)
    still = np.array([f(np.array([100.0]) + rng.normal(0, 1, 1), scale=100.0)[0] for _ in range(100)])
    assert still[50:].std() < 0.6  # jitter reduced (input std 1)
    f.reset()
    ramp = np.array([f(np.array([t * 4.0]), scale=100.0)[0] for t in range(50)])
    assert abs(ramp[-1] - 49 * 4.0) < 8  # lag under 2 frames on fast motion


def test_crop_angle_follows_in_plane_rotation_of_a_real_face():
    """Rotate the astronaut photo by known angles: the crop transform turns by the same angle."""
    import cv2
    from skimage.data import astronaut

    img = astronaut()
    angles = [-15.0, -5.0, 0.0, 10.0, 20.0]
    measured = []
    for deg in angles:
        m = cv2.getRotationMatrix2D((220.0, 130.0), deg, 1.0)  # counter-clockwise on screen
        frame = cv2.warpAffine(img, m, (512, 512), borderMode=cv2.BORDER_REFLECT)
        lm = track_frames([frame]).landmarks
        measured.append(np.degrees(align.frame_params(lm, align.AlignConfig())[0, 2]))
    measured = np.array(measured) - measured[2]
    assert np.abs(measured + np.array(angles)).max() < 1.0, measured  # image y points down: sign flips


def test_offline_smoothing_has_no_lag():
    rng = np.random.default_rng(0)
    t = np.arange(200)
    mouth = 10 * np.sin(2 * np.pi * 4 * t / 25)  # 4 Hz: syllable rate
    lm = np.zeros((200, 478, 3), np.float32)
    lm[:, :, 0] = np.linspace(0, 100, 478)  # face 100 px wide
    lm[:, 14, 1] = mouth
    noisy = lm + rng.normal(0, 0.5, lm.shape).astype(np.float32)
    found = np.ones(200, bool)
    found[100:103] = False
    smooth = smooth_landmarks(noisy, found, 25.0)
    y = smooth[:, 14, 1]
    lags = [np.corrcoef(y[10 + k:180 + k], mouth[10:180])[0, 1] for k in (-1, 0, 1)]
    assert np.argmax(lags) == 1  # best aligned without a shift
    assert np.abs(smooth - lm)[found].std() < np.abs(noisy - lm)[found].std()  # less noise
    assert y[found].std() / mouth[found].std() > 0.85  # the 4 Hz (syllable rate) motion passes


def test_paste_back_restores_the_frame():
    frame = next(astronaut_frames(1, (192, 160)))
    track = track_frames([frame])
    a = align.crop_transforms(track.landmarks, track.found, align.AlignConfig(crop_size=128))[0]
    crop = align.warp_to_crop(frame, a, 128)
    back = align.paste_back(frame, crop, a)
    yx = np.indices((160, 192)).reshape(2, -1).T.astype(np.float32)
    in_crop = align.transform_points(yx[None, :, ::-1], a)[0]
    inside = ((in_crop > 2) & (in_crop < 126)).all(1).reshape(160, 192)
    outside = ((in_crop < -2) | (in_crop > 130)).any(1).reshape(160, 192)
    assert np.abs(back.astype(int) - frame)[inside].mean() < 4  # resampled twice, same picture
    assert np.array_equal(back[outside], frame[outside])  # untouched outside the crop
    assert np.array_equal(align.paste_back(frame, crop, a, np.zeros((128, 128))), frame)


def test_speaker_choice_two_faces():
    """The largest face by default; --face-index counts from the left; --bbox picks by overlap."""
    import cv2
    from skimage.data import astronaut

    face = astronaut()[40:230, 140:330]
    frame = np.full((220, 400, 3), 120, np.uint8)
    frame[10:140, 20:150] = cv2.resize(face, (130, 130))  # small face, left
    frame[10:210, 190:390] = cv2.resize(face, (200, 200))  # large face, right
    centre_x = lambda cfg: track_frames([frame] * 3, config=cfg).landmarks[-1, :, 0].mean()  # noqa: E731
    assert centre_x(TrackerConfig()) > 200
    assert centre_x(TrackerConfig(face_index=0)) < 150
    assert centre_x(TrackerConfig(face_index=1)) > 200
    assert centre_x(TrackerConfig(bbox=(0, 0, 170, 150))) < 150


def test_small_face_in_a_large_frame(tmp_path):
    """A face about 60 px high in a 720x1280 frame (FaceMesh's own detector misses it) is tracked in
    every frame, with landmarks where the photo's landmarks land after the same scaling."""
    import cv2
    from skimage.data import astronaut

    from realtalk_cli.media import VideoWriter

    img = astronaut()
    with FaceTracker() as tracker:
        (truth,) = tracker.detect(img)  # her face is ~110 px high in the photo
    path, moves, scale = tmp_path / "small.mp4", [], 0.55
    with VideoWriter(path, 720, 1280, 25) as w:
        for t in range(8):
            m = np.float32([[scale, 0, 240 + 3 * t], [0, scale, 300 + 2 * t]])
            w.write(cv2.warpAffine(img, m, (720, 1280), borderMode=cv2.BORDER_CONSTANT, borderValue=(200, 200, 200)))
            moves.append(m)
    with FaceTracker() as tracker:  # the precondition: FaceMesh on the whole frame finds nothing
        assert tracker._landmarks(tracker._mesh, next(iter(VideoReader(path)))) == []
    track = pp.track_video(path, TrackerConfig(smooth=False))
    assert track.found.all() and track.width == 720 and track.height == 1280
    expected = np.stack([truth[:, :2] @ m[:, :2].T + m[:, 2] for m in moves])
    error = np.linalg.norm(track.landmarks[:, :, :2] - expected, axis=-1)
    assert error.mean() < 2.0  # pixels, on a ~60 px face
    assert np.linalg.norm(track.landmarks[:, mesh.LIPS_OUTER, :2] - expected[:, mesh.LIPS_OUTER], axis=-1).mean() < 2.0


def test_shot_change_starts_a_new_clip():
    """The same face jumping across the frame (a cut) is followed at once and splits the clip there."""
    left = [np.pad(f, ((0, 0), (0, 160), (0, 0)), mode="edge") for f in astronaut_frames(20, (192, 160))]
    right = [np.pad(f, ((0, 0), (160, 0), (0, 0)), mode="edge") for f in astronaut_frames(20, (192, 160), seed=1)]
    track = track_frames(left + right)
    assert track.found.all() and np.flatnonzero(track.cuts).tolist() == [20]
    assert pp.segments(track.found, 12, 10, track.cuts) == [(0, 20), (20, 40)]
    # smoothing stays on each side of the cut: no frame is dragged towards the other shot
    x = track.landmarks[:, 1, 0]
    assert x[19] < 150 and x[20] > 250


def test_speaker_choice_options():
    assert TrackerConfig(face_index=2).max_faces == 3
    with pytest.raises(UsageError):
        TrackerConfig(bbox=(10, 10, 5, 20))
    assert cli_args.parse_bbox("1,2,30,40") == (1.0, 2.0, 30.0, 40.0)
    assert cli_args.parse_shard("1/4") == (1, 4) and cli_args.parse_shard(None) == (0, 1)
    for bad in ("4/4", "x", "1/"):
        with pytest.raises(UsageError):
            cli_args.parse_shard(bad)


def test_face_selection_messages(videos, tmp_path):
    """A --face-index beyond the faces seen, a --bbox away from the face or outside the frame: each
    says so (naming the video), not just "no face found"."""
    talk = videos / "talk.mp4"  # one face, 192x160

    def reason(**tracker):
        result = pp.preprocess_dataset([talk], tmp_path / str(len(list(tmp_path.iterdir()))),
                                       _config(tracker=TrackerConfig(**tracker)))
        return result.sources[0]["reason"]

    assert reason(face_index=5).startswith("--face-index 5 requested but at most 1 face was found")
    assert reason(bbox=(0, 0, 12, 12)).startswith("no face overlaps --bbox 0,0,12,12")
    with pytest.raises(UsageError, match=r"talk.mp4: --bbox 500,10,600,90.5 lies outside the 192x160 video frame"):
        pp.track_video(talk, TrackerConfig(bbox=(500, 10, 600, 90.5)))


def test_segments_split_at_long_gaps():
    found = np.ones(100, bool)
    found[[10, 11]] = False  # short gap: bridged
    found[40:60] = False  # long gap: split
    found[95:] = False  # trailing: dropped
    assert pp.segments(found, max_gap=5, min_frames=10) == [(0, 40), (60, 95)]
    assert pp.segments(found, max_gap=5, min_frames=36) == [(0, 40)]
    assert pp.segments(np.zeros(10, bool), 5, 1) == []


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    d = tmp_path_factory.mktemp("videos")
    make_face_video(d / "talk.mp4", seconds=2.0, blank=(20, 26))
    make_face_video(d / "other.mp4", seconds=1.2, motion=2.0)
    make_face_video(d / "mute.mp4", seconds=1.0, audio=False)
    make_face_video(d / "noface.mp4", seconds=0.6, blank=(0, 15))
    make_face_video(d / "split.mp4", seconds=1.6, blank=(12, 24))  # a 12-frame gap: longer than max_gap
    (d / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 200)
    return d


def _config(**kw):
    return pp.PreprocessConfig(align=align.AlignConfig(crop_size=64), n_exp=8, min_frames=10, max_gap=8, **kw)


def test_preprocess_dataset_end_to_end(videos, tmp_path):
    out = tmp_path / "data"
    result = pp.preprocess_dataset([videos], out, _config(val_list=["other"]))
    status = {r["name"]: r for r in result.sources}
    assert status["talk"]["status"] == "ok" and status["other"]["status"] == "ok"
    assert status["corrupt"]["status"] == "failed" and "not a readable media file" in status["corrupt"]["reason"]
    assert status["mute"]["status"] == "failed" and "no audio" in status["mute"]["reason"]
    assert status["noface"]["status"] == "failed" and "no face" in status["noface"]["reason"]
    # the long gap splits the video in two clips; the gap frames are dropped, not faked
    assert [c["n_frames"] for c in status["split"]["clips"]] == [12, 16] and status["split"]["dropped"] == 12

    ds = Dataset.open(out)
    assert {f["name"] for f in ds.manifest["failed"]} == {"corrupt", "mute", "noface"}
    assert [c.name for c in ds.clips("val")] == ["other"]
    assert [c.name for c in ds.clips("train")] == ["split-s00", "split-s01", "talk"]
    clip = ds.clips("train")[2]
    assert clip.n_frames == 50 and clip.fps == 25.0 and clip.crop_size == 64
    valid = clip.valid()
    assert not valid[20:26].any() and valid[:20].all() and valid[26:].all()  # the blank frames, interpolated
    fm = ds.face_model
    co = clip.coeffs()
    assert co["beta"].shape == (50, fm.n_exp) and co["rho"].shape == (50, 6) and co["alpha"].shape == (fm.n_id,)
    assert clip.audio_features().shape == (100, 80) and len(clip.audio()) == 50 * 640
    assert clip.crops([0, 49]).shape == (2, 64, 64, 3)
    assert result.fit_error is not None and result.fit_error < 1.0  # crop pixels
    assert ds.config["features"]["kind"] == "mel" and ds.config["align"]["crop_size"] == 64
    # the face is where the landmarks say: the crop centre region is the face, brighter than the border
    lm = clip.landmarks()[0]
    assert ((lm > 0) & (lm < 64)).all()

    # resume: nothing is redone; the finished source records stay untouched
    stamp = (out / "sources" / "talk.json").stat().st_mtime_ns
    again = pp.preprocess_dataset([videos], out, _config(val_list=["other"]))
    assert (out / "sources" / "talk.json").stat().st_mtime_ns == stamp
    assert again.fit_error == pytest.approx(result.fit_error)
    # a removed clip's source is redone; the face model and other coefficients are reused
    fingerprint = ds.face_model.fingerprint()
    shutil.rmtree(out / "clips" / "other")
    (out / "sources" / "other.json").unlink()
    pp.preprocess_dataset([videos], out, _config(val_list=["other"]))
    ds2 = Dataset.open(out)
    assert ds2.face_model.fingerprint() == fingerprint and ds2.clips("val")[0].has_coeffs


def test_face_model_reused_by_path(videos, tmp_path):
    """--face-model PATH: a second dataset (e.g. fine-tuning data) gets exactly the first one's basis."""
    first = tmp_path / "first"
    pp.preprocess_dataset([videos / "talk.mp4", videos / "other.mp4"], first, _config())
    fm = Dataset.open(first).face_model
    fm.save(tmp_path / "fm")  # a bare face model directory works as well as a dataset
    for source in (first, tmp_path / "fm"):
        out = tmp_path / f"second_{source.name}"
        pp.preprocess_dataset([videos / "other.mp4"], out, _config(face_model=str(source)))
        ds = Dataset.open(out)
        assert ds.face_model.fingerprint() == fm.fingerprint()
        before = {c.name: c for c in Dataset.open(first).clips()}["other"]
        assert np.allclose(ds.clips()[0].coeffs()["beta"], before.coeffs()["beta"], atol=1e-4)


def test_shards_then_merge(videos, tmp_path):
    out = tmp_path / "data"
    inputs = [videos / "talk.mp4", videos / "other.mp4"]
    first = pp.preprocess_dataset(inputs, out, _config(), shard=(0, 2))
    assert not first.complete and not (out / "manifest.json").exists()
    second = pp.preprocess_dataset(inputs, out, _config(), shard=(1, 2))
    assert second.complete  # the last shard sees every source done and finishes the dataset
    assert {c.name for c in Dataset.open(out).clips()} == {"talk", "other"}
    records = json.loads((out / "sources" / "talk.json").read_text())
    assert records["kept"] == 50


def test_cli_preprocess_with_hubert_features(videos, tiny_hubert, tmp_path):
    from typer.testing import CliRunner

    from realtalk_cli.cli import app

    out = tmp_path / "cli_data"
    res = CliRunner().invoke(app, ["preprocess", str(videos / "other.mp4"), "-o", str(out), "--crop-size", "64",
                                   "--n-exp", "4", "--features", "hubert", "--hubert", str(tiny_hubert),
                                   "--hubert-layer", "1"])
    assert res.exit_code == 0, res.output
    ds = Dataset.open(out)
    clip = ds.clips()[0]
    assert clip.name == "other" and clip.audio_features().shape == (2 * clip.n_frames, 32)
    assert ds.config["features"]["kind"] == "hubert" and ds.config["features"]["layer"] == 1
    bad = CliRunner().invoke(app, ["preprocess", str(videos / "nope.mp4"), "-o", str(out)])
    assert isinstance(bad.exception, UsageError) and "input not found" in str(bad.exception)


@pytest.mark.shared
def test_real_clip_preprocess(tmp_path):
    from conftest import SHARED_DATA

    video = SHARED_DATA / "video" / "mimictalk_May_5s.mp4"
    if not video.is_file():
        pytest.skip("shared data not available")
    result = pp.preprocess_dataset([video], tmp_path / "data", pp.PreprocessConfig(n_exp=32))
    (record,) = result.sources
    assert record["status"] == "ok" and record["kept"] == record["frames"] == 125
    assert result.fit_error < 0.5  # crop pixels at 256 (in-sample; see docs/dataset.md)


@pytest.mark.slow
def test_two_worker_processes(videos, tmp_path):
    result = pp.preprocess_dataset([videos / "talk.mp4", videos / "other.mp4", videos / "corrupt.mp4"],
                                   tmp_path / "data", _config(), workers=2)
    assert sorted(r["status"] for r in result.sources) == ["failed", "ok", "ok"]
    assert {c.name for c in Dataset.open(tmp_path / "data").clips()} == {"talk", "other"}


def test_bad_face_model_options_fail_before_any_work(videos, tmp_path):
    with pytest.raises(UsageError, match="--bfm"):
        pp.preprocess_dataset([videos / "talk.mp4"], tmp_path / "d", _config(face_model="bfm"))
    assert not (tmp_path / "d" / "sources").exists() or not any((tmp_path / "d" / "sources").iterdir())
