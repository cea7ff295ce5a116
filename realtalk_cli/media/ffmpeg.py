"""Locate and run the ffmpeg binary (imageio-ffmpeg's static build, or one on PATH)."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess

from realtalk_cli.errors import RealtalkError


@functools.lru_cache(maxsize=1)
def ffmpeg_exe() -> str:
    """REALTALK_FFMPEG wins, then imageio-ffmpeg's bundled binary, then `ffmpeg` on PATH."""
    exe = os.environ.get("REALTALK_FFMPEG")
    if exe:
        if not shutil.which(exe):
            raise RealtalkError("REALTALK_FFMPEG does not point to an executable", exe)
        return exe
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except Exception:
        exe = shutil.which("ffmpeg")
        if exe:
            return exe
    raise RealtalkError("ffmpeg not found: install imageio-ffmpeg (pip install imageio-ffmpeg) or put ffmpeg on PATH")


def run_ffmpeg(args: list[str], what: str, path=None) -> subprocess.CompletedProcess:
    """Run ffmpeg to completion; on failure raise a one-line error with ffmpeg's last message."""
    proc = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", *args],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if proc.returncode != 0:
        raise RealtalkError(f"{what} failed: {last_line(proc.stderr)}", path)
    return proc


def last_line(stderr: bytes | str) -> str:
    text = stderr.decode(errors="replace") if isinstance(stderr, bytes) else stderr
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else "ffmpeg gave no message"
