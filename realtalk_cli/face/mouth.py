"""A mouth space shared by every face: lip shapes from MediaPipe landmarks, free of head pose, face size
and any one person's face model, so a prior learned from many people applies to anyone.

A frame's lips are the 40 outer and inner lip landmarks after the head pose is removed (Procrustes on
the rigid upper-face points onto one template of RMS radius 1, face/fit.py: normalise_pose), in the
template's x, y plane. A person's coordinates are the change from their own mean lips, projected on a
basis learned from many people's lip motion (PCA): the first component is the opening, the next ones
spread, pucker and asymmetry. The person's mean is their anatomy; what speech moves is the change.
"""

from __future__ import annotations

import numpy as np

from realtalk_cli.face import mediapipe_mesh as mesh
from realtalk_cli.face.fit import normalise_pose

LIP_POINTS = mesh.LIPS_OUTER + mesh.LIPS_INNER


def lip_shapes(landmarks3d: np.ndarray, template: np.ndarray) -> np.ndarray:
    """[T, 478, 3] landmarks (any pixels) -> [T, 80] pose-free lip x, y in template units."""
    shapes, _ = normalise_pose(np.asarray(landmarks3d, np.float64), np.asarray(template, np.float64))
    return shapes[:, LIP_POINTS, :2].reshape(len(shapes), -1).astype(np.float32)


def lip_opening(lips: np.ndarray) -> np.ndarray:
    """Mean gap of the facing inner-lip points [T] of lip shapes [T, 80] (template units)."""
    pts = np.asarray(lips).reshape(len(lips), -1, 2)
    idx = {p: i for i, p in enumerate(LIP_POINTS)}
    upper, lower = zip(*mesh.OPENING_PAIRS)
    return np.linalg.norm(pts[:, [idx[p] for p in upper]] - pts[:, [idx[p] for p in lower]], axis=-1).mean(-1)


def lip_basis(clips: list[np.ndarray], k: int) -> np.ndarray:
    """[k, 80] principal directions of lip motion (each clip's lip shapes [T, 80] minus its own mean),
    every frame counted once; signs fixed so that +1 on the first component opens the mouth."""
    x = np.concatenate([c - c.mean(0) for c in clips]).astype(np.float64)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    basis = vt[:k]
    opening = np.concatenate([lip_opening(c) for c in clips])
    if np.corrcoef(x @ basis[0], opening)[0, 1] < 0:
        basis[0] = -basis[0]
    return basis.astype(np.float32)


def lip_gap(lips: np.ndarray) -> np.ndarray:
    """Signed mean vertical gap of the facing inner-lip points [T] (template units, y down), clipped at 0:
    a predicted mouth that closes past closed is shown closed (the frame bank has no such mouth), whereas
    the unsigned `lip_opening` would count it as opening again."""
    pts = np.asarray(lips).reshape(len(lips), -1, 2)
    idx = {p: i for i, p in enumerate(LIP_POINTS)}
    upper, lower = zip(*mesh.OPENING_PAIRS)
    gap = (pts[:, [idx[p] for p in lower], 1] - pts[:, [idx[p] for p in upper], 1]).mean(-1)
    return np.maximum(gap, 0.0)
