"""Speech-like audio that Silero VAD takes for a voice (no recording ships with the tests).

Rosenberg glottal pulses with an intonation contour through five formant resonators whose first three
glide between vowel targets, with syllable-initial stop closures and fricative noise. Silero rejects
plain vowels, tones and noise; this it takes for a voice (P > 0.9 in most chunks).
"""

from __future__ import annotations

import numpy as np
from scipy.signal import butter, lfilter

SR = 16000

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
