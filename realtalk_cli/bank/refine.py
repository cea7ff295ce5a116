"""bank+fia: the bank's composite, refined by a network trained on the person's own frames.

    composite   the bank renderer's frame (compose.py) and its region
    crop        composite and region cut to the refiner's aligned face crop (nets/refiner.py, 128 px)
    residual    what the refiner adds, mapped back into the frame (bilinear, inside the bank's box)
                and added where the region is: no pixel outside the region moves

Training pairs come from the person's own video: every frame (up to `frames` of them) is re-composed
from the bank frame that best matches its tracked mouth among those at least `exclude_seconds` away
(the refiner must not learn to copy the answer from the frame itself or its neighbours), and the
frame is the target. What the refiner can learn is what the bank leaves wrong in any frame: the seam,
lighting the colour fill misses, the skin where two mouths met.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import torch

from realtalk_cli.bank.compose import BankRenderer, Paste
from realtalk_cli.face import align
from realtalk_cli.nets.refiner import Refiner, RefinerConfig


def _box_to_crop(transform: np.ndarray, crop_size: int, size: int, box) -> np.ndarray:
    """2x3 affine: pixels of the paste box -> pixels of the refiner's crop."""
    a = align.rescale(transform, crop_size, size)
    a[:, 2] += a[:, :2] @ np.asarray(box[:2], np.float32)
    return a


def refiner_inputs(composite: np.ndarray, paste: Paste, transform: np.ndarray, crop_size: int, size: int):
    """(image uint8 [S,S,3], region float32 [S,S]): the composite's face crop and the region in it."""
    image = align.warp_to_crop(composite, align.rescale(transform, crop_size, size), size)
    if paste.region.size == 0:
        return image, np.zeros((size, size), np.float32)
    region = cv2.warpAffine(paste.region, _box_to_crop(transform, crop_size, size, paste.box), (size, size),
                            flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return image, region


def add_residual(composite: np.ndarray, residual: np.ndarray, paste: Paste, transform: np.ndarray, crop_size: int) -> np.ndarray:
    """The composite with the refiner's residual [S,S,3] (0..255 units) added inside the region."""
    if paste.region.size == 0:
        return composite
    x0, y0, x1, y1 = paste.box
    back = align.invert(_box_to_crop(transform, crop_size, residual.shape[0], paste.box))
    r = cv2.warpAffine(residual.astype(np.float32), back, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR,
                       borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    out = composite.copy()
    box = out[y0:y1, x0:x1].astype(np.float32) + r * paste.region[..., None]
    out[y0:y1, x0:x1] = np.clip(np.round(box), 0, 255).astype(np.uint8)
    return out


class BankRefiner:
    """A trained refiner applied to the bank's composites, a batch at a time."""

    def __init__(self, net: Refiner, crop_size: int, device: torch.device | str = "cpu"):
        self.net, self.crop_size, self.device = net.to(device).eval(), crop_size, torch.device(device)
        self.size = net.cfg.image_size

    @classmethod
    def from_pretrained(cls, run: str | os.PathLike, crop_size: int, device: torch.device | str = "cpu") -> "BankRefiner":
        from realtalk_cli.checkpoint import build_from_config, load_checkpoint, load_weights, resolve_run

        ckpt = resolve_run(Path(run))
        config, tensors = load_checkpoint(ckpt, required=("refiner",))
        net = build_from_config(lambda d: Refiner(RefinerConfig.from_dict(d)), config, "model", ckpt)
        load_weights(net, tensors["refiner"], ckpt, "refiner")
        return cls(net, crop_size, device)

    def __call__(self, results: list[tuple[np.ndarray, Paste]], transforms: list[np.ndarray]) -> list[tuple[np.ndarray, Paste]]:
        if not results:
            return results
        crops = [refiner_inputs(c, p, a, self.crop_size, self.size) for (c, p), a in zip(results, transforms)]
        image = torch.as_tensor(np.stack([c for c, _ in crops]), device=self.device).permute(0, 3, 1, 2).float() / 255
        region = torch.as_tensor(np.stack([r for _, r in crops]), device=self.device)[:, None]
        with torch.no_grad():
            residual = (self.net(image, region) * 255).permute(0, 2, 3, 1).cpu().numpy()
        return [(add_residual(c, r, p, a, self.crop_size), p) for (c, p), r, a in zip(results, residual, transforms)]


def training_pairs(renderer: BankRenderer, dataset_dir: str | os.PathLike, video: str | os.PathLike, size: int,
                   frames: int = 400, exclude_seconds: float = 1.0, progress=None) -> dict[str, np.ndarray]:
    """{"composite", "target": uint8 [N,S,S,3], "region": float32 [N,S,S], "frame", "source": [N] the
    target's and the composed bank frame's number in the video} from the person's own video (see the
    module docstring); N is at most `frames`, spread evenly over the valid frames."""
    from realtalk_cli.data.dataset import Dataset
    from realtalk_cli.media import VideoReader

    ds = Dataset.open(dataset_dir)
    clips = ds.clips()
    crop_size = ds.face_model.crop_size
    per_clip = [np.flatnonzero(c.valid()) for c in clips]
    total = sum(len(v) for v in per_clip)
    stride = max(1, int(np.ceil(total / frames)))
    bank_frames = renderer.bank.frames
    out: dict[str, list] = {"composite": [], "target": [], "region": [], "frame": [], "source": []}
    task = progress.add_task("refiner pairs", total=total, info="") if progress else None
    for clip, valid in zip(clips, per_clip):
        start, stop = clip.meta.get("segment", [0, len(clip)])
        co, transforms = clip.coeffs(), clip.transforms()
        wanted = set(valid[::stride].tolist())
        costs = renderer.costs(co["alpha"], co["beta"], co["rho"], clip.fps)
        for t, frame in enumerate(VideoReader(Path(video), clip.fps, start=start, stop=stop)):
            if t not in wanted:
                continue
            if progress:
                progress.update(task, advance=stride)
            c = np.where(np.abs(bank_frames - (start + t)) < exclude_seconds * 25.0, np.inf, costs[t])
            if not np.isfinite(c).any():
                continue  # a video shorter than the exclusion: nothing far enough to learn from
            k = int(np.argmin(c))
            composite, paste = renderer.compose(frame, transforms[t], co["alpha"], co["beta"][t], co["beta"][t],
                                                co["rho"][t], [(k, 1.0)])
            image, region = refiner_inputs(composite, paste, transforms[t], crop_size, size)
            target = align.warp_to_crop(frame, align.rescale(transforms[t], crop_size, size), size)
            out["composite"].append(image)
            out["target"].append(target)
            out["region"].append(region)
            out["frame"].append(start + t)
            out["source"].append(int(bank_frames[k]))
    return {k: np.stack(v) if v else np.zeros((0,)) for k, v in out.items()}
