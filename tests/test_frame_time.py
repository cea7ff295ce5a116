"""One frame-time model for every read (issue 12): index 0 is the first video frame whatever the stream's
start time, edit list or audio offset; range reads equal full reads; the output keeps the speech's audio;
truncated inputs are refused. Dubbing such a clip: tests/test_dub.py::test_dub_shifted_vfr_video."""

import subprocess

import av
import numpy as np
import pytest
import soundfile as sf

from mediagen import TONE_ONSET, ffmpeg, frame_number, make_numbered_video, make_video, make_wav, numbered_times, sine
from conftest import SHARED_DATA
from realtalk_cli.errors import RealtalkError
from realtalk_cli.media import VideoReader, load_audio, mux, probe

N = 40  # frames in each generated clip
CASES = {
    "bframes": dict(),
    "video_after_audio": dict(video_start=0.3),           # an edit list; audio starts 0.3 s before the video
    "audio_after_video": dict(audio_start=0.25),
    "vfr_shifted": dict(vfr=True, video_start=0.12, audio_start=0.05),
    "30fps_no_audio": dict(fps=30, video_start=0.05, audio_start=None),
}


def expected_frames(times: np.ndarray, fps: float) -> list[int]:
    """The model: output frame k shows the last source frame at or before start + (k + 0.5) / fps
    (a frame 1 us after still counts: ties are common and must not depend on float rounding)."""
    end = times[-1] + (times[-1] - times[-2])
    n = int(round((end - times[0]) * fps))
    return [int(np.searchsorted(times, times[0] + (k + 0.5) / fps + 1e-6, side="right")) - 1 for k in range(n)]


@pytest.fixture(scope="module", params=list(CASES))
def clip(request, tmp_path_factory):
    kw = CASES[request.param]
    path = make_numbered_video(tmp_path_factory.mktemp(request.param) / "v.mp4", n=N, **kw)
    times = numbered_times(N, kw.get("fps", 25), kw.get("video_start", 0.0), kw.get("vfr", False))
    return path, kw, times


@pytest.mark.parametrize("fps", [25, None, 29.97])
def test_frame_time_model(clip, fps):
    path, kw, times = clip
    info = probe(path)
    assert info.video_start == pytest.approx(times[0], abs=1e-4) and info.video_frames == N
    assert info.vfr == kw.get("vfr", False)
    rate = fps or info.fps
    full = list(VideoReader(path, fps, info=info))
    assert [frame_number(f) for f in full] == expected_frames(times, rate)  # index 0 is the first video frame
    assert len(full) == VideoReader(path, fps, info=info).n_frames == info.frame_count(fps)
    assert abs(len(full) / rate - (info.video_end - info.video_start)) <= 0.5 / rate
    for a, b in [(0, 1), (1, 9), (13, 30), (len(full) - 1, len(full)), (len(full) - 3, len(full) + 4)]:
        part = list(VideoReader(path, fps, info=info, start=a, stop=b))
        assert len(part) == len(full[a:b]), (a, b)
        assert all(np.array_equal(x, y) for x, y in zip(part, full[a:b])), (a, b)


@pytest.mark.parametrize("ext", ["ts", "flv", "mkv", "avi"])
def test_containers_without_an_index(tmp_path, ext):
    """MPEG-TS starts its clock at ~1.4 s and has no index: a seek may land after the target or
    mid-GOP; FLV and AVI differ again. Every range still equals the full read."""
    codec = ("-c:v", "mpeg4") if ext == "avi" else ("-bf", "3")
    v = make_video(tmp_path / f"v.{ext}", seconds=1.2, size="64x48", fps=30, extra=("-g", "8", *codec))
    info = probe(v)
    full = list(VideoReader(v, 25, info=info))
    assert len(full) == info.frame_count(25) and abs(len(full) / 25 - info.video_duration) <= 0.02
    for a in range(0, len(full), 4):
        part = list(VideoReader(v, 25, info=info, start=a, stop=a + 5))
        assert len(part) == len(full[a:a + 5]) and all(np.array_equal(x, y) for x, y in zip(part, full[a:a + 5])), a


def test_audio_sample_zero_is_the_first_video_frame(clip):
    path, kw, times = clip
    if kw.get("audio_start", 0.0) is None:
        pytest.skip("no audio track")
    audio = load_audio(path)
    loud = np.convolve(np.abs(audio), np.ones(80) / 80, "same") > 0.1
    onset = np.argmax(loud) / 16000
    assert onset == pytest.approx(kw.get("audio_start", 0.0) + TONE_ONSET - times[0], abs=0.01)


def test_mux_keeps_speech_rate_and_channels(tmp_path):
    """48 kHz stereo 24-bit speech stays 48 kHz stereo in the output, trimmed/padded to the duration."""
    v = make_video(tmp_path / "v.mp4", seconds=2, audio=False)
    rate, seconds = 48000, 1.5
    left, right = sine(seconds, rate, 440.0)[:, 0], sine(seconds, rate, 660.0)[:, 0] * 0.7
    speech = tmp_path / "speech.wav"
    sf.write(str(speech), np.stack([left, right], 1), rate, subtype="PCM_24")
    out = mux(v, speech, tmp_path / "out.mp4", duration=2.0)
    info = probe(out)
    assert (info.audio_rate, info.audio_channels) == (rate, 2)
    with av.open(str(out)) as c:
        got = np.concatenate([f.to_ndarray() for f in c.decode(audio=0)], axis=1)  # planar float [2, n]
    assert abs(got.shape[1] / rate - 2.0) < 0.03
    n = int(seconds * rate) - 2000
    for ch, want in enumerate((left, right)):
        assert np.corrcoef(got[ch, 1000:n], want[1000:n])[0, 1] > 0.99
    assert np.abs(got[:, int(1.6 * rate):]).max() < 1e-2  # padded with silence


def test_cover_art_is_not_video(tmp_path):
    """An mp3 with a cover picture (a one-frame "video" stream) is speech like any other."""
    cover = tmp_path / "cover.png"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=64x64", "-frames:v", "1", str(cover))
    song = tmp_path / "song.mp3"
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:duration=1", "-i", str(cover), "-map", "0", "-map", "1",
           "-c:a", "libmp3lame", "-c:v", "png", "-disposition:v", "attached_pic", str(song))
    info = probe(song)
    assert info.has_audio and not info.has_video
    out = mux(make_video(tmp_path / "v.mp4", seconds=1, audio=False), song, tmp_path / "o.mp4", duration=1.0)
    assert probe(out).audio_rate == 44100


def test_truncated_faststart_mp4_is_refused(tmp_path):
    good = make_video(tmp_path / "good.mp4", seconds=2, fps=25, extra=("-movflags", "+faststart"))
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(good.read_bytes()[: int(good.stat().st_size * 0.6)])
    with pytest.raises(RealtalkError, match=r"cut\.mp4: truncated: its video frames end at [\d.]+ s but its header promises 2\.00 s"):
        probe(cut)
    assert probe(good).video_frames == 50


def test_wav_with_lying_header_is_refused(tmp_path):
    wav = make_wav(tmp_path / "full.wav", seconds=1.0, rate=16000)
    cut = tmp_path / "cut.wav"
    cut.write_bytes(wav.read_bytes()[:-8000])  # the data chunk still says 1 s
    with pytest.raises(RealtalkError, match=r"cut\.wav: truncated WAV: its header promises 1\.00 s of audio but the file holds 0\.75 s"):
        load_audio(cut)
    with pytest.raises(RealtalkError, match="truncated WAV"):
        mux(make_video(tmp_path / "v.mp4", seconds=1, audio=False), cut, tmp_path / "o.mp4")
    assert len(load_audio(wav)) == 16000


def test_streamed_wav_without_size_is_read(tmp_path):
    """A WAV written to a pipe has no final size in its header (0 or 0xFFFFFFFF): not an error."""
    src = make_wav(tmp_path / "a.wav", seconds=1.0, rate=16000)
    streamed = tmp_path / "streamed.wav"
    with open(streamed, "wb") as f:
        subprocess.run([*_ffmpeg(), "-i", str(src), "-f", "wav", "-"], stdout=f, check=True)
    assert abs(len(load_audio(streamed)) - 16000) <= 1


def _ffmpeg():
    from realtalk_cli.media import ffmpeg_exe

    return [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error"]



@pytest.mark.shared
@pytest.mark.skipif(not (SHARED_DATA / "video").is_dir(), reason="../shared/data not present")
@pytest.mark.parametrize("fps", [25, None])
def test_real_clip_starting_late(fps):
    """The clip from issue 12: variable rate (~22 fps, 30 tbr), video starting at 0.033 s."""
    path = SHARED_DATA / "video" / "videoretalking_face1.mp4"
    info = probe(path)
    assert info.vfr and info.video_start == pytest.approx(0.033, abs=1e-3)
    full = list(VideoReader(path, fps, info=info))
    assert len(full) == info.frame_count(fps) == {25: 152, None: 135}[fps]  # 6.1 s of video
    for a, b in [(0, 1), (0, 10), (37, 52), (len(full) - 2, len(full))]:
        part = list(VideoReader(path, fps, info=info, start=a, stop=b))
        assert len(part) == b - a and all(np.array_equal(x, y) for x, y in zip(part, full[a:b])), (a, b)
