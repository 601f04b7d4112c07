"""Structural channel removal: the pieces under every pruner.

Channels are physically removed with torch-pruning's dependency graph, which
keeps coupled layers (residual additions, concatenations, depthwise and
grouped convolutions) consistent. This module holds what the pruners share:
- ``PruneConfig`` (target, scope, minimum widths, tolerance) and the target
  parser (``"5x"`` or ``0.2`` = keep 20%);
- the channel groups of a model (``_groups``), the refusal of layers that
  cannot be pruned structurally (``check_supported``), the output layer;
- ``plan_removal``: which channels a pruning ratio removes, ``global``
  (all channels ranked together; scores are normalised per group by the
  criteria) or ``uniform`` (the same fraction of every group), never below
  a per-group minimum width;
- ``apply_plan``, which removes them and keeps the channel map
  (``channel_map``: which original channels every layer still holds).
The search to a target cost is ``prune.py``.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn
import torch_pruning as tp

from ..errors import first_line


class PruningError(ValueError):
    """The requested pruning cannot be done; the message says why."""


def min_width(n: int, min_keep: float, min_channels: int) -> int:
    """The fewest channels a group of ``n`` may keep: ``max(min_channels, ceil(min_keep * n))``, at most ``n``."""
    return min(n, max(min_channels, math.ceil(min_keep * n)))


def parse_macs_target(target: str | float) -> float:
    """``"5x"`` -> 0.2, ``"0.2"`` or 0.2 -> 0.2: the fraction of MACs to keep."""
    text = str(target).strip().lower()
    try:
        value = 1.0 / float(text[:-1]) if text.endswith("x") else float(text)
    except (ValueError, ZeroDivisionError):
        raise PruningError(f"MACs target {target!r}: write '5x' (5 times fewer MACs) "
                           "or a fraction to keep such as 0.2") from None
    if not 0.0 < value <= 1.0:
        raise PruningError(f"MACs target {target!r} means keeping {value:.3g} of the MACs; "
                           "it must be in (0, 1]")
    return value


@dataclass
class PruneConfig:
    target_macs: float | str = 0.5    # fraction of the MACs to keep, or "5x" (five times fewer)
    scope: str = "global"             # "global" or "uniform"
    min_keep: float = 0.1             # every group keeps >= this fraction of its channels
    min_channels: int = 1             # ... and at least this many
    round_to: int = 1                 # channel counts a multiple of this (when possible)
    tolerance: float = 0.02           # relative MACs tolerance
    ignored_layers: list[str] = field(default_factory=list)  # names never pruned (outputs)

    def __post_init__(self) -> None:
        self.target_macs = parse_macs_target(self.target_macs)   # "5x" or a fraction: checked here
        if self.scope not in ("global", "uniform"):
            raise PruningError(f"scope must be 'global' or 'uniform', got {self.scope!r}")
        if not 0.0 <= self.min_keep < 1.0 or self.min_channels < 1 or self.round_to < 1:
            raise PruningError(f"min_keep must be in [0, 1), min_channels and round_to >= 1; got {self.min_keep}, "
                               f"{self.min_channels}, {self.round_to}")
        if not 0.0 < self.tolerance < 0.5:
            raise PruningError(f"tolerance must be in (0, 0.5), got {self.tolerance}")


# layer types whose channels torch-pruning removes consistently
SUPPORTED_PARAM_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Linear, nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm,
                          nn.GroupNorm, nn.PReLU)


def check_supported(model: nn.Module, ignored: list[str]) -> None:
    """Refuse, by name, a layer with parameters that structural pruning cannot
    handle (rather than silently producing a broken model)."""
    for name, m in model.named_modules():
        own = list(m.parameters(recurse=False))
        if own and not isinstance(m, SUPPORTED_PARAM_LAYERS) and name not in ignored:
            raise PruningError(
                f"layer {name!r} ({type(m).__name__}) holds parameters that entroprune cannot prune "
                "structurally; supported layers with weights are "
                f"{', '.join(t.__name__ for t in SUPPORTED_PARAM_LAYERS)}. Rewrite it with those, "
                "or list it in PruneConfig.ignored_layers if its channels must stay as they are.")


def output_layers(model: nn.Module, example: torch.Tensor) -> list[nn.Module]:
    """The last Conv/Linear layer run in a forward pass: its outputs are the
    model's (class scores), so its output channels are never pruned."""
    order: list[nn.Module] = []
    hooks = [m.register_forward_hook(lambda mod, i, o: order.append(mod))
             for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        model.eval()(example)
    for h in hooks:
        h.remove()
    return order[-1:]


def _groups(model: nn.Module, example: torch.Tensor, ignored: list[nn.Module]):
    try:
        dg = tp.DependencyGraph().build_dependency(model, example_inputs=example)
        groups = list(dg.get_all_groups(ignored_layers=ignored, root_module_types=[nn.Conv2d, nn.Linear]))
    except Exception as e:  # torch-pruning could not trace the model: say so, not a raw traceback from inside it
        raise PruningError(f"the model's channel dependencies cannot be traced by torch-pruning "
                           f"({first_line(e)}); structural pruning "
                           "cannot handle this architecture") from None
    name_of = {m: n for n, m in model.named_modules()}
    keyed = {}
    for g in groups:
        root = g[0].dep.target.module
        keyed[(name_of[root], g[0].dep.handler.__name__)] = g
    return dg, keyed


def _channel_groups(group) -> int | None:
    """How many repeated channel blocks a group has: a grouped (not depthwise)
    convolution needs the same number of channels removed in each of its
    groups, so an index is removed in every block. None when that cannot be
    kept: the group covers only part of a grouped convolution's inputs (a
    concatenation whose halves feed different groups), so removing channels
    from it alone would unbalance the groups; such a group is left unpruned."""
    for dep, idxs in group:
        m = dep.target.module
        if isinstance(m, nn.Conv2d) and 1 < m.groups < m.in_channels:
            width = m.out_channels if dep.handler.__name__ == "prune_out_channels" else m.in_channels
            if len(idxs) != width:
                return None
            return m.groups
    return 1


def plan_removal(scores: dict[Any, torch.Tensor], ratio: float, cfg: PruneConfig) -> dict[Any, list[int]]:
    """Which channel indices to remove in each group for a pruning ``ratio``."""
    keep_min = {k: min_width(len(s), cfg.min_keep, cfg.min_channels)
                for k, s in scores.items()}
    plan: dict[Any, list[int]] = {}
    if cfg.scope == "uniform":
        for k, s in scores.items():
            n = min(int(ratio * len(s)), len(s) - keep_min[k])
            n -= n % cfg.round_to if len(s) - n > cfg.round_to else 0
            plan[k] = torch.argsort(s)[:n].tolist()
        return plan
    if cfg.scope != "global":
        raise PruningError(f"scope must be 'global' or 'uniform', got {cfg.scope!r}")
    keys = list(scores)
    flat = torch.cat([scores[k] for k in keys])                     # (total channels,)
    owner = torch.cat([torch.full((len(scores[k]),), i) for i, k in enumerate(keys)])
    index = torch.cat([torch.arange(len(scores[k])) for k in keys])
    budget = int(ratio * flat.numel())
    removable = {k: len(scores[k]) - keep_min[k] for k in keys}
    chosen: dict[Any, list[int]] = {k: [] for k in keys}
    taken = 0
    for j in torch.argsort(flat, stable=True).tolist():
        if taken >= budget:
            break
        k = keys[int(owner[j])]
        if len(chosen[k]) < removable[k]:
            chosen[k].append(int(index[j]))
            taken += 1
    if cfg.round_to > 1:
        for k in keys:  # drop the best-scored extras so the kept count is a multiple
            extra = (len(scores[k]) - len(chosen[k])) % cfg.round_to
            if extra and len(chosen[k]) + (cfg.round_to - extra) <= removable[k]:
                order = [i for i in torch.argsort(scores[k]).tolist() if i not in chosen[k]]
                chosen[k] += order[: cfg.round_to - extra]
    return chosen


def _widths(m: nn.Module) -> tuple[int, int]:
    return (m.out_channels, m.in_channels) if isinstance(m, nn.Conv2d) else (m.out_features, m.in_features)


def channel_map(model: nn.Module) -> dict[str, dict[str, list[int]]]:
    """Which channels of the ORIGINAL model each conv/linear layer of ``model``
    still holds: ``{name: {"out": [...], "in": [...]}}`` (indices into the
    original layer's outputs and inputs). Pruning with ``apply_plan`` keeps it
    up to date in ``model.entroprune_kept``; a model never pruned maps to itself."""
    kept = getattr(model, "entroprune_kept", {})
    out = {}
    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            n_out, n_in = _widths(m)
            out[name] = {"out": list(kept.get(name, {}).get("out", range(n_out))),
                         "in": list(kept.get(name, {}).get("in", range(n_in)))}
    return out


def _record_removal(kept: dict[str, dict[str, list[int]]], group, names: dict[nn.Module, str]) -> None:
    """Drop from ``kept`` the positions a torch-pruning group is about to remove
    (its indices are relative to each layer's current channels)."""
    done = set()
    for dep, idxs in group:
        m = dep.target.module
        name = names.get(m)
        if name not in kept:
            continue
        dims = ("out",) if dep.handler.__name__ == "prune_out_channels" else ("in",)
        if isinstance(m, nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels:
            dims = ("out", "in")                   # depthwise: both shrink together
        for dim in dims:
            if (name, dim) in done:
                continue
            done.add((name, dim))
            gone = set(int(i) for i in idxs)
            kept[name][dim] = [c for i, c in enumerate(kept[name][dim]) if i not in gone]


def apply_plan(model: nn.Module, example: torch.Tensor, plan: dict[Any, list[int]],
               ignored_names: list[str]) -> nn.Module:
    """Remove the planned channels from ``model`` in place; ``model.entroprune_kept``
    then says which of the original channels every conv/linear layer holds."""
    ignored = [model.get_submodule(n) for n in ignored_names]
    dg, groups = _groups(model, example, ignored)
    names = {m: n for n, m in model.named_modules()}
    kept = channel_map(model)
    for key, idxs in plan.items():
        if not idxs or key not in groups:
            continue
        root = model.get_submodule(key[0])
        fn = groups[key][0].dep.handler
        block = len(groups[key][0].idxs) // _channel_groups(groups[key])
        full = sorted({i + b * block for i in idxs for b in range(len(groups[key][0].idxs) // block)})
        group = dg.get_pruning_group(root, fn, full)
        _record_removal(kept, group, names)
        group.prune()
    model.entroprune_kept = kept
    return model


def _zero_channels(model: nn.Module, example: torch.Tensor, plan: dict[Any, list[int]],
                   ignored_names: list[str]) -> nn.Module:
    """A copy of ``model`` whose planned channels output exactly zero: the
    producing layers' rows and their BatchNorm's scale and shift set to 0. If
    removal is correct, the pruned model computes what this copy computes."""
    masked = copy.deepcopy(model)
    dg, groups = _groups(masked, example, [masked.get_submodule(n) for n in ignored_names])
    with torch.no_grad():
        for key, idxs in plan.items():
            root = masked.get_submodule(key[0])
            block = len(groups[key][0].idxs) // _channel_groups(groups[key])
            full = sorted({i + b * block for i in idxs for b in range(len(groups[key][0].idxs) // block)})
            for dep, chans in dg.get_pruning_group(root, groups[key][0].dep.handler, full):
                m = dep.target.module
                if dep.handler.__name__ != "prune_out_channels" or not isinstance(
                        m, (nn.Conv2d, nn.Linear, nn.modules.batchnorm._BatchNorm)):
                    continue
                for p in (m.weight, m.bias):
                    if p is not None:
                        p[list(chans)] = 0.0
    return masked


def broken_groups(model: nn.Module, example: torch.Tensor, keys: list[Any], blocks: dict[Any, int],
                  ignored_names: list[str]) -> dict[Any, str]:
    """Groups whose removal torch-pruning does not carry through correctly,
    with the reason. One channel (per block) is removed from a copy, and the
    same channel zeroed in another copy: if removal is right, both compute the
    same outputs. Splits, chunks and channel shuffles (ShuffleNet) fail here:
    torch-pruning follows the channels into a split but not back through a
    shuffle, so the model either breaks or silently computes something else.
    Checked for all groups at once, then one by one only if that fails."""
    x = torch.randn(2, *example.shape[1:], generator=torch.Generator().manual_seed(0))

    def fails(subset: list[Any]) -> str | None:
        plan = {k: [0] for k in subset}
        try:
            trial = apply_plan(copy.deepcopy(model), example, plan, ignored_names)
            masked = _zero_channels(model, example, plan, ignored_names)
            with torch.no_grad():
                got, want = trial.eval()(x), masked.eval()(x)
        except Exception as e:
            return first_line(e)
        if got.shape != want.shape:
            return f"the output shape changes to {tuple(got.shape)}"
        if not torch.allclose(got, want, rtol=1e-4, atol=1e-4 * float(want.abs().max()) + 1e-6):
            return "removing its channels changes what the model computes (a split or shuffle it does not follow)"
        return None

    if not keys or fails(keys) is None:
        return {}
    return {k: why for k in keys if (why := fails([k])) is not None}
