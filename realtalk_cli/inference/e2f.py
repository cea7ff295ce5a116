"""Coefficients + source frame + reference frame -> rendered face crop, with a trained renderer.

The same mask code runs in training (train/e2f_task.py) and at inference: the mask is drawn from
V(alpha, beta, rho) of the coefficients being rendered (at inference the predicted beta_hat), so
the region the network fills follows the new jaw, not the source frame's.

    model = load_renderer("runs/e2f/checkpoints/step_0100000")
    out = render(model, sources, reference, alpha, beta_hat, rho)    # uint8 [B,S,S,3] crops
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from realtalk_cli.checkpoint import build_from_config, config_field, load_checkpoint, load_weights
from realtalk_cli.errors import RealtalkError
from realtalk_cli.face.model import FaceModel
from realtalk_cli.nets.mask import MaskConfig, keep_mask, teeth_mask
from realtalk_cli.nets.renderer import Renderer, RendererConfig


@dataclass
class E2FModel:
    renderer: Renderer
    face: FaceModel
    mask: MaskConfig

    @property
    def image_size(self) -> int:
        return self.renderer.cfg.image_size


def face_masks(face: FaceModel, cfg: MaskConfig, alpha: Tensor, beta: Tensor, rho: Tensor, size: int) -> tuple[Tensor, Tensor]:
    """(M, M') [B,1,size,size]: the renderer's keep-mask and the binary teeth mask, from coefficients.

    The face model works in dataset-crop pixels; points are rescaled to the renderer's resolution.
    """
    pts = face.project(face.vertices(alpha, beta, rho)) * (size / face.crop_size)
    return keep_mask(pts, face.groups, size, cfg), teeth_mask(pts, face.groups["mouth"], size, cfg)


def to_tensor(images: np.ndarray, size: int, device: torch.device) -> Tensor:
    """uint8 [B,H,W,3] -> float [B,3,size,size] in [0,1] (area-resampled when H != size)."""
    x = torch.as_tensor(np.ascontiguousarray(images), device=device).permute(0, 3, 1, 2).float() / 255.0
    if x.shape[-1] != size:
        x = torch.nn.functional.interpolate(x, size=(size, size), mode="area" if x.shape[-1] > size else "bilinear")
    return x


def to_uint8(x: Tensor) -> np.ndarray:
    return (x.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()


def coefficients(alpha: Tensor, beta: Tensor, rho: Tensor) -> Tensor:
    """The renderer's condition: cat(alpha, beta, rho) per frame (alpha broadcast over frames)."""
    return torch.cat([alpha.expand(beta.shape[0], -1), beta, rho], dim=1)


@torch.no_grad()
def render(model: E2FModel, sources: np.ndarray, reference: np.ndarray, alpha, beta, rho, keep: Tensor | None = None) -> np.ndarray:
    """Render a batch: sources uint8 [B,S,S,3], one reference uint8 [S,S,3], alpha [n_id], beta [B,n_exp], rho [B,6].
    `keep` (M from `face_masks`) can be passed by a caller that needs the mask too, to draw it once."""
    net = model.renderer
    dev = next(net.parameters()).device
    t = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float32, device=dev)  # noqa: E731
    alpha, beta, rho = t(alpha).reshape(1, -1), t(beta), t(rho)
    S = model.image_size
    src = to_tensor(sources, S, dev)
    ref = to_tensor(reference[None], S, dev).expand(len(src), -1, -1, -1)
    if keep is None:
        keep, _ = face_masks(model.face, model.mask, alpha.expand(len(src), -1), beta, rho, S)
    return to_uint8(net(src, ref, coefficients(alpha, beta, rho), keep))


def load_renderer(path: str | os.PathLike, device: torch.device | str = "cpu") -> E2FModel:
    """A trained e2f checkpoint directory -> renderer (eval mode), its face model and mask config."""
    config, tensors = load_checkpoint(path, required=("renderer", "face_model"))
    if config.get("stage") != "e2f":
        raise RealtalkError(f"not an e2f checkpoint (stage {config.get('stage')!r})", path)
    face = FaceModel.from_checkpoint(config_field(config, "face_model", path), tensors["face_model"])
    net = build_from_config(lambda d: Renderer(RendererConfig.from_dict(d)), config, "model", path)
    load_weights(net, tensors["renderer"], path, "renderer")
    mask = build_from_config(lambda d: MaskConfig(**d), config, "mask", path)
    return E2FModel(net.to(device).eval(), face.to(device), mask)
