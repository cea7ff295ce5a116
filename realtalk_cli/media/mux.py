"""Replace a video's audio track, trimmed or padded exactly to a duration, written atomically."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from realtalk_cli.fsutil import atomic_file, check_output_path
from realtalk_cli.media.audio import SAMPLE_RATE, save_wav
from realtalk_cli.media.ffmpeg import run_ffmpeg


def mux(video: str | os.PathLike, audio: str | os.PathLike | np.ndarray, out: str | os.PathLike,
        duration: float | None = None, sr: int = SAMPLE_RATE, audio_bitrate: str = "192k") -> Path:
    """Copy the video stream, encode `audio` (a path or 16 kHz samples) as AAC, cut both to `duration`.

    Audio shorter than `duration` is padded with silence, longer is cut; the video stream is copied,
    never re-encoded. The output appears only when complete.
    """
    inputs = [video] if isinstance(audio, np.ndarray) else [video, audio]
    out = check_output_path(out, inputs)
    with tempfile.TemporaryDirectory() as tmp:
        if isinstance(audio, np.ndarray):
            wav = Path(tmp) / "audio.wav"
            save_wav(wav, audio, sr)
            audio = wav
        args = ["-i", os.fspath(video), "-i", os.fspath(audio), "-map", "0:v:0", "-map", "1:a:0",
                "-c:v", "copy", "-c:a", "aac", "-b:a", audio_bitrate]
        if duration is not None:
            args += ["-af", f"apad=whole_dur={duration:.6f}", "-t", f"{duration:.6f}"]
        with atomic_file(out) as tmp_out:
            run_ffmpeg(["-y", *args, "-movflags", "+faststart", str(tmp_out)], "mux", out)
    return out
