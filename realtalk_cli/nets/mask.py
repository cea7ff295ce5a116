"""Face masks for the renderer, rasterised from projected face-model points (paper section 3.2, eq. 5).

Convention (the paper's): the renderer's mask M is 1 where the source frame is KEPT and 0 in the
lower-face region the network regenerates, so that I_s^m = M * I_s and I = M * I_s + (1 - M) * F.
The polygon helpers below return the *region* (1 inside); `keep = 1 - region`.

The learnable mask is the filled polygon of the face model's `mask_contour` group (cheeks, jaw and
chin, in order) after extending it towards the neck:

    Extension rule: let the "cheek line" be the line through the contour's first and last points and
    u its unit normal pointing to the chin. Every point p at depth d = (p - p_first) . u > 0 below the
    cheek line moves to p + neck_extend * d * u; points on or above the line stay. The lower face is
    stretched downward by a factor (1 + neck_extend) from the cheek line, so the chin point goes a
    fraction `neck_extend` of the cheek-to-chin height under the chin (over the neck), the sides follow
    the jaw, and a wide-open jaw pushes the whole region further down. Because the contour comes from
    V(alpha, beta, rho), the region follows the (predicted) jaw rather than the source frame's.

Everything is a batched torch op on pixel coordinates (x right, y down, pixel centres at integers as
in OpenCV): no OpenCV, usable on any device during training and inference. The fill is soft over a
band of `feather` pixels so the blended output has no hard seam; pixels farther than feather/2
outside the polygon are exactly 0, so the renderer returns the source bit-exactly there.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass
class MaskConfig:
    kind: str = "learnable"  # "learnable" (projected face-model contour) | "lower_half" (naive, Table 6)
    neck_extend: float = 0.35  # stretch of the lower face below the cheek line, see module docstring
    feather: float = 0.02  # soft edge width as a fraction of the crop size
    teeth_dilate: float = 0.01  # growth of the inner-mouth polygon for the teeth loss, fraction of crop size

    def __post_init__(self):
        if self.kind not in ("learnable", "lower_half"):
            raise ValueError(f"unknown mask kind {self.kind!r} (learnable | lower_half)")


def polygon_fill(points: Tensor, height: int, width: int, feather: float = 1.0, grid: int = 64) -> Tensor:
    """Soft fill of closed polygons [B, P, 2] -> [B, 1, H, W]: 1 inside, 0 outside, linear over `feather` px.

    The signed distance to the polygon (even-odd rule for the sign, exact distance to the nearest
    edge) is computed on a grid of about `grid` x `grid` block centres and upsampled bilinearly:
    a distance field is linear across an edge, so this reproduces the edge and its soft band
    (up to sub-pixel error at the polygon's corners) at a fraction of the cost of every pixel
    (16x fewer at 256 px). All P edges are evaluated at once: [B, P, grid, grid] stays small.
    """
    pts = points.float()
    s = max(1, min(height, width) // grid)  # block size in pixels
    h, w = -(-height // s), -(-width // s)
    # block centres in pixel coordinates: what bilinear upsampling (align_corners=False) assumes
    ys = (torch.arange(h, device=pts.device, dtype=pts.dtype) * s + (s - 1) / 2).view(h, 1)
    xs = (torch.arange(w, device=pts.device, dtype=pts.dtype) * s + (s - 1) / 2).view(1, w)
    # every edge at once: [B, P, 1, 1] endpoints against the [h, w] grid
    ax, ay = pts[..., 0, None, None], pts[..., 1, None, None]
    nxt = torch.roll(pts, -1, dims=1)
    bx, by = nxt[..., 0, None, None], nxt[..., 1, None, None]
    # even-odd rule: count the edges a ray towards +x crosses
    straddles = (ay > ys) != (by > ys)
    x_cross = ax + (bx - ax) * (ys - ay) / torch.where(by == ay, torch.ones_like(by), by - ay)
    inside = (straddles & (xs < x_cross)).sum(1) % 2 == 1
    # distance to the nearest segment
    ex, ey = bx - ax, by - ay
    t = (((xs - ax) * ex + (ys - ay) * ey) / (ex * ex + ey * ey).clamp_min(1e-12)).clamp(0.0, 1.0)
    dist = ((xs - ax - t * ex) ** 2 + (ys - ay - t * ey) ** 2).amin(1).sqrt()
    signed = torch.where(inside, dist, -dist).unsqueeze(1)
    if s > 1:
        signed = F.interpolate(signed, scale_factor=float(s), mode="bilinear", align_corners=False)[..., :height, :width]
    return (0.5 + signed / max(feather, 1e-6)).clamp(0.0, 1.0)


def extend_to_neck(contour: Tensor, neck_extend: float) -> Tensor:
    """Stretch a lower-face contour [B, P, 2] downward from its cheek line (rule in the module docstring)."""
    first, last = contour[:, :1], contour[:, -1:]
    along = last - first
    normal = torch.stack([-along[..., 1], along[..., 0]], dim=-1)
    normal = normal / normal.norm(dim=-1, keepdim=True).clamp_min(1e-6)
    # orient the normal towards the contour's body (the chin side), whatever the point order
    side = ((contour.mean(dim=1, keepdim=True) - first) * normal).sum(-1, keepdim=True)
    normal = torch.where(side < 0, -normal, normal)
    depth = ((contour - first) * normal).sum(-1, keepdim=True).clamp_min(0.0)
    return contour + neck_extend * depth * normal


def learnable_region(points2d: Tensor, contour_idx: Tensor, size: int, cfg: MaskConfig) -> Tensor:
    """Region to regenerate [B,1,S,S] from projected vertices [B,V,2] and the contour's vertex indices."""
    contour = extend_to_neck(points2d[:, contour_idx], cfg.neck_extend)
    return polygon_fill(contour, size, size, feather=cfg.feather * size)


def lower_half_region(batch: int, size: int, device=None) -> Tensor:
    """The naive mask of Table 6 (as in IP-LAP): the whole lower half of the crop."""
    rows = (torch.arange(size, device=device) >= size // 2).float().view(1, 1, size, 1)
    return rows.expand(batch, 1, size, size).contiguous()


def teeth_mask(points2d: Tensor, mouth_idx: Tensor, size: int, cfg: MaskConfig) -> Tensor:
    """Binary mask M' [B,1,S,S] of the inner mouth (teeth and tongue) for the local L1 loss."""
    # the fill is 0.5 + signed_distance / feather, so "> 0" keeps every pixel within feather/2 outside
    grow = cfg.teeth_dilate * size
    return (polygon_fill(points2d[:, mouth_idx], size, size, feather=2.0 * grow + 1e-3) > 0).float()


def keep_mask(points2d: Tensor | None, groups: dict[str, Tensor], size: int, cfg: MaskConfig, batch: int | None = None) -> Tensor:
    """The renderer's M [B,1,S,S] (1 = keep source) for the configured mask kind."""
    if cfg.kind == "lower_half":
        n = batch if points2d is None else points2d.shape[0]
        device = None if points2d is None else points2d.device
        return 1.0 - lower_half_region(n, size, device)
    return 1.0 - learnable_region(points2d, groups["mask_contour"], size, cfg)
