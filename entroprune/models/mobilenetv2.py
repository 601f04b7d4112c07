"""CIFAR-style MobileNetV2 (M. Sandler et al., "MobileNetV2: Inverted
Residuals and Linear Bottlenecks", CVPR 2018).

Inverted residual blocks: 1x1 expansion, 3x3 depthwise, 1x1 linear
projection; identity shortcut when stride is 1 and widths match. For small
images the stem keeps stride 1 (the ImageNet table otherwise), so 28x28 or
32x32 inputs end at 2x2. ``width_mult`` (default 0.5) keeps training time
reasonable on a CPU (about 115 s per Fashion-MNIST epoch on 2 cores).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from .registry import register_model

# (expansion t, output channels c, repeats n, first stride s), ImageNet table
# with the stem stride lowered to 1 for small images.
CIFAR_SETTINGS = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                  (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]


def _round8(v: float) -> int:
    """Round a width to a multiple of 8, never below 8 (as the paper's code)."""
    return max(8, int(v + 4) // 8 * 8)


def conv_bn_relu6(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU6(inplace=True),
    )


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        hidden = cin * expand
        self.use_residual = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(conv_bn_relu6(cin, hidden, 1))                           # expand
        layers.append(conv_bn_relu6(hidden, hidden, 3, stride, groups=hidden))  # depthwise
        layers += [nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]  # project
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        return x + out if self.use_residual else out


class MobileNetV2(nn.Module):
    def __init__(self, num_classes: int = 10, in_channels: int = 1, width_mult: float = 0.5):
        super().__init__()
        cin = _round8(32 * width_mult)
        last = _round8(1280 * max(1.0, width_mult))
        layers: list[nn.Module] = [conv_bn_relu6(in_channels, cin, 3, 1)]
        for t, c, n, s in CIFAR_SETTINGS:
            cout = _round8(c * width_mult)
            for i in range(n):
                layers.append(InvertedResidual(cin, cout, s if i == 0 else 1, t))
                cin = cout
        layers.append(conv_bn_relu6(cin, last, 1))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(0.1), nn.Linear(last, num_classes))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)                   # (N, last, H/4, W/4)
        return self.classifier(torch.flatten(self.pool(x), 1))


@register_model
def mobilenetv2(num_classes: int = 10, in_channels: int = 1, width_mult: float = 0.5) -> nn.Module:
    return MobileNetV2(num_classes=num_classes, in_channels=in_channels, width_mult=width_mult)
