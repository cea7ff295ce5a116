"""Probe a media file with the ffmpeg binary alone (imageio-ffmpeg ships no ffprobe)."""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from realtalk_cli.errors import RealtalkError
from realtalk_cli.fsutil import require_file
from realtalk_cli.media.ffmpeg import ffmpeg_exe

_CHANNELS = {"mono": 1, "stereo": 2, "2.1": 3, "quad": 4, "5.0": 5, "5.1": 6, "6.1": 7, "7.1": 8}


@dataclass(frozen=True)
class MediaInfo:
    path: str
    duration: float          # seconds (container duration)
    fps: float               # average frame rate of the first video stream; 0 without video
    vfr: bool                # packet durations vary: frames are not evenly spaced
    width: int               # as displayed, i.e. after rotation
    height: int
    rotation: int            # degrees the player rotates the stored frames (0, 90, 180, 270)
    codec: str
    has_video: bool
    has_audio: bool
    audio_rate: int
    audio_channels: int

    @property
    def n_frames(self) -> int:
        """Frames at the source rate, estimated from duration and average fps."""
        return int(round(self.duration * self.fps)) if self.has_video else 0


def probe(path: str | os.PathLike) -> MediaInfo:
    path = require_file(path, "media file")
    proc = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(path)],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    text = proc.stderr.decode(errors="replace")
    if "Input #0" not in text:  # ffmpeg could not open it at all
        raise RealtalkError(f"not a readable media file ({_reason(text)})", path)

    duration = 0.0
    m = re.search(r"Duration: (\d+):(\d+):(\d+(?:\.\d+)?)", text)
    if m:
        duration = int(m[1]) * 3600 + int(m[2]) * 60 + float(m[3])

    video = re.search(r"Stream #0:\d+[^:]*: Video: (\w+).*?(\d{2,5})x(\d{2,5})(.*)", text)
    audio = re.search(r"Stream #0:\d+[^:]*: Audio: (\w+).*?(\d+) Hz, ([^,]+)", text)
    if not video and not audio:
        raise RealtalkError("file has neither a video nor an audio stream", path)

    fps, width, height, rotation, codec, vfr = 0.0, 0, 0, 0, "", False
    if video:
        codec, width, height = video[1], int(video[2]), int(video[3])
        rate = re.search(r"([\d.]+)(k?) fps", video[4]) or re.search(r"([\d.]+)(k?) tbr", video[4])
        if rate:
            fps = float(rate[1]) * (1000 if rate[2] else 1)
        rot = re.search(r"rotation of (-?[\d.]+) degrees", text)
        if rot:
            # the display matrix gives the counter-clockwise angle; players turn the picture by its negative
            rotation = int(round(-float(rot[1]))) % 360
        if rotation in (90, 270):
            width, height = height, width
        vfr = _variable_frame_rate(path)
        if duration <= 0 or fps <= 0:
            raise RealtalkError("video stream has no duration or frame rate (truncated or damaged file?)", path)

    rate, channels = 0, 0
    if audio:
        rate = int(audio[2])
        layout = audio[3].strip()
        n = re.match(r"(\d+) channels", layout)
        channels = int(n[1]) if n else _CHANNELS.get(layout.split("(")[0], 2)

    return MediaInfo(str(path), duration, fps, vfr, width, height, rotation, codec,
                     bool(video), bool(audio), rate, channels)


def _variable_frame_rate(path: Path, packets: int = 300) -> bool:
    """Look at the first packets' timestamps (stream copy, no decoding: cheap for any length)."""
    proc = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-i", str(path),
                           "-map", "0:v:0", "-c", "copy", "-frames:v", str(packets), "-f", "framecrc", "-"],
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    pts = []
    for line in proc.stdout.decode(errors="replace").splitlines():
        if line.startswith("#"):
            continue
        parts = [p.strip() for p in line.split(",")]
        if len(parts) >= 4 and parts[2].lstrip("-").isdigit():
            pts.append(int(parts[2]))
    if len(pts) < 3:
        return False
    steps = np.diff(np.sort(np.array(pts, dtype=np.int64)))
    steps = steps[steps > 0]
    if len(steps) < 2:
        return False
    # rounding jitter (30 fps in a 1 ms timebase) and a rare dropped frame still count as constant rate
    med = np.median(steps)
    off = np.abs(steps - med) > max(2, 0.1 * med)
    return bool(off.mean() > 0.05)


def _reason(text: str) -> str:
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line and not line.startswith(("At least one output", "Use -h")):
            return line.split(": ", 1)[-1] if line.startswith("[") else line
    return "ffmpeg gave no reason"
