"""`realtalk stream`: a live avatar from speech that arrives over time."""

import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
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
