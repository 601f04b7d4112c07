"""CIFAR-style residual networks ResNet-20/56 (K. He et al., "Deep Residual
Learning for Image Recognition", CVPR 2016, section 4.2).

Three stages of 16, 32, 64 channels with ``n`` basic blocks each (depth
6n+2). Downsampling shortcuts are 1x1 convolutions with BatchNorm (option B),
so every residual addition is a coupled channel group for structural pruning.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from .registry import register_model


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN, plus the shortcut, then ReLU."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride, bias=False),
                nn.BatchNorm2d(planes),
            )
        self.relu2 = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


class CifarResNet(nn.Module):
    def __init__(self, depth: int, num_classes: int = 10, in_channels: int = 1, width: int = 16):
        super().__init__()
        if (depth - 2) % 6 != 0:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_channels, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        layers, in_planes = [], width
        for stage, planes in enumerate((width, 2 * width, 4 * width)):
            blocks = []
            for i in range(n):
                stride = 2 if (stage > 0 and i == 0) else 1
                blocks.append(BasicBlock(in_planes, planes, stride))
                in_planes = planes
            layers.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = layers
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))   # (N, 16, H, W)
        x = self.layer3(self.layer2(self.layer1(x)))  # (N, 64, H/4, W/4)
        return self.fc(torch.flatten(self.pool(x), 1))


@register_model
def resnet20(num_classes: int = 10, in_channels: int = 1) -> nn.Module:
    return CifarResNet(20, num_classes=num_classes, in_channels=in_channels)


@register_model
def resnet56(num_classes: int = 10, in_channels: int = 1) -> nn.Module:
    return CifarResNet(56, num_classes=num_classes, in_channels=in_channels)
