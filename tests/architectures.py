"""Small CNNs written outside the zoo, each with a construct users bring:
squeeze-and-excitation gates, dense concatenation, grouped convolutions,
channel split and shuffle, activations called as functions, MobileNetV3-style
blocks. The architecture matrix (tests/test_architecture_matrix.py) runs
every method on each. All take (N, 1, 28, 28) images and give 10 logits."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def _head(c: int) -> nn.Sequential:
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, 10))


class SqueezeExcite(nn.Module):
    """conv-BN-ReLU blocks, each gated by an SE block (sigmoid gate multiplied in)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.conv2 = nn.Sequential(nn.Conv2d(16, 32, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(32),
                                   nn.ReLU())
        self.squeeze, self.excite = nn.Conv2d(32, 8, 1), nn.Conv2d(8, 32, 1)
        self.se_act, self.gate = nn.ReLU(), nn.Sigmoid()
        self.head = _head(32)

    def forward(self, x):
        x = self.conv2(self.conv1(x))                                    # (N, 32, 14, 14)
        s = self.gate(self.excite(self.se_act(self.squeeze(x.mean((2, 3), keepdim=True)))))   # (N, 32, 1, 1)
        return self.head(x * s)


class DenseConcat(nn.Module):
    """DenseNet-style: every layer sees the concatenation of all earlier outputs."""

    def __init__(self, growth: int = 8):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.layers = nn.ModuleList()
        c = 16
        for _ in range(3):
            self.layers.append(nn.Sequential(nn.Conv2d(c, growth, 3, padding=1, bias=False),
                                             nn.BatchNorm2d(growth), nn.ReLU()))
            c += growth
        self.transition = nn.Sequential(nn.Conv2d(c, 24, 1, bias=False), nn.BatchNorm2d(24), nn.ReLU())
        self.head = _head(24)

    def forward(self, x):
        x = self.stem(x)
        for layer in self.layers:
            x = torch.cat([x, layer(x)], 1)                             # (N, 16 + k * growth, 28, 28)
        return self.head(self.transition(x))


class Grouped(nn.Module):
    """ResNeXt-style grouped 3x3 convolutions between 1x1 convolutions."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU())
        self.grouped = nn.Sequential(nn.Conv2d(32, 32, 3, stride=2, padding=1, groups=4, bias=False),
                                     nn.BatchNorm2d(32), nn.ReLU())
        self.expand = nn.Sequential(nn.Conv2d(32, 64, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU())
        self.grouped2 = nn.Sequential(nn.Conv2d(64, 64, 3, padding=1, groups=8, bias=False), nn.BatchNorm2d(64),
                                      nn.ReLU())
        self.head = _head(64)

    def forward(self, x):
        return self.head(self.grouped2(self.expand(self.grouped(self.stem(x)))))


class SplitShuffle(nn.Module):
    """ShuffleNetV2-style: split the channels, transform one half, concatenate, shuffle."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 32, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU())
        self.branch = nn.Sequential(nn.Conv2d(16, 16, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
                                    nn.Conv2d(16, 16, 3, padding=1, groups=16, bias=False), nn.BatchNorm2d(16),
                                    nn.Conv2d(16, 16, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.head = _head(32)

    def forward(self, x):
        x = self.stem(x)                                                 # (N, 32, 14, 14)
        a, b = x.chunk(2, dim=1)
        x = torch.cat([a, self.branch(b)], 1)
        n, c, h, w = x.shape
        x = x.view(n, 2, c // 2, h, w).transpose(1, 2).reshape(n, c, h, w)   # channel shuffle
        return self.head(x)


class FunctionalActivations(nn.Module):
    """A plain CNN whose activations are functions, not modules."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, stride=2, padding=1)
        self.conv3 = nn.Conv2d(32, 32, 3, stride=2, padding=1)
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = torch.relu(self.conv2(x))
        x = self.conv3(x).relu()
        return self.fc(x.mean((2, 3)))


class MobileV3Block(nn.Module):
    """MobileNetV3-style: 1x1 expand (hardswish), depthwise, hard-sigmoid SE, 1x1 project, residual."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 16, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(16),
                                  nn.Hardswish())
        self.expand = nn.Sequential(nn.Conv2d(16, 64, 1, bias=False), nn.BatchNorm2d(64), nn.Hardswish())
        self.depthwise = nn.Sequential(nn.Conv2d(64, 64, 3, padding=1, groups=64, bias=False), nn.BatchNorm2d(64),
                                       nn.Hardswish())
        self.se = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(64, 16, 1), nn.ReLU(), nn.Conv2d(16, 64, 1),
                                nn.Hardsigmoid())
        self.project = nn.Sequential(nn.Conv2d(64, 16, 1, bias=False), nn.BatchNorm2d(16))
        self.head = _head(16)

    def forward(self, x):
        x = self.stem(x)                                                 # (N, 16, 14, 14)
        y = self.depthwise(self.expand(x))
        y = y * self.se(y)
        return self.head(x + self.project(y))


ARCHITECTURES = {"squeeze_excite": SqueezeExcite, "dense_concat": DenseConcat, "grouped": Grouped,
                 "split_shuffle": SplitShuffle, "functional_activations": FunctionalActivations,
                 "mobilev3_block": MobileV3Block}


def build(name: str) -> nn.Module:
    """A seeded model of ``name`` with BatchNorm statistics primed on noise (eval mode)."""
    torch.manual_seed(0)
    model = ARCHITECTURES[name]()
    # how a user's model is saved and rebuilt: its constructor by import path
    model.entroprune_arch = {"factory": f"tests.architectures:{ARCHITECTURES[name].__name__}", "kwargs": {}}
    model.train()
    with torch.no_grad():
        model(torch.randn(32, 1, 28, 28))
    return model.eval()
