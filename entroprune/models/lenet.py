"""LeNet-5 (Y. LeCun et al., "Gradient-based learning applied to document
recognition", Proc. IEEE 1998), with ReLU and max pooling as is usual today.

Works on 28x28 and 32x32 inputs: the first convolution pads by 2 and an
adaptive pool fixes the feature map to 5x5 before the classifier.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from .registry import register_model


class LeNet5(nn.Module):
    def __init__(self, num_classes: int = 10, in_channels: int = 1):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 6, 5, padding=2),  # (N, 6, H, W)
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),                          # (N, 6, H/2, W/2)
            nn.Conv2d(6, 16, 5),                      # (N, 16, H/2-4, W/2-4)
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.AdaptiveMaxPool2d(5),                  # (N, 16, 5, 5)
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(16 * 5 * 5, 120),
            nn.ReLU(inplace=True),
            nn.Linear(120, 84),
            nn.ReLU(inplace=True),
            nn.Linear(84, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


@register_model
def lenet5(num_classes: int = 10, in_channels: int = 1) -> nn.Module:
    return LeNet5(num_classes=num_classes, in_channels=in_channels)
