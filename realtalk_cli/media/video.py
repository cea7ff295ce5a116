"""Streamed video decode and encode through ffmpeg pipes: memory does not grow with video length."""

from __future__ import annotations

import os
import subprocess
import tempfile

import numpy as np

from realtalk_cli.errors import RealtalkError
from realtalk_cli.media.ffmpeg import ffmpeg_exe, last_line
from realtalk_cli.media.probe import MediaInfo, probe


class VideoReader:
    """Iterate RGB uint8 frames [H, W, 3] at `fps` (None keeps the source rate), rotation applied.

    ffmpeg resamples time with its fps filter (duplicating or dropping frames), so a variable-rate
    source comes out evenly spaced and audio stays in sync: frame i is at time i / fps.
    """

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
        self._proc: subprocess.Popen | None = None
        self._stderr = None

    @property
    def n_frames(self) -> int:
        """Expected number of frames at the output rate (within the requested range)."""
        total = int(round(self.info.duration * self.fps))
        return max(0, min(total, self.stop if self.stop is not None else total) - self.start)

    def __len__(self) -> int:
        return self.n_frames

    def __iter__(self):
        self.close()
        # stderr goes to a file: a pipe nobody reads could fill up and stall ffmpeg
        self._stderr = tempfile.TemporaryFile()
        # always resample time: a source with dropped frames or a variable rate still gives frame i at i/fps
        vf, seek = f"fps={self.fps}", []
        if self.start > 0 or self.stop is not None:
            # keep absolute timestamps (from zero) so the fps grid is the same as in a full read, seek to
            # a little before the range, and cut by pts: the fps filter's timebase is 1/fps, so pts = index
            end = "" if self.stop is None else f":end_pts={int(self.stop)}"
            vf += f",trim=start_pts={self.start}{end}"
            seek = ["-ss", f"{max(0.0, self.start / self.fps - 2.0):.6f}", "-copyts", "-start_at_zero"]
        cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", *seek, "-i", self.path,
               "-map", "0:v:0", "-vf", vf, "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
        self._proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self._stderr, bufsize=0)
        nbytes = self.width * self.height * 3
        count = 0
        try:
            while True:
                buf = _read_exact(self._proc.stdout, nbytes)
                if buf is None:
                    break
                count += 1
                yield np.frombuffer(buf, np.uint8).reshape(self.height, self.width, 3)
            code = self._proc.wait()
            if code != 0 or (count == 0 and self.n_frames > 0):
                self._stderr.seek(0)
                msg = last_line(self._stderr.read()) if code != 0 else "no frames could be decoded"
                raise RealtalkError(f"video decode failed after {count} frames: {msg}", self.path)
        finally:
            self.close()

    def close(self) -> None:
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.kill()
            self._proc.stdout.close()
            self._proc.wait()
            self._proc = None
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _read_exact(stream, n: int) -> bytes | None:
    """Read exactly n bytes, or None at a clean end of stream (a partial last frame is dropped)."""
    chunks, got = [], 0
    while got < n:
        chunk = stream.read(n - got)
        if not chunk:
            return None
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


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
