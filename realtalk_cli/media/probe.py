"""Probe a media file: streams and sizes from the ffmpeg binary's report (imageio-ffmpeg ships no ffprobe),
timing from the video's packet timestamps (PyAV demuxes them without decoding: cheap for any length).

Every frame index in realtalk counts from the first video frame: `video_start` is its timestamp, which is
not always 0 (B-frames, edit lists, an audio stream that starts earlier).
"""

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
    video_start: float = 0.0  # timestamp (s) of the first video frame: frame index 0
    video_end: float = 0.0    # when the last video frame ends (its timestamp plus its duration)
    video_last: float = 0.0   # timestamp of the last video frame
    video_frames: int = 0     # frames in the video stream
    audio_start: float = 0.0  # timestamp (s) of the first audio sample

    @property
    def video_duration(self) -> float:
        return self.video_end - self.video_start

    @property
    def n_frames(self) -> int:
        """Frames a read at the (average) source rate yields."""
        return self.frame_count()

    def frame_count(self, fps: float | None = None) -> int:
        """Frames a read at `fps` (None: the average source rate) yields: the video's duration on that grid."""
        return max(1, int(round(self.video_duration * (fps or self.fps)))) if self.has_video else 0


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

    # cover art in an audio file is a one-picture "video" stream: not a video
    video = next((m for m in re.finditer(r"Stream #0:\d+[^:]*: Video: (\w+).*?(\d{2,5})x(\d{2,5})(.*)", text)
                  if "(attached pic)" not in m[4]), None)
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
        if duration <= 0 or fps <= 0:
            raise RealtalkError("video stream has no duration or frame rate (truncated or damaged file?)", path)

    rate, channels = 0, 0
    if audio:
        rate = int(audio[2])
        layout = audio[3].strip()
        n = re.match(r"(\d+) channels", layout)
        channels = int(n[1]) if n else _CHANNELS.get(layout.split("(")[0], 2)

    timing = _timing(path, bool(video), bool(audio))
    if video:
        vfr = _variable_rate(timing.pop("pts", np.zeros(0, np.int64)))
    return MediaInfo(str(path), duration, fps, vfr, width, height, rotation, codec,
                     bool(video), bool(audio), rate, channels, **timing)


# the container may promise this much more video than its packets hold (rounding, a last frame's
# duration) before we call the file truncated
TRUNCATION_TOLERANCE = 0.25  # seconds


def _timing(path: Path, has_video: bool, has_audio: bool) -> dict:
    """Packet timestamps of the first video and audio streams; a video whose packets end well before
    the duration its header promises (a cut download, an interrupted copy) is an error."""
    import av

    out: dict = {}
    try:
        with av.open(str(path)) as container:
            if has_audio and container.streams.audio:
                a = container.streams.audio[0]
                if a.start_time is not None:
                    out["audio_start"] = float(a.start_time * a.time_base)
            stream = video_stream(container)
            if not has_video or stream is None:
                return out
            tb = stream.time_base
            pts, end = [], None
            try:
                for packet in container.demux(stream):
                    if packet.pts is None or packet.is_discard:  # flush packet, or cut by an edit list
                        continue
                    pts.append(packet.pts)
                    end = max(end or packet.pts, packet.pts + (packet.duration or 0))
            except av.FFmpegError:
                pass  # the packets that could be read still count; the check below names the damage
            promised = _promised_end(stream)
    except av.FFmpegError as e:
        raise RealtalkError(f"not a readable media file ({e})", path) from None
    if not pts:
        raise RealtalkError("video stream has no frames (truncated or damaged file?)", path)
    pts = np.sort(np.array(pts, np.int64))
    if end == pts[-1]:  # no packet durations: assume the last frame lasts like the one before it
        end += pts[-1] - pts[-2] if len(pts) > 1 else 0
    out.update(video_start=float(pts[0] * tb), video_end=float(end * tb), video_last=float(pts[-1] * tb),
               video_frames=len(pts), pts=pts)
    if promised is not None and out["video_end"] < promised - TRUNCATION_TOLERANCE:
        raise RealtalkError(f"truncated: its video frames end at {out['video_end']:.2f} s but its header promises "
                            f"{promised:.2f} s (re-download it, or re-mux what is left: ffmpeg -i IN -c copy OUT)", path)
    return out


def video_stream(container):
    """The first video stream that is not cover art, or None."""
    import av

    return next((s for s in container.streams.video if not s.disposition & av.stream.Disposition.attached_pic), None)


def _promised_end(stream) -> float | None:
    """When the video stream's header says it ends. Not the container's duration: its audio may
    legitimately last longer (Matroska often has no per-stream duration: then there is no check)."""
    if stream.duration and stream.start_time is not None:
        return float((stream.start_time + stream.duration) * stream.time_base)
    return None


def _variable_rate(pts: np.ndarray) -> bool:
    steps = np.diff(pts)
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
