"""Lip timing at any output frame rate, with a small a2e that really learned mouth <- loudness.

The model is trained for a few seconds on `make_tiny_dataset` (the synthetic mouth opens with the
loudness of a 220 Hz tone). It is then driven by tone bursts at known times: the mouth opening it
predicts, per output frame, must move at the burst at every frame rate.
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import make_tiny_dataset
from mediagen import make_face_video
from speechlike import speech as voice_like
from realtalk_cli.data.dataset import Dataset
from realtalk_cli.media import VideoReader, probe
from realtalk_cli.inference.a2e import SilenceGate, frame_db, resample_frames, voice_activity
from realtalk_cli.pipelines.dub import Dubber, SourceTrack
from realtalk_cli.eval.mouth_curve import read_mouth_curve
from realtalk_cli.configs import config_path
from realtalk_cli.train.run import train

SR = 16000
CLICKS = np.array([0.5, 1.3, 2.05, 2.9, 3.62])  # seconds; on and off the 25 Hz grid


def _config(tmp: Path, stage: str, steps: int) -> Path:
    cfg = json.loads(config_path(f"{stage}_tiny").read_text())
    cfg["trainer"].update(steps=steps, val_every=0, ckpt_every=0)
    path = tmp / f"{stage}.json"
    path.write_text(json.dumps(cfg))
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(model directory, dataset): a2e 300 steps (~8 s), e2f 1 step (only its face model is used here)."""
    root = tmp_path_factory.mktemp("sync")
    make_tiny_dataset(root / "data", n_clips=2, n_frames=150)
    for stage, steps in (("a2e", 300), ("e2f", 1)):
        train(stage, root / "data", root / "model" / stage, config=_config(root, stage, steps), device="cpu")
    return root / "model", Dataset.open(root / "data")


@pytest.fixture(scope="module")
def dubber(trained):
    return Dubber.from_pretrained(trained[0], "cpu")


@pytest.fixture(scope="module")
def linear_dubber(trained, tmp_path_factory):
    """The same model with the linear a2e that `--adapt` fits on a CPU (closed form) in place of the transformer."""
    root = tmp_path_factory.mktemp("sync_linear")
    shutil.copytree(trained[0] / "e2f", root / "e2f")
    train("a2e", trained[1].dir, root / "a2e", config="adapt_cpu_linear", device="cpu")
    return Dubber.from_pretrained(root, "cpu")


def bursts(times, seconds: float, level: float = 1.0, noise: float = 0.003, seed: int = 0) -> np.ndarray:
    """220 Hz tone bursts (Gaussian envelope, sigma 30 ms) centred on `times`, over faint noise."""
    t = np.arange(int(seconds * SR)) / SR
    env = sum(np.exp(-0.5 * ((t - c) / 0.03) ** 2) for c in times)
    rng = np.random.default_rng(seed)
    return (level * env * np.sin(2 * np.pi * 220 * t) + noise * rng.standard_normal(len(t))).astype(np.float32)


def mouth_opening(dubber, track: SourceTrack, beta: np.ndarray) -> np.ndarray:
    t = lambda a: torch.as_tensor(np.asarray(a, np.float32))  # noqa: E731
    with torch.no_grad():
        v = dubber.fit_face.vertices(t(track.alpha)[None].expand(len(beta), -1), t(beta), t(track.rho[: len(beta)]))
        return dubber.fit_face.mouth_opening(v).numpy()


def source_track(dataset, fps: float) -> SourceTrack:
    """The tracked synthetic clip as `Dubber.track` would give it when read at `fps`."""
    co = dataset.clips()[0].coeffs()
    n = len(co["beta"])
    m = int(round(n * fps / 25))
    idx = np.minimum((np.arange(m) * 25 / fps).astype(int), n - 1)
    return SourceTrack(m, 64, 64, np.ones(m, bool), np.zeros((m, 2, 3)), co["alpha"], co["beta"][idx], co["rho"][idx], 0.0, 0)


def response_times(curve: np.ndarray, fps: float, clicks) -> tuple[np.ndarray, np.ndarray]:
    """(centroid time, height) of the mouth-opening bump within 0.25 s of each click."""
    t = np.arange(len(curve)) / fps
    rest = np.median(curve)
    out = []
    for c in clicks:
        near = np.abs(t - c) < 0.25
        y = np.clip(curve[near] - rest, 0, None)
        out.append(((t[near] * y).sum() / max(y.sum(), 1e-9), y.max()))
    return np.array(out).T


def test_resample_frames_is_linear_on_the_25hz_grid():
    v = np.array([[0.0, 10.0], [1.0, 20.0], [3.0, 40.0]])
    got = resample_frames(v, np.array([0.0, 0.02, 0.04, 0.07, 0.5, -1.0]))
    np.testing.assert_allclose(got[:, 0], [0.0, 0.5, 1.0, 2.5, 3.0, 0.0])
    np.testing.assert_allclose(got[:, 1], [10, 15, 20, 35, 40, 10])


@pytest.mark.parametrize("kind", ["transformer", "linear"])
@pytest.mark.parametrize("fps", [24, 25, 29.97, 30, 60])
def test_mouth_moves_at_each_click_at_any_frame_rate(request, trained, fps, kind, tmp_path):
    dubber = request.getfixturevalue("dubber" if kind == "transformer" else "linear_dubber")
    assert type(dubber.a2e).__name__ == {"transformer": "A2ETransformer", "linear": "A2ELinear"}[kind]
    seconds = 4.2
    track = source_track(trained[1], fps)
    n_out = int(round(seconds * fps))
    beta = dubber.expressions(bursts(CLICKS, seconds), n_out, track, fps=fps)
    assert beta.shape == (n_out, track.beta.shape[1])
    # through the mouth-curve sidecar, exactly as `dub --mouth-curve` writes it
    path = tmp_path / "curve.json"
    dubber._write_mouth_curve(path, beta, track, np.minimum(np.arange(n_out), track.n_frames - 1), fps)
    curve, curve_fps = read_mouth_curve(path)
    assert curve_fps == fps and len(curve) == n_out
    centre, height = response_times(curve, fps, CLICKS)
    assert (height > 0.3 * np.ptp(curve)).all(), height  # the mouth really opens at every click
    # the face at time tau was trained on the audio of [tau, tau + 40 ms) (audio/features.py), so a
    # burst centred at c opens the mouth centred at c - 20 ms
    np.testing.assert_array_less(np.abs(centre - (CLICKS - 0.02)), 1 / fps)


def test_dub_fps_source_keeps_the_rate_and_the_sync(trained, tmp_path):
    video = make_face_video(tmp_path / "v30.mp4", seconds=2.0, fps=30)
    seconds, clicks = 1.37, np.array([0.4, 0.95])
    speech = tmp_path / "speech.wav"
    sf.write(str(speech), bursts(clicks, seconds), SR, subtype="FLOAT")
    out, curve_path = tmp_path / "out.mp4", tmp_path / "curve.json"
    r = subprocess.run([sys.executable, "-m", "realtalk_cli", "--quiet", "dub", str(video), str(speech), "-o", str(out),
                        "--checkpoint", str(trained[0]), "--fps", "source", "--mouth-curve", str(curve_path)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    n = round(seconds * 30)
    assert sum(1 for _ in VideoReader(out, None)) == n  # decoded at its own rate
    assert abs(probe(out).fps - 30) < 1e-6
    curve, fps = read_mouth_curve(curve_path)
    assert fps == 30 and len(curve) == n
    centre, _ = response_times(curve, 30, clicks)
    np.testing.assert_array_less(np.abs(centre - (clicks - 0.02)), 1 / 30)


def test_voice_activity_follows_the_recordings_own_level():
    x = bursts([0.5, 1.5], 2.0)
    w = voice_activity(frame_db(x, 50), SilenceGate())
    np.testing.assert_array_equal(w, voice_activity(frame_db(0.05 * x, 50), SilenceGate()))  # any gain
    t = (np.arange(50) + 0.5) / 25
    assert (w[(np.abs(t - 0.5) < 0.03) | (np.abs(t - 1.5) < 0.03)] == 1).all()
    assert (w[(t < 0.3) | ((t > 0.8) & (t < 1.2)) | (t > 1.75)] == 0).all()


def test_lips_rest_in_silence_and_on_breath_noise(dubber, trained):
    """Speech (a synthetic voice), breaths (noise 30 dB below it) and near-silence: with the gate (dub
    --rest-in-silence) the mouth stays at the source's silent opening except on speech."""
    clip = trained[1].clips()[0]
    track = source_track(trained[1], 25)
    t = np.arange(4 * SR) / SR
    rng = np.random.default_rng(3)
    speech = ((t > 0.4) & (t < 0.9)) | ((t > 2.2) & (t < 2.7))
    breath = ((t > 1.3) & (t < 1.8)) | ((t > 3.1) & (t < 3.6))
    voice = 2.5 * voice_like(4.0)  # Silero's VAD must take it for speech
    x = (speech * voice + 0.025 * breath * rng.standard_normal(len(t))
         + 0.002 * rng.standard_normal(len(t))).astype(np.float32)
    ungated = mouth_opening(dubber, track, dubber.expressions(x, 100, track, gate=None))
    gated = mouth_opening(dubber, track, dubber.expressions(x, 100, track, source_audio=clip.audio(), gate=SilenceGate()))
    source = mouth_opening(dubber, track, track.beta)
    source_silent = source[voice_activity(frame_db(clip.audio(), len(source)), SilenceGate()) == 0]
    tt = np.arange(100) / 25
    on_speech = ((tt > 0.45) & (tt < 0.85)) | ((tt > 2.25) & (tt < 2.65))
    quiet = ~(((tt > 0.3) & (tt < 1.0)) | ((tt > 2.1) & (tt < 2.8)))  # breaths and silence, away from speech
    np.testing.assert_allclose(gated[on_speech], ungated[on_speech])  # speech untouched
    assert gated[on_speech].mean() - source_silent.mean() > 1.0  # the mouth still opens to speak
    assert ungated[quiet].max() - source_silent.mean() > 1.0  # the network alone opens it on breaths
    assert np.abs(gated[quiet] - np.median(source_silent)).max() < 0.2  # the gate keeps it at rest
