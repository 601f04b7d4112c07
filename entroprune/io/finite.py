"""Finding non-finite numbers (NaN, +-inf) in weights, so that every tool can
refuse a broken model at the door with one sentence naming the first bad
tensor, instead of failing deep inside a solver or an export."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
import torch.nn as nn


def describe_nonfinite(name: str, tensor: torch.Tensor) -> str | None:
    """``"features.0.weight (3 NaN, 1 inf of 150 values)"``, or None when
    ``tensor`` is finite (integer tensors always are)."""
    if not isinstance(tensor, torch.Tensor) or not (tensor.is_floating_point() or tensor.is_complex()):
        return None
    t = tensor.detach()
    if bool(torch.isfinite(t).all()):
        return None
    nan, inf = int(torch.isnan(t).sum()), int(torch.isinf(t).sum())
    parts = [f"{nan} NaN"] if nan else []
    parts += [f"{inf} inf"] if inf else []
    return f"{name} ({', '.join(parts)} of {t.numel()} values)"


def first_nonfinite(tensors: nn.Module | Mapping[str, torch.Tensor] | Iterable[tuple[str, torch.Tensor]]
                    ) -> str | None:
    """Description of the first tensor (in state-dict order) that holds NaN or
    infinity, with how many; None if every tensor is finite."""
    if isinstance(tensors, nn.Module):
        tensors = tensors.state_dict()
    items = tensors.items() if isinstance(tensors, Mapping) else tensors
    for name, t in items:
        found = describe_nonfinite(name, t)
        if found is not None:
            return found
    return None


NONFINITE_ADVICE = ("the model is broken (diverged training, or a damaged file); retrain it with a lower "
                    "learning rate or use an earlier copy")
