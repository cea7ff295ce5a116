"""Malformed and edge-case inputs for tests/test_fuzz.py, made from one generated face clip.

Every maker writes one file and returns its path; nothing here needs files outside the test's folders.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import soundfile as sf

from mediagen import ffmpeg, make_face_video, make_video, retime, sine


def face_clip(path: Path, seconds: float = 1.0, fps: float = 25, size=(192, 160)) -> Path:
    """The astronaut's moving face with a speech-like audio track (H.264 + AAC)."""
    return make_face_video(path, seconds=seconds, fps=fps, size=size)


def tiny_model(root: Path) -> tuple[Path, Path, Path]:
    """A 2 s face clip, preprocessed and used to train a2e and e2f (tiny configs, two steps each), all
    in this process: (clip, dataset dir, model dir). The weights are barely trained; the pipeline is real."""
    from realtalk_cli.cli import main

    face = face_clip(root / "face.mp4", seconds=2.0)
    runs = [["preprocess", face, "-o", root / "data", "--crop-size", 64]]
    runs += [["train", "--stage", s, "--data", root / "data", "--out", root / "model" / s, "--config", f"{s}_tiny",
              "--steps", 2, "--val-every", 0, "--ckpt-every", 0] for s in ("a2e", "e2f")]
    for args in runs:
        try:
            main(["--quiet", *map(str, args)])
        except SystemExit as e:
            assert e.code == 0, f"realtalk {' '.join(map(str, args))} failed"
    return face, root / "data", root / "model"


def reencode(src: Path, path: Path, *args: str, pix_fmt: str = "yuv420p") -> Path:
    """`src` through ffmpeg with extra output options (frame rate, size, streams, ...); odd sizes need yuv444p."""
    ffmpeg("-i", str(src), *args, "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", pix_fmt, str(path))
    return path


def rotated(src: Path, path: Path, degrees: int) -> Path:
    """A phone video: the stored frames plus a display matrix that turns them by `degrees`."""
    ffmpeg("-display_rotation", str(degrees), "-i", str(src), "-c", "copy", str(path))
    return path


def faststart(src: Path, path: Path) -> Path:
    ffmpeg("-i", str(src), "-c", "copy", "-movflags", "+faststart", str(path))
    return path


def truncated(src: Path, path: Path, keep: float = 0.5) -> Path:
    """The first `keep` of `src`'s bytes: a cut download."""
    data = src.read_bytes()
    path.write_bytes(data[:int(len(data) * keep)])
    return path


def vfr(src: Path, path: Path, fps: float = 30) -> Path:
    """Variable frame rate: frames 1/fps, then 2/fps, then 1/fps apart; audio from 0 s."""
    return retime(src, path, fps=fps, vfr=True, audio_seconds=3.0)


def speech(path: Path, seconds: float = 1.0, rate: int = 16000, channels: int = 1, subtype: str = "PCM_16") -> Path:
    """A syllable-rate buzz, as a WAV (or any format soundfile writes, by suffix)."""
    x = sine(seconds, rate, 180.0, channels) * (np.sin(2 * np.pi * 3 * np.arange(int(seconds * rate)) / rate) > 0)[:, None]
    sf.write(str(path), x.astype(np.float32), rate, subtype=subtype)
    return path


def lying_wav(path: Path, seconds: float = 1.0, promised: float = 4.0) -> Path:
    """A 16-bit mono WAV whose header promises `promised` seconds but which holds `seconds`."""
    speech(path, seconds)
    data = bytearray(path.read_bytes())
    at = data.index(b"data")
    struct.pack_into("<I", data, at + 4, int(promised * 16000) * 2)
    struct.pack_into("<I", data, 4, len(data) - 8 + int((promised - seconds) * 16000) * 2)
    path.write_bytes(bytes(data))
    return path


def audio_only_mp4(path: Path, seconds: float = 1.0) -> Path:
    ffmpeg("-f", "lavfi", "-i", f"sine=frequency=220:sample_rate=16000:duration={seconds}", "-c:a", "aac", str(path))
    return path


def text(path: Path, content: str = "this is not a media file\n") -> Path:
    path.write_text(content)
    return path


def empty(path: Path) -> Path:
    path.write_bytes(b"")
    return path


__all__ = ["face_clip", "tiny_model", "reencode", "rotated", "faststart", "truncated", "vfr", "speech", "lying_wav",
           "audio_only_mp4", "text", "empty", "make_video"]
