"""`realtalk dub`: re-sync the lower face of a video to new speech, streamed end to end.

    pass 1  decode -> track -> crop transforms -> face-model fit          (source frames, once)
            speech -> audio features -> a2e (history from the source)    (beta_hat per output frame)
    pass 2  source frames in output order (trim / loop / pingpong)
            -> crop -> mask from V(alpha, beta_hat, rho) -> renderer (batched) -> paste back -> encode
    mux     the speech becomes the audio track; the output appears only when complete

Memory does not grow with video length: frames are streamed, per-frame state is a few hundred
bytes (transform, coefficients), and pass 1's landmarks are spilled to a temporary file on disk.

A model directory holds `a2e/` and `e2f/`, each a checkpoint directory or a training run directory
(its newest checkpoint is used), and optionally `onnx/` from `realtalk export`.
"""

from __future__ import annotations

import copy
import json
import os
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np
import torch

from realtalk_cli.audio.features import AudioFrontEnd
from realtalk_cli.errors import RealtalkError, UsageError
from realtalk_cli.face import align
from realtalk_cli.face.fit import fit_landmarks
from realtalk_cli.face.model import FaceModel
from realtalk_cli.face.tracker import FaceTracker, TrackerConfig, smooth_landmarks
from realtalk_cli.fsutil import check_output_path
from realtalk_cli.media import VideoReader, VideoWriter, load_audio, mux, probe
from realtalk_cli.pipelines.a2e_infer import load_a2e, predict_expressions, sample_history
from realtalk_cli.pipelines.e2f_infer import E2FModel, load_renderer
from realtalk_cli.pipelines.timeline import extend_indices, frames_in_order
from realtalk_cli.progress import console, progress

FIT_CHUNK = 500  # frames fitted at once: bounds memory for any video length


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


DRIVES = ("audio", "tracked")


@dataclass
class SourceTrack:
    """What pass 1 learns about the source video; small arrays only."""

    n_frames: int
    width: int
    height: int
    found: np.ndarray          # [T] bool
    transforms: np.ndarray     # [T, 2, 3] source -> face-model crop
    alpha: np.ndarray          # [n_id]
    beta: np.ndarray           # [T, n_exp]
    rho: np.ndarray            # [T, n_pose]
    fit_error: float           # mean keypoint error in crop pixels over found frames
    reference: int             # index of the reference frame (first frame with a face)


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
    stages: dict[str, float] = field(default_factory=dict)   # seconds per stage

    @property
    def seconds(self) -> float:
        return sum(self.stages.values())

    def to_dict(self) -> dict:
        return {"output": str(self.output), "frames": self.frames, "source_frames": self.source_frames,
                "faces_missing": self.faces_missing, "width": self.width, "height": self.height, "fps": self.fps,
                "duration": self.duration, "stages": self.stages, "seconds": self.seconds,
                "frames_per_second": self.frames / self.seconds if self.seconds else None}


class _Clock:
    """Accumulates wall time per stage: `with clock("render"): ...`."""

    def __init__(self):
        self.seconds: dict[str, float] = defaultdict(float)

    def __call__(self, stage: str):
        clock = self

        class _Span:
            def __enter__(self):
                self.t = time.perf_counter()

            def __exit__(self, *exc):
                clock.seconds[stage] += time.perf_counter() - self.t

        return _Span()


def resolve_run(path: Path) -> Path:
    """A training run directory -> its newest checkpoint; a checkpoint directory stays as it is."""
    from realtalk_cli.train.trainer import latest_checkpoint

    if (path / "checkpoints").is_dir():
        return latest_checkpoint(path) or path
    return path


RENDERERS = ("bank", "fia")


def renderer_choice(model_dir: Path) -> str:
    """Which renderer a model directory dubs with: the one recorded by adaptation (renderer.json),
    else the only one present, else the frame bank."""
    rec = model_dir / "renderer.json"
    if rec.is_file():
        from realtalk_cli.fsutil import read_json

        choice = read_json(rec).get("renderer")
        if choice not in RENDERERS:
            raise RealtalkError(f"unknown renderer {choice!r} (expected {' or '.join(RENDERERS)})", rec)
        return choice
    has = [r for r, d in (("bank", "bank"), ("fia", "e2f")) if (model_dir / d).is_dir()]
    return has[0] if has else "fia"


def load_models(model_dir: str | os.PathLike, device: torch.device, backend: str = "torch", renderer: str | None = None):
    """(a2e, render stage, a2e config) from a model directory with `a2e/` and `e2f/` or `bank/` inside."""
    from realtalk_cli.bank.compose import BankRenderer
    from realtalk_cli.bank.store import FrameBank
    from realtalk_cli.pipelines.render_stage import BankStage, FIAStage

    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise RealtalkError("model directory not found", model_dir)
    renderer = renderer or renderer_choice(model_dir)
    if renderer not in RENDERERS:
        raise UsageError(f"--renderer {renderer!r}: expected {' or '.join(RENDERERS)}")
    part = "bank" if renderer == "bank" else "e2f"
    for d, how in (("a2e", "train it with `realtalk train --stage a2e`"),
                   (part, "build it with `realtalk dub --adapt --renderer bank`" if part == "bank" else
                    f"train it with `realtalk train --stage e2f --out {model_dir / 'e2f'}`")):
        if not (model_dir / d).is_dir():
            raise RealtalkError(f"not a realtalk model directory for the {renderer} renderer (no {d}/ inside; {how})", model_dir)
    a2e, a2e_config = load_a2e(model_dir / "a2e", device)
    a2e_face = FaceModel.from_checkpoint(a2e_config["face_model"], _face_tensors(model_dir / "a2e")).fingerprint()
    if renderer == "bank":
        stage = BankStage(BankRenderer(FrameBank(model_dir / "bank")))
    else:
        e2f = load_renderer(resolve_run(model_dir / "e2f"), device)
        if backend == "onnx":
            from realtalk_cli.pipelines.export import OnnxModel

            e2f = E2FModel(_OnnxNet(OnnxModel(model_dir / "onnx" / "renderer.onnx", device), e2f.renderer.cfg), e2f.face, e2f.mask)
        crop = (a2e_config.get("align") or {}).get("crop_size", e2f.face.crop_size)
        stage = FIAStage(e2f, crop, device)
    if stage.face.fingerprint() != a2e_face:
        raise RealtalkError(f"a2e and {part} were made with different face models; build both from one dataset", model_dir)
    if backend == "onnx":
        from realtalk_cli.pipelines.export import OnnxModel

        a2e = _OnnxNet(OnnxModel(model_dir / "onnx" / "a2e.onnx", device), a2e.cfg)
    elif backend != "torch":
        raise UsageError(f"--backend {backend!r}: expected torch or onnx")
    return a2e, stage, a2e_config


def _face_tensors(a2e_dir: Path) -> dict:
    """Only the face-model file of the a2e checkpoint (not its weights and optimizer state again)."""
    from safetensors.torch import load_file

    return load_file(str(resolve_run(a2e_dir) / "face_model.safetensors"))


class _OnnxNet:
    """An exported graph behind the small part of the nn.Module interface that inference uses."""

    def __init__(self, runner, cfg):
        self.runner, self.cfg, self.training = runner, cfg, False

    def __call__(self, *x):
        return self.runner(*x)

    def parameters(self):
        yield torch.empty(0)  # inputs are prepared on the CPU; onnxruntime moves them itself

    def eval(self):
        return self

    def train(self, mode: bool = True):
        return self


class _FrameFile:
    """Per-frame [n, 3] float32 arrays in a file, appended and read back by ranges. Memory stays at
    one chunk whatever the length (a memmap would keep every page it touched counted as resident)."""

    def __init__(self, path: Path, n_points: int):
        self.path, self.row = Path(path), n_points * 3
        self.path.touch()

    def append(self, frames: np.ndarray) -> None:
        with open(self.path, "ab") as f:
            f.write(np.ascontiguousarray(frames, np.float32).tobytes())

    def read(self, a: int, b: int) -> np.ndarray:
        data = np.fromfile(self.path, np.float32, count=(b - a) * self.row, offset=4 * a * self.row)
        return data.reshape(b - a, -1, 3)


class Dubber:
    """Loaded models, reused across dubbing jobs (batch mode loads them once)."""

    def __init__(self, a2e, stage, a2e_config: dict, device: torch.device):
        self.a2e, self.stage, self.device = a2e, stage, device
        self.face: FaceModel = stage.face
        self.fit_face = copy.deepcopy(stage.face).cpu()  # the fit runs in numpy
        self.audio = AudioFrontEnd(a2e_config["audio"], device=device)
        self.align_config = align.AlignConfig(**(a2e_config.get("align") or {"crop_size": self.face.crop_size}))
        if self.align_config.crop_size != self.face.crop_size:
            raise RealtalkError(f"checkpoint crop size {self.align_config.crop_size} differs from its face model's {self.face.crop_size}")

    @classmethod
    def from_pretrained(cls, model_dir: str | os.PathLike, device: torch.device | str = "cpu", backend: str = "torch",
                        renderer: str | None = None) -> "Dubber":
        device = torch.device(device)
        a2e, stage, cfg = load_models(model_dir, device, backend, renderer)
        return cls(a2e, stage, cfg, device)

    # ---- pass 1 -------------------------------------------------------------------------------
    def track(self, video: str | os.PathLike, options: DubOptions, info=None, clock: _Clock | None = None) -> SourceTrack:
        clock = clock or _Clock()
        reader = VideoReader(video, options.fps, info=info)
        # raw landmarks here, smoothed zero-phase afterwards exactly as preprocessing does (an online
        # filter would delay the lips by about a frame relative to what the models were trained on)
        tracker_cfg = TrackerConfig(face_index=options.face_index, bbox=options.bbox)
        tracker_cfg.check_frame(reader.width, reader.height, video)
        found, n_lm = [], 478
        with tempfile.TemporaryDirectory() as tmp:
            raw_path = Path(tmp) / "raw.f32"
            with open(raw_path, "wb") as spill, FaceTracker(replace(tracker_cfg, smooth=False), reader.fps) as tracker, \
                    progress() as p:
                task = p.add_task("track source", total=reader.n_frames, info="")
                frames = iter(reader)
                while True:
                    with clock("decode"):
                        frame = next(frames, None)
                    if frame is None:
                        break
                    with clock("track"):
                        lm = tracker.update(frame)
                    found.append(lm is not None)
                    if lm is not None:
                        n_lm = lm.shape[0]
                    spill.write((lm if lm is not None else np.full((n_lm, 3), np.nan)).astype(np.float32).tobytes())
                    p.update(task, advance=1, info=f"{sum(found)} faces")
            found = np.array(found, bool)
            if len(found) == 0:
                raise RealtalkError("no frames could be decoded", video)
            if not found.any():
                raise RealtalkError(tracker_cfg.no_face_problem(tracker.max_faces_seen), video)
            with clock("fit"):
                raw, landmarks = _FrameFile(raw_path, n_lm), _FrameFile(Path(tmp) / "smooth.f32", n_lm)
                params = self._smooth(raw, landmarks, found, tracker_cfg, reader.fps)
                smoothed = align.smooth_params(params, found, self.align_config.smooth_sigma)
                transforms = align.params_to_affine(smoothed, self.align_config.crop_size)
                alpha, beta, rho, err = self._fit(landmarks, found, transforms)
        return SourceTrack(len(found), reader.width, reader.height, found, transforms, alpha, beta, rho, err,
                           int(np.argmax(found)))

    def _smooth(self, raw, out, found, tracker_cfg, fps, margin: int = 50) -> np.ndarray:
        """Zero-phase landmark smoothing chunk by chunk (bounded memory): each chunk sees `margin`
        frames either side, enough for the filter's state to forget where the chunk began."""
        params = np.full((len(found), 4), np.nan)
        for a in range(0, len(found), FIT_CHUNK):
            b = min(len(found), a + FIT_CHUNK)
            lo, hi = max(0, a - margin), min(len(found), b + margin)
            sm = smooth_landmarks(raw.read(lo, hi), found[lo:hi], fps, tracker_cfg)[a - lo:b - lo]
            out.append(sm)
            ok = found[a:b]
            if ok.any():
                params[a:b][ok] = align.frame_params(sm[ok], self.align_config)
        return params

    def _fit(self, landmarks: np.ndarray, found: np.ndarray, transforms: np.ndarray):
        """Fit in chunks: alpha from the first chunk with faces, then beta and rho chunk by chunk."""
        first = int(np.argmax(found))
        head = slice(first, min(len(found), first + FIT_CHUNK))
        alpha = fit_landmarks(self.fit_face, self._crop_points(landmarks, transforms, head), found[head]).alpha
        beta = np.zeros((len(found), self.fit_face.n_exp), np.float32)
        rho = np.zeros((len(found), self.fit_face.n_pose), np.float32)
        errors = []
        for i in range(0, len(found), FIT_CHUNK):
            s = slice(i, min(len(found), i + FIT_CHUNK))
            if not found[s].any():
                continue
            fit = fit_landmarks(self.fit_face, self._crop_points(landmarks, transforms, s), found[s], alpha=alpha)
            beta[s], rho[s] = fit.beta, fit.rho
            errors.append(fit.error[found[s]])
        return alpha, beta, rho, float(np.concatenate(errors).mean())

    @staticmethod
    def _crop_points(landmarks: "_FrameFile", transforms, s: slice) -> np.ndarray:
        lm = landmarks.read(s.start, s.stop)
        ok = np.isfinite(lm[:, 0, 0])
        if ok.any() and not ok.all():  # frames without a face take the nearest found frame's shape
            idx = np.arange(len(lm))
            lm[~ok] = lm[idx[ok][np.abs(idx[ok][None] - idx[~ok][:, None]).argmin(1)]]
        return align.transform_points(lm, transforms[s])

    # ---- audio -> expressions -------------------------------------------------------------------
    def expressions(self, speech: np.ndarray, n_out: int, track: SourceTrack, seed: int = 0) -> np.ndarray:
        feats = self.audio(speech, n=2 * n_out)
        history = sample_history(track.beta, track.found, self.a2e.cfg.n_history, np.random.default_rng(seed))
        return predict_expressions(self.a2e, feats, track.alpha, history, n_frames=n_out).astype(np.float32)

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
        clock = _Clock()
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
                beta_hat = self.expressions(wav, n_out, track, options.seed)
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
        return DubResult(out, n_out, track.n_frames, missing, track.width, track.height, fps, n_out / fps, dict(clock.seconds))

    def _write_mouth_curve(self, path, beta_hat, track, indices, fps) -> None:
        """The mouth opening the renderer is asked for, per output frame: V(alpha, beta_hat, rho) of the shown frame."""
        from realtalk_cli.pipelines.evaluate import write_mouth_curve

        t = lambda a: torch.as_tensor(np.asarray(a, np.float32))  # noqa: E731
        with torch.no_grad():
            verts = self.fit_face.vertices(t(track.alpha)[None].expand(len(beta_hat), -1), t(beta_hat), t(track.rho[indices]))
            opening = self.fit_face.mouth_opening(verts).numpy()
        write_mouth_curve(path, opening, fps)

    def _render_pass(self, video, info, track, beta_hat, indices, fps, silent, preview_path, options, clock, on_frame) -> int:
        ref_frame = next(iter(VideoReader(video, fps, info=info, start=track.reference, stop=track.reference + 1)))
        with clock("plan"):
            self.stage.prepare(track, beta_hat, indices, ref_frame)
        missing = 0
        batch: list[tuple[int, int, np.ndarray]] = []
        writer = VideoWriter(silent, track.width, track.height, fps, crf=options.crf)
        pw, ph = _preview_size(track.width, track.height)
        preview = VideoWriter(preview_path, 3 * pw, ph, fps, crf=23) if preview_path else None

        def flush():
            if batch:
                for (i, _, frame), (dubbed, paste) in zip(batch, self.stage(batch, clock)):
                    emit(i, frame, dubbed, paste)
                batch.clear()

        def emit(i, frame, dubbed, paste):
            if on_frame is not None:
                on_frame(i, frame, dubbed, paste)
            with clock("encode"):
                writer.write(dubbed)
                if preview:
                    preview.write(_preview_frame(frame, dubbed, paste, pw, ph))

        try:
            with progress() as p:
                task = p.add_task("dub", total=len(indices), info="")
                stream = frames_in_order(video, indices, fps, info=info)
                for i in range(len(indices)):
                    with clock("decode"):
                        j, frame = next(stream)
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
            with clock("encode"):
                writer.close()
                if preview:
                    preview.close()
        except BaseException:
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


VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv")  # containers that take H.264 video with AAC audio


def check_video_name(path: str | os.PathLike) -> None:
    suffix = Path(path).suffix.lower()
    if suffix not in VIDEO_SUFFIXES:
        raise UsageError(f"a video output needs a name ending in {', '.join(VIDEO_SUFFIXES)} (got {suffix or 'no extension'})", path)


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


def read_jobs(path: str | os.PathLike) -> list[tuple[Path, Path, Path]]:
    """Batch mode: a CSV (header video,speech,output) or a JSON list of {"video", "speech", "output"}."""
    import csv

    path = Path(path)
    if not path.is_file():
        raise RealtalkError("jobs file not found", path)
    try:
        if path.suffix.lower() == ".json":
            rows = json.loads(path.read_text())
        else:
            rows = list(csv.DictReader(path.read_text().splitlines()))
        jobs = [(Path(r["video"]), Path(r["speech"]), Path(r["output"])) for r in rows]
    except (KeyError, TypeError, ValueError, json.JSONDecodeError) as e:
        raise RealtalkError(f"cannot read jobs: expected video, speech, output for every job ({e})", path) from None
    if not jobs:
        raise RealtalkError("no jobs listed", path)
    base = path.parent
    return [(base / v, base / s, base / o) for v, s, o in jobs]


def print_summary(result: DubResult) -> None:
    from rich.table import Table

    w, h = result.width, result.height
    size = f"{w}x{h}" + (f" (encoded {w + w % 2}x{h + h % 2}: H.264 4:2:0 needs even sides)" if w % 2 or h % 2 else "")
    t = Table(title=f"{result.output}: {result.frames} frames, {size} @ {result.fps:g} fps, "
                    f"{result.faces_missing} without a face")
    for col in ("stage", "seconds", "frames/s"):
        t.add_column(col, justify="left" if col == "stage" else "right")
    for stage, sec in result.stages.items():
        t.add_row(stage, f"{sec:.2f}", f"{result.frames / sec:.1f}" if sec > 0 else "-")
    t.add_row("total", f"{result.seconds:.2f}", f"{result.frames / result.seconds:.1f}")
    console.print(t)
