"""Generate test media with ffmpeg's lavfi sources and numpy (no external files needed)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import soundfile as sf

from realtalk_cli.media import ffmpeg_exe
from realtalk_cli.media.synthetic import astronaut_frames, make_face_video  # noqa: F401  (re-exported for tests)


def ffmpeg(*args: str) -> None:
    subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y", *args], check=True)


def make_video(path: Path, seconds: float = 2.0, size: str = "160x120", fps: float = 25, audio: bool = True,
               source: str = "testsrc2", extra: tuple[str, ...] = ()) -> Path:
    args = ["-f", "lavfi", "-i", f"{source}=size={size}:rate={fps}:duration={seconds}"]
    if audio:
        args += ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=44100:duration={seconds}"]
    args += ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]
    args += ["-c:a", "aac"] if audio else ["-an"]
    ffmpeg(*args, *extra, str(path))
    return path


def sine(seconds: float, rate: int, freq: float = 440.0, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    x = 0.5 * np.sin(2 * np.pi * freq * t).astype(np.float32)
    return np.repeat(x[:, None], channels, axis=1)


def make_wav(path: Path, seconds: float = 1.0, rate: int = 44100, channels: int = 1, subtype: str = "PCM_16") -> Path:
    sf.write(str(path), sine(seconds, rate, channels=channels), rate, subtype=subtype)
    return path

