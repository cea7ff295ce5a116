"""Voice and room changes keep the length and the timing of the speech."""

import numpy as np
import pytest

from realtalk_cli.audio.augment import noise_reverb, shift_voice
from realtalk_cli.eval.metrics import frame_rms

SR = 16000


def tone_bursts(freq: float = 200.0) -> np.ndarray:
    t = np.arange(2 * SR) / SR
    on = ((t > 0.3) & (t < 0.6)) | ((t > 1.1) & (t < 1.5))
    return (0.5 * on * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def onsets(x: np.ndarray) -> np.ndarray:
    """Times (s) where the 10 ms frame level first exceeds a quarter of its maximum after 0.2 s below."""
    loud = frame_rms(x, len(x) // 160, SR, 100.0) > 0.25 * frame_rms(x, len(x) // 160, SR, 100.0).max()
    quiet_before = np.array([not loud[max(0, i - 20):i].any() for i in range(len(loud))])
    return np.flatnonzero(loud & quiet_before) / 100.0


def peak_hz(x: np.ndarray) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / SR)[spec.argmax()])


@pytest.mark.parametrize("semitones", [-3.0, 3.0])
def test_shift_voice_moves_pitch_and_keeps_timing(semitones):
    x = tone_bursts()
    y = shift_voice(x, semitones)
    assert len(y) == len(x) and y.dtype == np.float32
    assert abs(peak_hz(y) - 200 * 2 ** (semitones / 12)) < 3
    np.testing.assert_allclose(onsets(y), onsets(x), atol=0.02)


def test_noise_reverb_keeps_timing_and_sets_the_snr():
    x = tone_bursts()
    y = noise_reverb(x, snr_db=10.0, rt60=0.4)
    assert len(y) == len(x)
    quiet = np.r_[0:int(0.25 * SR)]  # before the first sound: noise only
    snr = 10 * np.log10((y.astype(np.float64) ** 2).mean() / (y[quiet].astype(np.float64) ** 2).mean())
    assert 8 < snr < 12
    clean = noise_reverb(x, snr_db=200.0, rt60=0.4)
    np.testing.assert_allclose(onsets(clean), onsets(x), atol=0.02)
    assert np.abs(clean[int(0.7 * SR):int(0.9 * SR)]).max() > 0.01  # a tail rings on after the sound
