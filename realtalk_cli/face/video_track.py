"""A whole video tracked at 25 fps: landmarks with short gaps bridged, shot changes, smoothed crops.

What preprocessing cuts clips from and evaluation measures on; `dub` streams its own (inference/track.py).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from realtalk_cli.face import align
from realtalk_cli.face.tracker import TrackerConfig, track_frames

FPS = 25.0


@dataclass
class VideoTrack:
    """A tracked video at 25 fps: what `dub` needs to crop, fit and paste back one video."""

    landmarks: np.ndarray  # [T, 478, 3] source pixels; gaps interpolated, NaN before the first/after the last face
    found: np.ndarray  # [T] bool: MediaPipe found the face in this frame
    transforms: np.ndarray  # [T, 2, 3] source -> crop (smoothed; held constant outside the tracked span)
    width: int
    height: int
    n_faces: np.ndarray  # [T] faces visible
    cuts: np.ndarray  # [T] bool: a shot change starts here (tracks, smoothing and clips break there)

    def crop_landmarks(self) -> np.ndarray:
        """[T, 478, 3] landmarks in crop pixels (z scaled like x, y)."""
        return align.transform_points(self.landmarks, self.transforms)


def interpolate_gaps(landmarks: np.ndarray, found: np.ndarray) -> np.ndarray:
    """Linear interpolation of landmarks across frames without a face (edges stay NaN)."""
    out = landmarks.copy()
    t = np.flatnonzero(found)
    if len(t) == 0:
        return out
    missing = np.flatnonzero(~found)
    inside = missing[(missing > t[0]) & (missing < t[-1])]
    if len(inside):
        flat = landmarks[t].reshape(len(t), -1)
        out[inside] = np.stack([np.interp(inside, t, flat[:, k]) for k in range(flat.shape[1])], 1).reshape(
            (len(inside),) + landmarks.shape[1:])
    return out


def shots(cuts: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) frame ranges between shot changes, covering all frames."""
    bounds = [0, *np.flatnonzero(cuts).tolist(), len(cuts)]
    return [(s, e) for s, e in zip(bounds[:-1], bounds[1:]) if e > s]


def track_video(path: str | os.PathLike, tracker: TrackerConfig | None = None, align_config: align.AlignConfig | None = None,
                on_frame=None) -> VideoTrack:
    """Track the speaker through a video at 25 fps and compute the crop transforms."""
    from realtalk_cli.media import VideoReader

    align_config = align_config or align.AlignConfig()
    tracker = tracker or TrackerConfig()
    reader = VideoReader(path, fps=FPS)
    tracker.check_frame(reader.width, reader.height, path)
    track = track_frames(reader, FPS, tracker, on_frame)
    landmarks = np.full_like(track.landmarks, np.nan)
    transforms = np.zeros((len(track), 2, 3), np.float32)
    for s, e in shots(track.cuts):  # never interpolate or smooth across a shot change
        found = track.found[s:e]
        if found.any():
            landmarks[s:e] = interpolate_gaps(track.landmarks[s:e], found)
            transforms[s:e] = align.crop_transforms(landmarks[s:e], found, align_config)
    return VideoTrack(landmarks, track.found, transforms, track.width, track.height, track.n_faces, track.cuts)


def segments(found: np.ndarray, max_gap: int, min_frames: int, cuts: np.ndarray | None = None) -> list[tuple[int, int]]:
    """[start, end) frame ranges of continuous tracking: gaps <= max_gap are bridged, longer ones and
    shot changes (`cuts`) split."""
    t = np.flatnonzero(found)
    if len(t) == 0:
        return []
    split = np.diff(t) > max_gap + 1
    if cuts is not None:
        split |= cuts[t[1:]]
    breaks = np.flatnonzero(split)
    starts = np.concatenate([[t[0]], t[breaks + 1]])
    ends = np.concatenate([t[breaks], [t[-1]]]) + 1
    return [(int(s), int(e)) for s, e in zip(starts, ends) if e - s >= min_frames]
