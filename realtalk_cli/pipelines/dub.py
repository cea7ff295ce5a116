"""`realtalk dub`: re-sync the lower face of a video to new speech, streamed end to end.

    pass 1  decode -> track -> crop transforms -> face-model fit          (inference/track.py)
            speech -> audio features -> a2e (history from the source)    (beta_hat per output frame)
    pass 2  source frames in output order (trim / loop / pingpong)
            -> render stage, batched (inference/render_stage.py: frame bank or FIA) -> encode
    mux     the speech becomes the audio track; the output appears only when complete

Memory does not grow with video length: frames are streamed, per-frame state is a few hundred
bytes (transform, coefficients), and pass 1's landmarks are spilled to a temporary file on disk.
Model directories: inference/models.py.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch

from realtalk_cli.audio.features import AudioFrontEnd
from realtalk_cli.errors import RealtalkError, UsageError
from realtalk_cli.face import align
from realtalk_cli.face.model import FaceModel
from realtalk_cli.fsutil import cache_root, check_output_path
from realtalk_cli.inference.a2e_stream import expressions_25hz
from realtalk_cli.inference.models import load_models
from realtalk_cli.inference.threads import Worker, prefetch
from realtalk_cli.inference.track import SourceTrack, SourceTracker
from realtalk_cli.media import VideoReader, VideoWriter, check_video_name, load_audio, mux, probe
from realtalk_cli.inference.a2e import SilenceGate, rest_and_resample, rest_expression, sample_history
from realtalk_cli.pipelines.timeline import extend_indices, frames_in_order
from realtalk_cli.progress import Clock, progress


@dataclass
class DubOptions:
    fps: float | None = 25.0          # output frame rate; None keeps the source's
    extend: str = "pingpong"          # speech longer than the video: "pingpong" or "loop"
    face_index: int | None = None     # which face, left to right, when several are visible
    bbox: tuple[float, float, float, float] | None = None  # or the face overlapping this box (x0, y0, x1, y1)
    batch_size: int = 8               # renderer batch
    crf: int = 18
    preview: Path | None = None       # side-by-side source | dubbed | mask video
    overwrite: bool = False
    seed: int = 0                     # history sampling
    mouth_curve: Path | None = None   # also write the predicted mouth opening per frame (for `realtalk eval`)
    drive: str = "audio"              # "audio": a2e from the speech; "tracked": the video's own expressions
    preset: str = "veryfast"          # x264 preset: faster ones (superfast, ultrafast) encode faster, bigger files
    rest_in_silence: bool = False     # blend silent frames toward the source's rest face (inference/a2e.py: SilenceGate)


DRIVES = ("audio", "tracked")
PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")


@dataclass
class DubResult:
    output: Path
    frames: int
    source_frames: int
    faces_missing: int
    width: int
    height: int
    fps: float
    duration: float
    stages: dict[str, float] = field(default_factory=dict)   # busy seconds per stage (decode, render and encode overlap)
    first_frame: float | None = None  # seconds from the start of the job to the first frame encoded
    wall: float | None = None         # seconds the whole job took

    @property
    def seconds(self) -> float:
        return self.wall if self.wall is not None else sum(self.stages.values())

    def to_dict(self) -> dict:
        return {"output": str(self.output), "frames": self.frames, "source_frames": self.source_frames,
                "faces_missing": self.faces_missing, "width": self.width, "height": self.height, "fps": self.fps,
                "duration": self.duration, "stages": self.stages, "seconds": self.seconds,
                "frames_per_second": self.frames / self.seconds if self.seconds else None, "first_frame": self.first_frame,
                "wall": self.wall}


class Dubber:
    """Loaded models, reused across dubbing jobs (batch mode loads them once)."""

    def __init__(self, a2e, stage, a2e_config: dict, device: torch.device, avatars: str | os.PathLike | None = None):
        """`avatars`: a directory where tracked source videos are kept (a second dub skips tracking);
        never the model directory, which is an input and stays untouched."""
        self.a2e, self.stage, self.device = a2e, stage, device
        self.face: FaceModel = stage.face
        self.audio = AudioFrontEnd(a2e_config["audio"], device=device)
        align_config = align.AlignConfig(**(a2e_config.get("align") or {"crop_size": self.face.crop_size}))
        if align_config.crop_size != self.face.crop_size:
            raise RealtalkError(f"checkpoint crop size {align_config.crop_size} differs from its face model's {self.face.crop_size}")
        self.tracker = SourceTracker(self.face, align_config, avatars)
        self.fit_face = self.tracker.fit_face

    @classmethod
    def from_pretrained(cls, model_dir: str | os.PathLike, device: torch.device | str = "cpu", backend: str = "torch",
                        renderer: str | None = None, avatars: str | os.PathLike | None = None) -> "Dubber":
        """Models from `model_dir`; tracked videos cached in `avatars` (default: the cache root's avatars/)."""
        device = torch.device(device)
        a2e, stage, cfg = load_models(model_dir, device, backend, renderer)
        return cls(a2e, stage, cfg, device, avatars=avatars or cache_root() / "avatars")

    # ---- pass 1 -------------------------------------------------------------------------------
    def track(self, video: str | os.PathLike, options: DubOptions, info=None, clock: Clock | None = None) -> SourceTrack:
        return self.tracker(video, options.fps, options.face_index, options.bbox, info, clock)

    # ---- audio -> expressions -------------------------------------------------------------------
    def expressions(self, speech: np.ndarray, n_out: int, track: SourceTrack, seed: int = 0, fps: float = 25.0,
                    source_audio: np.ndarray | None = None, gate: SilenceGate | None = None) -> np.ndarray:
        """beta_hat [n_out, n_exp] for output frames at times i / fps (the a2e runs at 25 Hz, inference/a2e.py).
        With the source video's own audio (and a gate), silent speech rests the lips as the source does."""
        history = sample_history(track.beta, track.found, self.a2e.cfg.n_history, np.random.default_rng(seed))
        beta = expressions_25hz(self.a2e, self.audio, track.alpha, history, speech)  # as `realtalk stream` does
        rest = None
        if source_audio is not None and gate is not None:
            rest = rest_expression(track.beta, track.found, source_audio, fps, gate)
        return rest_and_resample(beta, np.arange(n_out) / fps, speech, rest, gate).astype(np.float32)

    # ---- the whole job ----------------------------------------------------------------------------
    def dub(self, video: str | os.PathLike, speech: str | os.PathLike, out: str | os.PathLike,
            options: DubOptions | None = None, on_frame=None) -> DubResult:
        """Dub `video` with `speech` into `out`. `on_frame(i, source, output, paste_mask)` sees each
        pre-encode frame (tests use it to check untouched pixels)."""
        options = options or DubOptions()
        video, speech = Path(video), Path(speech)
        for name in (out, options.preview):
            if name is not None:
                check_video_name(name)
        out = check_output_path(out, [video, speech], overwrite=options.overwrite)
        for extra in (options.preview, options.mouth_curve):
            if extra is not None:
                check_output_path(extra, [video, speech, out], overwrite=True)
        clock = Clock()
        info = probe(video)
        if not info.has_video:
            raise RealtalkError("file has no video stream", video)
        fps = options.fps or info.fps
        with clock("audio"):
            wav = load_audio(speech)  # 16 kHz mono for the features; the output gets the file's own audio
        duration = len(wav) / 16000
        n_out = max(1, int(round(duration * fps)))

        track = self.track(video, DubOptions(**{**options.__dict__, "fps": fps}), info, clock)
        indices = extend_indices(n_out, track.n_frames, options.extend)
        with clock("a2e"):
            if options.drive == "tracked":  # the renderer alone, asked for the expressions the video shows
                beta_hat = track.beta[indices]
            else:
                gate = SilenceGate() if options.rest_in_silence and info.has_audio else None
                source_audio = load_audio(video) if gate else None
                beta_hat = self.expressions(wav, n_out, track, options.seed, fps, source_audio, gate)
        if options.mouth_curve is not None:
            self._write_mouth_curve(options.mouth_curve, beta_hat, track, indices, fps)

        with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.stem}.") as tmp:
            silent = Path(tmp) / "video.mp4"
            preview = Path(tmp) / "preview.mp4" if options.preview else None
            missing = self._render_pass(video, info, track, beta_hat, indices, fps, silent, preview, options, clock, on_frame)
            with clock("mux"):
                mux(silent, speech, out, duration=n_out / fps)
                if preview:
                    mux(preview, speech, options.preview, duration=n_out / fps)
        return DubResult(out, n_out, track.n_frames, missing, track.width, track.height, fps, n_out / fps, dict(clock.seconds),
                         clock.marks.get("first_frame"), clock.elapsed())

    def _write_mouth_curve(self, path, beta_hat, track, indices, fps) -> None:
        """The mouth opening the renderer is asked for, per output frame: V(alpha, beta_hat, rho) of the shown frame."""
        from realtalk_cli.eval.mouth_curve import write_mouth_curve

        t = lambda a: torch.as_tensor(np.asarray(a, np.float32))  # noqa: E731
        with torch.no_grad():
            verts = self.fit_face.vertices(t(track.alpha)[None].expand(len(beta_hat), -1), t(beta_hat), t(track.rho[indices]))
            opening = self.fit_face.mouth_opening(verts).numpy()
        write_mouth_curve(path, opening, fps)

    def _render_pass(self, video, info, track, beta_hat, indices, fps, silent, preview_path, options, clock, on_frame) -> int:
        """Decode ahead, render in this thread, encode behind: three stages overlapping (inference/threads.py)."""
        ref_frame = next(iter(VideoReader(video, fps, info=info, start=track.reference, stop=track.reference + 1)))
        with clock("plan"):
            self.stage.prepare(track, beta_hat, indices, ref_frame, fps)
        missing = 0
        batch: list[tuple[int, int, np.ndarray]] = []
        writer = VideoWriter(silent, track.width, track.height, fps, crf=options.crf, preset=options.preset)
        pw, ph = _preview_size(track.width, track.height)
        preview = VideoWriter(preview_path, 3 * pw, ph, fps, crf=23, preset=options.preset) if preview_path else None

        def encode(frame, dubbed, paste):
            with clock("encode"):
                writer.write(dubbed)
                if preview:
                    preview.write(_preview_frame(frame, dubbed, paste, pw, ph))

        encoder = Worker(encode, depth=options.batch_size)

        def emit(i, frame, dubbed, paste):
            if i == 0:
                clock.mark("first_frame")
            if on_frame is not None:
                on_frame(i, frame, dubbed, paste)
            encoder.put(frame, dubbed, paste)

        def flush():
            if batch:
                for (i, _, frame), (dubbed, paste) in zip(batch, self.stage(batch, clock)):
                    emit(i, frame, dubbed, paste)
                batch.clear()

        try:
            with progress() as p, prefetch(frames_in_order(video, indices, fps, info=info), options.batch_size,
                                           timer=lambda: clock("decode")) as stream:
                task = p.add_task("dub", total=len(indices), info="")
                for i, (j, frame) in enumerate(stream):
                    if track.found[j]:
                        batch.append((i, j, frame))
                        if len(batch) >= options.batch_size:
                            flush()
                    else:  # no face: the frame passes through unchanged
                        flush()
                        missing += 1
                        emit(i, frame, frame, None)
                    p.update(task, advance=1, info=f"{missing} without face")
                flush()
            encoder.close()
            with clock("encode"):
                writer.close()
                if preview:
                    preview.close()
        except BaseException:
            encoder.abort()
            writer.abort()
            if preview:
                preview.abort()
            raise
        return missing


def _preview_size(w: int, h: int, max_h: int = 360) -> tuple[int, int]:
    s = min(1.0, max_h / h)
    return max(2, int(w * s) // 2 * 2), max(2, int(h * s) // 2 * 2)


def _preview_frame(source, dubbed, paste, pw, ph) -> np.ndarray:
    overlay = dubbed.copy()
    if paste is not None:
        m = paste.mask(*dubbed.shape[:2])[..., None]
        overlay = (overlay * (1 - 0.5 * m) + np.array([255, 0, 0]) * 0.5 * m).astype(np.uint8)
    panels = [cv2.resize(x, (pw, ph), interpolation=cv2.INTER_AREA) for x in (source, dubbed, overlay)]
    return np.concatenate(panels, axis=1)


def check_job(video: str | os.PathLike, speech: str | os.PathLike, out: str | os.PathLike, overwrite: bool = False) -> None:
    """Fail fast, before models load, on inputs that cannot work."""
    from realtalk_cli.fsutil import require_file

    check_video_name(out)
    if not probe(video).has_video:
        raise RealtalkError("file has no video stream", video)
    require_file(speech, "speech file")
    check_output_path(out, [video, speech], overwrite=overwrite)


def check_jobs(jobs: list[tuple[Path, Path, Path]], overwrite: bool = False) -> None:
    """check_job for every job, after checking that no two jobs write one file and no job writes
    over another's input (batch jobs would otherwise overwrite each other silently)."""
    inputs = {Path(p).resolve() for v, s, _ in jobs for p in (v, s)}
    outputs: dict[Path, int] = {}
    for k, (_, _, out) in enumerate(jobs, 1):
        key = Path(out).resolve()
        if key in outputs:
            raise UsageError(f"jobs {outputs[key]} and {k} write the same output", out)
        if key in inputs:
            raise UsageError(f"job {k} would write over an input of another job", out)
        outputs[key] = k
    for job in jobs:
        check_job(*job, overwrite)
