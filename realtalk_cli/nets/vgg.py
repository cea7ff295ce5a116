"""VGG19 feature extractor for the perceptual loss (paper eq. 9, L_2), weights from a user-given file.

The layer layout matches torchvision's `vgg19().features`, so the common ImageNet state dict
(`features.0.weight`, ..., `features.34.bias`; the classifier keys are ignored) loads as is, from a
.pth (read with weights_only=True, nothing is unpickled) or a .safetensors file. There is no download:
without a weights file the perceptual term is off and the training run says so.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from realtalk_cli.checkpoint import read_state_dict
from realtalk_cli.errors import RealtalkError

# configuration "E" of Simonyan & Zisserman: conv widths, "M" = 2x2 max-pool
VGG19_LAYOUT = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"]
# relu1_1, relu2_1, relu3_1, relu4_1, relu5_1 (indices in `features`) and their weights (pix2pixHD)
PERCEPTUAL_LAYERS = {1: 1 / 32, 6: 1 / 16, 11: 1 / 8, 20: 1 / 4, 29: 1.0}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def vgg_layers(layout: list) -> list[nn.Module]:
    """torchvision's `features` list for a VGG layout (widths and "M"), so its state-dict indices load."""
    layers: list[nn.Module] = []
    cin = 3
    for v in layout:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(cin, v, 3, padding=1), nn.ReLU()]
            cin = v
    return layers


class VGG19Features(nn.Module):
    def __init__(self):
        super().__init__()
        layers = vgg_layers(VGG19_LAYOUT)
        self.features = nn.Sequential(*layers[: max(PERCEPTUAL_LAYERS) + 1])  # nothing after relu5_1 is used
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: Tensor) -> list[Tensor]:
        """x in [0, 1] -> the activations at PERCEPTUAL_LAYERS."""
        x = (x - self.mean) / self.std
        out = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in PERCEPTUAL_LAYERS:
                out.append(x)
        return out

    @classmethod
    def from_file(cls, path: str | Path) -> "VGG19Features":
        state = read_state_dict(path, "VGG19")
        model = cls()
        wanted = model.state_dict()
        state = {k: v for k, v in state.items() if k in wanted}
        missing = sorted(set(wanted) - set(state))
        if missing:
            raise RealtalkError(f"not a torchvision-layout VGG19 state dict (missing {missing[0]}, ...)", path)
        bad = [k for k in wanted if state[k].shape != wanted[k].shape]
        if bad:
            raise RealtalkError(f"VGG19 weight {bad[0]} has shape {tuple(state[bad[0]].shape)}, expected {tuple(wanted[bad[0]].shape)}", path)
        model.load_state_dict(state)
        return model.eval().requires_grad_(False)


class PerceptualLoss(nn.Module):
    """Weighted L1 between VGG19 activations of output and target (frozen VGG)."""

    def __init__(self, vgg: VGG19Features):
        super().__init__()
        self.vgg = vgg.eval().requires_grad_(False)
        self.weights = list(PERCEPTUAL_LAYERS.values())

    def train(self, mode: bool = True):  # the VGG stays in eval mode whatever the trainer does
        super().train(mode)
        self.vgg.eval()
        return self

    def forward(self, output: Tensor, target: Tensor) -> Tensor:
        feats = self.vgg(torch.cat([output, target], 0))
        return sum(w * F.l1_loss(*f.chunk(2, dim=0)) for w, f in zip(self.weights, feats))
