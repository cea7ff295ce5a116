"""Audio in: any format soundfile or ffmpeg reads -> mono float32 at 16 kHz (resampled with soxr)."""

from __future__ import annotations

import os

import numpy as np
import soundfile as sf
import soxr

from realtalk_cli.errors import RealtalkError
from realtalk_cli.fsutil import require_file
from realtalk_cli.media.ffmpeg import run_ffmpeg
from realtalk_cli.media.probe import probe

SAMPLE_RATE = 16000


def load_audio(path: str | os.PathLike, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Decode, downmix to mono, resample to `sr`; reject empty audio and NaN/inf samples."""
    path = require_file(path, "audio file")
    try:  # soundfile is exact for PCM/float WAV, FLAC, OGG and is fast
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception:
        data, rate = _decode_with_ffmpeg(path)
    if data.size == 0:
        raise RealtalkError("audio is empty (0 samples)", path)
    if not np.isfinite(data).all():
        raise RealtalkError("audio contains NaN or infinite samples", path)
    mono = data.mean(axis=1, dtype=np.float32)
    if rate != sr:
        mono = soxr.resample(mono, rate, sr).astype(np.float32)
    return mono


def _decode_with_ffmpeg(path) -> tuple[np.ndarray, int]:
    info = probe(path)
    if not info.has_audio:
        raise RealtalkError("file has no audio stream", path)
    channels = max(info.audio_channels, 1)
    proc = run_ffmpeg(["-i", str(path), "-map", "0:a:0", "-f", "f32le", "-acodec", "pcm_f32le",
                       "-ac", str(channels), "-"], "audio decode", path)
    data = np.frombuffer(proc.stdout, np.float32)
    return data[: len(data) // channels * channels].reshape(-1, channels), info.audio_rate


def save_wav(path: str | os.PathLike, audio: np.ndarray, sr: int = SAMPLE_RATE) -> None:
    """Float WAV keeps samples exact for the next step (mux, feature extraction)."""
    sf.write(os.fspath(path), np.asarray(audio, np.float32), sr, subtype="FLOAT")
