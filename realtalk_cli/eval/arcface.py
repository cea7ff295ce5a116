"""IResNet face-recognition embedding (ArcFace, Deng et al. 2019) for CSIM: identity similarity.

Layout and parameter names follow insightface's `arcface_torch` backbones (`backbone.pth` of r18,
r34, r50, r100: `conv1.weight`, `layer1.0.bn1.weight`, `layer3.13.prelu.weight`, `fc.weight`,
`features.running_var`, ...). The depth and embedding size are read from the checkpoint.
`realtalk eval --arcface-weights PATH`.

Input: faces aligned to ARCFACE_TEMPLATE (five points in a 112x112 crop, `align_matrix`), RGB in
[0, 1]; output: [B, D] embeddings; CSIM is the cosine similarity of two embeddings.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch.nn.functional as F
from torch import Tensor, nn

from realtalk_cli.checkpoint import read_state_dict
from realtalk_cli.eval.weights import load_weights
from realtalk_cli.face import mediapipe_mesh as mesh

INPUT_SIZE = 112
# insightface's five reference points in the 112x112 crop: eye centres (image left, right), nose tip,
# mouth corners (image left, right)
ARCFACE_TEMPLATE = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                             [41.5493, 92.3655], [70.7299, 92.2041]], np.float32)
# the same five points on MediaPipe's mesh: iris centres (refined landmarks), nose tip, mouth corners
MESH_FIVE = [468, 473, mesh.NOSE_TIP, *mesh.MOUTH_CORNERS]


@dataclass
class IResNetConfig:
    layers: list[int] = field(default_factory=lambda: [3, 4, 14, 3])  # r50
    embedding: int = 512


class IBasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin, eps=1e-5)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout, eps=1e-5)
        self.prelu = nn.PReLU(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride=stride, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout, eps=1e-5)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout, eps=1e-5))

    def forward(self, x: Tensor) -> Tensor:
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        return out + (x if self.downsample is None else self.downsample(x))


class IResNet(nn.Module):
    def __init__(self, config: IResNetConfig = IResNetConfig()):
        super().__init__()
        self.config = config
        self.conv1 = nn.Conv2d(3, 64, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64, eps=1e-5)
        self.prelu = nn.PReLU(64)
        cin = 64
        for i, (width, n) in enumerate(zip((64, 128, 256, 512), config.layers)):
            blocks = [IBasicBlock(cin if j == 0 else width, width, 2 if j == 0 else 1) for j in range(n)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
            cin = width
        self.bn2 = nn.BatchNorm2d(512, eps=1e-5)
        self.fc = nn.Linear(512 * 7 * 7, config.embedding)  # four stride-2 stages: 112 -> 7
        self.features = nn.BatchNorm1d(config.embedding, eps=1e-5)

    def forward(self, x: Tensor) -> Tensor:
        """x: [B, 3, 112, 112] aligned RGB in [0, 1] -> [B, D] embeddings."""
        x = self.prelu(self.bn1(self.conv1((x - 0.5) / 0.5)))
        for i in range(4):
            x = getattr(self, f"layer{i + 1}")(x)
        return self.features(self.fc(self.bn2(x).flatten(1)))

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "IResNet":
        state = read_state_dict(path, "ArcFace IResNet")
        layers = [1 + max([int(m.group(1)) for k in state if (m := re.match(rf"layer{i}\.(\d+)\.", k))], default=-1)
                  for i in range(1, 5)]
        emb = state["fc.weight"].shape[0] if "fc.weight" in state else 512
        return load_weights(cls(IResNetConfig(layers, emb)), path, "ArcFace IResNet")


def align_matrix(landmarks: np.ndarray) -> np.ndarray:
    """2x3 similarity taking MediaPipe landmarks [478, >=2] (image pixels) onto ARCFACE_TEMPLATE."""
    src = np.asarray(landmarks, np.float32)[MESH_FIVE, :2]
    m, _ = cv2.estimateAffinePartial2D(src, ARCFACE_TEMPLATE, method=cv2.LMEDS)
    return m


def aligned_face(image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """The 112x112 ArcFace crop of `image` (uint8 RGB) for its MediaPipe `landmarks`."""
    return cv2.warpAffine(image, align_matrix(landmarks), (INPUT_SIZE, INPUT_SIZE), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)


def cosine_similarity(a: Tensor, b: Tensor) -> Tensor:
    return F.cosine_similarity(a, b, dim=-1)
