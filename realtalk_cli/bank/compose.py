"""The bank renderer: the lower face of each output frame, taken from the person's own frames.

For an output frame that shows source frame F with head pose rho and should say beta_hat:

    target   points of V(alpha, beta_hat, rho) in F's pixels (the shown head, the predicted mouth)
    sources  bank frames from retrieval (retrieve.py), each warped piecewise-affinely from its own
             points onto the target points, straight into F's pixels (one resampling)
    region   the lower-face mask of the target mouth united with that of F's own mouth, so F's
             original lips never show beside the new ones, feathered at its edge
    register above both mouths (the nose, the skin over the upper lip: what speech does not move, so
             F is right there in any dub), the warp is corrected by the optical flow to F, spread
             smoothly and held at zero on the target lips, which the mesh places (warp.register_maps)
    colour   the difference between F and the warped sources on a band around the region's edge,
             spread smoothly over the inside (a membrane fill) and added: lighting and skin tone
             follow the shown frame although the bank frame was lit differently
    blend    F outside, warped + colour inside, soft edge; nothing outside the region changes

All work happens in a box around the region, so the cost follows the face's size, not the frame's.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

from realtalk_cli.bank.retrieve import (RetrievalConfig, lip_descriptors, match_costs, planned_path,
                                        sources_per_frame, typical_mismatch, with_motion)
from realtalk_cli.bank.store import FrameBank, border_anchors, project
from realtalk_cli.bank.warp import fill_smooth, piecewise_affine_maps, register_maps, resample
from realtalk_cli.face import align
from realtalk_cli.nets.mask import extend_to_neck


@dataclass
class ComposeConfig:
    neck_extend: float = 0.1  # a little under the chin: enough to cover a moving jaw, little neck or collar
    feather: float = 0.025     # soft edge, fraction of the face-model crop side
    band: float = 0.03         # width of the colour-matching band at the edge, same unit
    side_inset: float = 0.75   # the region's width about the mouth: its sides stay off the face's outline
    grid: int = 64             # cells a side of the box for the membrane fills (colour, registration)
    register: bool = True      # line the bank image up with the shown frame above the mouth
    register_margin: float = 0.03  # how far above the lips the registration area ends, crop side fraction


@dataclass
class Paste:
    """Where a frame was changed: a soft mask over a box of the frame (for previews and tests)."""

    region: np.ndarray  # float32 [h, w] in [0, 1]
    box: tuple[int, int, int, int]

    def mask(self, height: int, width: int) -> np.ndarray:
        out = np.zeros((height, width), np.float32)
        x0, y0, x1, y1 = self.box
        out[y0:y1, x0:x1] = self.region
        return out


class BankRenderer:
    def __init__(self, bank: FrameBank, retrieval: RetrievalConfig | None = None, compose: ComposeConfig | None = None):
        self.bank, self.face = bank, bank.face
        self.retrieval = retrieval or RetrievalConfig()
        self.cfg = compose or ComposeConfig()
        self._descriptors = self._bank_descriptors()
        self._unit = typical_mismatch(self._descriptors)
        self._successor = bank.successor()
        self._contour = self.face.groups["mask_contour"].cpu()
        self._lips = self.face.groups["lips_outer"].cpu().numpy()

    # ---- retrieval over a whole output ---------------------------------------------------------
    def _bank_descriptors(self) -> np.ndarray:
        """Lip descriptors of the bank frames, with their motion from the frame before in the same video."""
        bank = self.bank
        desc = lip_descriptors(self.face, bank.alpha, bank.beta)
        if self.retrieval.motion <= 0:
            return desc
        follows = np.r_[False, bank.segment[1:] == bank.segment[:-1]]  # a segment's first frame: no motion known
        before = np.where(follows[:, None], np.roll(desc, 1, 0), desc)
        gap = np.maximum(np.diff(bank.frames, prepend=bank.frames[:1]), 1)
        return with_motion(desc, before, gap, self.retrieval.motion)

    def costs(self, alpha: np.ndarray, beta: np.ndarray, rho: np.ndarray, fps: float = 25.0,
              beta_before: np.ndarray | None = None, chunk: int = 512) -> np.ndarray:
        """[T, K] cost of showing bank frame k at output frame t, for predicted expressions beta [T] at
        `fps` shown with poses rho [T]; `beta_before`: the expression asked for just before."""
        target = lip_descriptors(self.face, alpha, beta)
        if self.retrieval.motion > 0:
            first = target[:1] if beta_before is None else lip_descriptors(self.face, alpha, np.asarray(beta_before)[None])
            target = with_motion(target, np.vstack([first, target[:-1]]), np.full(len(target), 25.0 / fps),
                                 self.retrieval.motion)
        return np.concatenate([match_costs(target[i:i + chunk], self._descriptors, rho[i:i + chunk], self.bank.rho,
                                           self._unit, self.retrieval) for i in range(0, len(target), chunk)])

    def plan(self, alpha: np.ndarray, beta: np.ndarray, rho: np.ndarray, prev: int | None = None,
             fps: float = 25.0, beta_before: np.ndarray | None = None) -> list[list[tuple[int, float]]]:
        """Bank sources per output frame (see costs); `prev` and `beta_before`: the bank frame shown and
        the expression asked for just before (a live stream plans block after block)."""
        costs = self.costs(alpha, beta, rho, fps, beta_before)
        path = planned_path(costs, self._successor, self.retrieval, prev)
        return sources_per_frame(path, self._successor, self.retrieval.crossfade)

    # ---- one frame -------------------------------------------------------------------------------
    def compose(self, frame: np.ndarray, transform: np.ndarray, alpha: np.ndarray, beta_hat: np.ndarray,
                beta_shown: np.ndarray, rho: np.ndarray, sources: list[tuple[int, float]]) -> tuple[np.ndarray, Paste]:
        """The dubbed frame and where it changed. `transform` maps frame pixels to face-model crop pixels."""
        S = self.face.crop_size
        inv = align.invert(transform)
        to_frame = lambda p: align.transform_points(p, inv)  # noqa: E731
        both = project(self.face, alpha, np.stack([beta_hat, beta_shown]), np.stack([rho, rho]))
        target = to_frame(np.vstack([both[0][self.bank.index.numpy()], border_anchors(S)]))
        contours = extend_to_neck(torch.as_tensor(both[:, self._contour]), self.cfg.neck_extend).numpy()
        # narrowed about the mouth (crop x runs along the eye line): on a turned head the jaw contour is the
        # face's outline, and a warp that reaches past it pulls hair or background into the cheek
        centre = both[0][self._lips].mean(0)
        contours[..., 0] = centre[0] + self.cfg.side_inset * (contours[..., 0] - centre[0])
        polys = [to_frame(c) for c in contours]

        h, w = frame.shape[:2]
        px = S / _scale(transform)  # frame pixels per crop side
        feather, band = max(1.0, self.cfg.feather * px), max(2.0, self.cfg.band * px)
        margin = int(np.ceil(feather * 2 + band + 2))
        pts = np.concatenate(polys)
        x0, y0 = np.maximum(np.floor(pts.min(0)).astype(int) - margin, 0)
        x1, y1 = np.minimum(np.ceil(pts.max(0)).astype(int) + margin, [w, h])
        if x1 <= x0 or y1 <= y0:
            return frame, Paste(np.zeros((0, 0), np.float32), (0, 0, 0, 0))
        box = (int(x0), int(y0), int(x1), int(y1))
        region = self._region(polys, box, feather)

        shown = frame[y0:y1, x0:x1].astype(np.float32)
        inside = (region > 0.5).astype(np.uint8)
        r = int(round(band))
        kernel = np.ones((2 * r + 1,) * 2, np.uint8)
        ring = cv2.dilate(inside, kernel) - cv2.erode(inside, kernel)
        known = still = None
        if self.cfg.register:
            known, still = self._registration_areas(transform, both, to_frame, box, inside | ring, kernel)
        warped = np.zeros((y1 - y0, x1 - x0, 3), np.float32)
        for k, weight in sources:
            image = self.bank.crop(k)
            map_x, map_y, _ = piecewise_affine_maps(target, self.bank.points[k], self.bank.triangles, box)
            if known is not None:
                map_x, map_y = register_maps(image, map_x, map_y, shown, known, still, self.cfg.grid)
            warped += weight * resample(image, map_x, map_y).astype(np.float32)
        # the ring's inner half lies inside the region; its outer half is pure shown frame
        correction = fill_smooth(shown - warped, ring.astype(np.float32), self.cfg.grid)
        out_box = shown * (1 - region[..., None]) + (warped + correction) * region[..., None]
        out = frame.copy()
        out[y0:y1, x0:x1] = np.clip(np.round(out_box), 0, 255).astype(np.uint8)
        return out, Paste(region, box)

    def _registration_areas(self, transform, both, to_frame, box, area, kernel):
        """(known, still) [h, w] bool in the box, or (None, None) when too little is known: the region
        and its ring above both mouths (target and shown, crop y is the face's vertical), and the
        target lips grown by the ring's width."""
        x0, y0, x1, y1 = box
        ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        crop_y = transform[1, 0] * xs + transform[1, 1] * ys + transform[1, 2]
        top = both[:, self._lips, 1].min() - self.cfg.register_margin * self.face.crop_size
        known = (area > 0) & (crop_y < top)
        if known.sum() < 16:
            return None, None
        lips = np.zeros(area.shape, np.uint8)
        cv2.fillPoly(lips, [np.round(to_frame(both[0][self._lips]) - (x0, y0)).astype(np.int32)], 1)
        return known, cv2.dilate(lips, kernel) > 0

    @staticmethod
    def _region(polys: list[np.ndarray], box, feather: float) -> np.ndarray:
        """Union of the filled polygons in the box, with a soft edge centred on the outline."""
        x0, y0, x1, y1 = box
        hard = np.zeros((y1 - y0, x1 - x0), np.float32)
        for p in polys:
            cv2.fillPoly(hard, [np.round((p - (x0, y0)) * 16).astype(np.int32)], 1.0, cv2.LINE_AA, shift=4)
        sigma = feather / 2
        return cv2.GaussianBlur(hard, (0, 0), sigma) if sigma > 0.3 else hard


def _scale(transform: np.ndarray) -> float:
    """Face-model crop pixels per frame pixel."""
    return float(np.sqrt(abs(np.linalg.det(transform[:, :2].astype(np.float64)))))
