"""MACs and parameters, per layer and in total (docs/METHODS.md, last
section): the project's one definition of MACs, used by measurement
(``layer_costs``), folding (``depth/fold*.py``, also for composite layers
that do not exist yet) and the pruning policy's analytic model
(``pruning/policy.py``, ``macs_kept``).

MACs (multiply-accumulates) count the convolution and linear layers, which
dominate inference cost: a convolution producing ``(C_out, H_out, W_out)``
with ``C_in / groups`` inputs per output and a ``k_h x k_w`` kernel costs
``C_out * H_out * W_out * (C_in / groups) * k_h * k_w`` MACs per image; a
linear layer ``prod(out_shape) * in_features``. Bias additions, BatchNorm,
activations and pooling are not counted (BatchNorm folds into the convolution
at deployment; torch-pruning's counter adds one op per biased output, the only
difference, tested). Counts are per image.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn


@dataclass
class LayerCost:
    name: str
    kind: str                  # module class name
    shape: str                 # e.g. "16->32 k3 s2 g1" or "64->10"
    out_shape: tuple[int, ...]  # (C, H, W) or (F,) of one image
    macs: int
    params: int


def _describe(m: nn.Module) -> str:
    if isinstance(m, nn.Conv2d):
        return (f"{m.in_channels}->{m.out_channels} k{m.kernel_size[0]} s{m.stride[0]}"
                + (f" g{m.groups}" if m.groups > 1 else ""))
    if isinstance(m, nn.Linear):
        return f"{m.in_features}->{m.out_features}"
    if isinstance(m, nn.modules.batchnorm._BatchNorm):
        return str(m.num_features)
    return ""


def conv_macs(out_shape: Sequence[int], in_channels: int, groups: int, kernel: Sequence[int]) -> int:
    """MACs of one image of a convolution with output ``out_shape`` (C, H, W):
    ``C * H * W * (in_channels / groups) * kh * kw``."""
    return math.prod(out_shape) * (in_channels // groups) * kernel[0] * kernel[1]


def linear_macs(out_shape: Sequence[int], in_features: int) -> int:
    """MACs of one image of a linear layer with output ``out_shape`` (..., F)."""
    return math.prod(out_shape) * in_features


def layer_macs(m: nn.Module, out_shape: Sequence[int]) -> int:
    """MACs of one image of leaf ``m`` producing ``out_shape`` (batch dim
    dropped): a Conv2d or Linear by the formulas above, any other leaf 0."""
    if isinstance(m, nn.Conv2d):
        return conv_macs(out_shape, m.in_channels, m.groups, m.kernel_size)
    if isinstance(m, nn.Linear):
        return linear_macs(out_shape, m.in_features)
    return 0


def macs_kept(m: nn.Module, keep_out: float, keep_in: float) -> float:
    """Fraction of ``layer_macs(m, ...)`` left when ``m`` keeps the fraction
    ``keep_out`` of its output channels and ``keep_in`` of its input channels
    (whole channels; the output's spatial size unchanged). The formula is
    bilinear in ``C_out`` and ``C_in / groups``; a depthwise convolution
    (``groups == C_in``) loses groups with its channels, so only ``keep_out``
    counts."""
    if isinstance(m, nn.Conv2d) and 1 < m.groups == m.in_channels:
        return keep_out
    return keep_out * keep_in


@torch.no_grad()
def layer_costs(model: nn.Module, input_shape: tuple[int, ...]) -> list[LayerCost]:
    """Per-layer cost of one forward pass on an input of ``input_shape``
    ``(C, H, W)``, in execution order, for every leaf with parameters or MACs."""
    rows: list[LayerCost] = []
    hooks = []
    for name, m in model.named_modules():
        if any(True for _ in m.children()):
            continue

        def hook(mod, inp, out, name=name):
            params = sum(p.numel() for p in mod.parameters(recurse=False))
            macs = layer_macs(mod, out.shape[1:])
            if params or macs:
                rows.append(LayerCost(name, type(mod).__name__, _describe(mod),
                                      tuple(out.shape[1:]), macs, params))
        hooks.append(m.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        model(torch.zeros(1, *input_shape))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return rows


def count_macs(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Total MACs of one image."""
    return sum(r.macs for r in layer_costs(model, input_shape))


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
