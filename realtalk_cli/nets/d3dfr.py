"""Deep3DFaceRecon's coefficient regressor: a ResNet-50 with seven 1x1-conv heads -> 257 BFM coefficients.

Parameter names match the public checkpoint (`epoch_20.pth`, key "net_recon"): `backbone.*` is a
torchvision-layout ResNet-50 without its fc layer, `final_layers.{0..6}` are the heads. Input: RGB
in [0, 1], 224x224, the face aligned roughly as in Deep3DFaceRecon. Output split (DESIGN.md):
id 0:80, exp 80:144, tex 144:224, angles 224:227, gamma 227:254, trans 254:257.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from realtalk_cli.checkpoint import read_state_dict
from realtalk_cli.errors import RealtalkError

HEADS = (("id", 80), ("exp", 64), ("tex", 80), ("angle", 3), ("gamma", 27), ("txy", 2), ("tz", 1))
INPUT_SIZE = 224


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1):
        super().__init__()
        width, out = planes, planes * self.expansion
        self.conv1 = nn.Conv2d(inplanes, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or inplanes != out:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, out, 1, stride, bias=False), nn.BatchNorm2d(out))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        return self.relu(self.bn3(self.conv3(y)) + identity)


class ResNet50Backbone(nn.Module):
    """ResNet-50 up to global average pooling: [B, 3, H, W] -> [B, 2048, 1, 1]."""

    def __init__(self, layers=(3, 4, 6, 3)):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        inplanes = 64
        for i, (planes, blocks) in enumerate(zip((64, 128, 256, 512), layers)):
            stage = []
            for b in range(blocks):
                stage.append(Bottleneck(inplanes, planes, stride=2 if (b == 0 and i > 0) else 1))
                inplanes = planes * Bottleneck.expansion
            setattr(self, f"layer{i + 1}", nn.Sequential(*stage))
        self.avgpool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.avgpool(x)


class D3DFRRegressor(nn.Module):
    """[B, 3, 224, 224] RGB in [0, 1] -> [B, 257] coefficients."""

    def __init__(self):
        super().__init__()
        self.backbone = ResNet50Backbone()
        self.final_layers = nn.ModuleList([nn.Conv2d(2048, n, 1) for _, n in HEADS])
        for layer in self.final_layers:  # as the original: heads start at zero
            nn.init.zeros_(layer.weight), nn.init.zeros_(layer.bias)

    def forward(self, x):
        feat = self.backbone(x)
        return torch.cat([layer(feat) for layer in self.final_layers], 1).flatten(1)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "D3DFRRegressor":
        """From the public `.pth` (tensors only: weights_only=True) or a `.safetensors` state dict."""
        state = read_state_dict(path, "Deep3DFaceRecon")
        net = cls()
        missing, unexpected = net.load_state_dict(state, strict=False)
        unexpected = [k for k in unexpected if not k.startswith("backbone.fc.")]  # unused classifier
        if missing or unexpected:
            raise RealtalkError(f"not a Deep3DFaceRecon ResNet-50 checkpoint: {len(missing)} missing, "
                                f"{len(unexpected)} unexpected parameters (e.g. {(missing + unexpected)[0]})", path)
        return net.eval()
