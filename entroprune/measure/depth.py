"""Depth of a network: how many nonlinear activations and how many
convolution/linear layers a forward pass goes through. EASIER and NEPENTHE
reduce the first; folding (BatchNorm and linear chains) reduces the second."""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn as nn

NONLINEAR = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Hardswish,
             nn.Sigmoid, nn.Tanh, nn.Hardtanh, nn.Mish, nn.Softplus)


@dataclass
class Depth:
    nonlinear: int   # activation modules (rectifiers and the like)
    weighted: int    # Conv and Linear layers

    def __str__(self) -> str:
        return f"{self.nonlinear} nonlinear, {self.weighted} conv/linear"


def count_depth(model: nn.Module) -> Depth:
    nonlinear = sum(isinstance(m, NONLINEAR) for m in model.modules())
    weighted = sum(isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)) for m in model.modules())
    return Depth(nonlinear, weighted)
