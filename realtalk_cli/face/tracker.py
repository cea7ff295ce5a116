"""Face tracking with MediaPipe FaceMesh (legacy solution API, models bundled in the wheel).

One speaker per video: the largest face at the start by default, or the `face_index`-th face from
the left, or the face overlapping a `bbox`; then the same face is followed by proximity, so a
second person entering the shot never steals the track. A jump of the face (a shot change) is
flagged in `cuts`, where preprocessing starts a new clip. Landmarks are smoothed with a One-Euro
filter (strong at rest, where tracker jitter dominates; light during fast lip motion): online in
`FaceTracker.update`, zero-phase (forward and backward) in `track_frames`/`smooth_landmarks`, which
preprocessing uses so lip motion is not delayed. Frames without the face are flagged (found=False,
landmarks NaN).
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from dataclasses import dataclass, field, replace

import numpy as np

from realtalk_cli.errors import RealtalkError, UsageError
from realtalk_cli.face import mediapipe_mesh as mesh


@dataclass
class TrackerConfig:
    max_faces: int = 2  # faces MediaPipe looks for: 2 so "the largest" is a real choice (1 is ~25% faster)
    face_index: int | None = None  # pick the i-th face from the left at the start
    bbox: tuple[float, float, float, float] | None = None  # x0, y0, x1, y1 in source pixels
    min_detection_confidence: float = 0.5
    min_tracking_confidence: float = 0.5
    reselect_after: float = 1.0  # seconds to wait for the speaker to reappear while other faces are visible
    smooth: bool = True
    # One-Euro (offline, zero-phase), tuned on a real expressive clip: rigid jitter -38%, lip-opening
    # peaks -3%, a 4 Hz (syllable-rate) mouth motion keeps 88% of its amplitude
    min_cutoff: float = 1.0  # Hz, cutoff at rest
    beta: float = 10.0  # cutoff increase per face-size per second of motion
    d_cutoff: float = 4.0  # Hz, for the speed estimate (1 Hz, the usual value, averages speech motion away)

    def __post_init__(self):
        if self.bbox is not None:
            x0, y0, x1, y1 = self.bbox
            if not (x1 > x0 and y1 > y0):
                raise UsageError(f"--bbox needs x0,y0,x1,y1 with x1 > x0 and y1 > y0, got {self.bbox}")
        if self.face_index is not None and self.face_index < 0:
            raise UsageError("--face-index must be >= 0")
        if self.face_index is not None:
            self.max_faces = max(self.max_faces, self.face_index + 1)


@dataclass
class FaceTrack:
    """Landmarks of the chosen face in source-frame pixels (x, y and MediaPipe's z scaled like x)."""

    landmarks: np.ndarray  # [T, 478, 3] float32, NaN where not found
    found: np.ndarray  # [T] bool
    fps: float
    width: int
    height: int
    n_faces: np.ndarray = field(default=None)  # [T] faces MediaPipe returned
    cuts: np.ndarray = field(default=None)  # [T] bool: the face jumped here (a shot change): a new track starts

    def __len__(self) -> int:
        return len(self.found)


class OneEuroFilter:
    """One-Euro filter (Casiez et al. 2012) over arrays; `scale` makes speed relative to face size."""

    def __init__(self, fps: float, min_cutoff: float, beta: float, d_cutoff: float):
        self.dt, self.min_cutoff, self.beta, self.d_cutoff = 1.0 / fps, min_cutoff, beta, d_cutoff
        self.reset()

    def reset(self) -> None:
        self.x = self.dx = None

    def _alpha(self, cutoff):
        tau = 1.0 / (2 * np.pi * cutoff)
        return 1.0 / (1.0 + tau / self.dt)

    def __call__(self, x: np.ndarray, scale: float = 1.0) -> np.ndarray:
        if self.x is None:
            self.x, self.dx = x.copy(), np.zeros_like(x)
            return x
        dx = (x - self.x) / self.dt / scale
        self.dx = self.dx + self._alpha(self.d_cutoff) * (dx - self.dx)
        a = self._alpha(self.min_cutoff + self.beta * np.abs(self.dx))
        self.x = self.x + a * (x - self.x)
        return self.x.copy()


@contextlib.contextmanager
def _quiet_stderr():
    """Silence file descriptor 2 (C++ logging bypasses Python's sys.stderr)."""
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved), os.close(devnull)


def _box(points: np.ndarray) -> np.ndarray:
    return np.concatenate([points[:, :2].min(0), points[:, :2].max(0)])


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    area = lambda r: (r[2] - r[0]) * (r[3] - r[1])  # noqa: E731
    return inter / max(area(a) + area(b) - inter, 1e-9)


class FaceTracker:
    """Feed RGB frames in order; `update(frame)` returns [478, 3] landmarks or None."""

    def __init__(self, config: TrackerConfig | None = None, fps: float = 25.0):
        import mediapipe as mp

        self.config = config or TrackerConfig()
        c = self.config
        # MediaPipe's C++ start-up log lines would interleave with progress bars. Its calculators open
        # asynchronously, so a blank frame is processed here to finish start-up while stderr is quiet.
        with _quiet_stderr(), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            self._mesh = mp.solutions.face_mesh.FaceMesh(
                static_image_mode=False, max_num_faces=c.max_faces, refine_landmarks=True,
                min_detection_confidence=c.min_detection_confidence, min_tracking_confidence=c.min_tracking_confidence)
            self._mesh.process(np.zeros((64, 64, 3), np.uint8))
        self.fps = fps
        self._filter = OneEuroFilter(fps, c.min_cutoff, c.beta, c.d_cutoff)
        self._last: np.ndarray | None = None  # last chosen face (unsmoothed)
        self._lost = 0
        self.n_faces = 0

    def close(self) -> None:
        self._mesh.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def detect(self, frame: np.ndarray) -> list[np.ndarray]:
        """All faces MediaPipe returns for this frame, as [478, 3] pixel arrays."""
        h, w = frame.shape[:2]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # protobuf deprecation noise inside mediapipe
            result = self._mesh.process(np.ascontiguousarray(frame))
        faces = []
        for face in result.multi_face_landmarks or []:
            pts = np.array([(p.x, p.y, p.z) for p in face.landmark], np.float32)
            if len(pts) != mesh.N_LANDMARKS:
                raise RealtalkError(f"MediaPipe returned {len(pts)} landmarks, expected {mesh.N_LANDMARKS}")
            faces.append(pts * np.float32([w, h, w]))
        return faces

    def _choose(self, faces: list[np.ndarray]) -> np.ndarray | None:
        c = self.config
        if not faces:
            return None
        if self._last is not None:
            # follow the same person: the nearest face within half a face size
            size = np.ptp(self._last[:, :2], 0).max()
            dist = [np.linalg.norm(f[:, :2].mean(0) - self._last[:, :2].mean(0)) for f in faces]
            k = int(np.argmin(dist))
            if dist[k] < 0.5 * size:
                return faces[k]
            # nobody near: a lone face is taken as the speaker after a shot change (a cut starts a new
            # clip anyway); among several, wait a while rather than jump to someone else
            if len(faces) > 1 and self._lost <= c.reselect_after * self.fps:
                return None
        if c.bbox is not None:
            overlap = [_iou(_box(f), np.asarray(c.bbox, np.float32)) for f in faces]
            return faces[int(np.argmax(overlap))] if max(overlap) > 0 else None
        if c.face_index is not None:
            ordered = sorted(faces, key=lambda f: f[:, 0].mean())
            return ordered[c.face_index] if c.face_index < len(ordered) else None
        return max(faces, key=lambda f: np.prod(np.ptp(f[:, :2], 0)))

    def update(self, frame: np.ndarray) -> np.ndarray | None:
        faces = self.detect(frame)
        self.n_faces = len(faces)
        face = self._choose(faces)
        if face is None:
            self._lost += 1
            self._filter.reset()  # after a gap, start afresh rather than sliding from a stale position
            return None
        self._last, self._lost = face, 0
        if not self.config.smooth:
            return face
        return self._filter(face, scale=float(np.ptp(face[:, :2], 0).max()))


def detect_cuts(landmarks: np.ndarray, found: np.ndarray, jump: float = 0.3) -> np.ndarray:
    """bool [T]: True where the face centre moved more than `jump` face sizes, or its size changed by
    more than that fraction, since the previous frame with a face: a shot change, not head motion
    (a fast head turn moves the centre by ~0.05 face sizes per frame at 25 fps)."""
    cuts = np.zeros(len(found), bool)
    t = np.flatnonzero(found)
    if len(t) < 2:
        return cuts
    centre = landmarks[t, :, :2].mean(1)
    size = np.ptp(landmarks[t, :, :2], axis=1).max(-1)
    moved = np.linalg.norm(np.diff(centre, axis=0), axis=1) / size[:-1]
    resized = np.abs(np.log(size[1:] / size[:-1]))
    cuts[t[1:][(moved > jump) | (resized > np.log1p(jump))]] = True
    return cuts


def smooth_landmarks(landmarks: np.ndarray, found: np.ndarray, fps: float, config: TrackerConfig | None = None,
                     cuts: np.ndarray | None = None) -> np.ndarray:
    """Zero-phase One-Euro smoothing for a whole track (offline): the mean of a forward and a
    backward pass over each run of found frames (runs also end at `cuts`). The online filter in
    `FaceTracker.update` delays fast lip motion by about a frame; averaging both directions cancels
    that delay."""
    c = config or TrackerConfig()
    out = landmarks.copy()
    t = np.flatnonzero(found)
    if len(t) == 0:
        return out
    new_run = np.diff(t) > 1
    if cuts is not None:
        new_run |= cuts[t[1:]]
    runs = np.split(t, np.flatnonzero(new_run) + 1)
    f = OneEuroFilter(fps, c.min_cutoff, c.beta, c.d_cutoff)
    for run in runs:
        seq = landmarks[run]
        scale = np.ptp(seq[:, :, :2], axis=1).max(-1)
        passes = []
        for order in (slice(None), slice(None, None, -1)):
            f.reset()
            passes.append(np.stack([f(x, s) for x, s in zip(seq[order], scale[order])])[order])
        out[run] = (passes[0] + passes[1]) / 2
    return out


def track_frames(frames, fps: float = 25.0, config: TrackerConfig | None = None, on_frame=None) -> FaceTrack:
    """Track one face through an iterable of RGB frames (offline: landmarks smoothed zero-phase when
    `config.smooth`); `on_frame(i)` is called after each frame."""
    config = config or TrackerConfig()
    landmarks, found, n_faces = [], [], []
    size = (0, 0)
    with FaceTracker(replace(config, smooth=False), fps) as tracker:
        for i, frame in enumerate(frames):
            size = frame.shape[:2]
            pts = tracker.update(frame)
            found.append(pts is not None)
            landmarks.append(pts if pts is not None else np.full((mesh.N_LANDMARKS, 3), np.nan, np.float32))
            n_faces.append(tracker.n_faces)
            if on_frame is not None:
                on_frame(i)
    lm = np.stack(landmarks) if landmarks else np.zeros((0, mesh.N_LANDMARKS, 3), np.float32)
    found = np.array(found, bool)
    cuts = detect_cuts(lm, found)
    if config.smooth:
        lm = smooth_landmarks(lm, found, fps, config, cuts)
    return FaceTrack(lm.astype(np.float32), found, fps, size[1], size[0], np.array(n_faces, np.int16), cuts)
