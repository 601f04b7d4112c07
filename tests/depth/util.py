"""Helpers for the folding tests: models with realistic, random BatchNorm
statistics, and outputs compared on fixed inputs."""

from __future__ import annotations

import torch
import torch.nn as nn


def randomize_batchnorm(model: nn.Module, x: torch.Tensor, seed: int = 0) -> nn.Module:
    """Running statistics measured on ``x`` (so activations keep a sane scale),
    then perturbed, with random affine parameters; returns ``model`` in eval mode."""
    g = torch.Generator().manual_seed(seed)
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over the calibration passes
    model.train()
    with torch.no_grad():
        model(x)
        for bn in bns:
            n = bn.num_features
            bn.running_mean += 0.1 * torch.randn(n, generator=g)
            bn.running_var *= 0.8 + 0.4 * torch.rand(n, generator=g)
            bn.weight.copy_(0.5 + torch.rand(n, generator=g))
            bn.bias.copy_(0.2 * torch.randn(n, generator=g))
            bn.momentum = 0.1
    return model.eval()


def images(n: int = 4, shape: tuple[int, ...] = (1, 28, 28), seed: int = 0) -> torch.Tensor:
    return torch.randn(n, *shape, generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def max_diff(a: nn.Module, b: nn.Module, x: torch.Tensor) -> float:
    return float((a.eval()(x) - b.eval()(x)).abs().max())
