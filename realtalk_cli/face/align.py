"""Square face crops that stay still: one similarity transform per frame, smoothed over time.

The crop geometry follows the FFHQ recipe (eyes and mouth corners; the crop is upright along the
eye line, sized by the larger of eye distance and eye-mouth distance), shifted down so the chin and
the top of the neck are inside, because the e2f mask reaches there. Per-frame centre, angle and
log-size are smoothed with a zero-phase Gaussian over the whole clip (offline, so no lag), which
removes tracker jitter while following real head motion.

A transform A [2, 3] maps source-frame pixels to crop pixels; `invert` gives the map back, used by
`paste_back` to put a generated crop into the original frame exactly where it came from.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from scipy.ndimage import gaussian_filter1d

from realtalk_cli.face import mediapipe_mesh as mesh


@dataclass
class AlignConfig:
    crop_size: int = 256
    zoom: float = 1.0  # crop side = 2 * zoom * max(2.0 * eye distance, 1.8 * eye-to-mouth), as FFHQ
    shift: float = 0.6  # crop centre = eye midpoint + shift * eye-to-mouth (FFHQ: 0.1); more chin and neck
    smooth_sigma: float = 2.0  # frames; temporal smoothing of centre, angle and size (0: none)


def frame_params(landmarks: np.ndarray, config: AlignConfig) -> np.ndarray:
    """[T, 478, 2+] source-pixel landmarks -> [T, 4] (centre x, centre y, angle, log half-side)."""
    lm = landmarks[..., :2].astype(np.float64)
    eye_r, eye_l = lm[:, mesh.RIGHT_EYE[:2]].mean(1), lm[:, mesh.LEFT_EYE[:2]].mean(1)
    eyes = (eye_r + eye_l) / 2
    eye_to_eye = eye_l - eye_r
    eye_to_mouth = lm[:, mesh.MOUTH_CORNERS].mean(1) - eyes
    # FFHQ: the x axis blends the eye line with the perpendicular of the eye-mouth line
    x_axis = eye_to_eye - np.stack([-eye_to_mouth[:, 1], eye_to_mouth[:, 0]], 1)
    angle = np.arctan2(x_axis[:, 1], x_axis[:, 0])
    half = config.zoom * np.maximum(np.linalg.norm(eye_to_eye, axis=1) * 2.0, np.linalg.norm(eye_to_mouth, axis=1) * 1.8)
    centre = eyes + config.shift * eye_to_mouth
    return np.concatenate([centre, angle[:, None], np.log(half)[:, None]], 1)


def smooth_params(params: np.ndarray, valid: np.ndarray, sigma: float) -> np.ndarray:
    """Fill invalid frames by linear interpolation, then Gaussian-smooth each parameter over time."""
    params = params.copy()
    t = np.arange(len(params))
    if valid.any() and not valid.all():
        for k in range(params.shape[1]):
            params[~valid, k] = np.interp(t[~valid], t[valid], params[valid, k])
    params[:, 2] = np.unwrap(params[:, 2])
    if sigma > 0 and len(params) > 1:
        params = gaussian_filter1d(params, sigma, axis=0, mode="nearest")
    return params


def params_to_affine(params: np.ndarray, crop_size: int) -> np.ndarray:
    """[T, 4] -> [T, 2, 3] source -> crop: rotate by -angle about the centre, scale, recentre."""
    cx, cy, angle, log_half = params.T
    s = crop_size / (2 * np.exp(log_half))
    cos, sin = np.cos(angle) * s, np.sin(angle) * s
    a = np.empty((len(params), 2, 3))
    a[:, 0, 0], a[:, 0, 1], a[:, 1, 0], a[:, 1, 1] = cos, sin, -sin, cos
    a[:, 0, 2] = crop_size / 2 - (cos * cx + sin * cy)
    a[:, 1, 2] = crop_size / 2 - (-sin * cx + cos * cy)
    return a.astype(np.float32)


def crop_transforms(landmarks: np.ndarray, valid: np.ndarray | None = None, config: AlignConfig | None = None) -> np.ndarray:
    """Smoothed source -> crop affine transforms [T, 2, 3] for a tracked clip."""
    config = config or AlignConfig()
    valid = np.isfinite(landmarks[:, 0, 0]) if valid is None else np.asarray(valid, bool)
    params = frame_params(np.nan_to_num(landmarks), config)
    return params_to_affine(smooth_params(params, valid, config.smooth_sigma), config.crop_size)


def invert(a: np.ndarray) -> np.ndarray:
    """Inverse of [..., 2, 3] affine maps."""
    m = np.linalg.inv(a[..., :2])
    return np.concatenate([m, -(m @ a[..., 2:])], -1).astype(np.float32)


def rescale(a: np.ndarray, crop_size: int, size: int) -> np.ndarray:
    """A frame -> crop affine [2, 3] for the same crop cut at `size` pixels a side instead of `crop_size`."""
    return (np.asarray(a, np.float64) * (size / crop_size)).astype(np.float32)


def transform_points(points: np.ndarray, a: np.ndarray) -> np.ndarray:
    """Apply [T, 2, 3] (or [2, 3]) to [T, N, 2+] points; a z column is scaled by the transform's scale."""
    out = points.astype(np.float32).copy()
    out[..., :2] = np.einsum("...ij,...nj->...ni", a[..., :2], points[..., :2]) + a[..., None, :, 2]
    if points.shape[-1] > 2:
        scale = np.sqrt(np.abs(np.linalg.det(a[..., :2].astype(np.float64))))
        out[..., 2] = points[..., 2] * np.asarray(scale, np.float32)[..., None]
    return out


def warp_to_crop(frame: np.ndarray, a: np.ndarray, crop_size: int) -> np.ndarray:
    """Cut the crop out of a frame (bilinear, borders replicated so no black edges enter training)."""
    return cv2.warpAffine(frame, a, (crop_size, crop_size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def paste_back(frame: np.ndarray, crop: np.ndarray, a: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Put `crop` back into `frame` through the inverse of `a`; `mask` [S, S] in [0, 1] blends
    (1 = crop), default: the whole crop. Returns a new frame; pixels outside the crop are untouched.

    Only the crop's bounding box in the frame is warped and blended, so the cost follows the face's
    size, not the frame's (a 1080p frame costs what a 256x256 one does)."""
    h, w = frame.shape[:2]
    size = crop.shape[0]
    mask = np.ones((size, size), np.float32) if mask is None else mask.astype(np.float32)
    inv = invert(a)
    corners = np.array([[0, 0], [size, 0], [0, size], [size, size]], np.float32) @ inv[:, :2].T + inv[:, 2]
    x0, y0 = np.floor(corners.min(0)).astype(int) - 1
    x1, y1 = np.ceil(corners.max(0)).astype(int) + 1
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    out = frame.copy()
    if x1 <= x0 or y1 <= y0:
        return out
    roi = inv.copy()
    roi[:, 2] -= (x0, y0)  # the same map, into the box's own pixel grid
    box = (x1 - x0, y1 - y0)
    warped = cv2.warpAffine(crop, roi, box, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    alpha = cv2.warpAffine(mask, roi, box, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)[..., None]
    region = frame[y0:y1, x0:x1]
    out[y0:y1, x0:x1] = (region * (1 - alpha) + warped * alpha).round().clip(0, 255).astype(np.uint8)
    return out
