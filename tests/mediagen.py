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



def gray_level(i: int) -> int:
    """Frame i of `make_numbered_video` is flat gray at this level: the picture says which frame it is."""
    return 16 + 4 * i


def frame_number(image: np.ndarray) -> int:
    return int(round((float(image.mean()) - 16) / 4))


TONE_ONSET = 0.5  # seconds into make_numbered_video's audio track


def make_numbered_video(path: Path, n: int = 40, fps: float = 25, video_start: float = 0.0,
                        audio_start: float | None = 0.0, audio_seconds: float = 2.0, vfr: bool = False,
                        size: tuple[int, int] = (48, 32)) -> Path:
    """H.264 with B-frames whose frame i shows `gray_level(i)`, for timing tests.

    `video_start` shifts the video stream through an mp4 edit list (-itsoffset); `audio_start` places an
    AAC track (None: no audio), silent for its first TONE_ONSET seconds, then a 440 Hz tone; `vfr` spaces
    frames 1/fps, then 2/fps, then 1/fps apart. The timestamps of frame i: `numbered_times(...)`.
    """
    from realtalk_cli.media import VideoWriter

    assert gray_level(n - 1) <= 240
    plain = path.with_name(path.stem + ".plain.mp4")
    with VideoWriter(plain, size[0], size[1], fps) as w:
        for i in range(n):
            w.write(np.full((size[1], size[0], 3), gray_level(i), np.uint8))
    retime(plain, path, fps, video_start, audio_start, audio_seconds, vfr)
    plain.unlink()
    return path


def retime(src: Path, path: Path, fps: float, video_start: float = 0.0, audio_start: float | None = 0.0,
           audio_seconds: float = 2.0, vfr: bool = False) -> Path:
    """Re-encode `src`'s video (keyframes every 8 frames, B-frames) with the timing of `make_numbered_video`."""
    # keyframes every 8 frames so range reads really seek; B-frames reorder (negative decode times)
    coded = path.with_name(path.stem + ".coded.mp4")
    vf = []
    if vfr:
        from realtalk_cli.media import probe

        n = probe(src).video_frames
        t = numbered_times(n, fps, 0.0, True)
        vf = ["-vf", "setpts='(" + "+".join(f"eq(N,{i})*{t[i]:.6f}" for i in range(n)) + ")/TB'"]
    ffmpeg("-i", str(src), "-map", "0:v", *vf, "-fps_mode", "passthrough", "-c:v", "libx264", "-preset", "veryfast",
           "-g", "8", "-bf", "3", "-pix_fmt", "yuv420p", str(coded))
    # then shift the stream by an edit list (stream copy keeps the offset exact) and add the audio
    args = ["-itsoffset", f"{video_start}", "-i", str(coded)]
    if audio_start is not None:
        args += ["-itsoffset", f"{audio_start}", "-f", "lavfi", "-i",
                 f"aevalsrc='0.5*sin(2*PI*440*t)*gte(t,{TONE_ONSET})':s=44100:d={audio_seconds}",
                 "-map", "0:v", "-map", "1:a", "-c:a", "aac"]
    ffmpeg(*args, "-c:v", "copy", str(path))
    coded.unlink()
    return path


def numbered_times(n: int, fps: float, video_start: float = 0.0, vfr: bool = False) -> np.ndarray:
    """Timestamps (s) of `make_numbered_video`'s frames."""
    steps = np.full(n, 1.0 / fps)
    if vfr:
        steps[n // 3: 2 * n // 3] = 2.0 / fps
    return video_start + np.concatenate([[0.0], np.cumsum(steps[:-1])])
