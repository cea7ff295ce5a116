"""The bank+fia refiner: a small U-Net that corrects the frame bank's composite of the lower face.

    composite C [B,3,S,S] in [0,1]  (the bank renderer's output, cut to the aligned face crop)
    region    M [B,1,S,S] in [0,1]  (where the bank renderer changed pixels)
    residual  R = M * head(U-Net(C, M))   in the same units as C; the refined face is C + R

The last convolution starts at zero, so an untrained refiner returns the composite exactly and
training can only move away from the bank's picture as far as the person's frames justify. The
residual is coarse (`smooth`: averaged over 8x8 pixels of the 128 px crop, then upsampled): it can
correct light and shading that the colour fill misses, never the mouth's detail, which the bank frame
brings sharp. Measured on German_20s: a full-resolution residual learned to dull the teeth toward an
average mouth (held-out mask PSNR +0.23 dB, mouth sharpness 0.93 -> 0.75 of the source's, teeth
0.47 -> 0.27): what an L1 loss rewards where the mouth cannot be predicted, and what a viewer sees as
blur.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
class RefinerConfig:
    image_size: int = 128                                          # side of the aligned crop it works on
    channels: list[int] = field(default_factory=lambda: [16, 32, 64])  # per level; each level halves
    smooth: int = 8               # the residual is an image this many times coarser, upsampled: light, not detail

    def __post_init__(self):
        if self.image_size % (2 ** (len(self.channels) - 1)) or self.image_size % self.smooth:
            raise ValueError(f"image_size {self.image_size} must be divisible by {2 ** (len(self.channels) - 1)} and by smooth")

    @classmethod
    def from_dict(cls, d: dict) -> "RefinerConfig":
        return cls(**d)

    def to_dict(self) -> dict:
        return asdict(self)


def _block(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.SiLU(), nn.Conv2d(cout, cout, 3, 1, 1), nn.SiLU())


class Refiner(nn.Module):
    def __init__(self, cfg: RefinerConfig):
        super().__init__()
        self.cfg = cfg
        c = cfg.channels
        self.down = nn.ModuleList([_block(4, c[0])] + [_block(c[i - 1], c[i], 2) for i in range(1, len(c))])
        self.up = nn.ModuleList([_block(c[i] + c[i - 1], c[i - 1]) for i in range(len(c) - 1, 0, -1)])
        self.head = nn.Conv2d(c[0], 3, 3, 1, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, composite: Tensor, region: Tensor) -> Tensor:
        x = torch.cat([composite * 2 - 1, region], 1)
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
        for block, skip in zip(self.up, reversed(skips[:-1])):
            x = block(torch.cat([F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False), skip], 1))
        r = self.head(x)
        if self.cfg.smooth > 1:
            s = self.cfg.smooth
            r = F.interpolate(F.avg_pool2d(r, s), scale_factor=float(s), mode="bilinear", align_corners=False)
        return r * region
