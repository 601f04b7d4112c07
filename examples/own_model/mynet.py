"""A user's own CNN, not in entroprune's zoo: two convolution stages with a
squeeze-and-excitation gate and a classifier. entroprune rebuilds it from its
constructor, ``mynet:build``, when it loads a compressed file."""

from __future__ import annotations

import torch
import torch.nn as nn


class MyNet(nn.Module):
    def __init__(self, num_classes: int = 10, in_channels: int = 1, width: int = 24):
        super().__init__()
        self.block1 = nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
                                    nn.ReLU(), nn.MaxPool2d(2))
        self.block2 = nn.Sequential(nn.Conv2d(width, 2 * width, 3, padding=1, bias=False),
                                    nn.BatchNorm2d(2 * width), nn.ReLU())
        self.gate = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(2 * width, width // 2, 1), nn.ReLU(),
                                  nn.Conv2d(width // 2, 2 * width, 1), nn.Sigmoid())
        self.block3 = nn.Sequential(nn.Conv2d(2 * width, 2 * width, 3, padding=1, bias=False),
                                    nn.BatchNorm2d(2 * width), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Linear(2 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block2(self.block1(x))              # (N, 2w, H/2, W/2)
        x = x * self.gate(x)                         # squeeze-and-excitation
        return self.classifier(self.block3(x))


def build(num_classes: int = 10, in_channels: int = 1, width: int = 24) -> MyNet:
    return MyNet(num_classes=num_classes, in_channels=in_channels, width=width)
