"""LPIPS (Zhang et al. 2018, v0.1): learned perceptual distance with an AlexNet or VGG16 backbone.

Weights are user-given: the backbone's torchvision ImageNet state dict (`features.0.weight`, ...)
and the linear heads of the `lpips` package (`weights/v0.1/alex.pth` or `vgg.pth`:
`lin0.model.1.weight` ... `lin4.model.1.weight`), as two files, or one full `lpips.LPIPS` state dict
(`net.slice1.0.weight`, ..., `lin0.model.1.weight`). The backbone is recognised from the heads'
widths. `realtalk eval --lpips-weights HEADS --lpips-weights BACKBONE`.

Input: two RGB batches in [0, 1]; output: [B] distances (0 for identical images, larger = more different).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Iterable

import torch
from torch import Tensor, nn

from realtalk_cli.errors import RealtalkError
from realtalk_cli.checkpoint import read_state_dict
from realtalk_cli.eval.weights import load_weights
from realtalk_cli.nets.vgg import vgg_layers

# per backbone: torchvision `features` layout, the indices of the tapped ReLUs, and their widths
ALEX_LAYOUT = [("conv", 3, 64, 11, 4, 2), "relu", "pool", ("conv", 64, 192, 5, 1, 2), "relu", "pool",
               ("conv", 192, 384, 3, 1, 1), "relu", ("conv", 384, 256, 3, 1, 1), "relu", ("conv", 256, 256, 3, 1, 1), "relu"]
VGG16_WIDTHS = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]
TAPS = {"alex": [1, 4, 7, 9, 11], "vgg": [3, 8, 15, 22, 29]}
WIDTHS = {"alex": [64, 192, 384, 256, 256], "vgg": [64, 128, 256, 512, 512]}
# lpips' ScalingLayer: inputs in [-1, 1] are shifted and scaled to ImageNet statistics
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)


@dataclass
class LPIPSConfig:
    backbone: str = "alex"  # "alex" (the lpips default) or "vgg"


def _features(backbone: str) -> nn.Sequential:
    layers: list[nn.Module] = []
    if backbone == "alex":
        for spec in ALEX_LAYOUT:
            if spec == "relu":
                layers.append(nn.ReLU())
            elif spec == "pool":
                layers.append(nn.MaxPool2d(3, 2))
            else:
                _, cin, cout, k, s, p = spec
                layers.append(nn.Conv2d(cin, cout, k, stride=s, padding=p))
    else:
        layers = vgg_layers(VGG16_WIDTHS)
    return nn.Sequential(*layers[: TAPS[backbone][-1] + 1])


class Head(nn.Module):
    """lpips' NetLinLayer: dropout (off at eval) then a 1x1 conv to one channel, no bias."""

    def __init__(self, channels: int):
        super().__init__()
        self.model = nn.Sequential(nn.Dropout(), nn.Conv2d(channels, 1, 1, bias=False))

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)


class LPIPS(nn.Module):
    def __init__(self, config: LPIPSConfig = LPIPSConfig()):
        super().__init__()
        if config.backbone not in TAPS:
            raise RealtalkError(f"unknown LPIPS backbone {config.backbone!r} (expected alex or vgg)")
        self.config = config
        self.features = _features(config.backbone)
        for i, ch in enumerate(WIDTHS[config.backbone]):
            setattr(self, f"lin{i}", Head(ch))
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1), persistent=False)

    def _taps(self, x: Tensor) -> list[Tensor]:
        x = ((2 * x - 1) - self.shift) / self.scale
        out, taps = [], TAPS[self.config.backbone]
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in taps:
                out.append(x / (x.norm(dim=1, keepdim=True) + 1e-10))  # unit length along channels
        return out

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        """a, b: [B, 3, H, W] RGB in [0, 1] -> [B] LPIPS distance."""
        total = 0
        for i, (fa, fb) in enumerate(zip(self._taps(a), self._taps(b))):
            total = total + getattr(self, f"lin{i}")((fa - fb) ** 2).mean((1, 2, 3))
        return total

    @classmethod
    def from_files(cls, paths: str | os.PathLike | Iterable[str | os.PathLike]) -> "LPIPS":
        """Load from one full lpips state dict or from heads + torchvision backbone files."""
        paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
        backbone = "alex"
        for p in paths:  # the third head is 384 wide on AlexNet, 256 on VGG16
            head = read_state_dict(p, "LPIPS").get("lin2.model.1.weight")
            if head is not None:
                backbone = "vgg" if head.shape[1] == WIDTHS["vgg"][2] else "alex"
        # lpips' own state dict keeps torchvision's layer indices inside its slices
        rename = lambda k: re.sub(r"^net\.slice\d\.(\d+)\.", r"features.\1.", k)  # noqa: E731
        return load_weights(cls(LPIPSConfig(backbone)), paths, f"LPIPS ({backbone})", rename)
