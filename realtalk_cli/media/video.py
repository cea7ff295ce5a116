"""Streamed video decode (PyAV, in process) and encode (an ffmpeg pipe): memory does not grow with video length.

One frame-time model for every read: output frame k at rate F shows the last decoded source frame whose
timestamp is at or before  video_start + (k + 0.5) / F  (the middle of its slot), where video_start is
the first video frame's timestamp. So index 0 is the first video frame whatever the stream's start
time, edit list or audio offset; a variable-rate source comes out evenly spaced (frames repeated or
dropped) so audio stays in sync; and a range read applies the same rule to the same timestamps as a
full read, so it yields exactly the same frames. docs/media.md says why PyAV and not ffmpeg pipes.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import tempfile

import av
import numpy as np

from realtalk_cli.errors import RealtalkError
from realtalk_cli.media.ffmpeg import ffmpeg_exe, last_line
from realtalk_cli.media.probe import MediaInfo, probe, video_stream


def _display_matrix(frame) -> np.ndarray | None:
    """The frame's 3x3 display matrix (9 int32, 16.16 fixed point and 2.30 for the last column), or None."""
    for sd in getattr(frame, "side_data", ()):
        if getattr(sd.type, "name", "") == "DISPLAYMATRIX":
            m = np.frombuffer(bytes(sd), np.int32)
            return m if len(m) == 9 else None
    return None


def orientation(m: np.ndarray | None):
    """The picture a player shows, as ffmpeg's autorotate makes it: a function of the stored [H, W, C]
    image, or None for upright. Four rotations, each mirrored or not (a front camera's video is only
    mirrored: its matrix reads as 180 degrees with a flip, which is a horizontal flip, not upside down)."""
    if m is None:
        return None
    a, b, c, d = (float(x) / 65536 for x in (m[0], m[1], m[3], m[4]))
    scale = np.hypot(a, c), np.hypot(b, d)
    if min(scale) == 0:
        return None
    theta = round(np.degrees(np.arctan2(b / scale[1], a / scale[0])))  # as fftools' get_rotation
    theta -= 360 * np.floor(theta / 360 + 0.9 / 360)
    if abs(theta - 90) < 1:
        return (lambda x: x.transpose(1, 0, 2)) if c > 0 else (lambda x: np.rot90(x, -1))  # cclock_flip / clock
    if abs(theta - 180) < 1:
        return lambda x: x[:: -1 if d < 0 else 1, :: -1 if a < 0 else 1]  # hflip and/or vflip
    if abs(theta - 270) < 1:
        return (lambda x: np.rot90(x, -1)[::-1]) if c < 0 else (lambda x: np.rot90(x, 1))  # clock_flip / cclock
    if abs(theta) < 1 and d < 0:
        return lambda x: x[::-1]  # vflip
    return None


class VideoReader:
    """Iterate RGB uint8 frames [H, W, 3] (read-only) at `fps` (None: the average source rate), rotation applied."""

    def __init__(self, path: str | os.PathLike, fps: float | None = 25.0, info: MediaInfo | None = None,
                 start: int = 0, stop: int | None = None):
        """`start`/`stop` select output frames [start, stop) by index at `fps`, seeking instead of decoding
        from the beginning; a range read yields exactly the frames a full read yields there."""
        self.info = info or probe(path)
        if not self.info.has_video:
            raise RealtalkError("file has no video stream", path)
        self.path = os.fspath(path)
        self.fps = float(fps) if fps else self.info.fps
        self.width, self.height = self.info.width, self.info.height
        self.start, self.stop = int(start), stop

    @property
    def n_frames(self) -> int:
        """Number of frames this read yields (within the requested range)."""
        total = self.info.frame_count(self.fps)
        return max(0, min(total, self.stop if self.stop is not None else total) - self.start)

    def __len__(self) -> int:
        return self.n_frames

    def _slot(self, k: int) -> float:
        # + 1 us: a frame exactly at a slot's middle (30 -> 25 fps has many) counts as at it, whatever float rounding says
        return self.info.video_start + (k + 0.5) / self.fps + 1e-6

    def __iter__(self):
        first = self.start
        last = first + self.n_frames
        if last <= first:
            return
        try:
            container = av.open(self.path)
        except (av.FFmpegError, OSError) as e:
            raise RealtalkError(f"cannot open video: {e}", self.path) from None
        with container:
            stream = video_stream(container)
            stream.thread_type = "AUTO"
            frames = self._decoded(container, stream, self._slot(first) if first > 0 else None)
            cur = next(frames, None)
            if cur is None:
                raise RealtalkError("video decode failed: no frames could be decoded", self.path)
            nxt = next(frames, None)
            image, shown = None, None
            for k in range(first, last):
                t = self._slot(k)
                while nxt is not None and nxt[0] <= t:
                    cur, nxt = nxt, next(frames, None)
                if shown is not cur:  # a repeated frame is converted once
                    image, shown = self._rgb(cur[1]), cur
                yield image

    def _decoded(self, container, stream, target: float | None):
        """(timestamp, frame) in display order, from the last frame at or before `target` (None: from the start)."""
        back = 0.0
        while target is not None and target - back > self.info.video_start:
            container.seek(int((target - back) / stream.time_base), stream=stream, backward=True)
            frames = self._frames(container, stream)
            head = next(frames, None)
            # a good landing is a keyframe at or before the target; seeking goes by decode time, and in files
            # without an index (MPEG-TS, FLV) it may land after the target or mid-GOP: then look further back
            if head is not None and head[0] <= target and head[1].key_frame:
                return itertools.chain([head], frames)
            back = max(1.0, 2 * back)
        if back:  # earlier tries decoded past the start: rewind to the file's start (a seek in the stream's
            # own time to its first frame can land on a later keyframe in an MPEG-TS; time 0 cannot)
            container.seek(min(0, int(self.info.video_start * av.time_base)), backward=True)
        return self._frames(container, stream)

    def _frames(self, container, stream):
        """Decode packet by packet; a damaged packet is skipped (as ffmpeg does), an early end is an error."""
        t = None
        try:
            for packet in container.demux(stream):
                try:
                    decoded = packet.decode()
                except av.InvalidDataError:
                    continue
                for frame in decoded:
                    t = frame.time if frame.time is not None else (t or 0.0) + 1.0 / self.info.fps
                    yield t, frame
        except av.FFmpegError as e:
            raise RealtalkError(f"video decode failed at {t or 0.0:.2f} s: {e}", self.path) from None
        if t is not None and t < self.info.video_last - 0.5 / self.info.fps:
            raise RealtalkError(f"video decode stopped at {t:.2f} s of {self.info.video_last:.2f} s "
                                "(damaged or truncated file?)", self.path)

    def _rgb(self, frame) -> np.ndarray:
        image = frame.to_ndarray(format="rgb24")
        if not hasattr(self, "_orient"):  # the stream's display matrix rides on every frame; read it once
            self._orient = orientation(_display_matrix(frame))
        if self._orient is not None:
            image = np.ascontiguousarray(self._orient(image))
        image.flags.writeable = False
        return image

    def close(self) -> None:
        """Nothing to release between reads (each iteration opens and closes the file); kept for callers."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class VideoWriter:
    """Encode RGB uint8 frames to H.264 yuv420p (CRF) through an ffmpeg pipe.

    yuv420p needs even sides: an odd width or height is padded by repeating the last column or row,
    so the picture is never scaled. Writes `path` directly; wrap it in `atomic_file` for safety.
    """

    def __init__(self, path: str | os.PathLike, width: int, height: int, fps: float = 25.0, crf: int = 18,
                 preset: str = "veryfast"):
        self.path = os.fspath(path)
        self.width, self.height, self.fps = int(width), int(height), float(fps)
        self.pad_w, self.pad_h = self.width % 2, self.height % 2
        self.frames = 0
        self._stderr = tempfile.TemporaryFile()
        cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
               "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{self.width + self.pad_w}x{self.height + self.pad_h}",
               "-r", f"{self.fps}", "-i", "-", "-an", "-c:v", "libx264", "-preset", preset, "-crf", str(crf),
               "-pix_fmt", "yuv420p", "-movflags", "+faststart", self.path]
        self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=self._stderr)

    def write(self, frame: np.ndarray) -> None:
        if frame.shape != (self.height, self.width, 3) or frame.dtype != np.uint8:
            raise ValueError(f"expected a uint8 frame of shape {(self.height, self.width, 3)}, got {frame.dtype} {frame.shape}")
        if self.pad_w or self.pad_h:
            frame = np.pad(frame, ((0, self.pad_h), (0, self.pad_w), (0, 0)), mode="edge")
        try:
            self._proc.stdin.write(np.ascontiguousarray(frame).tobytes())
        except BrokenPipeError:
            self._fail("encoder stopped")
        self.frames += 1

    def close(self) -> None:
        if self._proc is None:
            return
        try:
            self._proc.stdin.close()
        except BrokenPipeError:
            pass
        code = self._proc.wait()
        self._proc = None
        if code != 0:
            self._fail("encode failed")
        self._stderr.close()

    def abort(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            self._proc = None
        self._stderr.close()

    def _fail(self, what: str):
        self._stderr.seek(0)
        msg = last_line(self._stderr.read())
        self.abort()
        raise RealtalkError(f"{what}: {msg}", self.path)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc):
        if exc_type is None:
            self.close()
        else:
            self.abort()
