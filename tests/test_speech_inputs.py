"""Speech as users bring it, through the default front end (Whisper + mel) and the shipped lip prior:
any sample rate, any channel count, a fraction of a second."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from realtalk_cli.audio.features import AudioFrontEnd
from realtalk_cli.audio.whisper import whisper_unavailable
from realtalk_cli.inference.a2e import a2e_frames, speech_weight
from realtalk_cli.inference.a2e_stream import expressions_25hz
from realtalk_cli.media.audio import load_audio
from realtalk_cli.nets.lip_prior import LipPrior
from realtalk_cli.train.a2e_task import pearson

pytestmark = pytest.mark.skipif(whisper_unavailable() is not None, reason=f"{whisper_unavailable()}")


def voice(seconds: float, rate: int) -> np.ndarray:
    """Syllable-like bursts of a 140 Hz voice with formant-ish harmonics, pauses between phrases."""
    t = np.arange(int(seconds * rate)) / rate
    env = np.clip(np.sin(2 * np.pi * 3.1 * t), 0, None) * (np.sin(2 * np.pi * 0.35 * t) > -0.3)
    tone = sum(np.sin(2 * np.pi * 140 * k * t) / k for k in range(1, 25) if 140 * k < min(rate / 2, 7000))
    return (0.3 * env * tone).astype(np.float32)


@pytest.fixture(scope="module")
def lips():
    prior = LipPrior.from_pretrained()
    front = AudioFrontEnd(prior.audio)

    def run(path):
        speech = load_audio(path)
        n = a2e_frames(len(speech))
        y = expressions_25hz(prior.model, front, np.zeros(0), np.zeros((16, prior.fit.n_comps)), speech)
        return speech, y, n
    return run


def test_whisper_and_mel_side_by_side():
    wav = voice(1.0, 16000)
    both = AudioFrontEnd({"kind": "whisper+mel"})(wav, 50)
    assert both.shape == (50, 80 + 512)
    assert np.allclose(both[:, :80], AudioFrontEnd({"kind": "mel"})(wav, 50))


@pytest.mark.parametrize("rate,channels", [(8000, 1), (192000, 2), (48000, 6)])
def test_any_rate_and_channel_count_moves_the_lips_as_16k_mono(tmp_path, lips, rate, channels):
    sf.write(tmp_path / "ref.wav", voice(4.0, 16000), 16000)
    x = voice(4.0, rate)
    sf.write(tmp_path / "in.wav", np.repeat(x[:, None], channels, 1) * (1 if channels < 6 else [1, 1, 1, 0.2, 0.5, 0.5]), rate)
    _, ref, _ = lips(tmp_path / "ref.wav")
    speech, y, n = lips(tmp_path / "in.wav")
    assert y.shape == (n, ref.shape[1]) and np.isfinite(y).all() and abs(n - len(ref)) <= 1
    k = min(n, len(ref))
    assert pearson(y[:k, 0], ref[:k, 0]) > 0.8  # the same speech, the same mouth (8 kHz has no band above 4 kHz)
    w = speech_weight(speech, n)  # (Silero hears this buzz as no speech at all: the lips would rest)
    assert w.shape == (n,) and np.isfinite(w).all() and 0 <= w.min() <= w.max() <= 1


def test_a_fifth_of_a_second_of_speech(tmp_path, lips):
    sf.write(tmp_path / "short.wav", voice(0.2, 48000), 48000)
    speech, y, n = lips(tmp_path / "short.wav")
    assert n == 5 and y.shape == (5, 6) and np.isfinite(y).all()
    assert speech_weight(speech, n).shape == (5,)
