"""Media I/O: probe, streamed read/write, audio loading, mux; each bad input from issue 2."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from mediagen import ffmpeg, make_video, make_wav, sine
from realtalk_cli.errors import RealtalkError, UsageError
from realtalk_cli.media import VideoReader, VideoWriter, load_audio, mux, probe

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def test_probe_and_read_basic(tmp_path):
    v = make_video(tmp_path / "a.mp4", seconds=2, size="160x120", fps=25)
    info = probe(v)
    assert (info.width, info.height, info.fps, info.codec) == (160, 120, 25.0, "h264")
    assert info.has_video and info.has_audio and not info.vfr and info.rotation == 0
    assert abs(info.duration - 2.0) < 0.05
    frames = list(VideoReader(v))
    assert len(frames) == 50
    assert frames[0].shape == (120, 160, 3) and frames[0].dtype == np.uint8
    assert not np.array_equal(frames[0], frames[-1])  # testsrc2 moves


def test_30fps_resampled_to_25(tmp_path):
    v = make_video(tmp_path / "v30.mp4", seconds=2, fps=30)
    assert probe(v).fps == 30.0
    assert len(list(VideoReader(v, fps=25))) == 50
    assert len(list(VideoReader(v, fps=None))) == 60


def test_variable_frame_rate(tmp_path):
    v = tmp_path / "vfr.mp4"
    # frames 0-24 spaced 1/25 s, then 1/10 s apart: a variable-rate stream lasting ~3.5 s
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=96x64:rate=25:duration=2", "-vf",
           "setpts='if(lt(N,25),N/25,1+(N-25)/10)/TB'", "-fps_mode", "vfr", "-c:v", "libx264",
           "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(v))
    info = probe(v)
    assert info.vfr
    frames = list(VideoReader(v, fps=25))
    assert abs(len(frames) - round(info.duration * 25)) <= 1
    cfr = make_video(tmp_path / "cfr.mp4", seconds=1)
    assert not probe(cfr).vfr


def test_rotated_video(tmp_path):
    # left half red, right half blue; the phone says "turn 90 degrees" in the display matrix
    src = tmp_path / "plain.mp4"
    with VideoWriter(src, 64, 32, fps=25) as w:
        frame = np.zeros((32, 64, 3), np.uint8)
        frame[:, :32, 0] = 255
        frame[:, 32:, 2] = 255
        for _ in range(10):
            w.write(frame)
    rot = tmp_path / "rot.mp4"
    ffmpeg("-display_rotation", "90", "-i", str(src), "-c", "copy", str(rot))
    info = probe(rot)
    assert info.rotation in (90, 270) and (info.width, info.height) == (32, 64)
    f = next(iter(VideoReader(rot)))
    assert f.shape == (64, 32, 3)
    top, bottom = f[:16].reshape(-1, 3).mean(0), f[-16:].reshape(-1, 3).mean(0)
    # counter-clockwise display rotation by 90 (ffmpeg's convention) puts the left half at the bottom
    red_at_bottom = bottom[0] > 200 and top[2] > 200
    red_at_top = top[0] > 200 and bottom[2] > 200
    assert red_at_bottom if info.rotation == 270 else red_at_top


def test_writer_odd_size_roundtrip(tmp_path):
    out = tmp_path / "odd.mp4"
    rng = np.random.default_rng(0)
    base = (rng.random((1, 1, 3)) * 255).astype(np.uint8)
    frames = [np.broadcast_to(base, (121, 161, 3)).copy() for _ in range(5)]
    with VideoWriter(out, 161, 121) as w:
        for f in frames:
            w.write(f)
    back = list(VideoReader(out))
    assert len(back) == 5
    # padded by one edge-replicated row and column, never scaled
    assert back[0].shape == (122, 162, 3)
    assert np.abs(back[0][:121, :161].astype(int) - frames[0].astype(int)).mean() < 3


def test_writer_rejects_wrong_frame(tmp_path):
    w = VideoWriter(tmp_path / "x.mp4", 64, 48)
    with pytest.raises(ValueError):
        w.write(np.zeros((10, 10, 3), np.uint8))
    w.abort()


@pytest.mark.parametrize("subtype,channels,rate", [
    ("PCM_U8", 1, 8000), ("PCM_16", 1, 44100), ("PCM_24", 2, 48000), ("PCM_32", 1, 22050),
    ("FLOAT", 6, 16000), ("PCM_16", 2, 16000),
])
def test_load_wav_variants(tmp_path, subtype, channels, rate):
    ext = "wav"
    p = make_wav(tmp_path / f"a.{ext}", seconds=1.0, rate=rate, channels=channels, subtype=subtype)
    a = load_audio(p)
    assert a.dtype == np.float32 and a.ndim == 1
    assert abs(len(a) - 16000) <= 1
    ref = sine(1.0, 16000)[:, 0]
    n = min(len(a), len(ref)) - 200
    assert np.corrcoef(a[100:n], ref[100:n])[0, 1] > 0.99


@pytest.mark.parametrize("ext,codec", [("mp3", "libmp3lame"), ("m4a", "aac"), ("flac", "flac")])
def test_load_compressed(tmp_path, ext, codec):
    p = tmp_path / f"a.{ext}"
    args = ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100:duration=1", "-ac", "2"]
    if codec == "libmp3lame":
        pytest.importorskip("soundfile")
    try:
        ffmpeg(*args, "-c:a", codec, str(p))
    except subprocess.CalledProcessError:
        pytest.skip(f"this ffmpeg build has no {codec} encoder")
    a = load_audio(p)
    assert abs(len(a) / 16000 - 1.0) < 0.1  # mp3/aac add encoder delay and padding
    spectrum = np.abs(np.fft.rfft(a[2000:14000]))
    assert abs(np.argmax(spectrum) * 16000 / 12000 - 440) < 5


def test_load_audio_from_video(tmp_path):
    v = make_video(tmp_path / "v.mp4", seconds=1)
    assert abs(len(load_audio(v)) / 16000 - 1.0) < 0.1


def test_audio_errors(tmp_path):
    with pytest.raises(RealtalkError, match="not found"):
        load_audio(tmp_path / "missing.wav")
    empty = tmp_path / "empty.wav"
    sf.write(str(empty), np.zeros((0, 1), np.float32), 16000)
    with pytest.raises(RealtalkError, match="empty"):
        load_audio(empty)
    nan = tmp_path / "nan.wav"
    x = sine(0.5, 16000)
    x[100] = np.nan
    sf.write(str(nan), x, 16000, subtype="FLOAT")
    with pytest.raises(RealtalkError, match="NaN"):
        load_audio(nan)
    silent_video = make_video(tmp_path / "noaudio.mp4", seconds=1, audio=False)
    with pytest.raises(RealtalkError, match="no audio stream"):
        load_audio(silent_video)
    text = tmp_path / "notes.mp3"
    text.write_text("this is not audio\n")
    with pytest.raises(RealtalkError, match="notes.mp3"):
        load_audio(text)


def test_video_errors(tmp_path):
    with pytest.raises(RealtalkError, match="not found"):
        probe(tmp_path / "missing.mp4")
    text = tmp_path / "fake.mp4"
    text.write_text("hello, I am a text file\n")
    with pytest.raises(RealtalkError, match="not a readable media file"):
        probe(text)
    good = make_video(tmp_path / "good.mp4", seconds=2)
    truncated = tmp_path / "trunc.mp4"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(RealtalkError, match="trunc.mp4"):
        list(VideoReader(truncated))
    audio_only = make_wav(tmp_path / "voice.wav")
    with pytest.raises(RealtalkError, match="no video stream"):
        VideoReader(audio_only)


def test_mux_trims_and_pads(tmp_path):
    v = make_video(tmp_path / "v.mp4", seconds=2, audio=False)
    speech = sine(1.0, 16000)[:, 0]
    out = mux(v, speech, tmp_path / "out.mp4", duration=2.0)
    info = probe(out)
    assert info.has_audio and abs(info.duration - 2.0) < 0.06
    a = load_audio(out)
    assert abs(len(a) / 16000 - 2.0) < 0.06
    assert np.abs(a[20000:30000]).max() < 1e-3  # padded with silence
    n = 15000
    assert np.corrcoef(a[1000:n], speech[1000:n])[0, 1] > 0.99  # aac priming delay is compensated
    short = mux(v, speech, tmp_path / "short.mp4", duration=0.5)
    assert abs(probe(short).duration - 0.5) < 0.06
    assert [p.name for p in tmp_path.iterdir() if ".tmp" in p.name] == []


def test_mux_refuses_bad_outputs(tmp_path):
    v = make_video(tmp_path / "v.mp4", seconds=1)
    with pytest.raises(UsageError, match="does not exist"):
        mux(v, sine(1, 16000)[:, 0], tmp_path / "nodir" / "out.mp4")
    with pytest.raises(UsageError, match="overwrite an input"):
        mux(v, sine(1, 16000)[:, 0], v)
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(RealtalkError):
        mux(v, tmp_path / "missing.wav", tmp_path / "o.mp4")
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no partial output left behind


_PEAK = """
import resource, sys
from realtalk_cli.media import VideoReader
n = sum(1 for _ in VideoReader(sys.argv[1]))
print(n, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


def _peak_kb(path):
    out = subprocess.run([sys.executable, "-c", _PEAK, str(path)], check=True, capture_output=True, text=True).stdout
    n, self_kb, child_kb = map(int, out.split())
    return n, self_kb, child_kb


@pytest.mark.slow
def test_reader_memory_flat(tmp_path):
    """A 2-minute 720p clip must stream in the same memory as a 5-second one."""
    gen = ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-an"]
    src = "testsrc=size=1280x720:rate=25:duration={}"
    short, long_ = tmp_path / "short.mp4", tmp_path / "long.mp4"
    ffmpeg("-f", "lavfi", "-i", src.format(5), *gen, str(short))
    ffmpeg("-f", "lavfi", "-i", src.format(120), *gen, str(long_))
    n_s, self_s, child_s = _peak_kb(short)
    n_l, self_l, child_l = _peak_kb(long_)
    assert (n_s, n_l) == (125, 3000)
    assert self_l - self_s < 8 * 1024, (self_s, self_l)     # python side: within 8 MB
    # ffmpeg's own RSS wanders by several MB between runs (96-104 MB for 5-120 s clips here) but does
    # not grow with length; 16 MB still catches a decoder that buffers the video (3000 frames = 8 GB)
    assert child_l - child_s < 16 * 1024, (child_s, child_l)


@pytest.mark.shared
@pytest.mark.skipif(not (SHARED / "video").is_dir(), reason="../shared/data not present")
def test_real_clip_roundtrip(tmp_path):
    src = SHARED / "video" / "dfrf_cnn2_25fps.mp4"
    reader = VideoReader(src)
    out = tmp_path / "re.mp4"
    with VideoWriter(out, reader.width, reader.height, fps=25) as w:
        for f in reader:
            w.write(f)
    assert w.frames == 1779
    info = probe(out)
    assert abs(info.duration - probe(src).duration) <= 1 / 25 + 1e-6
    assert sum(1 for _ in VideoReader(out)) == 1779
