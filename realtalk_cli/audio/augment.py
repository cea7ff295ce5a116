"""Other voices and other rooms from one recording, with the timing kept (16 kHz mono float audio).

shift_voice   pitch and formants moved together by `semitones`: a WSOLA time stretch by
              r = 2^(semitones / 12), then resampling by 1 / r (played r times faster), so the length
              and the time of every sound are those of the input; a different-sounding speaker
              (higher or lower voice and vocal tract) saying the same thing at the same moments.
noise_reverb  a synthetic room (exponentially decaying noise tail after the direct sound, no
              pre-delay, so nothing moves earlier or later) plus white noise at a given SNR.
shift_bands   features [n, bands] moved up or down by whole mel bands (edge bands repeated): a voice
              with its formants a little higher or lower, made in the feature domain, for free.
warp_bands    log-mel features [n, bands] of the same voice with every frequency scaled by
              2^(semitones / 12): what shift_bands approximates, exact at every band (a mel band
              is 37 Hz wide below 1 kHz but 3.9% of its frequency above it, so one band shift is a
              different warp at each height).

Used to test an a2e on voices it never heard (examples/cross_voice.py).
"""

from __future__ import annotations

import numpy as np
import soxr
from scipy.signal import correlate, fftconvolve

from realtalk_cli.audio.features import SAMPLE_RATE, hz_to_mel, mel_edges


def time_stretch(wav: np.ndarray, factor: float, win: int = 512, tolerance: int = 160) -> np.ndarray:
    """WSOLA: `factor` times longer (> 1) or shorter, pitch unchanged. Output frames of `win` samples
    every win / 2 are cut from the input near their nominal time (within +- tolerance samples) where
    they best continue the previous frame, so the waveform stays coherent (no phasiness)."""
    wav = np.asarray(wav, np.float64)
    hop = win // 2
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(win) / win)  # periodic Hann: overlaps sum to 1
    n_out = int(round(len(wav) * factor))
    pad = tolerance + win + int(hop / factor) + 1
    x = np.pad(wav, (tolerance, pad))  # input sample i is x[tolerance + i]
    out = np.zeros(n_out + win)
    prev = -hop  # input start of the previous frame (the first frame takes its nominal place)
    for j in range(n_out // hop + 1):
        nominal = int(j * hop / factor)
        if j == 0:
            pos = nominal
        else:
            follow = x[tolerance + prev + hop : tolerance + prev + hop + win]  # what would continue it
            region = x[nominal : nominal + 2 * tolerance + win]  # starts nominal - tolerance .. + tolerance
            pos = nominal - tolerance + int(np.argmax(correlate(region, follow, mode="valid")))
        out[j * hop : j * hop + win] += window * x[tolerance + pos : tolerance + pos + win]
        prev = pos
    return out[:n_out]


def _fit_length(x: np.ndarray, n: int) -> np.ndarray:
    return np.pad(x[:n], (0, max(0, n - len(x)))).astype(np.float32)


def shift_voice(wav: np.ndarray, semitones: float) -> np.ndarray:
    """Pitch and formants shifted by `semitones`, same length and timing (see the module docstring)."""
    r = 2.0 ** (semitones / 12)
    stretched = time_stretch(np.asarray(wav, np.float64), r)
    return _fit_length(soxr.resample(stretched, SAMPLE_RATE * r, SAMPLE_RATE), len(wav))


def noise_reverb(wav: np.ndarray, snr_db: float = 10.0, rt60: float = 0.5, drr_db: float = 0.0,
                 seed: int = 0) -> np.ndarray:
    """Reverberant room (RT60 seconds, direct-to-reverberant ratio drr_db) plus white noise at snr_db
    below the reverberant speech's mean power."""
    rng = np.random.default_rng(seed)
    wav = np.asarray(wav, np.float64)
    t = np.arange(1, int(rt60 * SAMPLE_RATE)) / SAMPLE_RATE
    tail = rng.standard_normal(len(t)) * 10 ** (-3 * t / rt60)  # 60 dB down after rt60
    tail *= 10 ** (-drr_db / 20) / np.sqrt((tail ** 2).sum())
    wet = fftconvolve(wav, np.concatenate([[1.0], tail]))[: len(wav)]
    noise = rng.standard_normal(len(wav)) * np.sqrt((wet ** 2).mean() * 10 ** (-snr_db / 10))
    return (wet + noise).astype(np.float32)


def shift_bands(features: np.ndarray, k: int) -> np.ndarray:
    """Mel (or other band) features [n, bands] moved up by k bands (down for k < 0), edges repeated."""
    if k == 0:
        return features
    idx = np.clip(np.arange(features.shape[1]) - k, 0, features.shape[1] - 1)
    return features[:, idx]


def warp_bands(features: np.ndarray, semitones: float, fmin: float = 0.0, fmax: float = 8000.0) -> np.ndarray:
    """Log-mel features [n, bands] (bands spaced as audio/features.mel_filterbank) of a voice whose
    spectrum sits `semitones` higher: band i reads the input at centre_i / 2^(semitones / 12), linearly
    interpolated between bands, edge bands repeated."""
    if semitones == 0:
        return features
    n = features.shape[1]
    hz = mel_edges(n, fmin, fmax)
    edges, source = hz_to_mel(hz), hz_to_mel(hz[1:-1] * 2.0 ** (-semitones / 12))
    pos = np.clip((source - edges[0]) / (edges[1] - edges[0]) - 1, 0, n - 1)  # fractional band index
    lo = np.minimum(np.floor(pos).astype(int), n - 2)
    w = (pos - lo).astype(np.float32)
    return features[:, lo] * (1 - w) + features[:, lo + 1] * w
