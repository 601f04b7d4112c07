"""Depth of a network (docs/METHODS.md, last section): how many nonlinear
activation modules and how many convolution/linear layers a model holds.
EASIER and NEPENTHE reduce the first (sections 4, 5); folding (BatchNorm and
linear chains) reduces the second. Activations the forward code calls as
functions (``F.relu``) have no module and are not counted."""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn as nn

NONLINEAR = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Hardswish,
             nn.Sigmoid, nn.Hardsigmoid, nn.Tanh, nn.Hardtanh, nn.Mish, nn.Softplus)
CONV_LINEAR = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


@dataclass
class Depth:
    nonlinear: int     # activation modules (rectifiers, gates and the like)
    conv_linear: int   # Conv and Linear layers

    def __str__(self) -> str:
        return f"{self.nonlinear} nonlinear, {self.conv_linear} conv/linear"


def count_depth(model: nn.Module) -> Depth:
    nonlinear = sum(isinstance(m, NONLINEAR) for m in model.modules())
    conv_linear = sum(isinstance(m, CONV_LINEAR) for m in model.modules())
    return Depth(nonlinear, conv_linear)
