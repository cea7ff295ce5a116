"""Fitting the face model to tracked landmarks, and learning the `landmark` model by PCA.

Everything works on 3D landmarks in crop pixels ([T, 478, 3]: x right, y down, z MediaPipe's
relative depth in the same pixel scale). Pose is a similarity transform found by Procrustes
(Umeyama) on rigid upper-face points only (group "pose_points"), so opening the mouth never reads as
a change of scale or pitch; shape coefficients by least squares, alternating with pose a few times.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg
import torch

from realtalk_cli.errors import RealtalkError
from realtalk_cli.face import mediapipe_mesh as mesh
from realtalk_cli.face.model import FaceModel, rotation_to_euler


def procrustes(src: np.ndarray, dst: np.ndarray, points=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Similarity (s, R, t) per item minimising |s R src + t - dst|^2 over `points` (default all).

    src, dst: [T, N, 3]. Returns s [T], R [T, 3, 3] (a proper rotation, det +1), t [T, 3].
    """
    src = np.broadcast_to(src, dst.shape)
    if points is not None:
        src, dst = src[:, points], dst[:, points]
    mu_s, mu_d = src.mean(1, keepdims=True), dst.mean(1, keepdims=True)
    xs, xd = src - mu_s, dst - mu_d
    cov = np.einsum("tni,tnj->tij", xd, xs) / src.shape[1]
    u, sv, vt = np.linalg.svd(cov)
    d = np.ones_like(sv)
    d[:, 2] = np.sign(np.linalg.det(u) * np.linalg.det(vt))  # no reflections
    r = u @ (d[..., None] * vt)
    s = (sv * d).sum(1) / (xs**2).sum((1, 2)) * src.shape[1]
    t = mu_d[:, 0] - s[:, None] * np.einsum("tij,tj->ti", r, mu_s[:, 0])
    return s, r, t


def normalise_pose(points: np.ndarray, template: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Remove the rigid pose: return (shapes in template units [T, N, 3], rho [T, 6] landmark layout)."""
    s, r, t = procrustes(template, points, mesh.POSE_POINTS)
    shapes = np.einsum("tji,tnj->tni", r, points - t[:, None]) / s[:, None, None]
    rho = np.concatenate([rotation_to_euler(r), t[:, :2], np.log(s)[:, None]], 1)
    return shapes.astype(np.float32), rho.astype(np.float32)


def generalised_procrustes(clips: list[np.ndarray], iters: int = 3) -> np.ndarray:
    """Template (centred, RMS radius 1) that all frames of all clips align to best."""
    template = clips[0][0] - clips[0][0].mean(0)
    for _ in range(iters):
        means = [normalise_pose(c, template)[0].mean(0) for c in clips]
        template = np.mean(means, 0)  # each identity counts once, however long its clip
        template = template - template.mean(0)
        template /= np.sqrt((template**2).sum(1).mean())
    return template.astype(np.float32)


def _pca(x: np.ndarray, k: int, rel_eps: float = 1e-6) -> tuple[np.ndarray, np.ndarray]:
    """Top-k principal directions [k, D] of rows of x [M, D] (already centred) with non-negligible
    variance, and their variances. Eigen-decomposes the smaller Gram matrix (M or D square)."""
    m, d = x.shape
    if m == 0 or k == 0:
        return np.zeros((0, d), np.float32), np.zeros(0, np.float32)
    x = x.astype(np.float64)
    if m >= d:  # only the top k eigenpairs: much faster than the full decomposition of a 1434^2 matrix
        var, vecs = scipy.linalg.eigh(x.T @ x, subset_by_index=[d - min(k, d), d - 1])
        var, vecs = var[::-1], vecs[:, ::-1].T
    else:
        var, u = np.linalg.eigh(x @ x.T)
        var, u = var[::-1], u[:, ::-1]
        vecs = (u.T @ x) / np.sqrt(np.maximum(var, 1e-300))[:, None]
    var = var / m
    keep = min(k, int((var > rel_eps * max(var[0], 1e-30)).sum()))
    return vecs[:keep].astype(np.float32), var[:keep].astype(np.float32)


def landmark_groups(mean: np.ndarray) -> dict[str, torch.Tensor]:
    """Named vertex groups of the MediaPipe topology; the mouth region is read off the mean shape."""
    below_nose = np.nonzero(mean[:, 1] > mean[mesh.NOSE_BOTTOM, 1])[0]
    g = {"lips_outer": mesh.LIPS_OUTER, "lips_inner": mesh.LIPS_INNER, "mouth": mesh.LIPS_INNER, "jaw": mesh.JAW,
         "mask_contour": mesh.MASK_CONTOUR, "mouth_region": below_nose.tolist(),
         "keypoints": list(range(mesh.N_LANDMARKS)), "keypoint_landmarks": list(range(mesh.N_LANDMARKS)),
         "pose_points": mesh.POSE_POINTS}
    return {k: torch.tensor(v, dtype=torch.long) for k, v in g.items()}


def build_landmark_model(clips: list[np.ndarray], crop_size: int, n_id: int = 80, n_exp: int = 64,
                         max_frames: int = 20000, seed: int = 0) -> FaceModel:
    """Learn the `landmark` face model from tracked clips ([T_c, 478, 3] crop-pixel landmarks each).

    Identity basis: PCA of per-clip mean shapes (so n_id <= number of clips - 1; with one clip the
    model has no identity dimensions and its mean *is* that face). Expression basis: PCA of
    within-clip deviations from the clip mean. Bases are orthonormal, so a coefficient error is a
    vertex error in model units (1 = RMS face radius).
    """
    clips = [np.asarray(c, np.float32) for c in clips if len(c)]
    if not clips:
        raise RealtalkError("cannot build a face model: no tracked frames")
    rng = np.random.default_rng(seed)
    per_clip = max(1, max_frames // len(clips))
    clips = [c[np.sort(rng.choice(len(c), per_clip, replace=False))] if len(c) > per_clip else c for c in clips]
    template = generalised_procrustes(clips)
    shapes = [normalise_pose(c, template)[0] for c in clips]
    clip_means = np.stack([s.mean(0) for s in shapes])
    mean = clip_means.mean(0)
    id_basis, id_var = _pca((clip_means - mean).reshape(len(clips), -1), n_id)
    motion = np.concatenate([(s - s.mean(0)).reshape(len(s), -1) for s in shapes])
    exp_basis, exp_var = _pca(motion, n_exp)
    extra = {"clips": len(clips), "frames": int(sum(len(s) for s in shapes)),
             "id_variance": id_var.tolist(), "exp_variance": exp_var.tolist()}
    return FaceModel("landmark", torch.from_numpy(mean), torch.from_numpy(id_basis), torch.from_numpy(exp_basis),
                     landmark_groups(mean), torch.tensor(mesh.OPENING_PAIRS), crop_size, extra=extra)


@dataclass
class Fit:
    alpha: np.ndarray  # [n_id]
    beta: np.ndarray  # [T, n_exp]
    rho: np.ndarray  # [T, 6]
    error: np.ndarray  # [T] mean 2D distance of keypoints to tracked landmarks, crop pixels

    def mean_error(self, valid: np.ndarray | None = None) -> float:
        e = self.error if valid is None else self.error[valid]
        return float(e.mean()) if len(e) else float("nan")


def _lstsq(basis: np.ndarray, targets: np.ndarray, ridge: float) -> np.ndarray:
    """Ridge least squares of targets [M, D] on basis rows [K, D] -> [M, K]."""
    if basis.shape[0] == 0:
        return np.zeros((len(targets), 0), np.float32)
    gram = basis @ basis.T + ridge * np.eye(len(basis), dtype=basis.dtype)
    return np.linalg.solve(gram, basis @ targets.T).T


def fit_landmarks(model: FaceModel, landmarks: np.ndarray, valid: np.ndarray | None = None,
                  iters: int = 3, ridge: float = 1e-4, alpha: np.ndarray | None = None) -> Fit:
    """Fit one clip: alpha shared by all frames, beta and rho per frame, to [T, 478, 3] landmarks.

    A given `alpha` is kept fixed, so a long video can be fitted chunk by chunk with one identity.

    Only the `landmark` kind fits from landmarks; `bfm` coefficients come from the regressor.
    """
    if model.kind != "landmark":
        raise RealtalkError("fit_landmarks needs a landmark face model; bfm coefficients come from the regressor")
    lm = np.asarray(landmarks, np.float32)
    valid = np.ones(len(lm), bool) if valid is None else np.asarray(valid, bool)
    if not valid.any():
        raise RealtalkError("no valid frames to fit")
    mean = model.mean.numpy()
    ids = model.id_basis.numpy().reshape(model.n_id, mean.size)  # -1 fails when n_id == 0 (one clip)
    exps = model.exp_basis.numpy().reshape(model.n_exp, mean.size)
    model_shapes = np.broadcast_to(mean, lm.shape)
    fixed = alpha is not None
    alpha = np.zeros(model.n_id, np.float32) if alpha is None else np.asarray(alpha, np.float32)
    pose_points = model.groups["pose_points"].numpy()
    for _ in range(iters):
        s, r, t = procrustes(model_shapes, lm, pose_points)
        shapes = np.einsum("tji,tnj->tni", r, lm - t[:, None]) / s[:, None, None]
        flat = (shapes - mean).reshape(len(lm), -1)
        beta = _lstsq(exps, flat - alpha @ ids, ridge)
        # identity from valid frames only: interpolated frames must not bias the clip's shape
        if not fixed:
            alpha = _lstsq(ids, (flat[valid] - beta[valid] @ exps).mean(0, keepdims=True), ridge)[0]
            beta = _lstsq(exps, flat - alpha @ ids, ridge)
        model_shapes = (mean.reshape(-1) + alpha @ ids + beta @ exps).reshape(lm.shape)
    s, r, t = procrustes(model_shapes, lm, pose_points)
    rho = np.concatenate([rotation_to_euler(r), t[:, :2], np.log(s)[:, None]], 1).astype(np.float32)
    with torch.no_grad():
        verts = model.vertices(torch.from_numpy(np.repeat(alpha[None], len(lm), 0)).float(),
                               torch.from_numpy(beta).float(), torch.from_numpy(rho)).numpy()
    error = np.linalg.norm(verts[:, :, :2] - lm[:, :, :2], axis=-1).mean(1)
    return Fit(alpha.astype(np.float32), beta.astype(np.float32), rho, error.astype(np.float32))
