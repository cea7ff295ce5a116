"""Audio in: any format soundfile or ffmpeg reads -> mono float32 at 16 kHz (resampled with soxr).

16 kHz mono is only what the audio features see; the dubbed output keeps the speech file's own rate
and channels (mux reads the file itself). In a file with video, sample 0 is at the first video frame.
"""

from __future__ import annotations

import os
import struct

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
    check_wav_complete(path)
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
    data = data[: len(data) // channels * channels].reshape(-1, channels)
    # sample 0 at the first video frame: drop audio from before it, or pad with silence if audio starts later
    shift = int(round(video_offset(info) * info.audio_rate))
    if shift > 0:
        data = data[shift:]
    elif shift < 0:
        data = np.concatenate([np.zeros((-shift, channels), np.float32), data])
    return data, info.audio_rate


def video_offset(info) -> float:
    """Seconds from the first audio sample to the first video frame (0 for a file without video)."""
    return info.video_start - info.audio_start if info.has_video and info.has_audio else 0.0


def check_wav_complete(path) -> None:
    """A WAV whose header promises more samples than the file holds (a cut copy) would otherwise
    decode silently short: soundfile and ffmpeg both stop at the end of the file without a word."""
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return  # not a plain RIFF WAV (RF64 and others keep sizes elsewhere)
        size, pos, byte_rate = os.fstat(f.fileno()).st_size, 12, 0
        while pos + 8 <= size:
            f.seek(pos)
            chunk, n = struct.unpack("<4sI", f.read(8))
            if chunk == b"fmt ":
                fmt = f.read(12)
                byte_rate = struct.unpack("<I", fmt[8:12])[0] if len(fmt) == 12 else 0
            elif chunk == b"data":
                have = size - pos - 8
                if n in (0, 0xFFFFFFFF) or n <= have:  # a streamed writer leaves the size 0 or unknown
                    return
                secs = (lambda b: f"{b / byte_rate:.2f} s" if byte_rate else f"{b} bytes")
                raise RealtalkError(f"truncated WAV: its header promises {secs(n)} of audio but the file holds "
                                    f"{secs(have)} (re-export or re-download it)", path)
            pos += 8 + n + (n & 1)  # chunks are padded to even sizes


def save_wav(path: str | os.PathLike, audio: np.ndarray, sr: int = SAMPLE_RATE) -> None:
    """Float WAV keeps samples exact for the next step (mux, feature extraction)."""
    sf.write(os.fspath(path), np.asarray(audio, np.float32), sr, subtype="FLOAT")
