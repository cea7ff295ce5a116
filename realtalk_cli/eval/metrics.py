"""Quality metrics as pure functions on arrays: images are uint8/float [H, W, 3] in 0..255, landmarks
are [T, N, 2] crop pixels, curves are [T] per video frame.

Images
  psnr  10 log10(255^2 / MSE), capped at PSNR_CAP dB so identical images give a finite, sortable number.
  ssim  Wang et al. 2004: 11x11 Gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03, L = 255, computed per
        colour channel and averaged; the 5-pixel border, where the window hangs off the image, is left
        out (as skimage does). Matches skimage's `structural_similarity(gaussian_weights=True,
        use_sample_covariance=False)`; a test checks it.
  Both take an optional boolean mask [H, W]: the mean is then over the masked pixels only.

Blur and flicker (each measured on ours and on the source, and read as ours / source: 1 is ideal)
  laplacian_energy     mean squared Laplacian of the grey image (in a box around the lips): fine
                       detail; blur lowers it, noise raises it.
  teeth_mask           bright, unsaturated pixels: value >= the lower-face skin's median value and
                       saturation <= TEETH_SATURATION x the skin's median saturation. Skin and lips are
                       more saturated, the mouth's dark inside is darker (checked on German_20s: no
                       skin or lip pixel of 100 frames passes; the frames that show teeth do).
  mean_abs_difference  mean |a - b| (0..255), e.g. between consecutive aligned crops inside the mask.
  ratio                sum over frames of ours / sum of the source's, over frames where both exist.

Landmarks (MediaPipe's 478-point topology, face/mediapipe_mesh.py)
  lmd     mean Euclidean distance between corresponding landmarks, over frames and points.
          M-LMD uses MOUTH_POINTS (outer and inner lip rings), F-LMD all points.
  jitter  mean frame-to-frame displacement of RIGID_POINTS (upper face oval, eye corners, nose bridge):
          points that do not move with speech, so their motion in the crop is tracking noise plus
          head motion left after alignment; compare ours with the source's.

Audio-visual
  mouth_opening          mean distance between facing inner-lip points, crop pixels.
  correlation            Pearson r of two curves over frames where both are finite.
  correlation_interval   95% interval of that r by a moving-block bootstrap: how far a short clip's r
                         can be trusted (neighbouring frames are alike, so frames are resampled in blocks).
  silent_frames          frames whose speech RMS is SILENCE_DB below the loud level (see the function).
  silent_lip_motion      mouth movement inside silent stretches: lips should rest while nobody speaks.
"""

from __future__ import annotations

import cv2
import numpy as np

from realtalk_cli.face import mediapipe_mesh as mesh

PSNR_CAP = 100.0  # dB, reported for identical images (MSE = 0)
SSIM_WINDOW, SSIM_SIGMA, SSIM_K1, SSIM_K2 = 11, 1.5, 0.01, 0.03
DATA_RANGE = 255.0

MOUTH_POINTS = sorted(set(mesh.LIPS_OUTER) | set(mesh.LIPS_INNER))
RIGID_POINTS = list(mesh.POSE_POINTS)

# silence: a frame is silent when its RMS is SILENCE_DB below the speech's loud level (the 95th
# percentile of frame RMS, robust to a few clicks), and only stretches of at least SILENCE_MIN_FRAMES
# count, so the short dips between syllables and words are not taken for silence. 25 dB, not 30:
# broadcast clips have a noise floor near -30 dB (30 dB found 68 silent frames in the 71 s
# dfrf_cnn2 clip, 25 dB 348, 20 dB 394; musetalk_eng.wav: 200 / 256 / 274 of 1500).
SILENCE_DB = 25.0
SILENCE_MIN_FRAMES = 5  # 200 ms at 25 fps

LIP_BOX_PAD = 0.15  # the lip box: the outer lips' bounding box, grown by this fraction of its width each side
TEETH_SATURATION = 0.7  # teeth: at most this fraction of the skin's median saturation (and as bright as skin)
TEETH_MIN_FRACTION = 0.05  # a frame "shows teeth" when they cover this much of the inner-lip polygon


# -- images -------------------------------------------------------------------------------------
def _pixels(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return x if x.ndim == 3 else x[..., None]


def _mask_mean(values: np.ndarray, mask: np.ndarray | None) -> float:
    """Mean of a per-pixel map [H, W] over `mask` (all pixels when None); nan for an empty mask."""
    if mask is None:
        return float(values.mean())
    mask = np.asarray(mask, bool)
    if mask.shape != values.shape:
        raise ValueError(f"mask shape {mask.shape} does not match image shape {values.shape}")
    return float(values[mask].mean()) if mask.any() else float("nan")


def psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None, cap: float = PSNR_CAP) -> float:
    """PSNR in dB of two images in 0..255, over the whole image or the `mask` pixels; capped at `cap`."""
    a, b = _pixels(a), _pixels(b)
    mse = _mask_mean(((a - b) ** 2).mean(-1), mask)
    if np.isnan(mse):
        return mse
    return cap if mse == 0 else float(min(cap, 10 * np.log10(DATA_RANGE**2 / mse)))


def ssim_map(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-pixel SSIM [H, W] (channel mean) of two images in 0..255."""
    a, b = _pixels(a), _pixels(b)
    if min(a.shape[:2]) < SSIM_WINDOW:
        raise ValueError(f"SSIM needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW}, got {a.shape[:2]}")
    blur = lambda x: cv2.GaussianBlur(x, (SSIM_WINDOW, SSIM_WINDOW), SSIM_SIGMA, borderType=cv2.BORDER_REFLECT)  # noqa: E731
    c1, c2 = (SSIM_K1 * DATA_RANGE) ** 2, (SSIM_K2 * DATA_RANGE) ** 2
    out = np.zeros(a.shape[:2])
    for ch in range(a.shape[2]):
        x, y = a[..., ch], b[..., ch]
        mx, my = blur(x), blur(y)
        vx, vy, cxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
        out += ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return out / a.shape[2]


def ssim(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean SSIM of two images in 0..255, over the image or the `mask` pixels, 5-pixel border excluded."""
    m = ssim_map(a, b)
    inner = np.zeros(m.shape, bool)
    pad = SSIM_WINDOW // 2
    inner[pad:-pad, pad:-pad] = True
    return _mask_mean(m, inner if mask is None else inner & np.asarray(mask, bool))


def polygon_mask(points: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Boolean [H, W] mask of the filled polygon `points` [K, 2] (pixels)."""
    img = np.zeros(size, np.uint8)
    cv2.fillPoly(img, [np.round(np.asarray(points) * 16).astype(np.int32)], 1, cv2.LINE_8, shift=4)
    return img.astype(bool)


def box_mask(points: np.ndarray, size: tuple[int, int], pad: float = LIP_BOX_PAD) -> np.ndarray:
    """Boolean [H, W] mask of the bounding box of `points` [K, 2], grown by `pad` x its width each side."""
    points = np.asarray(points, np.float64)
    lo, hi = points.min(0), points.max(0)
    grow = pad * (hi[0] - lo[0])
    (x0, y0), (x1, y1) = np.floor(lo - grow).astype(int), np.ceil(hi + grow).astype(int)
    out = np.zeros(size, bool)
    out[max(y0, 0) : max(y1 + 1, 0), max(x0, 0) : max(x1 + 1, 0)] = True
    return out


def _grey(img: np.ndarray) -> np.ndarray:
    img = np.asarray(img, np.float32)
    return img if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)


def laplacian_energy(img: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean squared Laplacian (3x3) of the grey image (0..255) over `mask`: fine detail, lowered by blur."""
    return _mask_mean(cv2.Laplacian(_grey(img), cv2.CV_32F).astype(np.float64) ** 2, mask)


def teeth_thresholds(img: np.ndarray, skin: np.ndarray) -> tuple[float, float]:
    """(least value, most saturation) of teeth in `img` (RGB 0..255), from the `skin` pixels' medians."""
    hsv = cv2.cvtColor(np.asarray(img, np.float32) / 255, cv2.COLOR_RGB2HSV)
    skin = np.asarray(skin, bool)
    if not skin.any():
        return float("nan"), float("nan")
    return float(np.median(hsv[..., 2][skin])), TEETH_SATURATION * float(np.median(hsv[..., 1][skin]))


def teeth_mask(img: np.ndarray, thresholds: tuple[float, float]) -> np.ndarray:
    """Boolean [H, W]: teeth-like pixels (bright, unsaturated; `teeth_thresholds`) of `img` (RGB 0..255)."""
    hsv = cv2.cvtColor(np.asarray(img, np.float32) / 255, cv2.COLOR_RGB2HSV)
    value, saturation = thresholds
    return (hsv[..., 2] >= value) & (hsv[..., 1] <= saturation)


def mean_abs_difference(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean |a - b| (channel mean) over the image or the `mask` pixels."""
    return _mask_mean(np.abs(_pixels(a) - _pixels(b)).mean(-1), mask)


def ratio(ours: np.ndarray, source: np.ndarray) -> float:
    """sum(ours) / sum(source) over the frames where both are finite; nan when the source sums to 0."""
    ours, source = np.asarray(ours, np.float64), np.asarray(source, np.float64)
    ok = np.isfinite(ours) & np.isfinite(source)
    total = source[ok].sum()
    return float(ours[ok].sum() / total) if total > 0 else float("nan")


# -- landmarks ----------------------------------------------------------------------------------
def landmark_distances(pred: np.ndarray, ref: np.ndarray, points: list[int] | None = None) -> np.ndarray:
    """Per-frame mean distance [T] between landmark sets [T, N, >=2] (x, y used), over `points`."""
    pred, ref = np.asarray(pred, np.float64)[..., :2], np.asarray(ref, np.float64)[..., :2]
    if points is not None:
        pred, ref = pred[:, points], ref[:, points]
    return np.linalg.norm(pred - ref, axis=-1).mean(-1)


def lmd(pred: np.ndarray, ref: np.ndarray, points: list[int] | None = None) -> float:
    """Landmark distance in pixels, averaged over frames (nan frames skipped) and `points`."""
    d = landmark_distances(pred, ref, points)
    return float(np.nanmean(d)) if np.isfinite(d).any() else float("nan")


def landmark_motion(lm: np.ndarray, points: list[int] | None = None) -> np.ndarray:
    """Per-transition mean displacement [T-1] of `points` between consecutive frames (pixels)."""
    lm = np.asarray(lm, np.float64)[..., :2]
    return landmark_distances(lm[1:], lm[:-1], points)


def jitter(lm: np.ndarray, points: list[int] | None = None) -> float:
    """Mean frame-to-frame motion (pixels/frame) of `points` (default: RIGID_POINTS)."""
    d = landmark_motion(lm, RIGID_POINTS if points is None else points)
    return float(np.nanmean(d)) if np.isfinite(d).any() else float("nan")


def mouth_opening(lm: np.ndarray) -> np.ndarray:
    """Mouth opening [T] of tracked landmarks [T, 478, >=2]: mean gap of facing inner-lip points."""
    lm = np.asarray(lm, np.float64)[..., :2]
    upper, lower = zip(*mesh.OPENING_PAIRS)
    return np.linalg.norm(lm[:, list(upper)] - lm[:, list(lower)], axis=-1).mean(-1)


# -- curves and audio ---------------------------------------------------------------------------
def correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two curves over the frames where both are finite (the shorter length).

    nan when fewer than 3 such frames or when either curve is constant there (r is undefined).
    """
    n = min(len(a), len(b))
    a, b = np.asarray(a[:n], np.float64), np.asarray(b[:n], np.float64)
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3:
        return float("nan")
    a, b = a[ok] - a[ok].mean(), b[ok] - b[ok].mean()
    denom = np.sqrt((a * a).sum() * (b * b).sum())
    if denom <= 1e-12:
        return float("nan")
    return float((a * b).sum() / denom)


def correlation_interval(a: np.ndarray, b: np.ndarray, block: int = 25, reps: int = 2000,
                         level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """(low, high) bootstrap interval of `correlation(a, b)`: the finite frames are resampled as
    circular blocks of `block` frames (1 s at 25 fps: a mouth curve is correlated over a few frames,
    so resampling single frames would make the interval far too narrow). nan when r is undefined."""
    n = min(len(a), len(b))
    a, b = np.asarray(a[:n], np.float64), np.asarray(b[:n], np.float64)
    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok], b[ok]
    if len(a) < 3 or not np.isfinite(correlation(a, b)):
        return float("nan"), float("nan")
    block = max(1, min(block, len(a)))
    starts = np.random.default_rng(seed).integers(0, len(a), (reps, -(-len(a) // block)))
    idx = ((starts[:, :, None] + np.arange(block)) % len(a)).reshape(reps, -1)[:, :len(a)]
    x, y = a[idx] - a[idx].mean(1, keepdims=True), b[idx] - b[idx].mean(1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (x * y).sum(1) / np.sqrt((x * x).sum(1) * (y * y).sum(1))
    r = r[np.isfinite(r)]
    return float(np.quantile(r, (1 - level) / 2)), float(np.quantile(r, (1 + level) / 2))


def frame_rms(audio: np.ndarray, n_frames: int, sr: int = 16000, fps: float = 25.0) -> np.ndarray:
    """RMS [n_frames] of `audio` in the span of each video frame (zero where the audio has ended)."""
    audio = np.asarray(audio, np.float64)
    edges = np.round(np.arange(n_frames + 1) * sr / fps).astype(int)
    out = np.zeros(n_frames)
    for i in range(n_frames):
        seg = audio[edges[i] : edges[i + 1]]
        out[i] = np.sqrt((seg * seg).mean()) if len(seg) else 0.0
    return out


def silent_frames(rms: np.ndarray, db: float = SILENCE_DB, min_frames: int = SILENCE_MIN_FRAMES) -> np.ndarray:
    """Boolean [T]: frames in stretches of >= `min_frames` whose RMS is `db` below the loud level.

    The loud level is the 95th percentile of the frame RMS; all-silent audio (loud level ~0) counts
    as silent throughout.
    """
    rms = np.asarray(rms, np.float64)
    loud = np.percentile(rms, 95) if len(rms) else 0.0
    quiet = rms <= max(loud * 10 ** (-db / 20), 1e-6)
    out = np.zeros_like(quiet)
    start = None
    for i, q in enumerate(np.append(quiet, False)):  # a sentinel closes the last stretch
        if q and start is None:
            start = i
        elif not q and start is not None:
            if i - start >= min_frames:
                out[start:i] = True
            start = None
    return out


def silent_lip_motion(opening: np.ndarray, silent: np.ndarray) -> dict[str, float]:
    """Mouth behaviour while the speech is silent.

    motion:  mean |change of mouth opening| between consecutive frames that are both silent
             (pixels/frame); the lips of a real speaker rest, so lower is better.
    opening: mean mouth opening over silent frames (pixels), compared with `speech_opening` over
             the other frames.
    """
    opening, silent = np.asarray(opening, np.float64), np.asarray(silent, bool)
    n = min(len(opening), len(silent))
    opening, silent = opening[:n], silent[:n]
    both = silent[1:] & silent[:-1]
    step = np.abs(np.diff(opening))
    mean = lambda x: float(np.nanmean(x)) if np.isfinite(x).any() else float("nan")  # noqa: E731
    return {"silent_frames": int(silent.sum()),
            "motion": mean(step[both]) if both.any() else float("nan"),
            "opening": mean(opening[silent]) if silent.any() else float("nan"),
            "speech_opening": mean(opening[~silent]) if (~silent).any() else float("nan")}
