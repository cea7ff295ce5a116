"""`realtalk stream`: drive a prepared avatar live from speech that arrives as it is spoken.

    speech (raw PCM on stdin or a pipe, or a file)  -> reader thread -> 16 kHz for the a2e, as-is for output
    StreamingA2E: a window as soon as its audio is in  -> final expressions, T + 1 frames behind the speech
    render stage, block by block (the frame bank plans each block from the last)       -> dubbed frames
    source frames played back and forth (pingpong), as the offline dub extends a video
    ffmpeg: frames on its stdin, the speech on a second pipe -> a file, standard output or a URL

The offline dub and the stream share every stage, so a whole speech file streamed gives the offline
dub's frames (apart from the last < T/2 frames, see inference/a2e_stream.py). When the input stalls
(a live source with nothing to say) the stream goes on with silence: the avatar rests its mouth while
its head keeps the source video's motion.
"""

from __future__ import annotations

import contextlib
import os
import queue
import subprocess
import threading
import time
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path

import numpy as np

from realtalk_cli.errors import RealtalkError, UsageError
from realtalk_cli.inference.a2e_stream import SAMPLES_PER_FRAME, StreamingA2E
from realtalk_cli.inference.threads import Worker, prefetch
from realtalk_cli.fsutil import check_output_path
from realtalk_cli.media import VIDEO_SUFFIXES, check_video_name, probe
from realtalk_cli.media.ffmpeg import ffmpeg_exe
from realtalk_cli.inference.a2e import sample_history
from realtalk_cli.pipelines.timeline import extend_indices, frames_in_order
from realtalk_cli.progress import Clock, console

FPS = 25.0  # the a2e's own grid: a stream's frames are its frames


@dataclass
class StreamOptions:
    rate: int = 16000              # raw PCM input: sample rate, channels (s16le)
    channels: int = 1
    realtime: bool = False         # a file input is read at its own pace (as if spoken) instead of at once
    idle_after: float = 0.5        # seconds without input after which silence is streamed (0: wait)
    stall_after: float = 30.0      # waiting this long for speech (idle_after 0) or on the encoder is reported
    raw: bool = False              # write raw RGB frames to the output instead of an encoded stream
    crf: int = 20
    preset: str = "veryfast"
    seed: int = 0


@dataclass
class StreamResult:
    frames: int
    seconds: float                                  # wall time
    speech_seconds: float
    idle_seconds: float                             # silence streamed because the input stalled
    lookahead: float                                # the a2e's look-ahead, seconds
    latency: list[float] = field(default_factory=list)  # per frame: written minus its speech's arrival, seconds

    def to_dict(self) -> dict:
        lat = np.asarray(self.latency) if self.latency else np.zeros(1)
        return {"frames": self.frames, "seconds": self.seconds, "speech_seconds": self.speech_seconds,
                "idle_seconds": self.idle_seconds, "lookahead": self.lookahead,
                "latency_median": float(np.median(lat)), "latency_p95": float(np.percentile(lat, 95)),
                "latency_max": float(lat.max()), "latency_first": float(lat[0]), "latency_last": float(lat[-1])}


RAW_SUFFIXES = (".pcm", ".raw", ".s16le", ".s16")  # a regular file of these is raw PCM, as a pipe is
STREAM_SUFFIXES = (*VIDEO_SUFFIXES, ".ts")


def check_stream_output(out: str, inputs: tuple, raw: bool) -> None:
    """A file output is never an input; an encoded one needs a video container's name (as `dub`'s)."""
    if out == "-" or "://" in out:
        return
    if not raw:
        check_video_name(out, STREAM_SUFFIXES)
    check_output_path(out, [p for p in inputs if p not in (None, "-")], overwrite=True)


class SpeechInput:
    """Speech chunk by chunk, read in a thread: (int16 [n, ch], arrival time) on `queue`.

    '-', a pipe or a .pcm/.raw file: raw s16le PCM at options.rate / options.channels. Any other
    file is decoded (soundfile, else ffmpeg) at its own rate and channels. Every chunk goes to
    `on_chunk` (the output's audio) the moment it arrives, under `lock`: the audio leads the frames by
    all the speech there is, as ffmpeg needs to interleave them.
    """

    def __init__(self, source: str, options: StreamOptions, chunk_seconds: float = 0.04):
        self.source, self.options = source, options
        self.queue: queue.Queue = queue.Queue(maxsize=256)
        self.lock = threading.Lock()
        self.rate, self.channels = options.rate, options.channels
        self._file, self._decoder = None, None
        path = Path(source)
        if source != "-":
            if not path.exists():
                raise UsageError("speech input not found", source)
            if path.is_dir():
                raise UsageError("speech input is a directory", source)
            if path.is_file() and path.suffix.lower() not in RAW_SUFFIXES:
                self._open_file(path)
        self.chunk = max(1, int(chunk_seconds * self.rate))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _open_file(self, path: Path) -> None:
        import soundfile as sf

        from realtalk_cli.media.audio import check_wav_complete

        check_wav_complete(path)
        try:
            self._file = sf.SoundFile(str(path))
            self.rate, self.channels = self._file.samplerate, self._file.channels
            return
        except (RuntimeError, sf.LibsndfileError):
            pass
        info = probe(path)  # mp3, m4a, opus, a video's sound, ...: a one-line error if ffmpeg cannot read it
        if not info.has_audio:
            raise UsageError("not an audio file (raw s16le PCM goes through '-', a pipe or a .pcm name)", path)
        self.rate, self.channels = info.audio_rate, max(1, info.audio_channels)
        self._decoder = subprocess.Popen(
            [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-i", str(path), "-map", "0:a:0",
             "-f", "s16le", "-acodec", "pcm_s16le", "-ar", str(self.rate), "-ac", str(self.channels), "pipe:1"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def start(self, on_chunk=None) -> "SpeechInput":
        self._on_chunk = on_chunk
        self._thread.start()
        return self

    def _chunks(self):
        if self._file is not None:
            with self._file:
                while block := self._file.read(self.chunk, dtype="int16", always_2d=True).tobytes():
                    yield block
            return
        nbytes = 2 * self.channels * self.chunk
        if self._decoder is not None:
            f = self._decoder.stdout
        else:
            f = os.fdopen(os.dup(0), "rb", buffering=0) if self.source == "-" else open(self.source, "rb", buffering=0)
        with f:
            pending = b""
            while not self._stop.is_set():
                data = f.read(nbytes - len(pending))
                if not data:
                    break
                pending += data
                whole = len(pending) - len(pending) % (2 * self.channels)
                if whole:
                    yield pending[:whole]
                    pending = pending[whole:]
        if self._decoder is not None and self._decoder.wait() != 0 and not self._stop.is_set():
            from realtalk_cli.media.ffmpeg import last_line

            raise OSError(f"cannot decode: {last_line(self._decoder.stderr.read())}")

    def _run(self) -> None:
        start, sent = time.perf_counter(), 0
        try:
            for block in self._chunks():
                pcm = np.frombuffer(block, np.int16).reshape(-1, self.channels)
                if self.options.realtime:  # as if spoken: a chunk is there once its time has come
                    due = start + (sent + len(pcm)) / self.rate
                    time.sleep(max(0.0, due - time.perf_counter()))
                sent += len(pcm)
                with self.lock:
                    if self._on_chunk is not None:
                        self._on_chunk(pcm)
                    self.queue.put((pcm, time.perf_counter()))
                if self._stop.is_set():
                    break
        except Exception as e:  # the main thread reports it
            self.queue.put(RealtalkError(f"speech input failed ({getattr(e, 'strerror', None) or e})", self.source))
        self.queue.put(None)

    def stop(self) -> None:
        self._stop.set()
        if self._decoder is not None and self._decoder.poll() is None:
            self._decoder.kill()
            self._decoder.wait()


class Output:
    """Frames (and the speech, on a second pipe) into ffmpeg, or raw frames to a file or stdout."""

    def __init__(self, target: str, width: int, height: int, rate: int, channels: int, options: StreamOptions):
        self.raw, self.target, self._limit = options.raw, target, options.stall_after
        self._tmp, self._proc, self._audio_fd = None, None, None
        self._busy, self._stalled = None, False  # when the write now waiting began; the watchdog fired
        if target != "-" and "://" not in target:  # a file: written beside the target, renamed at the end
            path = Path(target)
            self._tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
        if self.raw:
            self._video = os.fdopen(os.dup(1), "wb") if self._tmp is None else open(self._tmp, "wb")
            return
        w, h = width + width % 2, height + height % 2
        self.pad = (w - width, h - height)
        out, fmt = str(self._tmp or target), []
        if target == "-":
            out, fmt = "pipe:1", ["-f", "mpegts"]
        elif "://" in target:
            fmt = ["-f", "flv" if target.startswith("rtmp") else "mpegts"]
        elif Path(target).suffix.lower() in (".mp4", ".mov", ".m4v"):
            fmt = ["-movflags", "+faststart"]
        read_audio, self._audio_fd = os.pipe()
        cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
               # raw inputs say all there is to know: no probing, which would wait for seconds of one
               # pipe while we block writing the other
               "-probesize", "32", "-analyzeduration", "0",
               "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-r", str(FPS), "-i", "pipe:0",
               "-probesize", "32", "-analyzeduration", "0",
               "-f", "s16le", "-ar", str(rate), "-ac", str(channels), "-i", f"pipe:{read_audio}",
               "-c:v", "libx264", "-preset", options.preset, "-tune", "zerolatency", "-crf", str(options.crf),
               "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", f"{max(96, 64 * channels)}k", *fmt, out]
        # its own session: Ctrl-C in a terminal reaches only us, and we end the stream so the file stays valid
        self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, pass_fds=(read_audio,), start_new_session=True,
                                      stdout=None if target == "-" else subprocess.DEVNULL, stderr=subprocess.PIPE)
        os.close(read_audio)
        self._video = self._proc.stdin
        # the speech goes in from its own thread: ffmpeg may read the two pipes in any order
        self._audio = Worker(lambda pcm: os.write(self._audio_fd, pcm.tobytes()), depth=1024)
        threading.Thread(target=self._watchdog, args=(options.stall_after,), daemon=True).start()

    def _watchdog(self, limit: float) -> None:
        """An encoder (or a reader of its output) that takes nothing for `limit` seconds is stopped, so
        the stream ends with an error instead of hanging."""
        while self._proc is not None:
            busy = self._busy
            if busy is not None and time.perf_counter() - busy > limit:
                self._stalled = True
                self._proc.kill()
                return
            time.sleep(min(1.0, limit / 4))

    @contextlib.contextmanager
    def _watched(self):
        self._busy = time.perf_counter()
        try:
            yield
        finally:
            self._busy = None

    def audio(self, pcm: np.ndarray) -> None:
        if self._audio_fd is not None:
            try:
                self._audio.put(pcm)
            except OSError:  # the encoder is gone; the next frame says so
                pass

    def frame(self, rgb: np.ndarray) -> None:
        if not self.raw and any(self.pad):
            rgb = np.pad(rgb, ((0, self.pad[1]), (0, self.pad[0]), (0, 0)), mode="edge")
        try:
            with self._watched():
                self._video.write(np.ascontiguousarray(rgb).tobytes())
        except (BrokenPipeError, ValueError):  # ValueError: the pipe was closed under us
            stalled = self._stalled
            self.close(ok=False)
            raise RealtalkError(f"the output took no frame for {self._limit:g} s (stalled)" if stalled
                                else "the output stream closed", self.target) from None

    def end_audio(self) -> None:
        """No more speech: ffmpeg holds video back until the audio beside it is in (or has ended), so
        the audio must end before the last frames go in."""
        if self._audio_fd is not None:
            fd, self._audio_fd = self._audio_fd, None
            try:
                with self._watched():
                    self._audio.close()
            finally:
                os.close(fd)

    def close(self, ok: bool = True) -> None:
        """Finish the stream; with ok=False a file output is removed instead of kept."""
        if self._proc is None:
            if self.raw:
                self._video.close()
                self._finish(ok)
            return
        try:
            self.end_audio()
        except OSError:  # ffmpeg is gone: its own error is the one to report
            pass
        try:
            self._video.close()
        except BrokenPipeError:
            pass
        with self._watched():
            err = self._proc.stderr.read().decode(errors="replace").strip()
            code = self._proc.wait()
        self._proc = None
        self._finish(ok and code == 0 and not self._stalled)
        if self._stalled and ok:
            raise RealtalkError(f"the encoder took nothing for {self._limit:g} s (stalled)", self.target)
        if code != 0 and ok:
            raise RealtalkError(f"encoder failed: {err.splitlines()[-1] if err else code}", self.target)

    def _finish(self, keep: bool) -> None:
        if self._tmp is not None:
            if keep:
                os.replace(self._tmp, self.target)
            else:
                self._tmp.unlink(missing_ok=True)
            self._tmp = None


def stream(dubber, video: str | os.PathLike, speech: str, out: str, options: StreamOptions | None = None,
           on_frame=None, stop: threading.Event | None = None) -> StreamResult:
    """Stream `speech` (a path, a named pipe or '-' for stdin) through `dubber`'s models onto `video`."""
    import soxr

    options = options or StreamOptions()
    stop = stop or threading.Event()
    check_stream_output(out, (speech, video), options.raw)  # before any work
    source = SpeechInput(speech, options)
    out_, frames = None, None
    try:
        clock = Clock()
        track = dubber.tracker(video, FPS, clock=clock)
        history = sample_history(track.beta, track.found, dubber.a2e.cfg.n_history, np.random.default_rng(options.seed))
        a2e = StreamingA2E(dubber.a2e, dubber.audio, track.alpha, history)
        out_ = Output(out, track.width, track.height, source.rate, source.channels, options)
        retrieval = getattr(getattr(dubber.stage, "renderer", None), "retrieval", None)
        block = retrieval.block if retrieval is not None and retrieval.block > 0 else a2e.H  # as the offline plan
        period = extend_indices(max(1, 2 * track.n_frames - 2), track.n_frames, "pingpong")
        frames = prefetch((f for _ in count() for f in frames_in_order(video, period, FPS)), depth=block)
        ref = next(iter(frames_in_order(video, np.array([track.reference]), FPS)))[1]
        return _stream(dubber, track, a2e, source, out_, frames, ref, period, block, clock, options, on_frame, stop)
    finally:
        source.stop()
        if frames is not None:
            frames.close()
        if out_ is not None:
            out_.close(ok=False)  # a no-op once the stream has ended well


def _stream(dubber, track, a2e, source, out_, frames, ref, period, block, clock, options, on_frame, stop) -> StreamResult:
    import soxr

    resample = soxr.ResampleStream(source.rate, 16000, 1, dtype="float32") if source.rate != 16000 else None
    arrivals: tuple[list[int], list[float]] = ([], [])  # 16 kHz samples received so far, and when
    latency, pending = [], []
    state = {"received": 0, "done": 0}

    def feed(pcm: np.ndarray, when: float):
        """The a2e hears a chunk (the output got it from the reader as it arrived)."""
        mono = pcm.astype(np.float32).mean(1) / 32768.0
        mono = resample.resample_chunk(mono) if resample is not None else mono
        state["received"] += len(mono)
        arrivals[0].append(state["received"])
        arrivals[1].append(when)
        pending.extend(a2e.push(mono))

    def render(n: int, last: bool = False):
        while len(pending) >= n or (last and pending):
            done = state["done"]
            beta = np.stack(pending[:n])
            del pending[:n]
            src = period[np.arange(done, done + len(beta)) % len(period)]
            dubber.stage.prepare(track, beta, src, ref, FPS, resume=done > 0)
            batch = [(k, j, frame) for k, (j, frame) in zip(range(len(beta)), it_frames)]
            faces = [b for b in batch if track.found[b[1]]]  # frames without a face pass through
            rendered = dict(zip((b[0] for b in faces), dubber.stage(faces, clock))) if faces else {}
            for k, _, frame in batch:
                dubbed = rendered[k][0] if k in rendered else frame
                out_.frame(dubbed)
                if on_frame is not None:
                    on_frame(done + k, dubbed)
                latency.append(time.perf_counter() - _arrival(arrivals, (done + k) * SAMPLES_PER_FRAME))
            state["done"] = done + len(beta)

    it_frames = iter(frames)
    source.start(out_.audio)
    try:
        idle = _run(source, options, feed, out_.audio, render, block, stop)
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: what was streamed stays a valid file
        source.stop()
        out_.close(ok=True)
        raise
    if resample is not None:
        tail = resample.resample_chunk(np.zeros(0, np.float32), last=True)
        state["received"] += len(tail)
        pending.extend(a2e.push(tail))
    n_total = int(round(state["received"] / SAMPLES_PER_FRAME))
    pending.extend(a2e.finish(max(n_total, a2e.emitted)))
    out_.end_audio()
    render(block, last=True)
    out_.close(ok=True)
    return StreamResult(state["done"], clock.elapsed(), state["received"] / 16000, idle, a2e.lookahead_frames / FPS, latency)


def _run(source: SpeechInput, options: StreamOptions, feed, to_output, render, block: int, stop: threading.Event) -> float:
    """Take speech as it comes until the input ends; stream silence while a live input stalls (or,
    with idle_after 0, wait and say so every stall_after seconds). Returns the seconds of silence streamed."""
    idle, waited = 0.0, 0.0
    while not stop.is_set():
        wait = options.idle_after or options.stall_after
        try:
            item = source.queue.get(timeout=wait)
        except queue.Empty:
            if not options.idle_after:  # told to wait: never silently
                waited += wait
                console.print(f"stream: no speech for {waited:.0f} s, waiting (end the input or Ctrl-C to finish)")
                continue
            with source.lock:  # a live source is silent: go on with silence, in real time
                if not source.queue.empty():  # speech came in meanwhile: it goes first
                    continue
                silence = np.zeros((int(options.idle_after * source.rate), source.channels), np.int16)
                to_output(silence)
                feed(silence, time.perf_counter())
            idle += options.idle_after
            render(block)
            continue
        waited = 0.0
        if item is None:
            break
        if isinstance(item, Exception):
            raise item
        feed(*item)
        render(block)
    return idle


def _arrival(arrivals: tuple[list[int], list[float]], sample: int) -> float:
    """When the speech had gone past `sample` (16 kHz); arrivals: (samples received so far, when), growing."""
    import bisect

    received, when = arrivals
    k = bisect.bisect_right(received, sample)
    return when[min(k, len(when) - 1)] if when else time.perf_counter()


def console_report(result: StreamResult) -> None:
    d = result.to_dict()
    console.print(f"stream: {d['frames']} frames for {d['speech_seconds']:.2f} s of speech ({d['idle_seconds']:.1f} s idle) "
                  f"in {d['seconds']:.2f} s; a2e look-ahead {d['lookahead']:.2f} s; speech-to-frame latency "
                  f"median {d['latency_median']:.2f} s, p95 {d['latency_p95']:.2f} s, max {d['latency_max']:.2f} s")
