"""`realtalk dub` end to end on a generated face clip with a tiny, briefly trained model."""

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from mediagen import make_face_video, make_video, retime, sine
from realtalk_cli.media import VideoReader, load_audio, probe
from realtalk_cli.pipelines.dub import DubOptions, Dubber
from realtalk_cli.pipelines.timeline import extend_indices



def cli(*args, check=True):
    r = subprocess.run([sys.executable, "-m", "realtalk_cli", "--quiet", *map(str, args)], capture_output=True, text=True)
    if check and r.returncode != 0:
        raise AssertionError(f"realtalk {' '.join(map(str, args))} failed:\n{r.stderr}")
    return r


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """preprocess -> train a2e -> train e2f, two steps each: weights barely trained, pipeline real."""
    root = tmp_path_factory.mktemp("model")
    clip = make_face_video(root / "person.mp4", seconds=2.0)
    cli("preprocess", clip, "-o", root / "data", "--crop-size", 64, "--val-fraction", 0)
    for stage in ("a2e", "e2f"):
        cli("train", "--stage", stage, "--data", root / "data", "--out", root / "model" / stage,
            "--config", f"{stage}_tiny", "--steps", 2, "--val-every", 0, "--ckpt-every", 0)
    return root / "model"


@pytest.fixture(scope="module")
def dubber(model_dir):
    return Dubber.from_pretrained(model_dir, "cpu")


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return make_face_video(tmp_path_factory.mktemp("src") / "video.mp4", seconds=2.0)


def speech_file(path: Path, seconds: float) -> Path:
    rng = np.random.default_rng(1)
    x = sine(seconds, 16000, 220.0)[:, 0] * (0.5 + 0.5 * rng.random(int(seconds * 16000)).astype(np.float32))
    sf.write(str(path), x, 16000, subtype="FLOAT")
    return path


def test_dub_longer_speech_pingpong(dubber, source, tmp_path):
    speech = speech_file(tmp_path / "speech.wav", 3.0)
    seen = {}

    def check(i, src, out, paste):
        # pixels the paste mask does not reach are the source's, bit for bit
        m = paste.mask(*src.shape[:2])
        untouched = m == 0
        assert untouched.mean() > 0.5
        assert np.array_equal(src[untouched], out[untouched])
        seen[i] = not np.array_equal(src, out)

    result = dubber.dub(source, speech, tmp_path / "out.mp4", DubOptions(), on_frame=check)
    assert result.frames == 75 and len(seen) == 75
    assert sum(seen.values()) > 60  # the face region was re-rendered
    info = probe(result.output)
    assert (info.width, info.height) == (192, 160)
    assert abs(info.duration - 3.0) <= 1 / 25 + 1e-3
    assert sum(1 for _ in VideoReader(result.output)) == 75
    got, want = load_audio(result.output), load_audio(speech)
    n = min(len(got), len(want))
    assert np.corrcoef(got[:n], want[:n])[0, 1] > 0.99


@pytest.mark.parametrize("seconds,extend", [(1.0, "pingpong"), (4.4, "loop")])
def test_dub_lengths(dubber, source, tmp_path, seconds, extend):
    speech = speech_file(tmp_path / "s.wav", seconds)
    result = dubber.dub(source, speech, tmp_path / "o.mp4", DubOptions(extend=extend))
    assert result.frames == round(seconds * 25)
    assert abs(probe(result.output).duration - seconds) <= 1 / 25 + 1e-3


def test_faceless_frames_pass_through(dubber, tmp_path):
    video = make_face_video(tmp_path / "gap.mp4", seconds=2.0, blank=(10, 20))
    speech = speech_file(tmp_path / "s.wav", 2.0)
    unchanged = []
    result = dubber.dub(video, speech, tmp_path / "o.mp4", DubOptions(),
                        on_frame=lambda i, src, out, paste: unchanged.append(i) if paste is None and np.array_equal(src, out) else None)
    assert result.faces_missing == 10
    assert unchanged == list(range(10, 20))


def test_preview_and_source_fps(dubber, tmp_path):
    video = make_face_video(tmp_path / "v30.mp4", seconds=1.0, fps=30)
    speech = speech_file(tmp_path / "s.wav", 1.0)
    result = dubber.dub(video, speech, tmp_path / "o.mp4", DubOptions(fps=None, preview=tmp_path / "p.mp4",
                                                                      mouth_curve=tmp_path / "m.json"))
    assert result.frames == 30 and probe(result.output).fps == 30
    p = probe(tmp_path / "p.mp4")
    assert p.width == 3 * 192 and p.has_audio
    from realtalk_cli.eval.mouth_curve import read_mouth_curve

    curve, fps = read_mouth_curve(tmp_path / "m.json")
    assert len(curve) == 30 and fps == 30 and np.isfinite(curve).all() and curve.std() > 0


def test_cli_dub_and_jobs(model_dir, source, tmp_path):
    speech = speech_file(tmp_path / "s.wav", 1.0)
    out = tmp_path / "one.mp4"
    cli("dub", source, speech, "-o", out, "--checkpoint", model_dir)
    assert probe(out).has_audio
    r = cli("dub", source, speech, "-o", out, "--checkpoint", model_dir, check=False)
    assert r.returncode == 2 and "--overwrite" in r.stderr  # never replaces an output silently
    jobs = tmp_path / "jobs.csv"
    with jobs.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["video", "speech", "output"])
        w.writerow([source, speech, tmp_path / "a.mp4"])
        w.writerow([source, speech, "b.mp4"])  # relative to the jobs file
    cli("dub", "--jobs", jobs, "--checkpoint", model_dir)
    assert probe(tmp_path / "a.mp4").has_video and probe(tmp_path / "b.mp4").has_video


@pytest.mark.parametrize("case", ["no_checkpoint", "incomplete_checkpoint", "text_video", "output_is_input",
                                  "missing_dir", "no_face"])
def test_cli_dub_errors(model_dir, source, tmp_path, case):
    speech = speech_file(tmp_path / "s.wav", 1.0)
    video, out, ckpt = source, tmp_path / "out.mp4", model_dir
    if case == "no_checkpoint":
        ckpt = tmp_path / "nothing"
    elif case == "incomplete_checkpoint":
        ckpt = tmp_path / "half"
        (ckpt / "a2e").mkdir(parents=True)
    elif case == "text_video":
        video = tmp_path / "video.mp4"
        video.write_text("not a video\n")
    elif case == "output_is_input":
        out = speech
    elif case == "missing_dir":
        out = tmp_path / "nope" / "out.mp4"
    elif case == "no_face":
        video = make_video(tmp_path / "noface.mp4", seconds=1.0)
    before = sorted(p.name for p in tmp_path.iterdir())
    r = cli("dub", video, speech, "-o", out, "--checkpoint", ckpt, check=False)
    assert r.returncode in (1, 2)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in r.stderr, r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing partial left behind


def test_onnx_backend_matches_torch(model_dir, dubber, source, tmp_path):
    from realtalk_cli.inference.models import load_models

    cli("export", "--checkpoint", model_dir)
    speech = speech_file(tmp_path / "s.wav", 1.0)
    frames = {}
    for backend in ("torch", "onnx"):
        d = Dubber(*load_models(model_dir, "cpu", backend)[:3], device="cpu") if backend == "onnx" else dubber
        d.dub(source, speech, tmp_path / f"{backend}.mp4", DubOptions(),
              on_frame=lambda i, s, o, p, b=backend: frames.__setitem__((b, i), o))
    diffs = [np.abs(frames["torch", i].astype(int) - frames["onnx", i].astype(int)).max() for i in range(25)]
    assert max(diffs) <= 2  # float rounding differences only, after uint8 quantisation


def test_bench_cli_table_and_json(model_dir, tmp_path):
    import json

    out = tmp_path / "bench.json"
    r = cli("bench", "--checkpoint", model_dir, "--batches", "1,2", "--repeats", 2, "--backends", "eager,onnx,bf16",
            "--e2e-seconds", 1, "--e2e", "fia@192x160,bank@320x240,bank+fia@320x240", "--json", out)
    result = json.loads(out.read_text())
    rows = {(row["stage"], row["backend"], row["batch"]) for row in result["rows"]}
    assert {("a2e", "eager", 1), ("renderer", "eager", 1), ("renderer", "eager", 2), ("renderer", "onnx", 2)} <= rows
    assert all(row["ms_median"] > 0 and row["ms_min"] <= row["ms_median"] <= row["ms_max"] for row in result["rows"])
    fia, bank, refined = result["dubs"]
    assert (fia["renderer"], fia["width"], bank["renderer"], bank["width"], bank["height"]) == ("fia", 192, "bank", 320, 240)
    for d in (fia, bank):
        assert d["frames"] == 25 and set(d["stages"]) >= {"decode", "track", "render", "encode"}
    assert "mask" in fia["stages"] and "plan" in bank["stages"]  # each renderer's own stages
    assert refined["renderer"] == "bank+fia" and "refine" in refined["stages"] and "refine" not in bank["stages"]
    bad = cli("bench", "--e2e", "bank@tiny", check=False)
    assert bad.returncode == 2 and "--e2e 'bank@tiny'" in bad.stderr
    assert result["environment"]["torch"] and result["paper_v100"]["e2f_ms"] == 30.8
    assert "V100" in r.stdout and "renderer" in r.stdout  # the table, with the paper's figures beside ours
    assert set(result["skipped"]) == {"bf16"} and "skipped bf16: half precision is timed on CUDA only" in r.stdout


def test_cli_dub_face_selection_messages(model_dir, source, tmp_path):
    speech = speech_file(tmp_path / "s.wav", 1.0)
    out = tmp_path / "out.mp4"
    r = cli("dub", source, speech, "-o", out, "--checkpoint", model_dir, "--face-index", 5, check=False)
    assert r.returncode == 1 and "--face-index 5 requested but at most 1 face was found" in r.stderr, r.stderr
    r = cli("dub", source, speech, "-o", out, "--checkpoint", model_dir, "--bbox", "500,10,600,90", check=False)
    assert r.returncode == 2, r.stderr
    assert "video.mp4: --bbox 500,10,600,90 lies outside the 192x160 video frame" in r.stderr, r.stderr
    assert not out.exists()


def test_dub_shifted_vfr_video(dubber, tmp_path):
    """A 30 fps face clip made variable-rate, its video starting 0.2 s after its audio, dubbed at 25 fps
    and at the source rate with 48 kHz stereo speech longer than the video (pingpong reads backwards)."""
    face = make_face_video(tmp_path / "face.mp4", seconds=2.0, fps=30, audio=False)
    video = retime(face, tmp_path / "shifted.mp4", fps=30, video_start=0.2, audio_start=0.0, vfr=True)
    rate, seconds = 48000, 3.5
    speech = tmp_path / "speech.wav"
    sf.write(str(speech), np.stack([sine(seconds, rate, 220.0)[:, 0], sine(seconds, rate, 330.0)[:, 0]], 1),
             rate, subtype="PCM_24")
    for fps in (25.0, None):
        shown = {}
        result = dubber.dub(video, speech, tmp_path / f"out{fps}.mp4", DubOptions(fps=fps),
                            on_frame=lambda i, src, out, paste: shown.__setitem__(i, src))
        f = fps or probe(video).fps
        full = list(VideoReader(video, fps))
        assert result.source_frames == len(full) and result.frames == round(seconds * f) == len(shown)
        order = extend_indices(result.frames, len(full), "pingpong")
        assert order.max() == len(full) - 1 and order[-1] < len(full) - 1  # it did turn back
        assert all(np.array_equal(shown[i], full[order[i]]) for i in shown)  # the frames pass 1 tracked
        out = probe(result.output)
        assert (out.audio_rate, out.audio_channels) == (rate, 2)
        assert out.video_frames == result.frames and abs(out.duration - seconds) <= 1 / f + 1e-3
