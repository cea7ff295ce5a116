"""Replace a video's audio track, trimmed or padded exactly to a duration, written atomically."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from realtalk_cli.errors import RealtalkError, UsageError
from realtalk_cli.fsutil import atomic_file, check_output_path
from realtalk_cli.media.audio import SAMPLE_RATE, check_wav_complete, save_wav, video_offset
from realtalk_cli.media.ffmpeg import run_ffmpeg
from realtalk_cli.media.probe import probe

AAC_MAX_RATE = 96000      # the highest rate AAC (and ffmpeg's encoder) takes; above it we resample to 48 kHz
AAC_MAX_CHANNELS = 8
AAC_KBPS_PER_CHANNEL = 64  # 128k for stereo; no less than 96k for mono


VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv")  # containers that take H.264 video with AAC audio


def check_video_name(path: str | os.PathLike, suffixes: tuple[str, ...] = VIDEO_SUFFIXES) -> None:
    """An output name a video can be written to: one of these extensions (never .wav, never none)."""
    suffix = Path(path).suffix.lower()
    if suffix not in suffixes:
        raise UsageError(f"a video output needs a name ending in {', '.join(suffixes)} (got {suffix or 'no extension'})", path)


def mux(video: str | os.PathLike, audio: str | os.PathLike | np.ndarray, out: str | os.PathLike,
        duration: float | None = None, sr: int = SAMPLE_RATE) -> Path:
    """Copy the video stream, encode `audio` (a file, or mono samples at `sr`) as AAC, cut both to `duration`.

    The audio keeps its own sample rate and channels. Audio shorter than `duration` is padded with
    silence, longer is cut; an audio file that also has video starts at its first video frame, as
    load_audio reads it. The video stream is copied, never re-encoded. The output appears only when complete.
    """
    inputs = [video] if isinstance(audio, np.ndarray) else [video, audio]
    out = check_output_path(out, inputs)
    with tempfile.TemporaryDirectory() as tmp:
        if isinstance(audio, np.ndarray):
            wav = Path(tmp) / "audio.wav"
            save_wav(wav, audio, sr)
            audio = wav
        info = probe(audio)
        if not info.has_audio:
            raise RealtalkError("file has no audio stream", audio)
        check_wav_complete(audio)
        rate = info.audio_rate if info.audio_rate <= AAC_MAX_RATE else 48000
        channels = min(max(info.audio_channels, 1), AAC_MAX_CHANNELS)
        kbps = max(96, AAC_KBPS_PER_CHANNEL * channels)
        # timestamps from the audio's own first sample, then aligned to its file's first video frame
        filters = ["asetpts=PTS-STARTPTS"]
        offset = video_offset(info)
        if offset > 0:
            filters += [f"atrim=start={offset:.6f}", "asetpts=PTS-STARTPTS"]
        elif offset < 0:
            filters += [f"adelay=delays={int(round(-offset * info.audio_rate))}S:all=1"]
        if duration is not None:
            filters += [f"apad=whole_dur={duration:.6f}"]
        args = ["-i", os.fspath(video), "-i", os.fspath(audio), "-map", "0:v:0", "-map", "1:a:0",
                "-c:v", "copy", "-af", ",".join(filters), "-c:a", "aac", "-b:a", f"{kbps}k",
                "-ar", str(rate), "-ac", str(channels)]
        if duration is not None:
            args += ["-t", f"{duration:.6f}"]
        with atomic_file(out) as tmp_out:
            run_ffmpeg(["-y", *args, "-movflags", "+faststart", str(tmp_out)], "mux", out)
    return out
