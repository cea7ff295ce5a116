"""PatchGAN discriminator (pix2pix, Isola et al. 2017) for the renderer's adversarial loss (paper eq. 9, L_3).

It scores overlapping patches (70x70 pixels with the default 3 layers) rather than whole images, so
it judges local texture (lips, teeth, skin) and works at any input size.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from torch import Tensor, nn


@dataclass
class DiscriminatorConfig:
    channels: int = 64
    layers: int = 3  # stride-2 layers after the first; 3 gives 70x70 receptive fields

    def to_dict(self) -> dict:
        return asdict(self)


class PatchDiscriminator(nn.Module):
    def __init__(self, cfg: DiscriminatorConfig):
        super().__init__()
        c = cfg.channels
        layers: list[nn.Module] = [nn.Conv2d(3, c, 4, 2, 1), nn.LeakyReLU(0.2)]
        cin = c
        for i in range(1, cfg.layers + 1):
            cout = c * min(2**i, 8)
            stride = 2 if i < cfg.layers else 1
            layers += [nn.Conv2d(cin, cout, 4, stride, 1), nn.InstanceNorm2d(cout, affine=True), nn.LeakyReLU(0.2)]
            cin = cout
        layers.append(nn.Conv2d(cin, 1, 4, 1, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, image: Tensor) -> Tensor:
        """image [B,3,H,W] in [0,1] -> patch logits [B,1,h,w]."""
        return self.net(image * 2 - 1)
