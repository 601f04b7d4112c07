"""Plain-data descriptions of layers, so a pruned model can be rebuilt
without pickling code (the model files of docs/METHODS.md, "What every
method reports").

``module_spec(m)`` gives ``{"type": "Conv2d", "args": {...}}`` for the layer
types entroprune knows; ``build_module(spec)`` constructs a fresh one. A
pruned model is described by the constructor of its unpruned architecture plus
the spec of every leaf layer; structural pruning only changes channel counts
and depth reduction only swaps leaves (a rectifier for ``Identity``, a folded
convolution for a wider one), so this covers both.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch.nn as nn


def _conv_args(m: nn.Conv2d) -> dict[str, Any]:
    return dict(in_channels=m.in_channels, out_channels=m.out_channels,
                kernel_size=list(m.kernel_size), stride=list(m.stride), padding=list(m.padding)
                if not isinstance(m.padding, str) else m.padding,
                dilation=list(m.dilation), groups=m.groups, bias=m.bias is not None,
                padding_mode=m.padding_mode)


def _bn_args(m: nn.modules.batchnorm._BatchNorm) -> dict[str, Any]:
    return dict(num_features=m.num_features, eps=m.eps, momentum=m.momentum,
                affine=m.affine, track_running_stats=m.track_running_stats)


def _pool_args(m: nn.Module) -> dict[str, Any]:
    keys = ("kernel_size", "stride", "padding", "dilation", "ceil_mode", "output_size",
            "count_include_pad")
    out = {}
    for k in keys:
        if hasattr(m, k):
            v = getattr(m, k)
            out[k] = list(v) if isinstance(v, tuple) else v
    return out


# type name -> (class, function giving its constructor kwargs)
_SPECS: dict[str, tuple[type[nn.Module], Callable[[Any], dict[str, Any]]]] = {
    "Conv2d": (nn.Conv2d, _conv_args),
    "Linear": (nn.Linear, lambda m: dict(in_features=m.in_features, out_features=m.out_features,
                                         bias=m.bias is not None)),
    "BatchNorm2d": (nn.BatchNorm2d, _bn_args),
    "BatchNorm1d": (nn.BatchNorm1d, _bn_args),
    "ReLU": (nn.ReLU, lambda m: dict(inplace=m.inplace)),
    "ReLU6": (nn.ReLU6, lambda m: dict(inplace=m.inplace)),
    "LeakyReLU": (nn.LeakyReLU, lambda m: dict(negative_slope=m.negative_slope, inplace=m.inplace)),
    "GELU": (nn.GELU, lambda m: dict(approximate=m.approximate)),
    "SiLU": (nn.SiLU, lambda m: dict(inplace=m.inplace)),
    "Hardswish": (nn.Hardswish, lambda m: dict(inplace=m.inplace)),
    "Sigmoid": (nn.Sigmoid, lambda m: {}),
    "Identity": (nn.Identity, lambda m: {}),
    "Flatten": (nn.Flatten, lambda m: dict(start_dim=m.start_dim, end_dim=m.end_dim)),
    "Dropout": (nn.Dropout, lambda m: dict(p=m.p, inplace=m.inplace)),
    "MaxPool2d": (nn.MaxPool2d, _pool_args),
    "AvgPool2d": (nn.AvgPool2d, _pool_args),
    "AdaptiveAvgPool2d": (nn.AdaptiveAvgPool2d, _pool_args),
    "AdaptiveMaxPool2d": (nn.AdaptiveMaxPool2d, _pool_args),
}


def register_module_spec(cls: type[nn.Module], args: Callable[[Any], dict[str, Any]]) -> None:
    """Teach save/load a new leaf type (``cls(**args(m))`` must rebuild ``m``)."""
    _SPECS[cls.__name__] = (cls, args)


def module_spec(m: nn.Module) -> dict[str, Any] | None:
    """The spec of ``m``, or None if its type is unknown (then it must be
    unchanged from the model's constructor)."""
    entry = _SPECS.get(type(m).__name__)
    if entry is None or type(m) is not entry[0]:
        return None
    return {"type": type(m).__name__, "args": entry[1](m)}


def build_module(spec: dict[str, Any]) -> nn.Module:
    entry = _SPECS.get(spec["type"])
    if entry is None:
        raise ValueError(f"unknown layer type {spec['type']!r} in model file")
    args = {k: tuple(v) if isinstance(v, list) else v for k, v in spec["args"].items()}
    return entry[0](**args)


def leaf_specs(model: nn.Module) -> dict[str, dict[str, Any] | None]:
    """``{qualified name: spec}`` for every leaf module of ``model``."""
    return {name: module_spec(m) for name, m in model.named_modules()
            if name and not any(True for _ in m.children())}


def set_submodule(model: nn.Module, name: str, new: nn.Module) -> None:
    """Deprecated: call torch's ``model.set_submodule(name, new)``. Kept only
    until ``io/model_file.py`` (its last caller) does."""
    model.set_submodule(name, new)
