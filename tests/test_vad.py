"""Silero speech probability per frame and the lip gate made from it (audio/vad.py), on the
synthetic voice of tests/speechlike.py."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from realtalk_cli.audio import vad
from realtalk_cli.errors import RealtalkError
from speechlike import speech

SR = 16000
needs_silero = pytest.mark.skipif(importlib.util.find_spec("silero_vad") is None,
                                  reason="silero-vad is not installed (pip install silero-vad==6.2.3)")


def scene() -> np.ndarray:
    """6 s: room tone, speech at 2-3 s, room tone, white noise at 4-5 s, room tone."""
    rng = np.random.default_rng(7)
    x = 1e-3 * rng.standard_normal(6 * SR)
    x[2 * SR : 3 * SR] += speech(1.0)
    x[4 * SR : 5 * SR] += 0.05 * rng.standard_normal(SR)
    return x.astype(np.float32)


@pytest.fixture(scope="module")
def audio() -> np.ndarray:
    return scene()


@pytest.fixture(scope="module")
def prob25(audio) -> np.ndarray:
    return vad.speech_probability(audio, 160)  # 10 frames past the 6 s of audio


# -- the probability ----------------------------------------------------------------------------------

@needs_silero
def test_speech_is_high_silence_and_noise_low(prob25):
    p = prob25
    assert p.shape == (160,) and p.dtype == np.float32
    voiced = p[53:75]  # 2.12-3.0 s: past Silero's onset
    assert voiced.mean() > 0.85 and (voiced > 0.5).mean() > 0.9, voiced
    assert p[:49].max() < 0.2  # room tone before
    assert p[79:100].max() < 0.2  # room tone after
    assert p[100:125].max() < 0.2  # white noise
    assert p[125:150].max() < 0.2
    assert np.all(p[150:] == 0)  # past the end of the audio


@needs_silero
def test_burst_at_2_to_3_s_lands_on_frames_50_to_75(prob25):
    high = np.flatnonzero(prob25 > 0.5)
    assert 50 <= high[0] <= 54  # Silero needs a chunk or two to rise
    assert 73 <= high[-1] <= 75  # and falls within a chunk


@needs_silero
def test_other_fps_same_timing(audio, prob25):
    p30 = vad.speech_probability(audio, 180, fps=30)
    assert p30.shape == (180,)
    high = np.flatnonzero(p30 > 0.5)
    assert 60 <= high[0] <= 65 and 88 <= high[-1] <= 90
    # the same curve on another grid: each 30 fps frame against the 25 fps frame at its centre
    centre = ((np.arange(180) + 0.5) * 25 / 30).astype(int)
    assert np.median(np.abs(p30 - prob25[centre])) < 0.05


@needs_silero
def test_state_is_reset_per_call(audio):
    quiet = audio[: SR // 2]
    before = vad.chunk_probabilities(quiet)
    vad.chunk_probabilities(audio[2 * SR : 3 * SR])  # leaves the recurrent state in speech
    assert np.array_equal(vad.chunk_probabilities(quiet), before)


@needs_silero
def test_empty_and_short_audio():
    assert vad.speech_probability(np.zeros(0, np.float32), 0).shape == (0,)
    assert np.array_equal(vad.speech_probability(np.zeros(0, np.float32), 4), np.zeros(4, np.float32))
    p = vad.speech_probability(speech(0.5)[:100], 3)  # 100 samples: one padded chunk
    assert p.shape == (3,) and 0 <= p[0] <= 1 and np.all(p[1:] == 0)


@needs_silero
def test_packaged_model_loads_and_broken_file_is_one_line(tmp_path):
    assert vad.vad_unavailable() is None
    bad = tmp_path / "silero_vad.jit"
    bad.write_bytes(b"not a torchscript archive")
    with pytest.raises(RealtalkError) as e:
        vad.load_vad_model(bad)
    assert str(bad) in str(e.value) and "\n" not in str(e.value)


def test_missing_package_gives_a_reason(monkeypatch):
    monkeypatch.setattr(vad, "_model", None)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a, **k: None)
    reason = vad.vad_unavailable()
    assert reason and "silero-vad" in reason and "\n" not in reason


def test_chunks_map_to_frames_by_overlap():
    # 1000 samples, every chunk speech: frame 0 (640 samples) full, frame 1 has 360 real samples of 640
    p = vad.frames_from_chunks(np.ones(2), 1000, 4)
    np.testing.assert_allclose(p, [1, 360 / 640, 0, 0], atol=1e-6)
    # only chunk 1 (samples 512-1024) speech: frame 0 holds 128 of its samples, frame 1 384
    p = vad.frames_from_chunks(np.array([0.0, 1.0, 0.0]), 1536, 3)
    np.testing.assert_allclose(p, [128 / 640, 384 / 640, 0], atol=1e-6)


# -- the gate -----------------------------------------------------------------------------------------

def _curve(n: int = 150, speech_frames=((50, 76),), level: float = 0.9) -> np.ndarray:
    p = np.full(n, 0.05)
    for a, b in speech_frames:
        p[a:b] = level
    return p


def test_gate_widens_ramps_and_keeps_speech_exact():
    w = vad.vad_weight(_curve())
    assert w.dtype == np.float32 and w.min() >= 0 and w.max() <= 1
    assert np.all(w[48:76] == 1)  # 2 frames lead (80 ms), no lag
    assert np.all(w[:45] == 0) and np.all(w[79:] == 0)
    assert np.all(np.diff(w[44:49]) > 0) and np.all(np.diff(w[75:80]) < 0)  # a ramp, not a step
    assert np.abs(np.diff(w)).max() < 0.4


def test_gate_bridges_short_pauses_only():
    w = vad.vad_weight(_curve(speech_frames=((30, 50), (53, 70), (80, 100))))  # pauses of 0.12 s and 0.4 s
    assert np.all(w[30:70] == 1)
    assert w[74:76].min() < 0.05  # the 0.4 s pause comes to rest in its middle
    assert np.abs(np.diff(w)).max() < 0.4


def test_gate_hysteresis_and_blips():
    p = _curve()
    p[40:50] = 0.4  # above the release threshold next to speech: part of it
    p[100:105] = 0.45  # the same level on its own: not speech
    p[120] = 0.95  # a one-frame blip
    w = vad.vad_weight(p)
    assert np.all(w[40:50] == 1)
    assert np.all(w[95:] == 0)


def test_gate_edges_empty_and_other_fps():
    assert vad.vad_weight(np.zeros(0)).shape == (0,)
    assert np.all(vad.vad_weight(np.full(20, 0.1)) == 0)
    assert np.all(vad.vad_weight(np.full(20, 0.9)) == 1)  # speech from the first frame to the last
    w = vad.vad_weight(_curve(180, ((60, 75), (79, 91))), fps=30)  # a 0.13 s pause at 30 fps
    assert np.all(w[60:91] == 1)
    assert w[:50].max() == 0 and np.abs(np.diff(w)).max() < 0.35  # 4-frame ramp at 30 fps


@needs_silero
def test_gate_on_real_probabilities(prob25):
    w = vad.vad_weight(prob25)
    assert np.all(w[53:75] == 1)
    assert np.all(w[:44] == 0) and np.all(w[82:] == 0)
    assert np.abs(np.diff(w)).max() < 0.4
