"""Face tracking with MediaPipe FaceMesh (legacy solution API, models bundled in the wheel).

One speaker per video: the largest face at the start by default, or the `face_index`-th face from
the left, or the face overlapping a `bbox`; then the same face is followed by proximity, so a
second person entering the shot never steals the track. A jump of the face (a shot change) is
flagged in `cuts`, where preprocessing starts a new clip. Landmarks are smoothed with a One-Euro
filter (strong at rest, where tracker jitter dominates; light during fast lip motion): online in
`FaceTracker.update`, zero-phase (forward and backward) in `track_frames`/`smooth_landmarks`, which
preprocessing uses so lip motion is not delayed. Frames without the face are flagged (found=False,
landmarks NaN).

Small faces: FaceMesh's own detector is short-range (the whole frame shrunk to 128 px), so a face
under ~100 px in a large frame is never found. Where FaceMesh finds no face, MediaPipe's full-range
detector finds them and FaceMesh runs on a crop around each, scaled to a fixed size; while that face
is followed, the next frame is cropped around its last landmarks, so the detector runs only to
(re)acquire it.
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
    # small faces, tracked in crops: crop side in face sizes, and the crop's side in pixels. FaceMesh
    # resamples its own face box to 192 px, so a larger crop adds nothing: on a real 720x1080 clip (face
    # box ~90 px) 2-3 face sizes and 192-384 px gave the same landmark jitter
    crop_faces: float = 2.5
    crop_px: int = 256
    # smaller detections are ignored: too few pixels for lip landmarks, and upscaled they let FaceMesh
    # see faces in clutter (an 11 px box on a digit of ffmpeg's testsrc2 passed both models)
    min_face_px: float = 32.0

    def __post_init__(self):
        if self.bbox is not None:
            x0, y0, x1, y1 = self.bbox
            if not (x1 > x0 and y1 > y0):
                raise UsageError(f"--bbox needs x0,y0,x1,y1 with x1 > x0 and y1 > y0, got {self.bbox}")
        if self.face_index is not None and self.face_index < 0:
            raise UsageError("--face-index must be >= 0")
        if self.face_index is not None:
            self.max_faces = max(self.max_faces, self.face_index + 1)

    def check_frame(self, width: int, height: int, path: str | os.PathLike | None = None) -> None:
        """Fail before any tracking when --bbox lies outside the video frame."""
        if self.bbox is None:
            return
        x0, y0, x1, y1 = self.bbox
        if x1 <= 0 or y1 <= 0 or x0 >= width or y0 >= height:
            box = ",".join(f"{v:g}" for v in self.bbox)
            raise UsageError(f"--bbox {box} lies outside the {width}x{height} video frame", path)

    def no_face_problem(self, max_faces_seen: int) -> str:
        """Why no face was tracked, in the terms of the face-selection options."""
        if self.face_index is not None and max_faces_seen > 0 and self.face_index >= max_faces_seen:
            many = "face was" if max_faces_seen == 1 else "faces were"
            return (f"--face-index {self.face_index} requested but at most {max_faces_seen} {many} found "
                    f"in a frame (the index counts from 0, left to right)")
        if self.bbox is not None and max_faces_seen > 0:
            box = ",".join(f"{v:g}" for v in self.bbox)
            return f"no face overlaps --bbox {box} (faces were found elsewhere in the frame)"
        return "no face found in any frame"


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
        self._mesh = self._open(lambda: mp.solutions.face_mesh.FaceMesh(
            static_image_mode=False, max_num_faces=c.max_faces, refine_landmarks=True,
            min_detection_confidence=c.min_detection_confidence, min_tracking_confidence=c.min_tracking_confidence))
        self._finder = self._crop_mesh = None  # for small faces, opened on first need
        self.fps = fps
        self._filter = OneEuroFilter(fps, c.min_cutoff, c.beta, c.d_cutoff)
        self._last: np.ndarray | None = None  # last chosen face (unsmoothed)
        self._in_crop = False  # the last chosen face was found in a crop: look for it there first
        self._lost = 0
        self.n_faces = 0
        self.max_faces_seen = 0

    @staticmethod
    def _open(make):
        """A MediaPipe solution, started. Its C++ start-up log lines would interleave with progress
        bars; its calculators open asynchronously, so a blank frame is processed here to finish
        start-up while stderr is quiet."""
        with _quiet_stderr(), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            solution = make()
            solution.process(np.zeros((64, 64, 3), np.uint8))
        return solution

    def close(self) -> None:
        for solution in (self._mesh, self._finder, self._crop_mesh):
            if solution is not None:
                solution.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @staticmethod
    def _landmarks(solution, image: np.ndarray) -> list[np.ndarray]:
        h, w = image.shape[:2]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # protobuf deprecation noise inside mediapipe
            result = solution.process(np.ascontiguousarray(image))
        faces = []
        for face in result.multi_face_landmarks or []:
            pts = np.array([(p.x, p.y, p.z) for p in face.landmark], np.float32)
            if len(pts) != mesh.N_LANDMARKS:
                raise RealtalkError(f"MediaPipe returned {len(pts)} landmarks, expected {mesh.N_LANDMARKS}")
            faces.append(pts * np.float32([w, h, w]))
        return faces

    def _open_small_faces(self) -> None:
        import mediapipe as mp

        c = self.config
        if self._finder is None:
            self._finder = self._open(lambda: mp.solutions.face_detection.FaceDetection(
                model_selection=1, min_detection_confidence=c.min_detection_confidence))  # full range
            # stateless on crops: FaceMesh's video mode smooths in image coordinates, and a crop that
            # follows the face made its landmarks lag fast head motion (3x the jitter on a real clip)
            self._crop_mesh = self._open(lambda: mp.solutions.face_mesh.FaceMesh(
                static_image_mode=True, max_num_faces=2, refine_landmarks=True,
                min_detection_confidence=c.min_detection_confidence))

    def _in_crops(self, frame: np.ndarray, boxes) -> list[np.ndarray]:
        """FaceMesh on a square crop around each box (x0, y0, x1, y1), scaled to `crop_px`: the face
        nearest each crop's centre, in frame pixels."""
        import cv2

        n = self.config.crop_px
        faces = []
        for x0, y0, x1, y1 in boxes:
            s = n / (self.config.crop_faces * max(x1 - x0, y1 - y0, 1.0))
            shift = np.float32([n / 2 - s * (x0 + x1) / 2, n / 2 - s * (y0 + y1) / 2])
            m = np.float32([[s, 0, shift[0]], [0, s, shift[1]]])
            crop = cv2.warpAffine(frame, m, (n, n), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
            found = self._landmarks(self._crop_mesh, crop)
            if found:
                face = min(found, key=lambda f: np.linalg.norm(f[:, :2].mean(0) - n / 2))
                face[:, :2] -= shift
                faces.append(face / np.float32(s))
        return faces

    def _boxes(self, image: np.ndarray, x: int = 0, y: int = 0) -> list[tuple[float, tuple]]:
        """(score, box) of each face the full-range detector sees, boxes shifted by (x, y)."""
        h, w = image.shape[:2]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            result = self._finder.process(np.ascontiguousarray(image))
        boxes = []
        for d in result.detections or []:
            b = d.location_data.relative_bounding_box
            x0, y0, bw, bh = x + b.xmin * w, y + b.ymin * h, b.width * w, b.height * h
            if max(bw, bh) >= self.config.min_face_px:
                boxes.append((d.score[0], (x0, y0, x0 + bw, y0 + bh)))
        return boxes

    def _find_small(self, frame: np.ndarray) -> list[np.ndarray]:
        """The `max_faces` most confident faces of the full-range detector, landmarked in crops. The
        detector sees the frame shrunk to a letterboxed square, so where it finds nothing in a tall or
        wide frame, it looks again in overlapping square tiles: a 60 px face in 720x1280 was found in
        4 of 10 frames whole, 10 of 10 in tiles."""
        self._open_small_faces()
        h, w = frame.shape[:2]
        found = self._boxes(frame)
        side = min(h, w)
        if not found and side < max(h, w):
            # tiles overlap by at least an eighth of their side (90 px in 720x1280, two tiles): a face
            # small enough to need them lies whole in one; larger ones the whole-frame pass finds
            n = int(np.ceil((max(h, w) - side) / (0.875 * side))) + 1
            for start in np.linspace(0, max(h, w) - side, n).round().astype(int):
                x, y = (start, 0) if w > h else (0, start)
                found += self._boxes(frame[y:y + side, x:x + side], x, y)
        boxes = []
        for _, box in sorted(found, key=lambda f: -f[0]):  # most confident first; a face seen in two tiles once
            if all(_iou(np.asarray(box), np.asarray(b)) < 0.3 for b in boxes):
                boxes.append(box)
        return self._in_crops(frame, boxes[:self.config.max_faces])

    def _detect(self, frame: np.ndarray) -> tuple[list[np.ndarray], bool]:
        faces = self._landmarks(self._mesh, frame)
        if faces:
            return faces, False
        return self._find_small(frame), True

    def detect(self, frame: np.ndarray) -> list[np.ndarray]:
        """All faces found in this frame, as [478, 3] pixel arrays (small faces too)."""
        return self._detect(frame)[0]

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
        # a small face followed in crops: look around its last position (it is the only face counted)
        faces = self._in_crops(frame, [_box(self._last)]) if self._in_crop else []
        in_crop = bool(faces)
        if not faces:
            faces, in_crop = self._detect(frame)
        self.n_faces = len(faces)
        self.max_faces_seen = max(self.max_faces_seen, self.n_faces)
        face = self._choose(faces)
        if face is None:
            self._lost += 1
            self._in_crop = False
            self._filter.reset()  # after a gap, start afresh rather than sliding from a stale position
            return None
        self._last, self._lost, self._in_crop = face, 0, in_crop
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
