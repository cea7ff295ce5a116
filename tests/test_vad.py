"""Silero speech probability per frame and the lip gate made from it (audio/vad.py).

The speech is synthetic (no recording ships with the tests): Rosenberg glottal pulses with an
intonation contour through five formant resonators whose first three glide between vowel targets,
with syllable-initial stop closures and fricative noise. Silero rejects plain vowels, tones and
noise; this it takes for a voice (P > 0.9 in most chunks).
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from scipy.signal import butter, lfilter

from realtalk_cli.audio import vad
from realtalk_cli.errors import RealtalkError

SR = 16000
needs_silero = pytest.mark.skipif(importlib.util.find_spec("silero_vad") is None,
                                  reason="silero-vad is not installed (pip install silero-vad==6.2.3)")

VOWELS = np.array([(730, 1090, 2440), (270, 2290, 3010), (530, 1840, 2480), (300, 870, 2240),
                   (570, 840, 2410), (660, 1720, 2410), (440, 1020, 2240), (390, 1990, 2550)])


def _glottal(f0: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Differentiated Rosenberg pulses, one per period of the f0 contour, with jitter and shimmer."""
    n, src, t = len(f0), np.zeros(len(f0)), 0.0
    while t < n - 1:
        period = SR / f0[int(t)] * (1 + 0.01 * rng.standard_normal())
        L = int(period)
        rise, fall = int(0.4 * L), int(0.6 * L) - int(0.4 * L)
        pulse = np.concatenate([0.5 * (1 - np.cos(np.pi * np.arange(rise) / rise)),
                                np.cos(0.5 * np.pi * np.arange(fall) / fall), np.zeros(L - rise - fall)])
        s = int(t)
        e = min(n, s + L)
        src[s:e] += (1 + 0.08 * rng.standard_normal()) * pulse[: e - s]
        t += period
    return np.diff(src, prepend=0)


def _formants(src: np.ndarray, freqs: np.ndarray, bandwidths, block: int = 80) -> np.ndarray:
    """Cascade of two-pole resonators, retuned every `block` samples to the formant tracks [n, K]."""
    out, state = np.zeros(len(src)), [np.zeros(2) for _ in bandwidths]
    for s in range(0, len(src), block):
        seg = src[s : s + block]
        for j, bw in enumerate(bandwidths):
            r, c = np.exp(-np.pi * bw / SR), np.cos(2 * np.pi * freqs[s, j] / SR)
            seg, state[j] = lfilter([1 - 2 * r * c + r * r], [1, -2 * r * c, r * r], seg, zi=state[j])
        out[s : s + block] = seg
    return out


def speech(seconds: float, seed: int = 1, f0: float = 210.0) -> np.ndarray:
    """Speech-like audio peaking at 0.3: syllables of 0.16-0.28 s, each a consonant then a vowel."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    starts = [0]
    while starts[-1] < n:
        starts.append(starts[-1] + int(rng.uniform(0.16, 0.28) * SR))
    centres = np.array(starts[:-1]) + 0.5 * np.diff(starts)
    targets = VOWELS[rng.integers(len(VOWELS), size=len(centres))]
    at = np.arange(n)
    tracks = [np.interp(at, centres, targets[:, j]) for j in range(3)] + [np.full(n, 3300.0), np.full(n, 3750.0)]
    pitch = f0 * (1 + np.interp(at, centres, rng.uniform(-0.1, 0.15, len(centres))) - 0.15 * at / n)
    voiced = _formants(_glottal(pitch, rng) + 0.05 * rng.standard_normal(n), np.stack(tracks, 1),
                       (60, 90, 130, 200, 250))
    y = voiced / np.abs(voiced).max()
    b, a = butter(4, (2500 / (SR / 2), 7000 / (SR / 2)), "band")
    hiss = lfilter(b, a, rng.standard_normal(n))
    hiss /= np.abs(hiss).max()
    for s in starts[:-1]:
        L = min(int(rng.uniform(0.05, 0.09) * SR), n - s)
        dip = np.hanning(L)
        kind = rng.integers(3)
        if kind == 0:  # stop: closure
            y[s : s + L] *= 1 - 0.97 * dip
        elif kind == 1:  # fricative: noise in place of the voice
            y[s : s + L] = y[s : s + L] * (1 - 0.9 * dip) + 0.25 * hiss[s : s + L] * dip
        else:  # nasal: a shallower dip
            y[s : s + L] *= 1 - 0.6 * dip
    return (0.3 * y / np.abs(y).max()).astype(np.float32)


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
