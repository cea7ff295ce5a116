"""`realtalk preprocess`: talking-face videos -> the training dataset (format: docs/dataset.md).

Per source video (parallel over `workers` processes, each source atomic and resumable):
  1. track the face at 25 fps (MediaPipe, One-Euro smoothing); frames without the face are flagged;
  2. split at shot changes and at gaps longer than `max_gap` frames (shorter gaps are interpolated
     and marked invalid);
  3. smoothed crop transforms; a second decode pass cuts the crops and writes each segment as a clip
     with its 16 kHz audio and audio features.
Then, for the whole dataset (cheap, single process):
  4. the face model: given (`face_model`), already in the dataset, BFM, or learned by PCA from the
     landmarks of the training clips;
  5. coefficients for every clip not yet fitted with that face model; manifest with train/val split.

A source is done when `sources/<name>.json` exists (written last); a crash midway redoes only that
source. With `shard=(i, n)` a run does steps 1-3 for its share of the sources only; a final run
without a shard on the same directory finds all sources done and performs steps 4-5.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import queue
import re
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from realtalk_cli.audio.features import AudioFeatureConfig, AudioFrontEnd
from realtalk_cli.data.dataset import (CLIPS, FACE_MODEL, Clip, ClipWriter, coeffs_fingerprint, write_coeffs,
                                       write_manifest)
from realtalk_cli.errors import RealtalkError, UsageError
from realtalk_cli.face import align
from realtalk_cli.face.fit import Fit, build_landmark_model, fit_landmarks
from realtalk_cli.face.model import FaceModel
from realtalk_cli.face.tracker import TrackerConfig
from realtalk_cli.face.video_track import FPS, segments, track_video
from realtalk_cli.fsutil import atomic_file

VIDEO_EXTENSIONS = {".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".ts"}
SAMPLES_PER_FRAME = 640  # 16 kHz / 25 fps
SOURCES = "sources"


@dataclass
class PreprocessConfig:
    align: align.AlignConfig = field(default_factory=align.AlignConfig)
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    features: AudioFeatureConfig = field(default_factory=AudioFeatureConfig)
    face_model: str = "landmark"  # "landmark", "bfm", or a path to a face model / checkpoint / dataset
    n_id: int = 80  # landmark model: identity dimensions (at most clips - 1 are learnable)
    n_exp: int = 64  # landmark model: expression dimensions
    bfm: str | None = None  # BFM_model_front.mat (face_model="bfm")
    d3dfr: str | None = None  # Deep3DFaceRecon checkpoint (face_model="bfm")
    max_gap: int = 12  # frames without a face that are interpolated; longer gaps split the clip
    min_frames: int = 25  # shorter segments are dropped
    jpeg_quality: int = 95
    val_fraction: float = 0.0  # share of sources (not frames) held out, chosen by a stable hash of the name
    val_list: list[str] = field(default_factory=list)  # source names (file stems) for validation
    rebuild_face_model: bool = False  # learn the landmark model again even if the dataset has one


# -- one video ----------------------------------------------------------------------------------


def fit_coefficients(face_model: FaceModel, crop_landmarks: np.ndarray, valid: np.ndarray, crops=None,
                     d3dfr: str | os.PathLike | None = None, device: str = "cpu") -> Fit:
    """Coefficients of one clip: landmark model by least squares; bfm by the regressor on `crops`."""
    if face_model.kind == "landmark":
        return fit_landmarks(face_model, crop_landmarks, valid)
    from realtalk_cli.face.bfm import BFMFitter

    if d3dfr is None or crops is None:
        raise UsageError("a bfm face model needs the Deep3DFaceRecon checkpoint (--d3dfr) and the crops")
    return BFMFitter(face_model, d3dfr, device).fit(crops, crop_landmarks, valid)


def _source_name(path: Path, taken: set[str]) -> str:
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", path.stem).strip("._") or "video"
    if name in taken:  # same file name in two folders
        name = f"{name}-{hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:6]}"
    taken.add(name)
    return name


def preprocess_video(path: str | os.PathLike, out: str | os.PathLike, name: str, config: PreprocessConfig,
                     on_frame=None, device: str = "cpu") -> dict:
    """Steps 1-3 for one source: writes its clips and returns its record (also written to sources/).
    `device` runs the audio features (HuBERT); tracking is MediaPipe on the CPU."""
    from realtalk_cli.media import VideoReader, load_audio, probe

    path, out = Path(path), Path(out)
    t0 = time.time()
    info = probe(path)  # fails fast on a corrupt file, before any tracking
    if not info.has_video:
        raise RealtalkError("file has no video stream", path)
    if not info.has_audio:
        raise RealtalkError("file has no audio stream (training needs the speech)", path)
    audio = load_audio(path)
    frontend = AudioFrontEnd(config.features, device)
    t1 = time.time()
    track = track_video(path, config.tracker, config.align, on_frame)
    t2 = time.time()
    n = len(track.found)
    spans = segments(track.found, config.max_gap, config.min_frames, track.cuts)
    if not track.found.any():
        raise RealtalkError(config.tracker.no_face_problem(int(track.n_faces.max(initial=0))), path)
    if not spans:
        raise RealtalkError(f"no face tracked for {config.min_frames} frames in a row "
                            f"(found in {int(track.found.sum())} of {n} frames)", path)
    crop_lm = track.crop_landmarks()
    names = [name] if len(spans) == 1 else [f"{name}-s{k:02d}" for k in range(len(spans))]
    size, clips = config.align.crop_size, []
    for clip_name, (s, e) in zip(names, spans):
        # second pass, one range read per span: crops are streamed, frames never all in memory
        with ClipWriter(out, clip_name, size, FPS, config.jpeg_quality) as writer:
            for i, frame in enumerate(VideoReader(path, fps=FPS, info=info, start=s, stop=e), start=s):
                writer.add_crop(align.warp_to_crop(frame, track.transforms[i], size))
            if len(writer.offsets) - 1 != e - s:
                raise RealtalkError(f"frames {s}-{e} decoded differently on the second pass", path)
            seg_audio = np.zeros((e - s) * SAMPLES_PER_FRAME, np.float32)
            part = audio[s * SAMPLES_PER_FRAME:e * SAMPLES_PER_FRAME]
            seg_audio[:len(part)] = part  # audio shorter than the video: silence
            writer.finish(crop_lm[s:e], track.transforms[s:e], track.found[s:e], seg_audio,
                          frontend.features_for_frames(seg_audio, e - s),
                          {"source": str(path), "source_name": name, "segment": [s, e],
                           "source_size": [track.width, track.height],
                           "max_faces_seen": int(track.n_faces[s:e].max())})
        clips.append({"name": clip_name, "n_frames": e - s, "n_valid": int(track.found[s:e].sum())})
    kept = sum(c["n_frames"] for c in clips)
    t3 = time.time()
    return {"name": name, "source": str(path), "status": "ok", "clips": clips, "frames": n, "kept": kept,
            "dropped": n - kept, "missing": int((~track.found).sum()), "cuts": int(track.cuts.sum()),
            "seconds": round(t3 - t0, 2),
            # where the time goes: probe + audio decode, tracking pass, crop pass (+ features, writing)
            "timing": {"open": round(t1 - t0, 2), "track": round(t2 - t1, 2), "crops": round(t3 - t2, 2)}}


# -- whole dataset ------------------------------------------------------------------------------


def collect_inputs(inputs: list[str | os.PathLike]) -> list[Path]:
    """Video files given directly or found (recursively) in directories, in a stable order."""
    files = []
    for p in map(Path, inputs):
        if p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.suffix.lower() in VIDEO_EXTENSIONS and f.is_file())
        elif p.exists():
            files.append(p)
        else:
            raise UsageError("input not found", p)
    if not files:
        raise UsageError(f"no video files in {', '.join(map(str, inputs))}")
    return files


def _worker(path: str, out: str, name: str, config: PreprocessConfig, threads: int, events, device: str) -> dict:
    """Run one source in a worker process; never raises, so one bad video cannot stop the run."""
    import torch

    torch.set_num_threads(threads)
    on_frame = (lambda i: events.put((name, 25)) if i % 25 == 24 else None) if events is not None else None
    try:
        record = preprocess_video(path, out, name, config, on_frame, device)
    except RealtalkError as e:
        record = {"name": name, "source": path, "status": "failed", "reason": e.problem}
    except Exception as e:  # a bug or an odd file: record it, keep going
        record = {"name": name, "source": path, "status": "failed", "reason": f"{type(e).__name__}: {e}"}
    with atomic_file(Path(out) / SOURCES / f"{name}.json") as tmp:
        tmp.write_text(json.dumps(record, indent=2))
    return record


@dataclass
class PreprocessResult:
    out: Path
    sources: list[dict]  # one record per source in this dataset (ok or failed)
    clips: list[dict]  # manifest entries
    fit_error: float | None  # mean over valid frames of all clips, crop pixels
    seconds: float
    complete: bool  # False for a shard run: face model and manifest are left to the final run


def _select_face_model(out: Path, clips: list[Clip], config: PreprocessConfig) -> FaceModel:
    existing = out / FACE_MODEL
    crop = config.align.crop_size
    if config.face_model not in ("landmark", "bfm"):
        model = FaceModel.load(config.face_model)
    elif config.face_model == "bfm":
        from realtalk_cli.face.bfm import load_bfm

        if not config.bfm or not config.d3dfr:
            raise UsageError("--face-model bfm needs --bfm BFM_model_front.mat and --d3dfr CHECKPOINT")
        model = load_bfm(config.bfm, crop)
    elif (existing / "config.json").is_file() and not config.rebuild_face_model:
        model = FaceModel.load(existing)  # keeps earlier coefficients valid when clips are added
    else:
        train = [c for c in clips if c.meta.get("split", "train") == "train"] or clips
        model = build_landmark_model([c.landmarks3d()[c.valid()] for c in train], crop, config.n_id, config.n_exp)
    if model.crop_size != crop:
        raise UsageError(f"the face model is for {model.crop_size}px crops, the dataset uses {crop}px (--crop-size)")
    if not (existing / "config.json").is_file() or FaceModel.load(existing).fingerprint() != model.fingerprint():
        model.save(existing)
    return model


def _split(names: list[str], config: PreprocessConfig) -> dict[str, str]:
    """train/val per source: the explicit list, else the val_fraction with the smallest name hashes."""
    if config.val_list:
        unknown = set(config.val_list) - set(names)
        if unknown:
            raise UsageError(f"--val-list names no processed source: {', '.join(sorted(unknown))}")
        return {n: "val" if n in config.val_list else "train" for n in names}
    n_val = int(round(config.val_fraction * len(names)))
    if config.val_fraction > 0 and len(names) > 1:
        n_val = min(max(n_val, 1), len(names) - 1)
    ranked = sorted(names, key=lambda n: hashlib.sha1(n.encode()).hexdigest())
    return {n: "val" if n in ranked[:n_val] else "train" for n in names}


def preprocess_dataset(inputs: list[str | os.PathLike], out: str | os.PathLike, config: PreprocessConfig | None = None,
                       workers: int = 1, shard: tuple[int, int] = (0, 1), retry_failed: bool = False,
                       progress=None, device: str = "cpu") -> PreprocessResult:
    """Steps 1-5 for many videos (see the module docstring). `progress`: a rich Progress or None;
    `device` runs HuBERT features and the Deep3DFaceRecon regressor."""
    config = config or PreprocessConfig()
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UsageError("dataset directory is a file", out)
    t0 = time.time()
    if not (0 <= shard[0] < shard[1]):
        raise UsageError(f"--shard must be i/n with 0 <= i < n, got {shard[0]}/{shard[1]}")
    files = collect_inputs(inputs)
    taken: set[str] = set()
    named = [(f, _source_name(f, taken)) for f in files]
    mine = named[shard[0]::shard[1]]
    # fail now on bad settings, not after hours of tracking
    AudioFrontEnd(config.features)
    if config.face_model == "bfm" and not (config.bfm and config.d3dfr):
        raise UsageError("--face-model bfm needs --bfm BFM_model_front.mat and --d3dfr CHECKPOINT")
    if config.face_model not in ("landmark", "bfm"):
        FaceModel.load(config.face_model)
    (out / SOURCES).mkdir(parents=True, exist_ok=True)

    def done(name: str) -> bool:
        rec = out / SOURCES / f"{name}.json"
        return rec.is_file() and (not retry_failed or json.loads(rec.read_text())["status"] == "ok")

    todo = [(f, n) for f, n in mine if not done(n)]
    _run_sources(todo, out, config, workers, progress, str(device))

    records = [json.loads((out / SOURCES / f"{n}.json").read_text()) for _, n in named
               if (out / SOURCES / f"{n}.json").is_file()]
    complete = shard[1] == 1 or len(records) == len(named)
    clips_out, fit_error = [], None
    if complete and any(r["status"] == "ok" for r in records):  # no manifest for a dataset without a clip
        clips_out, fit_error = _finish(out, records, config, progress, str(device))
    return PreprocessResult(out, records, clips_out, fit_error, time.time() - t0, complete)


def _silence_native_stderr() -> None:
    """Worker start-up: MediaPipe's C++ logging writes straight to fd 2 and would garble the progress
    bars of the parent; a worker reports through its return value and the event queue instead."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)


def _run_sources(todo, out: Path, config: PreprocessConfig, workers: int, progress, device: str) -> None:
    """Steps 1-3, in this process for one worker, else in `workers` spawned processes."""
    if not todo:
        return
    task = progress.add_task("track + crop", total=None, info=f"{len(todo)} videos") if progress else None
    threads = max(1, (os.cpu_count() or 1) // workers)
    if workers == 1:
        frames = _ProgressEvents(progress, task)
        for k, (f, n) in enumerate(todo):
            _worker(str(f), str(out), n, config, threads, frames, device)
            if progress:
                progress.update(task, info=f"{k + 1}/{len(todo)} videos")
        return
    ctx = mp.get_context("spawn")  # MediaPipe and torch are not fork-safe
    with ctx.Manager() as manager, ProcessPoolExecutor(workers, mp_context=ctx, initializer=_silence_native_stderr) as pool:
        events = manager.Queue()
        futures = {pool.submit(_worker, str(f), str(out), n, config, threads, events, device): n for f, n in todo}
        pending = set(futures)
        while pending:
            try:
                _, k = events.get(timeout=0.2)
                if progress:
                    progress.update(task, advance=k)
            except queue.Empty:
                pass
            for f in [f for f in pending if f.done()]:
                pending.discard(f)
                f.result()  # re-raises only what _worker could not record (e.g. the disk is full)
                if progress:
                    progress.update(task, info=f"{len(todo) - len(pending)}/{len(todo)} videos")


class _ProgressEvents:
    """In-process stand-in for the workers' event queue: advances the progress bar directly."""

    def __init__(self, progress, task):
        self.progress, self.task = progress, task

    def put(self, event: tuple[str, int]) -> None:
        if self.progress:
            self.progress.update(self.task, advance=event[1])


def _finish(out: Path, records: list[dict], config: PreprocessConfig, progress, device: str) -> tuple[list[dict], float | None]:
    """Steps 4-5: face model, coefficients of clips not yet fitted with it, manifest."""
    ok = [r for r in records if r["status"] == "ok"]
    failed = [{"source": r["source"], "name": r["name"], "reason": r["reason"]} for r in records if r["status"] != "ok"]
    split = _split([r["name"] for r in ok], config) if ok else {}
    clips = []
    for r in ok:
        for c in r["clips"]:
            clip = Clip(out / CLIPS / c["name"])
            clip.meta["split"] = split[r["name"]]
            clips.append(clip)
    entries, errors = [], []
    if clips:
        model = _select_face_model(out, clips, config)
        task = progress.add_task("fit coefficients", total=len(clips)) if progress else None
        for clip in clips:
            if coeffs_fingerprint(clip.dir) != model.fingerprint():
                fit = fit_coefficients(model, clip.landmarks3d(), clip.valid(), clip.crops, config.d3dfr, device)
                write_coeffs(clip.dir, {"alpha": fit.alpha, "beta": fit.beta, "rho": fit.rho, "fit_error": fit.error},
                             model.fingerprint())
            err = clip.coeffs()["fit_error"][clip.valid()]
            errors.append(err)
            entries.append({"name": clip.name, "source": clip.meta["source"], "source_name": clip.meta["source_name"],
                            "split": clip.meta["split"], "n_frames": clip.n_frames, "n_valid": int(clip.valid().sum()),
                            "fit_error": round(float(err.mean()), 4) if len(err) else None})
            if progress:
                progress.update(task, advance=1, info=clip.name)
    dataset_config = asdict(config)
    dataset_config["features"] = AudioFrontEnd(config.features).to_dict()
    dataset_config["fps"] = FPS
    dataset_config["crop_size"] = config.align.crop_size
    write_manifest(out, entries, failed, dataset_config)
    all_err = np.concatenate(errors) if errors else np.zeros(0)
    return entries, (float(all_err.mean()) if len(all_err) else None)
