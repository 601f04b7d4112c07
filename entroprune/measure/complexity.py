"""MACs and parameters, per layer and in total, measured with forward hooks.

MACs (multiply-accumulates) count the convolution and linear layers, which
dominate inference cost: a convolution producing ``(C_out, H_out, W_out)``
with ``C_in / groups`` inputs per output and a ``k_h x k_w`` kernel costs
``C_out * H_out * W_out * (C_in / groups) * k_h * k_w`` MACs per image; a
linear layer ``in * out``. BatchNorm, activations and pooling are not counted
(BatchNorm folds into the convolution at deployment). Counts are per image.
"""

from __future__ import annotations

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


def _macs(m: nn.Module, out: torch.Tensor) -> int:
    if isinstance(m, nn.Conv2d):
        kh, kw = m.kernel_size
        return out[0].numel() * (m.in_channels // m.groups) * kh * kw
    if isinstance(m, nn.Linear):
        return out[0].numel() * m.in_features
    return 0


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
            macs = _macs(mod, out)
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
