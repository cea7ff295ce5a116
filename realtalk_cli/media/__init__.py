"""Media I/O used by every stage: probe, streamed video read/write, audio load, mux."""

from realtalk_cli.media.audio import SAMPLE_RATE, load_audio, save_wav
from realtalk_cli.media.ffmpeg import ffmpeg_exe
from realtalk_cli.media.mux import VIDEO_SUFFIXES, check_video_name, mux
from realtalk_cli.media.probe import MediaInfo, probe
from realtalk_cli.media.video import VideoReader, VideoWriter

__all__ = ["SAMPLE_RATE", "VIDEO_SUFFIXES", "check_video_name", "MediaInfo", "VideoReader", "VideoWriter", "ffmpeg_exe", "load_audio", "mux", "probe", "save_wav"]
