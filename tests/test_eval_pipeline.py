"""`realtalk eval` end to end on generated clips of a real face (scikit-image's astronaut)."""

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from mediagen import make_face_video
from realtalk_cli.cli_args import parse_frames
from realtalk_cli.errors import RealtalkError, UsageError
from realtalk_cli.eval.metrics import polygon_mask
from realtalk_cli.face import mediapipe_mesh as mesh
from realtalk_cli.face.tracker import TrackerConfig, track_frames
from realtalk_cli.media import VideoReader, VideoWriter, mux

from realtalk_cli.eval.mouth_curve import write_mouth_curve
from realtalk_cli.pipelines.evaluate import EvalOptions, evaluate

N_FRAMES = 30


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """A source clip and 'dubbed' versions of it: lower half noisier or blurrier, step by step."""
    root = tmp_path_factory.mktemp("eval")
    src = make_face_video(root / "src.mp4", seconds=N_FRAMES / 25)
    frames = list(VideoReader(src))
    out = {"src": src}
    rng = np.random.default_rng(0)

    def write(name, fn):
        with VideoWriter(root / f"{name}.silent.mp4", frames[0].shape[1], frames[0].shape[0], crf=12) as w:
            for t, f in enumerate(frames):
                w.write(fn(f, t))
        mux(root / f"{name}.silent.mp4", src, root / f"{name}.mp4")
        out[name] = root / f"{name}.mp4"

    def lower(f, g):
        h = f.shape[0] // 2  # the lower half of the frame holds the mouth and chin
        o = f.copy()
        o[h:] = g(f[h:])
        return o

    for s in (6, 20):
        write(f"noise{s}", lambda f, t, s=s: lower(f, lambda x: np.clip(x + rng.normal(0, s, x.shape), 0, 255).astype(np.uint8)))
    for s in (1.5, 4):
        write(f"blur{s}", lambda f, t, s=s: lower(f, lambda x: cv2.GaussianBlur(x, (0, 0), s)))
    # the lower half brightens frame by frame: a mouth frozen at frame 0 shows up plainly
    with VideoWriter(root / "half.mp4", frames[0].shape[1] // 2, frames[0].shape[0] // 2) as w:  # a dub at another size
        for f in frames[:-3]:
            w.write(cv2.resize(f, (f.shape[1] // 2, f.shape[0] // 2), interpolation=cv2.INTER_AREA))
    out["half"] = root / "half.mp4"
    write("brighten", lambda f, t: lower(f, lambda x: np.clip(x.astype(int) + 4 * t, 0, 255).astype(np.uint8)))
    order = np.random.default_rng(1).permutation(len(frames))
    write("shuffled", lambda f, t: frames[order[t]])
    # the mouth's inside (the tracked inner-lip polygon, where the astronaut's teeth show) darkened
    track = track_frames(iter(frames), 25, TrackerConfig(smooth=False))
    assert track.found.all()

    def dark_mouth(f, t):
        inside = cv2.dilate(polygon_mask(track.landmarks[t, mesh.LIPS_INNER, :2], f.shape[:2]).astype(np.uint8), np.ones((3, 3)))
        return np.where(inside[..., None] > 0, f // 3, f).astype(np.uint8)

    write("dark_mouth", dark_mouth)
    return out


@pytest.fixture(scope="module")
def scored(clips):
    """evaluate(clip, source) for a clip name, computed once per module."""
    cache = {}

    def score(name):
        if name not in cache:
            cache[name] = evaluate(clips[name], clips["src"])
        return cache[name]

    return score


def test_identical_videos_give_ideal_values(clips, scored):
    r = scored("src")
    assert r.inputs["faces_found"] == {"dubbed": N_FRAMES, "source": N_FRAMES}
    assert r.value("psnr") == 100.0 and r.value("psnr_mask") == 100.0
    assert r.value("ssim") == pytest.approx(1.0) and r.value("ssim_mask") == pytest.approx(1.0)
    assert r.value("m_lmd") == 0 and r.value("f_lmd") == 0
    assert r.value("jitter") == r.value("jitter_source")
    assert r.value("mouth_r_source") == pytest.approx(1.0)
    for key in ("sharpness_ratio", "teeth_ratio", "flicker_ratio"):
        assert r.value(key) == pytest.approx(1.0), key
    assert (r.per_frame["teeth_source"] > 0.1).mean() > 0.8  # the astronaut smiles: teeth in most frames
    assert (r.per_frame["flicker_source"][1:] > 0).all() and np.isnan(r.per_frame["flicker_source"][0])
    for key in ("fid", "lpips", "csim", "lse_d", "lse_c"):  # no weights given: reported, never invented
        m = next(m for m in r.metrics if m.key == key)
        assert m.value is None and m.note.startswith("unavailable (no weights: pass --")


@pytest.mark.parametrize("kind", ["noise", "blur"])
def test_metrics_degrade_monotonically(scored, kind):
    names = ["noise6", "noise20"] if kind == "noise" else ["blur1.5", "blur4"]
    results = [scored(n) for n in names]
    for key in ("psnr", "ssim", "psnr_mask", "ssim_mask"):
        values = [100.0 if key.startswith("psnr") else 1.0] + [r.value(key) for r in results]
        assert values[0] > values[1] > values[2], (key, values)
    # the damage is in the lower face: the mask region suffers more than the crop as a whole
    assert results[1].value("psnr_mask") < results[1].value("psnr")
    # the tracker's landmarks drift further from the source's the more the face is damaged, most on the lips
    for key in ("m_lmd", "f_lmd"):
        assert 0 < results[0].value(key) < results[1].value(key), key
    assert results[1].value("m_lmd") > results[1].value("f_lmd")
    assert results[1].value("jitter") > results[1].value("jitter_source")


def test_blur_flicker_and_teeth_measures(scored):
    """Each ratio to the source moves away from 1 on the damage it is meant to expose."""
    sharp = [scored(n).value("sharpness_ratio") for n in ("blur1.5", "blur4")]
    assert 1 > 0.6 > sharp[0] > sharp[1], sharp  # blur removes the lips' fine detail
    assert scored("noise20").value("sharpness_ratio") > 1.5  # noise adds "detail": read sharpness with PSNR
    assert scored("shuffled").value("flicker_ratio") > 3  # frames in random order jump
    assert scored("noise20").value("flicker_ratio") > 2  # so does fresh noise in every frame
    assert scored("blur4").value("flicker_ratio") < 1  # a smoother mouth changes less
    dark = scored("dark_mouth")
    assert dark.value("teeth_ratio") < 0.3, dark.value("teeth_ratio")
    assert scored("noise6").value("teeth_ratio") > 0.7  # mild noise keeps the teeth


def test_dub_at_another_size_and_length(clips):
    r = evaluate(clips["half"], clips["src"])
    assert r.inputs["frames_read"] == {"dubbed": N_FRAMES - 3, "source": N_FRAMES} and r.inputs["frames"] == [0, N_FRAMES - 3]
    assert 25 < r.value("psnr") < 100 and r.value("ssim") > 0.8  # compared at the source's size: only the blur of 2x
    assert r.value("f_lmd") < 4.0  # scaled back to source pixels (unscaled they would be ~100 px off); a 2x smaller face tracks less precisely


def test_frame_range_and_mouth_curve(clips, tmp_path):
    curve_path = tmp_path / "curve.json"
    ref = evaluate(clips["src"], None)
    opening = ref.per_frame["mouth_ours"]
    write_mouth_curve(curve_path, np.r_[np.zeros(5), 2 * opening[5:] + 1], fps=25)
    r = evaluate(clips["src"], None, mouth_curve=curve_path, options=EvalOptions(frames=(5, 25)))
    assert r.inputs["frames"] == [5, 25] and len(r.per_frame["mouth_ours"]) == 20
    # the curve is sliced to the range: it matches frames 5..24 of the full read (tracking a range is
    # not bit-identical, MediaPipe's tracking mode depends on the frames before), not frames 0..19
    assert r.value("mouth_r_curve") > 0.8
    assert np.corrcoef(r.per_frame["mouth_ours"], opening[:20])[0, 1] < 0.5
    assert "psnr" not in {m.key for m in r.metrics}  # no source: no reconstruction protocol
    write_mouth_curve(curve_path, opening, fps=30)
    with pytest.raises(RealtalkError, match="30 fps"):
        evaluate(clips["src"], None, mouth_curve=curve_path)
    curve_path.write_text('{"opening": [1, 2]}')
    with pytest.raises(RealtalkError, match="not a mouth-curve JSON"):
        evaluate(clips["src"], None, mouth_curve=curve_path)


def test_parse_frames():
    assert parse_frames("400:") == (400, None) and parse_frames(":50") == (0, 50) and parse_frames(None) is None
    for bad in ("5", "9:3", "a:b", "-1:4"):
        with pytest.raises(UsageError):
            parse_frames(bad)


def test_cli_prints_table_and_writes_json_and_report(clips, tmp_path):
    out_json, out_html, out_png = tmp_path / "m.json", tmp_path / "m.html", tmp_path / "m.png"
    r = subprocess.run([sys.executable, "-m", "realtalk_cli", "eval", str(clips["noise20"]), "--source", str(clips["src"]),
                        "--frames", "10:", "--json", str(out_json), "--report", str(out_html)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "PSNR, mask region" in r.stdout and "unavailable (no weights: pass --fid-weights PATH)" in r.stdout
    data = json.loads(out_json.read_text())
    assert data["inputs"]["frames"] == [10, N_FRAMES]
    assert 10 < data["metrics"]["psnr_mask"]["value"] < data["metrics"]["psnr"]["value"] < 100
    assert data["metrics"]["fid"]["value"] is None and len(data["per_frame"]["ssim"]) == N_FRAMES - 10
    page = out_html.read_text()
    assert page.startswith("<!doctype html>") and "data:image/png;base64," in page and "M-LMD" in page
    r = subprocess.run([sys.executable, "-m", "realtalk_cli", "eval", str(clips["src"]), "--report", str(out_png)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_bad_inputs_are_one_line_errors(clips, tmp_path, capsys):
    from realtalk_cli.cli import main

    def run(*args):
        with pytest.raises(SystemExit) as e:
            main(["eval", *map(str, args)])
        err = capsys.readouterr().err
        assert "Traceback" not in err
        return e.value.code, err

    code, err = run(tmp_path / "missing.mp4")
    assert code == 1 and "not found" in err
    code, err = run(clips["src"], "--frames", "9:3")
    assert code == 2 and "START < STOP" in err
    code, err = run(clips["src"], "--report", tmp_path / "r.pdf")
    assert code == 2 and ".html or .png" in err
    code, err = run(clips["src"], "--fid-weights", tmp_path / "none.pth")  # checked before any long work
    assert code == 1 and "none.pth: weights file not found" in err
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"junk")
    code, err = run(clips["src"], "--arcface-weights", junk)
    assert code == 2 and "pass --source too" in err
    junk.write_bytes(b"junk")
    code, err = run(clips["src"], "--source", clips["src"], "--lpips-weights", junk)
    assert code == 1 and "cannot read LPIPS weights" in err


def test_networks_run_when_weights_are_given(clips, tmp_path, monkeypatch):
    """Wiring only: random weights under the public names give finite numbers in every slot."""
    import torch

    from realtalk_cli.eval import inception

    monkeypatch.setattr(inception, "INPUT_SIZE", 75)  # the smallest input the graph takes: ~16x less work

    from realtalk_cli.eval.arcface import IResNet, IResNetConfig
    from realtalk_cli.eval.inception import FIDInceptionV3
    from realtalk_cli.eval.lpips import LPIPS
    from realtalk_cli.eval.syncnet import SyncNet

    torch.manual_seed(0)
    paths = {}
    for name, net in (("fid", FIDInceptionV3()), ("lpips", LPIPS()), ("arcface", IResNet(IResNetConfig([1, 1, 1, 1], 8))),
                      ("syncnet", SyncNet())):
        paths[name] = tmp_path / f"{name}.pth"
        torch.save(net.state_dict(), paths[name])
    options = EvalOptions(frames=(0, 7), batch_size=4, fid_weights=paths["fid"], lpips_weights=[paths["lpips"]],
                          arcface_weights=paths["arcface"], syncnet_weights=paths["syncnet"])
    r = evaluate(clips["noise20"], clips["src"], options=options)
    for key in ("fid", "lpips", "csim", "lse_d", "lse_c"):
        assert r.value(key) is not None and np.isfinite(r.value(key)), key
    assert np.isfinite(r.per_frame["lpips"]).all() and len(r.per_frame["lpips"]) == 7
    assert -1 <= r.value("csim") <= 1 and r.value("lpips") > 0


def test_reference_mouth_baseline(clips, tmp_path):
    from realtalk_cli.media import probe
    from realtalk_cli.pipelines.baseline import reference_mouth_baseline

    out = reference_mouth_baseline(clips["brighten"], tmp_path / "baseline.mp4")
    assert probe(out).has_audio and probe(out).n_frames == N_FRAMES
    src, base = list(VideoReader(clips["brighten"])), list(VideoReader(out))
    h, w = src[0].shape[:2]
    mouth = (slice(int(0.64 * h), int(0.76 * h)), slice(int(0.42 * w), int(0.58 * w)))  # lips and chin, inside the mask
    for t in (0, 5, 10, 15):
        diff = np.abs(src[t].astype(int) - base[t].astype(int)).mean(-1)
        assert diff[: h // 5].mean() < 3, t  # forehead and background: the source (re-encoded)
        # the mouth is frame 0's: darker than frame t's by about 4 t (where the source is not clipped at 255)
        assert 2.5 * t <= np.median(diff[mouth]) <= 4 * t + 3, (t, np.median(diff[mouth]))


@pytest.mark.shared
def test_real_clip_static_mouth_baseline_is_worse_than_the_source(tmp_path):
    """On a real speaker: the source against itself is ideal, the frozen-mouth baseline loses most
    in the mask region and on the lips, and its mouth no longer follows the source's."""
    from conftest import SHARED_DATA
    from realtalk_cli.pipelines.baseline import reference_mouth_baseline

    video = SHARED_DATA / "video" / "mimictalk_May_5s.mp4"
    if not video.is_file():
        pytest.skip("shared data not available")
    options = EvalOptions(frames=(75, 125))  # the last 40%
    same = evaluate(video, video, options=options)
    assert same.value("psnr") == 100.0 and same.value("m_lmd") == 0 and same.value("mouth_r_source") == pytest.approx(1.0)
    base = evaluate(reference_mouth_baseline(video, tmp_path / "baseline.mp4"), video, options=options)
    assert base.value("psnr_mask") < base.value("psnr") < 45 and base.value("ssim_mask") < base.value("ssim") < 1
    assert base.value("m_lmd") > base.value("f_lmd") > 0
    assert base.value("mouth_r_source") < 0.5
