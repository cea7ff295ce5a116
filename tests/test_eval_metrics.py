"""Evaluation metrics on arrays: ideal values for identical inputs, monotonic degradation."""

import cv2
import numpy as np
import pytest
from skimage.data import astronaut
from skimage.metrics import structural_similarity

from realtalk_cli.eval import metrics as m


@pytest.fixture(scope="module")
def face():
    return astronaut()[20:148, 150:278]  # the face, 128x128


def noisy(img, sigma, seed=0):
    return np.clip(img + np.random.default_rng(seed).normal(0, sigma, img.shape), 0, 255).astype(np.uint8)


def test_identical_images_give_ideal_values(face):
    assert m.psnr(face, face) == m.PSNR_CAP
    assert m.ssim(face, face) == pytest.approx(1.0, abs=1e-12)
    mask = np.zeros(face.shape[:2], bool)
    mask[60:100, 40:90] = True
    assert m.psnr(face, face, mask) == m.PSNR_CAP
    assert m.ssim(face, face, mask) == pytest.approx(1.0, abs=1e-12)


def test_ssim_matches_skimage(face):
    other = noisy(face, 12)
    ref = structural_similarity(face, other, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                data_range=255, channel_axis=2)
    assert m.ssim(face, other) == pytest.approx(ref, abs=1e-9)


@pytest.mark.parametrize("degrade", ["noise", "blur"])
def test_metrics_degrade_monotonically(face, degrade):
    levels = [2, 6, 15, 30] if degrade == "noise" else [1, 2, 4, 8]
    make = (lambda s: noisy(face, s)) if degrade == "noise" else (lambda s: cv2.GaussianBlur(face, (0, 0), s))
    mask = np.zeros(face.shape[:2], bool)
    mask[70:120, 30:100] = True
    for metric in (m.psnr, m.ssim):
        whole = [metric(face, make(s)) for s in levels]
        region = [metric(face, make(s), mask) for s in levels]
        assert all(a > b for a, b in zip(whole, whole[1:])), (metric.__name__, whole)
        assert all(a > b for a, b in zip(region, region[1:])), (metric.__name__, region)


def test_masked_metrics_only_see_the_mask(face):
    damaged = face.copy()
    damaged[:40] = 0  # outside the mask
    mask = np.zeros(face.shape[:2], bool)
    mask[60:110, 30:100] = True
    assert m.psnr(face, damaged, mask) == m.PSNR_CAP
    assert m.ssim(face, damaged, mask) == pytest.approx(1.0)
    assert m.psnr(face, damaged) < 20
    assert np.isnan(m.psnr(face, damaged, np.zeros_like(mask)))


def test_psnr_value():
    a = np.zeros((16, 16, 3))
    assert m.psnr(a, a + 255 / 10) == pytest.approx(20.0)  # MSE = (255/10)^2


def test_polygon_mask():
    square = m.polygon_mask(np.array([[10, 10], [30, 10], [30, 30], [10, 30]], float), (40, 40))
    assert square[20, 20] and not square[5, 5]
    assert abs(int(square.sum()) - 21 * 21) <= 21


def test_landmark_metrics():
    rng = np.random.default_rng(0)
    lm = rng.uniform(0, 256, (10, 478, 2))
    assert m.lmd(lm, lm) == 0 and m.lmd(lm, lm, m.MOUTH_POINTS) == 0
    shifted = lm.copy()
    shifted[:, m.MOUTH_POINTS] += [3.0, 4.0]  # 5 px on the mouth only
    assert m.lmd(shifted, lm, m.MOUTH_POINTS) == pytest.approx(5.0)
    assert m.lmd(shifted, lm) == pytest.approx(5.0 * len(m.MOUTH_POINTS) / 478)
    errs = [m.lmd(lm + rng.normal(0, s, lm.shape), lm) for s in (0.5, 1, 2, 4)]
    assert all(a < b for a, b in zip(errs, errs[1:]))
    # jitter: a still face has none; noise on the rigid points raises it, mouth motion does not
    still = np.repeat(lm[:1], 10, 0)
    assert m.jitter(still) == 0
    talking = still.copy()
    talking[:, m.MOUTH_POINTS] += rng.normal(0, 3, (10, len(m.MOUTH_POINTS), 2))
    assert m.jitter(talking) == 0
    shaky = still + rng.normal(0, 1, still.shape)
    assert m.jitter(shaky) > 1


def test_mouth_opening_and_correlation():
    from realtalk_cli.face import mediapipe_mesh as mesh

    lm = np.zeros((5, 478, 2))
    for up, low in mesh.OPENING_PAIRS:
        lm[:, low, 1] = np.arange(5)
    assert np.allclose(m.mouth_opening(lm), np.arange(5))
    t = np.linspace(0, 6, 100)
    assert m.correlation(np.sin(t), 3 * np.sin(t) + 1) == pytest.approx(1.0)
    assert m.correlation(np.sin(t), -np.sin(t)) == pytest.approx(-1.0)
    assert np.isnan(m.correlation(np.ones(10), np.arange(10)))
    with_nan = np.sin(t)
    with_nan[::7] = np.nan
    assert m.correlation(with_nan, np.sin(t)) == pytest.approx(1.0)


def test_correlation_interval_is_as_wide_as_the_clip_is_short():
    """A mouth curve and a noisy prediction of it: true r 0.6. Over 100 frames (4 s) the interval is
    wide and holds r; over 2000 it is narrow; a smooth curve's frames are not independent, so its
    interval is wider than one that treats them so (blocks of 1)."""
    rng = np.random.default_rng(0)
    smooth = lambda x: np.convolve(x, np.ones(5) / 5, "same")  # noqa: E731
    truth = smooth(rng.standard_normal(2000))
    pred = truth + smooth(rng.standard_normal(2000)) * 1.33 * truth.std() / smooth(rng.standard_normal(2000)).std()
    lo, hi = m.correlation_interval(pred[:100], truth[:100])
    assert lo < m.correlation(pred[:100], truth[:100]) < hi and hi - lo > 0.2
    lo_long, hi_long = m.correlation_interval(pred, truth)
    assert lo_long < m.correlation(pred, truth) < hi_long and hi_long - lo_long < 0.1
    lo1, hi1 = m.correlation_interval(pred[:300], truth[:300], block=1)
    lo25, hi25 = m.correlation_interval(pred[:300], truth[:300])
    assert hi25 - lo25 > hi1 - lo1
    assert all(np.isnan(m.correlation_interval(np.ones(10), np.arange(10))))


def test_silence_and_silent_lip_motion():
    sr, fps = 16000, 25
    env = np.r_[np.ones(20), np.zeros(15), np.ones(2), np.zeros(2), np.ones(11)]  # 50 frames
    t = np.arange(len(env) * 640) / sr
    audio = np.repeat(env, 640) * 0.5 * np.sin(2 * np.pi * 200 * t) + 1e-4 * np.random.default_rng(0).standard_normal(len(t))
    rms = m.frame_rms(audio, len(env), sr, fps)
    silent = m.silent_frames(rms)
    assert silent[20:35].all() and not silent[:20].any()
    assert not silent[37:39].any()  # a 2-frame pause is a gap between words, not silence
    opening = np.where(env > 0, 5.0, 1.0)
    still = m.silent_lip_motion(opening, silent)
    assert still["motion"] == 0 and still["opening"] == 1.0
    assert still["speech_opening"] == pytest.approx(opening[~silent].mean()) and still["silent_frames"] == 15
    moving = opening + np.where(silent, np.random.default_rng(1).uniform(0, 3, len(env)), 0)
    assert m.silent_lip_motion(moving, silent)["motion"] > 0.5


def test_laplacian_energy_falls_with_blur(face):
    box = m.box_mask(np.array([[40.0, 70], [90, 70], [65, 95]]), face.shape[:2])
    assert m.laplacian_energy(face, box) == m.laplacian_energy(face.copy(), box) > 0
    energies = [m.laplacian_energy(cv2.GaussianBlur(face, (0, 0), s), box) for s in (0.5, 1, 2, 4)]
    assert m.laplacian_energy(face, box) > energies[0] and all(a > b for a, b in zip(energies, energies[1:])), energies
    assert m.laplacian_energy(noisy(face, 10), box) > m.laplacian_energy(face, box)
    assert m.laplacian_energy(np.full((20, 20, 3), 90, np.uint8)) == 0  # a flat image has no detail


def test_box_mask():
    box = m.box_mask(np.array([[10.0, 20], [30, 25]]), (40, 50), pad=0.1)  # 20 px wide: grown 2 px each side
    ys, xs = np.nonzero(box)
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == (8, 32, 18, 27)
    assert m.box_mask(np.array([[-5.0, -5], [3, 3]]), (10, 10), pad=0).sum() == 16  # clipped to the image


def test_teeth_mask_finds_bright_unsaturated_pixels():
    skin, lips, teeth, inside = (205, 150, 120), (180, 90, 95), (235, 230, 215), (60, 25, 30)
    img = np.zeros((40, 40, 3), np.uint8)
    img[:20], img[20:25], img[25:30, :20], img[25:30, 20:], img[30:] = skin, lips, teeth, inside, lips
    limits = m.teeth_thresholds(img, np.arange(40)[:, None].repeat(40, 1) < 20)
    found = m.teeth_mask(img, limits)
    assert found[25:30, :20].all() and found.sum() == 5 * 20  # teeth only: not skin, lips or the dark inside
    assert not m.teeth_mask(img // 3, limits).any()  # darkened teeth are no longer teeth-like
    assert np.isnan(m.teeth_thresholds(img, np.zeros((40, 40), bool))[0])


def test_mean_abs_difference_and_ratio():
    a = np.zeros((4, 4, 3))
    mask = np.zeros((4, 4), bool)
    mask[:2] = True
    b = a.copy()
    b[:2] = 6
    assert m.mean_abs_difference(a, b) == 3 and m.mean_abs_difference(a, b, mask) == 6 and m.mean_abs_difference(b, b) == 0
    assert m.ratio([2, 4, np.nan], [1, 2, 5]) == 2  # frames where either is missing are left out
    assert np.isnan(m.ratio([1, 1], [0, 0]))
