"""The render stage of a dub: source frames + predicted expressions -> dubbed frames, batch by batch.

Two renderers share one interface, so the dub loop (and later a live stream) does not care which:

    stage.prepare(track, beta_hat, src_idx, ref, fps)   once per job (or per block of a live stream, resume=True)
    stage(batch, clock) -> [(dubbed, paste)]     batch = [(output index, source index, frame)]

`paste` tells where the frame changed (`paste.mask(h, w)`, a soft [h, w] mask): previews overlay it
and tests check that nothing outside it moved.

* FIAStage: the paper's renderer (e2f): crop, mask, network, feathered paste back.
* BankStage: the person's own frames (realtalk_cli/bank): retrieval once over the whole output, then
  a warp and blend per frame straight into the frame's pixels; with a refiner (bank+fia), a network's
  correction added inside the changed region, a batch at a time.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

from realtalk_cli.bank.compose import BankRenderer
from realtalk_cli.face import align
from realtalk_cli.inference.e2f import E2FModel, face_masks, render


@dataclass
class CropPaste:
    """A soft region in crop pixels and the frame -> crop transform it belongs to."""

    region: np.ndarray
    affine: np.ndarray

    def mask(self, height: int, width: int) -> np.ndarray:
        return cv2.warpAffine(self.region, align.invert(self.affine), (width, height))


class FIAStage:
    name = "fia"

    def __init__(self, e2f: E2FModel, crop_size: int, device: torch.device, feather: float = 0.04):
        self.e2f, self.face, self.device = e2f, e2f.face, device
        S = e2f.image_size
        self._crop_size = crop_size  # the face-model crop the track's transforms cut
        self._feather = max(1, int(feather * S)) | 1

    def _to_render(self, a: np.ndarray) -> np.ndarray:
        return align.rescale(a, self._crop_size, self.e2f.image_size)

    def prepare(self, track, beta_hat: np.ndarray, src_idx: np.ndarray, reference_frame: np.ndarray,
                fps: float = 25.0, resume: bool = False) -> None:
        self.track, self.beta_hat = track, beta_hat
        self.reference = align.warp_to_crop(reference_frame, self._to_render(track.transforms[track.reference]),
                                            self.e2f.image_size)

    def __call__(self, batch, clock):
        S, track = self.e2f.image_size, self.track
        out_idx = np.array([i for i, _, _ in batch])
        src_idx = np.array([j for _, j, _ in batch])
        affines = [self._to_render(track.transforms[j]) for j in src_idx]
        with clock("crop"):
            crops = np.stack([align.warp_to_crop(f, a, S) for (_, _, f), a in zip(batch, affines)])
        t = lambda a: torch.as_tensor(np.asarray(a, np.float32), device=self.device)  # noqa: E731
        with clock("mask"):
            keep, _ = face_masks(self.face, self.e2f.mask, t(track.alpha)[None].expand(len(batch), -1),
                                 t(self.beta_hat[out_idx]), t(track.rho[src_idx]), S)
        with clock("render"):
            rendered = render(self.e2f, crops, self.reference, track.alpha, self.beta_hat[out_idx], track.rho[src_idx], keep)
        keep = keep[:, 0].cpu().numpy()
        results = []
        with clock("paste"):
            for (_, _, frame), crop, a, k in zip(batch, rendered, affines, keep):
                # paste only where the renderer may change pixels, feathered: everything else stays the source
                f = self._feather
                region = cv2.GaussianBlur(cv2.dilate(1.0 - k, np.ones((f, f), np.uint8)), (f, f), 0)
                region[1.0 - k > 0.5] = 1.0
                results.append((align.paste_back(frame, crop, a, region), CropPaste(region, a)))
        return results


class BankStage:
    def __init__(self, renderer: BankRenderer, refiner=None):
        self.renderer, self.face, self.refiner = renderer, renderer.face, refiner
        self.name = "bank+fia" if refiner is not None else "bank"
        self.last: int | None = None  # the bank frame planned for the last prepared output frame
        self.last_beta: np.ndarray | None = None  # and the expression asked of it

    def prepare(self, track, beta_hat: np.ndarray, src_idx: np.ndarray, reference_frame=None, fps: float = 25.0,
                resume: bool = False) -> None:
        """Plan the bank frames for these output frames; `resume`: they follow the last prepared ones
        (a live stream prepares block after block and gets what one offline plan would choose)."""
        self.track, self.beta_hat = track, beta_hat
        self.sources = self.renderer.plan(track.alpha, beta_hat, track.rho[src_idx], prev=self.last if resume else None,
                                          fps=fps, beta_before=self.last_beta if resume else None)
        self.last = self.sources[-1][0][0] if self.sources else None
        self.last_beta = beta_hat[-1] if len(beta_hat) else None

    def __call__(self, batch, clock):
        track, results = self.track, []
        with clock("render"):
            for i, j, frame in batch:
                results.append(self.renderer.compose(frame, track.transforms[j], track.alpha, self.beta_hat[i],
                                                     track.beta[j], track.rho[j], self.sources[i]))
        if self.refiner is not None:
            with clock("refine"):
                results = self.refiner(results, [track.transforms[j] for _, j, _ in batch])
        return results
