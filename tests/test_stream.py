"""`realtalk stream`: a live avatar from speech that arrives over time."""

import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import soundfile as sf

from mediagen import sine
from realtalk_cli.media import probe


def speech_wav(path, seconds, rate=16000):
    rng = np.random.default_rng(3)
    x = sine(seconds, rate, 180.0)[:, 0] * (0.3 + 0.7 * (rng.random(int(seconds * rate)) > 0.5))
    sf.write(str(path), x.astype(np.float32), rate, subtype="PCM_16")
    return path


def test_stream_of_a_file_gives_the_offline_dub(bank_model, tmp_path):
    """Every frame the stream writes equals the offline dub's frame of the same inputs."""
    from realtalk_cli.pipelines.dub import DubOptions, Dubber
    from realtalk_cli.pipelines.stream import StreamOptions, stream

    speech = speech_wav(tmp_path / "s.wav", 1.6)
    dubber = Dubber.from_pretrained(bank_model / "model", "cpu")
    offline, live = {}, {}
    dubber.dub(bank_model / "person.mp4", speech, tmp_path / "off.mp4", DubOptions(),
               on_frame=lambda i, s, o, p: offline.__setitem__(i, o))
    result = stream(dubber, bank_model / "person.mp4", str(speech), str(tmp_path / "live.mp4"), StreamOptions(),
                    on_frame=lambda k, f: live.__setitem__(k, f))
    assert result.frames == len(offline) == len(live) == 40
    same = [np.array_equal(offline[i], live[i]) for i in range(40)]
    assert all(same), [i for i, x in enumerate(same) if not x]
    info = probe(tmp_path / "live.mp4")
    assert info.video_frames == 40 and abs(info.duration - 1.6) < 0.05 and info.audio_rate == 16000


def _stream_cmd(bank_model, out, *extra):
    return [sys.executable, "-m", "realtalk_cli", "--quiet", "stream", "--avatar", str(bank_model / "model"),
            "--video", str(bank_model / "person.mp4"), "-o", str(out), *extra]


def test_stream_from_a_pipe_with_a_slow_writer(bank_model, tmp_path):
    """Raw PCM written in real time, in small pieces, through a named pipe: every frame comes out, the
    output lasts as long as the speech, and the latency stays bounded (no drift)."""
    fifo = tmp_path / "speech.pcm"
    os.mkfifo(fifo)
    seconds, rate = 2.0, 16000
    pcm = (sine(seconds, rate, 200.0)[:, 0] * 12000).astype(np.int16)
    out, stats = tmp_path / "live.ts", tmp_path / "stats.json"
    proc = subprocess.Popen([*_stream_cmd(bank_model, out, "--input", str(fifo), "--stats", str(stats))],
                            stderr=subprocess.PIPE, text=True)

    def writer():
        with open(fifo, "wb") as f:
            for i in range(0, len(pcm), 800):  # 50 ms pieces, at the pace of speech
                f.write(pcm[i:i + 800].tobytes())
                f.flush()
                time.sleep(0.05)

    t = threading.Thread(target=writer)
    t.start()
    t.join()
    assert proc.wait(timeout=120) == 0, proc.stderr.read()
    import json

    s = json.loads(stats.read_text())
    assert s["frames"] == 50 and s["idle_seconds"] == 0
    assert s["latency_last"] < s["latency_first"] + 1.0  # kept up: the delay did not grow with time
    assert probe(out).video_frames == 50


def test_stream_stops_cleanly_on_ctrl_c(bank_model, tmp_path):
    speech = speech_wav(tmp_path / "long.wav", 20.0)
    out = tmp_path / "live.mp4"
    proc = subprocess.Popen(_stream_cmd(bank_model, out, "--input", str(speech), "--realtime"),
                            stderr=subprocess.PIPE, text=True)
    time.sleep(6.0)
    proc.send_signal(signal.SIGINT)
    code = proc.wait(timeout=60)
    assert code == 130, proc.stderr.read()
    info = probe(out)  # a valid file with what was streamed so far
    assert 0 < info.video_frames < 500
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp file left


def _run_stream(bank_model, out, *extra, stdin=None, timeout=90):
    """The CLI, killed (and the test failed) if it hangs."""
    return subprocess.run(_stream_cmd(bank_model, out, *extra), input=stdin, capture_output=True, timeout=timeout)


def _leftovers(folder):
    return [p.name for p in folder.iterdir() if p.name.startswith(".")]


def test_stream_never_writes_over_its_speech_input(bank_model, tmp_path):
    speech = speech_wav(tmp_path / "s.wav", 1.0)
    before = speech.read_bytes()
    for extra in ((), ("--raw",)):
        r = _run_stream(bank_model, speech, "--input", str(speech), *extra)
        err = r.stderr.decode()
        assert r.returncode == 2 and "Traceback" not in err and err.strip().count("\n") == 0, err
        assert speech.read_bytes() == before
    assert _leftovers(tmp_path) == []


def test_stream_to_an_audio_name_is_refused_before_work(bank_model, tmp_path):
    speech = speech_wav(tmp_path / "s.wav", 1.0)
    r = _run_stream(bank_model, tmp_path / "out.wav", "--input", str(speech))
    assert r.returncode == 2 and b"a video output needs a name ending in" in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.wav"]


def test_stream_raw_file_output_is_renamed_at_the_end(bank_model, tmp_path):
    speech = speech_wav(tmp_path / "s.wav", 0.8)
    out = tmp_path / "frames.rgb"
    r = _run_stream(bank_model, out, "--input", str(speech), "--raw")
    assert r.returncode == 0, r.stderr
    w, h = probe(bank_model / "person.mp4").width, probe(bank_model / "person.mp4").height
    assert out.stat().st_size == 20 * w * h * 3 and _leftovers(tmp_path) == []


@pytest.mark.parametrize("rate,channels", [(8000, 2), (44100, 6), (192000, 1)])
def test_stream_raw_pcm_on_stdin_at_any_rate_and_channel_count(bank_model, tmp_path, rate, channels):
    """Any rate from 8 to 192 kHz, any channel count: the stream ends when stdin does (8 kHz stereo hung:
    ffmpeg held the last frames back for audio that the stream had not closed yet)."""
    seconds = 1.2
    pcm = (sine(seconds, rate, 200.0, channels) * 16000).astype(np.int16)
    out = tmp_path / "live.mp4"
    r = _run_stream(bank_model, out, "--rate", str(rate), "--channels", str(channels), stdin=pcm.tobytes())
    assert r.returncode == 0, r.stderr
    info = probe(out)
    assert info.video_frames == 30 and info.audio_channels == channels and abs(info.duration - seconds) < 0.1


def test_stream_decodes_an_mp3_at_its_own_rate(bank_model, tmp_path):
    from realtalk_cli.media import ffmpeg_exe

    mp3 = tmp_path / "speech.mp3"
    subprocess.run([ffmpeg_exe(), "-loglevel", "error", "-f", "lavfi", "-i", "sine=f=200:d=2", "-ar", "44100",
                    "-ac", "2", str(mp3)], check=True)
    out = tmp_path / "live.mp4"
    r = _run_stream(bank_model, out, "--input", str(mp3))
    assert r.returncode == 0, r.stderr
    info = probe(out)  # read as raw bytes, 2 s of mp3 was 0.4 s of noise
    assert abs(info.duration - 2.0) < 0.1 and info.audio_rate == 44100 and info.audio_channels == 2


def test_stream_input_that_is_not_audio_is_one_line(bank_model, tmp_path):
    bad = tmp_path / "notes.txt"
    bad.write_text("not speech\n" * 100)
    r = _run_stream(bank_model, tmp_path / "live.mp4", "--input", str(bad))
    err = r.stderr.decode()
    assert r.returncode != 0 and "notes.txt" in err and "Traceback" not in err and err.strip().count("\n") == 0, err
    assert not (tmp_path / "live.mp4").exists() and _leftovers(tmp_path) == []


def test_a_reader_that_stops_reading_is_reported_not_waited_on(bank_model, tmp_path):
    """MPEG-TS on stdout into a pipe nobody reads: the encoder blocks, and after --stall-after the
    stream ends with one line instead of hanging."""
    speech = speech_wav(tmp_path / "s.wav", 20.0)
    proc = subprocess.Popen(_stream_cmd(bank_model, "-", "--input", str(speech), "--stall-after", "2"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        code = proc.wait(timeout=90)
    finally:
        proc.kill()
    err = proc.stderr.read().decode()
    assert code == 1 and "stalled" in err and "Traceback" not in err, err
