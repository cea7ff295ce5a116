"""Pass 1 of a dub: what the source video's face does, frame by frame, in a few small arrays.

    decode -> track (raw landmarks, spilled to disk) -> zero-phase smoothing chunk by chunk
           -> smoothed crop transforms -> face-model fit (alpha once, beta and rho per frame)

Memory does not grow with video length: landmarks go to a temporary file and are read back in
chunks of FIT_CHUNK frames; what stays is a transform and coefficients per frame.
"""

from __future__ import annotations

import copy
import os
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from realtalk_cli.errors import RealtalkError
from realtalk_cli.face import align
from realtalk_cli.face.fit import fit_landmarks
from realtalk_cli.face.model import FaceModel
from realtalk_cli.face.tracker import FaceTracker, TrackerConfig, smooth_landmarks
from realtalk_cli.media import VideoReader
from realtalk_cli.progress import Clock, progress

FIT_CHUNK = 500  # frames fitted at once: bounds memory for any video length


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

    ARRAYS = ("found", "transforms", "alpha", "beta", "rho")

    def save(self, path: str | os.PathLike) -> None:
        """One safetensors file, written atomically; the scalars go in its metadata."""
        from safetensors.numpy import save_file

        from realtalk_cli.fsutil import atomic_file

        meta = {k: str(getattr(self, k)) for k in ("n_frames", "width", "height", "fit_error", "reference")}
        arrays = {k: np.ascontiguousarray(getattr(self, k)) for k in self.ARRAYS}
        arrays["found"] = arrays["found"].astype(np.uint8)
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(path) as tmp:
            save_file(arrays, str(tmp), metadata=meta)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "SourceTrack":
        from safetensors import safe_open

        try:
            with safe_open(str(path), "np") as f:
                meta, arrays = f.metadata(), {k: f.get_tensor(k) for k in cls.ARRAYS}
            return cls(int(meta["n_frames"]), int(meta["width"]), int(meta["height"]), arrays["found"].astype(bool),
                       arrays["transforms"], arrays["alpha"], arrays["beta"], arrays["rho"], float(meta["fit_error"]),
                       int(meta["reference"]))
        except Exception as e:  # a damaged cache entry: say which file
            raise RealtalkError(f"cannot read the cached track ({e}); delete it to track again", path) from None


class FrameFile:
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


class SourceTracker:
    """Tracks and fits a source video with one face model and crop alignment.

    With a `cache` directory, a video tracked once (same bytes, frame rate, face choice, face model
    and alignment) is not tracked again: its SourceTrack is read back, so a second dub of the same
    video starts rendering at once (the "prepared avatar")."""

    def __init__(self, face: FaceModel, align_config: align.AlignConfig, cache: str | os.PathLike | None = None):
        self.fit_face = copy.deepcopy(face).cpu()  # the fit runs in numpy
        self.align_config = align_config
        self.cache = None if cache is None else Path(cache)

    def cache_path(self, video, fps, face_index, bbox) -> Path | None:
        if self.cache is None:
            return None
        import hashlib
        from dataclasses import asdict

        from realtalk_cli.fsutil import content_key

        # the video's bytes, how it is read and the face model and alignment the track is expressed in
        key = f"{content_key(video)}|{fps}|{face_index}|{bbox}|{self.fit_face.fingerprint()}|{asdict(self.align_config)}"
        return self.cache / f"{hashlib.sha256(key.encode()).hexdigest()[:20]}.safetensors"

    def __call__(self, video: str | os.PathLike, fps: float | None, face_index: int | None = None,
                 bbox: tuple[float, float, float, float] | None = None, info=None, clock: Clock | None = None) -> SourceTrack:
        path = self.cache_path(video, fps, face_index, bbox)
        if path is not None and path.is_file():
            return SourceTrack.load(path)
        track = self.track(video, fps, face_index, bbox, info, clock)
        if path is not None:
            try:
                track.save(path)
            except OSError as e:  # a read-only model directory: dub anyway, track again next time
                from realtalk_cli.progress import console

                console.print(f"note: could not cache the track in {path.parent} ({e.strerror})")
        return track

    def track(self, video: str | os.PathLike, fps: float | None, face_index: int | None = None,
              bbox: tuple[float, float, float, float] | None = None, info=None, clock: Clock | None = None) -> SourceTrack:
        clock = clock or Clock()
        reader = VideoReader(video, fps, info=info)
        # raw landmarks here, smoothed zero-phase afterwards exactly as preprocessing does (an online
        # filter would delay the lips by about a frame relative to what the models were trained on)
        tracker_cfg = TrackerConfig(face_index=face_index, bbox=bbox)
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
                raw, landmarks = FrameFile(raw_path, n_lm), FrameFile(Path(tmp) / "smooth.f32", n_lm)
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
    def _crop_points(landmarks: "FrameFile", transforms, s: slice) -> np.ndarray:
        lm = landmarks.read(s.start, s.stop)
        ok = np.isfinite(lm[:, 0, 0])
        if ok.any() and not ok.all():  # frames without a face take the nearest found frame's shape
            idx = np.arange(len(lm))
            lm[~ok] = lm[idx[ok][np.abs(idx[ok][None] - idx[~ok][:, None]).argmin(1)]]
        return align.transform_points(lm, transforms[s])

