"""The training dataset written by `realtalk preprocess` and read by both trainers (docs/dataset.md).

    <dataset>/
      manifest.json           format, version, clips (name, source, split, frames, fit error), failures
      config.json             the preprocessing config (crop, tracker, audio features, face model)
      face_model/             the face model checkpoint (FaceModel.save)
      clips/<name>/
        meta.json             fps, n_frames, crop_size, source, segment, tracking stats
        crops.bin             concatenated JPEG images, one per frame (offsets in track.safetensors)
        track.safetensors     crop_offsets [T+1], landmarks [T,478,3], transforms [T,2,3], valid [T]
        audio.wav             16 kHz mono float
        features.safetensors  features [2T, F]: rows 2t and 2t+1 belong to video frame t
        coeffs.safetensors    alpha [n_id], beta [T,n_exp], rho [T,n_pose], fit_error [T]

A clip directory appears atomically (written beside, then renamed), so an interrupted run leaves
no half clip; coefficients are a separate file because they depend on the face model and are
refit when it changes.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import soundfile as sf
from safetensors.numpy import load_file, save_file

from realtalk_cli.errors import RealtalkError
from realtalk_cli.fsutil import atomic_dir, atomic_file, read_json
from realtalk_cli.media.jpeg import decode_rgb, encode_rgb

FORMAT = "realtalk-dataset"
VERSION = 1
MANIFEST, CONFIG, FACE_MODEL, CLIPS = "manifest.json", "config.json", "face_model", "clips"
SAMPLE_RATE = 16000
FEATURES_PER_FRAME = 2


def _write_json(path: Path, obj) -> None:
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))


def _arrays(path: Path) -> dict[str, np.ndarray]:
    try:
        return load_file(str(path))
    except FileNotFoundError:
        raise RealtalkError("missing file", path) from None
    except Exception as e:  # safetensors raises several types for a damaged file
        raise RealtalkError(f"cannot read arrays ({e})", path) from None


class Clip:
    """One continuous face track: random access to crops, per-frame arrays loaded on first use."""

    def __init__(self, directory: str | os.PathLike):
        self.dir = Path(directory)
        self.meta = read_json(self.dir / "meta.json")
        self.name: str = self.meta["name"]
        self.n_frames: int = int(self.meta["n_frames"])
        self.fps: float = float(self.meta["fps"])
        self.crop_size: int = int(self.meta["crop_size"])
        self._track: dict | None = None
        self._crops: np.ndarray | None = None

    def __repr__(self) -> str:
        return f"Clip({self.name!r}, frames={self.n_frames}, crop={self.crop_size})"

    def __len__(self) -> int:
        return self.n_frames

    @property
    def track(self) -> dict[str, np.ndarray]:
        if self._track is None:
            self._track = _arrays(self.dir / "track.safetensors")
        return self._track

    def crops(self, indices: Sequence[int] | np.ndarray | slice | None = None) -> np.ndarray:
        """uint8 RGB crops [k, S, S, 3] of the given frames (all when None); one JPEG decode each."""
        if self._crops is None:  # memory-mapped: cheap to open in every data-loader worker
            self._crops = np.memmap(self.dir / "crops.bin", dtype=np.uint8, mode="r")
        idx = np.arange(self.n_frames)[indices if indices is not None else slice(None)]
        offsets = self.track["crop_offsets"]
        out = np.empty((len(idx), self.crop_size, self.crop_size, 3), np.uint8)
        for k, i in enumerate(np.atleast_1d(idx)):
            decode_rgb(self._crops[offsets[i]:offsets[i + 1]], f"crop {i}", self.dir / "crops.bin", dst=out[k])
        return out

    def landmarks(self) -> np.ndarray:
        """[T, 478, 2] tracked landmarks in crop pixels (x right, y down)."""
        return self.track["landmarks"][..., :2]

    def landmarks3d(self) -> np.ndarray:
        """[T, 478, 3]: as `landmarks` plus MediaPipe's relative depth in the same pixel scale."""
        return self.track["landmarks"]

    def transforms(self) -> np.ndarray:
        """[T, 2, 3] affine maps from source-frame pixels to crop pixels."""
        return self.track["transforms"]

    def valid(self) -> np.ndarray:
        """bool [T]: False where no face was found and the track was interpolated across the gap."""
        return self.track["valid"].astype(bool)

    def audio(self) -> np.ndarray:
        audio, sr = sf.read(str(self.dir / "audio.wav"), dtype="float32")
        if sr != SAMPLE_RATE:
            raise RealtalkError(f"audio is {sr} Hz, expected {SAMPLE_RATE}", self.dir / "audio.wav")
        return audio

    def audio_features(self) -> np.ndarray:
        """float32 [2T, F]: features 2t and 2t+1 belong to video frame t (see audio/features.py)."""
        if "_features" not in self.__dict__:
            self._features = _arrays(self.dir / "features.safetensors")["features"]
        return self._features

    @property
    def has_coeffs(self) -> bool:
        return (self.dir / "coeffs.safetensors").is_file()

    def coeffs(self) -> dict[str, np.ndarray]:
        """alpha [n_id], beta [T, n_exp], rho [T, n_pose], fit_error [T] (crop pixels), float32."""
        if "_coeffs" not in self.__dict__:
            if not self.has_coeffs:
                raise RealtalkError("clip has no coefficients yet (rerun `realtalk preprocess` on the dataset)", self.dir)
            self._coeffs = _arrays(self.dir / "coeffs.safetensors")
        return self._coeffs


class Dataset:
    """A preprocessed dataset: manifest, config, face model and clips."""

    def __init__(self, directory: Path, manifest: dict, config: dict):
        self.dir, self.manifest, self.config = directory, manifest, config
        self._face_model = None

    @classmethod
    def open(cls, directory: str | os.PathLike) -> "Dataset":
        directory = Path(directory)
        if not (directory / MANIFEST).is_file():
            raise RealtalkError("not a realtalk dataset (no manifest.json; run `realtalk preprocess` first)", directory)
        manifest = read_json(directory / MANIFEST, MANIFEST, expect=dict)
        if manifest.get("format") != FORMAT:
            raise RealtalkError("not a realtalk dataset manifest (field 'format')", directory / MANIFEST)
        if not isinstance(manifest.get("version", 0), int) or manifest.get("version", 0) > VERSION:
            raise RealtalkError(f"field 'version': {manifest.get('version')!r} is not a dataset format this realtalk reads "
                                f"(up to {VERSION})", directory / MANIFEST)
        clips = manifest.get("clips")
        if not isinstance(clips, list) or not all(isinstance(c, dict) and isinstance(c.get("name"), str)
                                                  and c.get("split") in ("train", "val") for c in clips):
            raise RealtalkError("field 'clips' must list {\"name\": ..., \"split\": \"train\"|\"val\"} entries", directory / MANIFEST)
        config = read_json(directory / CONFIG) if (directory / CONFIG).is_file() else {}
        return cls(directory, manifest, config)

    @property
    def face_model(self):
        if self._face_model is None:
            from realtalk_cli.face.model import FaceModel

            self._face_model = FaceModel.load(self.dir / FACE_MODEL)
        return self._face_model

    def clips(self, split: str | None = None) -> list[Clip]:
        if split not in (None, "train", "val"):
            raise ValueError(f"split must be None, 'train' or 'val', not {split!r}")
        return [Clip(self.dir / CLIPS / c["name"]) for c in self.manifest["clips"]
                if split is None or c["split"] == split]

    def __repr__(self) -> str:
        return f"Dataset({str(self.dir)!r}, clips={len(self.manifest['clips'])})"


# -- writing -----------------------------------------------------------------------------------


class ClipWriter:
    """Streams crops of one clip into a temp directory that becomes clips/<name> only on success.

        with ClipWriter(dataset_dir, name, crop_size) as w:
            for crop in crops: w.add_crop(crop)
            w.finish(landmarks=..., transforms=..., valid=..., audio=..., features=..., meta={...})
    """

    def __init__(self, dataset_dir: str | os.PathLike, name: str, crop_size: int, fps: float = 25.0,
                 jpeg_quality: int = 95):
        self.target = Path(dataset_dir) / CLIPS / name
        self.name, self.crop_size, self.fps, self.quality = name, int(crop_size), float(fps), int(jpeg_quality)
        self.offsets = [0]
        self._finished = False

    def __enter__(self) -> "ClipWriter":
        self._stack = contextlib.ExitStack()
        self.tmp = self._stack.enter_context(atomic_dir(self.target))
        self._file = self._stack.enter_context(open(self.tmp / "crops.bin", "wb"))
        return self

    def add_crop(self, rgb: np.ndarray) -> None:
        if rgb.shape != (self.crop_size, self.crop_size, 3) or rgb.dtype != np.uint8:
            raise ValueError(f"crop must be uint8 [{self.crop_size},{self.crop_size},3], got {rgb.dtype} {rgb.shape}")
        data = encode_rgb(rgb, self.quality)
        self._file.write(data)
        self.offsets.append(self.offsets[-1] + len(data))

    def finish(self, landmarks: np.ndarray, transforms: np.ndarray, valid: np.ndarray, audio: np.ndarray,
               features: np.ndarray, meta: dict | None = None) -> None:
        t = len(self.offsets) - 1
        expected = {"landmarks": (landmarks, (t, landmarks.shape[1], 3)), "transforms": (transforms, (t, 2, 3)),
                    "valid": (valid, (t,)), "features": (features, (FEATURES_PER_FRAME * t, features.shape[-1]))}
        for key, (array, shape) in expected.items():
            if np.shape(array) != shape:
                raise ValueError(f"{key} has shape {np.shape(array)}, expected {shape} for {t} frames")
        save_file({"crop_offsets": np.asarray(self.offsets, np.int64),
                   "landmarks": np.ascontiguousarray(landmarks, np.float32),
                   "transforms": np.ascontiguousarray(transforms, np.float32),
                   "valid": np.asarray(valid, np.uint8)}, str(self.tmp / "track.safetensors"))
        save_file({"features": np.ascontiguousarray(features, np.float32)}, str(self.tmp / "features.safetensors"))
        sf.write(str(self.tmp / "audio.wav"), np.asarray(audio, np.float32), SAMPLE_RATE, subtype="FLOAT")
        meta = {**(meta or {}), "name": self.name, "n_frames": t, "fps": self.fps, "crop_size": self.crop_size,
                "n_valid": int(np.count_nonzero(valid)), "format_version": VERSION}
        (self.tmp / "meta.json").write_text(json.dumps(meta, indent=2))
        self._finished = True

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None and not self._finished:
            err = RuntimeError("ClipWriter closed without finish()")
            self._stack.__exit__(RuntimeError, err, None)  # removes the temp directory
            raise err
        return self._stack.__exit__(exc_type, exc, tb)


def write_clip(dataset_dir: str | os.PathLike, name: str, crops: Iterable[np.ndarray], *, landmarks: np.ndarray,
               transforms: np.ndarray, valid: np.ndarray, audio: np.ndarray, features: np.ndarray,
               crop_size: int, fps: float = 25.0, meta: dict | None = None, coeffs: dict | None = None,
               face_model_fingerprint: str = "") -> Clip:
    """Write a whole clip at once (tests, small tools); preprocess streams with ClipWriter instead."""
    with ClipWriter(dataset_dir, name, crop_size, fps) as w:
        for crop in crops:
            w.add_crop(crop)
        w.finish(landmarks, transforms, valid, audio, features, meta)
    clip = Clip(Path(dataset_dir) / CLIPS / name)
    if coeffs is not None:
        write_coeffs(clip.dir, coeffs, face_model_fingerprint)
    return clip


def write_coeffs(clip_dir: str | os.PathLike, coeffs: dict[str, np.ndarray], face_model_fingerprint: str) -> None:
    """alpha, beta, rho (+ optional fit_error) for a clip, tagged with the face model they belong to."""
    arrays = {k: np.ascontiguousarray(coeffs[k], np.float32) for k in ("alpha", "beta", "rho")}
    arrays["fit_error"] = np.ascontiguousarray(coeffs.get("fit_error", np.zeros(len(arrays["beta"]))), np.float32)
    with atomic_file(Path(clip_dir) / "coeffs.safetensors") as tmp:
        save_file(arrays, str(tmp), metadata={"face_model": face_model_fingerprint})


def coeffs_fingerprint(clip_dir: str | os.PathLike) -> str | None:
    """The face model fingerprint a clip's coefficients were fit with (None if not fit yet)."""
    from safetensors import safe_open

    path = Path(clip_dir) / "coeffs.safetensors"
    if not path.is_file():
        return None
    with safe_open(str(path), "np") as f:
        return (f.metadata() or {}).get("face_model")


def write_manifest(dataset_dir: str | os.PathLike, clips: list[dict], failed: list[dict] | None = None,
                   config: dict | None = None) -> None:
    """clips: dicts with at least name and split ('train'/'val'); failed: dicts with source and reason."""
    dataset_dir = Path(dataset_dir)
    for c in clips:
        if c.get("split") not in ("train", "val"):
            raise ValueError(f"clip {c.get('name')!r} has split {c.get('split')!r}, expected 'train' or 'val'")
    if config is not None:
        _write_json(dataset_dir / CONFIG, config)
    _write_json(dataset_dir / MANIFEST, {"format": FORMAT, "version": VERSION, "face_model": FACE_MODEL,
                                         "clips": clips, "failed": failed or []})
