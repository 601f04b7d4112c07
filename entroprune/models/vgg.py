"""A small CIFAR-style VGG with BatchNorm (K. Simonyan, A. Zisserman, "Very
Deep Convolutional Networks for Large-Scale Image Recognition", ICLR 2015;
BatchNorm after every convolution as in the usual CIFAR variants).

Eight 3x3 convolutions in four stages; global average pooling keeps it
independent of the input size (28x28 or 32x32).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from .registry import register_model

# numbers are output channels of a conv3x3-BN-ReLU, "M" a 2x2 max pool
VGG_SMALL_CFG: list[int | str] = [32, 32, "M", 64, 64, "M", 128, 128, "M", 256, 256, "M"]


class VGG(nn.Module):
    def __init__(self, cfg: list[int | str], num_classes: int = 10, in_channels: int = 1):
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += [nn.Conv2d(c, int(v), 3, padding=1, bias=False),
                           nn.BatchNorm2d(int(v)), nn.ReLU(inplace=True)]
                c = int(v)
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)                  # (N, C, H/16, W/16)
        return self.classifier(torch.flatten(self.pool(x), 1))


@register_model
def vgg_small(num_classes: int = 10, in_channels: int = 1) -> nn.Module:
    return VGG(VGG_SMALL_CFG, num_classes=num_classes, in_channels=in_channels)
