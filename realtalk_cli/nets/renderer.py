"""Expression-to-face renderer of RealTalk (paper section 3.2, Fig. 5, supplementary Table 1).

    masked source I_s^m = M * I_s  --+
                                     +-- shared encoder (stem + d stages) --> F^s_0..F^s_d, F^r_0..F^r_d
    reference I_r -------------------+   (source and reference run together along the batch)

    F_bar_0 = F^s_d;   F_bar_i = FIA_i[(alpha, beta_hat, rho), F_bar_{i-1}, F^r_{d-i}]   i = 1..d
    FIA_i: upsample x2 -> fuse the source skip F^s_{d-i} -> AdaIN(MLP(alpha, beta_hat, rho))
           -> N residual blocks -> align with the reference F^r_{d-i} (only at 1/16 and 1/8)
    head: upsample to full size, see the masked source once more, RGB in [0, 1]
    output I = M * I_s + (1 - M) * F   (eq. 8; equals the source wherever M == 1)

Scales: the stem halves the input, each of the d = 4 encoder stages halves again, so F_0 is at 1/2 and
the bottleneck F_4 at 1/32; FIA_1 and FIA_2 then work at 1/16 and 1/8, the two scales where the paper
runs cross-attention, and FIA_i pairs with F^r_{d-i} exactly as in eq. 7.

Alignment variants for Table 7 (`align`): "attention" (the paper's FIA), "flow" (predict a flow field
from current and reference features and warp the reference, as IP-LAP's alignment does), "deform"
(predict K offsets and weights per position and sample the reference K times with grid_sample, a
deformable-sampling module in the spirit of DINet). The forward pass has no data-dependent Python
control flow, so it traces and exports to ONNX.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ALIGN_KINDS = ("attention", "flow", "deform")


@dataclass
class RendererConfig:
    image_size: int = 256
    coeff_dim: int = 0  # len(alpha) + len(beta) + len(rho); set from the face model before building
    channels: list[int] = field(default_factory=lambda: [128, 256, 512, 512, 512])  # stem, then d stages
    enc_blocks: int = 2  # residual blocks per encoder stage
    fia_blocks: int = 2  # residual blocks per FIA block (Table 7: 1 / 2 / 3)
    align: str = "attention"  # "attention" | "flow" | "deform"
    align_scales: list[int] = field(default_factory=lambda: [16, 8])  # downsampling factors that align
    heads: int = 8
    deform_points: int = 4
    mlp_dim: int = 256  # width of the 3-layer coefficient MLP feeding AdaIN
    head_channels: int = 32

    def __post_init__(self):
        if self.align not in ALIGN_KINDS:
            raise ValueError(f"unknown align {self.align!r} ({' | '.join(ALIGN_KINDS)})")
        if self.image_size % (2 ** len(self.channels)):
            raise ValueError(f"image_size {self.image_size} must be divisible by {2 ** len(self.channels)}")

    @classmethod
    def from_dict(cls, d: dict) -> "RendererConfig":
        return cls(**d)

    def to_dict(self) -> dict:
        return asdict(self)


def load_json_config(path: str | Path) -> dict:
    """A run config from realtalk_cli/configs/*.json: {"model": {...}, "mask": {...}, "task": {...}, ...}."""
    return json.loads(Path(path).read_text())


class ResBlock(nn.Module):
    """Two 3x3 conv-BN layers with an identity (or 1x1 projected) shortcut; stride 2 halves resolution."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.skip = nn.Identity() if cin == cout and stride == 1 else nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: Tensor) -> Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(y)) + self.skip(x))


class AdaIN(nn.Module):
    """Instance-normalise, then scale and shift per channel from the coefficient code (lip-shape control)."""

    def __init__(self, channels: int, coeff_dim: int, mlp_dim: int):
        super().__init__()
        self.norm = nn.InstanceNorm2d(channels, affine=False)
        self.mlp = nn.Sequential(
            nn.Linear(coeff_dim, mlp_dim), nn.ReLU(),
            nn.Linear(mlp_dim, mlp_dim), nn.ReLU(),
            nn.Linear(mlp_dim, 2 * channels),
        )

    def forward(self, x: Tensor, coeffs: Tensor) -> Tensor:
        gamma, beta = self.mlp(coeffs)[:, :, None, None].chunk(2, dim=1)
        return self.norm(x) * (1 + gamma) + beta


class CrossAttention(nn.Module):
    """Every position of the current features queries all positions of the same-scale reference features."""

    def __init__(self, channels: int, heads: int):
        super().__init__()
        self.heads = heads
        self.norm_q = nn.GroupNorm(_groups(channels), channels)
        self.norm_kv = nn.GroupNorm(_groups(channels), channels)
        self.q = nn.Conv2d(channels, channels, 1)
        self.kv = nn.Conv2d(channels, 2 * channels, 1)
        self.out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor, ref: Tensor) -> Tensor:
        B, C, H, W = x.shape
        q = self.q(self.norm_q(x))
        k, v = self.kv(self.norm_kv(ref)).chunk(2, dim=1)
        # [B, C, H, W] -> [B, heads, HW, C/heads]
        q, k, v = (t.reshape(B, self.heads, C // self.heads, -1).transpose(-1, -2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v)
        return x + self.out(y.transpose(-1, -2).reshape(B, C, H, W))


class FlowAlign(nn.Module):
    """Warp the reference with a dense flow predicted from both feature maps (IP-LAP-style alignment)."""

    def __init__(self, channels: int):
        super().__init__()
        self.flow = nn.Sequential(nn.Conv2d(2 * channels, channels, 3, 1, 1), nn.ReLU(), nn.Conv2d(channels, 2, 3, 1, 1))
        nn.init.zeros_(self.flow[-1].weight)  # start from the identity warp
        nn.init.zeros_(self.flow[-1].bias)
        self.fuse = nn.Conv2d(2 * channels, channels, 3, 1, 1)

    def forward(self, x: Tensor, ref: Tensor) -> Tensor:
        flow = self.flow(torch.cat([x, ref], 1)).permute(0, 2, 3, 1)  # [B, H, W, 2] in [-1, 1] units
        warped = F.grid_sample(ref, _base_grid(x) + flow, align_corners=False, padding_mode="border")
        return x + self.fuse(torch.cat([x, warped], 1))


class DeformAlign(nn.Module):
    """Sample the reference at K learned offsets per position and blend them with learned weights."""

    def __init__(self, channels: int, points: int):
        super().__init__()
        self.points = points
        self.offsets = nn.Sequential(nn.Conv2d(2 * channels, channels, 3, 1, 1), nn.ReLU(), nn.Conv2d(channels, 3 * points, 3, 1, 1))
        nn.init.zeros_(self.offsets[-1].weight)
        nn.init.zeros_(self.offsets[-1].bias)
        self.fuse = nn.Conv2d(2 * channels, channels, 3, 1, 1)

    def forward(self, x: Tensor, ref: Tensor) -> Tensor:
        K = self.points
        pred = self.offsets(torch.cat([x, ref], 1))
        offsets, logits = pred[:, : 2 * K], pred[:, 2 * K :]
        weights = logits.softmax(dim=1)
        base = _base_grid(x)
        sampled = 0
        for k in range(K):
            grid = base + offsets[:, 2 * k : 2 * k + 2].permute(0, 2, 3, 1)
            sampled = sampled + weights[:, k : k + 1] * F.grid_sample(ref, grid, align_corners=False, padding_mode="border")
        return x + self.fuse(torch.cat([x, sampled], 1))


class FIABlock(nn.Module):
    """One decoder level: upsample, fuse source skip, AdaIN from the coefficients, residual blocks, align."""

    def __init__(self, cin: int, cskip: int, cout: int, cfg: RendererConfig, align: bool):
        super().__init__()
        self.fuse = nn.Conv2d(cin + cskip, cout, 3, 1, 1)
        self.adain = AdaIN(cout, cfg.coeff_dim, cfg.mlp_dim)
        self.blocks = nn.Sequential(*[ResBlock(cout, cout) for _ in range(cfg.fia_blocks)])
        if not align:
            self.align = None
        elif cfg.align == "attention":
            self.align = CrossAttention(cout, cfg.heads)
        elif cfg.align == "flow":
            self.align = FlowAlign(cout)
        else:
            self.align = DeformAlign(cout, cfg.deform_points)

    def forward(self, x: Tensor, skip: Tensor, ref: Tensor, coeffs: Tensor) -> Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
        x = F.relu(self.adain(self.fuse(torch.cat([x, skip], 1)), coeffs))
        x = self.blocks(x)
        return x if self.align is None else self.align(x, ref)


class Encoder(nn.Module):
    """Stem at 1/2, then d stages of `enc_blocks` residual blocks, each stage halving the resolution."""

    def __init__(self, cfg: RendererConfig):
        super().__init__()
        c = cfg.channels
        self.stem = nn.Sequential(nn.Conv2d(3, c[0], 7, 2, 3, bias=False), nn.BatchNorm2d(c[0]), nn.ReLU())
        self.stages = nn.ModuleList(
            nn.Sequential(ResBlock(c[i - 1], c[i], stride=2), *[ResBlock(c[i], c[i]) for _ in range(cfg.enc_blocks - 1)])
            for i in range(1, len(c))
        )

    def forward(self, x: Tensor) -> list[Tensor]:
        feats = [self.stem(x)]
        for stage in self.stages:
            feats.append(stage(feats[-1]))
        return feats  # F_0 (1/2) ... F_d (1/2^(d+1))


class Renderer(nn.Module):
    def __init__(self, cfg: RendererConfig):
        super().__init__()
        if cfg.coeff_dim <= 0:
            raise ValueError("RendererConfig.coeff_dim must be set (len(alpha) + len(beta) + len(rho))")
        self.cfg = cfg
        # coefficients arrive in their own units (radians, crop pixels, PCA weights): standardise them
        # with training statistics, saved with the weights so inference normalises identically
        self.register_buffer("coeff_mean", torch.zeros(cfg.coeff_dim))
        self.register_buffer("coeff_std", torch.ones(cfg.coeff_dim))
        c = cfg.channels
        d = len(c) - 1
        self.encoder = Encoder(cfg)
        # FIA_i (i = 1..d) upsamples to the scale of F_{d-i}: 2^(d-i+1) times smaller than the image
        self.decoder = nn.ModuleList(
            FIABlock(c[d - i + 1], c[d - i], c[d - i], cfg, align=2 ** (d - i + 1) in cfg.align_scales)
            for i in range(1, d + 1)
        )
        h = cfg.head_channels
        self.head = nn.Sequential(nn.Conv2d(c[0] + 3, h, 3, 1, 1), nn.ReLU(), nn.Conv2d(h, 3, 3, 1, 1))

    def set_coeff_stats(self, mean: Tensor, std: Tensor) -> None:
        self.coeff_mean.copy_(mean)
        self.coeff_std.copy_(std.clamp_min(1e-3))  # a constant coefficient (one speaker's alpha) maps to 0

    def forward(self, source: Tensor, reference: Tensor, coeffs: Tensor, mask: Tensor) -> Tensor:
        """source, reference [B,3,S,S] in [0,1]; coeffs = cat(alpha, beta, rho) [B, coeff_dim];
        mask M [B,1,S,S] (1 = keep source). Returns I = M * I_s + (1 - M) * F, [B,3,S,S] in [0,1]."""
        coeffs = (coeffs - self.coeff_mean) / self.coeff_std
        masked = source * mask
        feats = self.encoder(torch.cat([masked, reference], 0))
        n = source.shape[0]  # slice rather than chunk(2): chunk makes ONNX export fix the batch size
        src, ref = zip(*((f[:n], f[n:]) for f in feats))
        x = src[-1]
        d = len(self.decoder)
        for i, block in enumerate(self.decoder, start=1):
            x = block(x, src[d - i], ref[d - i], coeffs)
        x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
        face = torch.sigmoid(self.head(torch.cat([x, masked], 1)))
        return mask * source + (1 - mask) * face


def _groups(channels: int) -> int:
    return next(g for g in (32, 16, 8, 4, 2, 1) if channels % g == 0)


def _base_grid(x: Tensor) -> Tensor:
    """Identity sampling grid [1, H, W, 2] (x, y in [-1, 1], pixel centres) for grid_sample."""
    H, W = x.shape[-2:]
    ys = (torch.arange(H, device=x.device, dtype=x.dtype) + 0.5) * (2.0 / H) - 1.0
    xs = (torch.arange(W, device=x.device, dtype=x.dtype) + 0.5) * (2.0 / W) - 1.0
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx, gy], dim=-1).unsqueeze(0)
