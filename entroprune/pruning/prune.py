"""Structural pruning to a target cost: MACs, or any cost of the kept channel
fractions (a latency predicted by the per-layer latency table,
docs/METHODS.md section 10).

The plan is made on the analytic model of ``PolicyPruner`` (exact MACs for
whole channels, no copy of the model and no forward pass per trial), then
applied once:
1. score the channels of every prunable group once, on the unpruned model;
2. bisection over the pruning ratio of ``plan_removal`` (``global`` ranks all
   channels together, ``uniform`` removes the same fraction everywhere), every
   group's count snapped up to a width the cost model allows (a latency table
   never keeps a width slower than a larger one);
3. if the closest ratio is outside the tolerance (coarse layers: one channel
   of LeNet's classifier is 4% of its MACs), finish channel by channel in
   score order without undershooting;
4. apply the plan with torch-pruning's dependency graph (``PolicyPruner.apply``)
   and measure the pruned model's MACs.
A target below the cheapest model ``min_keep`` allows is an error that says
the reachable floor.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn as nn

from ..io.model_file import record_step
from ..measure import count_macs, count_params
from .importance import Criterion
from .policy import PolicyPruner
from .structural import PruneConfig, PruningError, min_width, plan_removal


class MacsCost:
    """The default cost: analytic MACs of the kept fractions."""

    name = "MACs"

    def bind(self, pruner: PolicyPruner) -> Callable[[Sequence[float]], float]:
        return pruner.macs

    def allowed_counts(self, pruner: PolicyPruner, group: int) -> list[int] | None:
        return None


def _snap(count: int, allowed: list[int]) -> int:
    """The smallest allowed count at or above ``count`` (the largest if none)."""
    return next((c for c in allowed if c >= count), allowed[-1])


def prune_to_target(model: nn.Module, criterion: Criterion, input_shape: tuple[int, ...], cfg: PruneConfig,
                    calib: tuple[torch.Tensor, torch.Tensor | None] | None = None,
                    cost_model: Any = None) -> tuple[nn.Module, dict[str, Any]]:
    """A pruned copy of ``model`` whose cost is ``cfg.target_macs`` of the
    original's (within ``cfg.tolerance``), and a report of what was done.
    ``cost_model`` has ``name``, ``bind(pruner) -> cost(keep fractions)`` and
    ``allowed_counts(pruner, group)``; default: MACs."""
    t0 = time.time()
    cost_model = cost_model or MacsCost()
    pruner = PolicyPruner(model, input_shape, criterion, calib, ignored_layers=cfg.ignored_layers)
    cost = cost_model.bind(pruner)
    sizes = [g.channels for g in pruner.groups]
    allowed = []
    for i, n in enumerate(sizes):
        low = min_width(n, cfg.min_keep, cfg.min_channels)
        preferred = cost_model.allowed_counts(pruner, i)
        counts = sorted({c for c in (preferred or range(1, n + 1)) if low <= c <= n} | {n})
        allowed.append(counts)
    scores = dict(enumerate(pruner.scores))

    def counts_for(ratio: float) -> list[int]:
        plan = plan_removal(scores, ratio, cfg)
        return [_snap(n - len(plan[i]), allowed[i]) for i, n in enumerate(sizes)]

    def cost_of(counts: Sequence[int]) -> float:
        return cost([c / n for c, n in zip(counts, sizes)])

    full = cost_of(sizes)
    target = cfg.target_macs * full
    band = cfg.tolerance * target
    best = (abs(full - target), sizes, 0.0)
    lo, hi = 0.0, 1.0
    for _ in range(40):           # bisection on the ratio; the cost falls as it grows
        mid = (lo + hi) / 2
        counts = counts_for(mid)
        c = cost_of(counts)
        if abs(c - target) < best[0]:
            best = (abs(c - target), counts, mid)
        if best[0] <= band:
            break
        lo, hi = (mid, hi) if c > target else (lo, mid)
    _, counts, ratio = best
    if best[0] > band:
        counts = _fill(counts_for(lo), scores, allowed, cost_of, target, band)
    reached = cost_of(counts)
    if abs(reached - target) > band:
        floor = cost_of([a[0] for a in allowed])
        why = (f"the smallest model allowed by min_keep={cfg.min_keep} keeps {floor / full:.3f} of the "
               f"{cost_model.name}" if floor > target + band else
               "removing one more channel jumps past the tolerance band "
               f"(closest reachable: {reached / full:.3f} of the {cost_model.name}); use a looser tolerance "
               "(--tolerance, PruneConfig.tolerance) or another target")
        raise PruningError(f"cannot reach {cfg.target_macs:.3f} of the {cost_model.name} within "
                           f"{100 * cfg.tolerance:.0f}%: {why}")
    pruned = pruner.apply(counts)
    macs0, macs1 = count_macs(pruner.base, pruner.input_shape), count_macs(pruned, pruner.input_shape)
    report = {
        "op": "prune", "criterion": criterion.name, "scope": cfg.scope, "target_kind": cost_model.name,
        "target_macs" if cost_model.name == "MACs" else "target": cfg.target_macs, "ratio": ratio,
        "cost_before": full, "cost_after": reached, "cost_ratio": full / reached,
        "macs_before": macs0, "macs_after": macs1, "macs_ratio": macs0 / macs1,
        "params_before": count_params(pruner.base), "params_after": count_params(pruned),
        "groups": [g.layer for g in pruner.groups], "channels": list(counts),
        "removed": {g.layer: n - c for g, n, c in zip(pruner.groups, sizes, counts) if c < n},
        "unprunable_groups": pruner.unprunable, "unprunable_reasons": pruner.unprunable_reasons,
        "seconds": time.time() - t0,
    }
    record_step(pruned, model, report)
    return pruned, report


def _fill(counts: list[int], scores: dict[int, torch.Tensor], allowed: list[list[int]],
          cost_of: Callable[[Sequence[int]], float], target: float, band: float) -> list[int]:
    """From a plan above the target, remove further channels in score order
    (each group's next lower allowed width), skipping any removal that would
    undershoot the tolerance band; stop inside the band."""
    counts = list(counts)
    pending = []
    for i, s in scores.items():                     # the channels still kept, lowest score first
        pending += [(float(v), i) for v in torch.sort(s).values[len(s) - counts[i]:]]
    pending.sort(key=lambda t: t[0])
    for _, i in pending:
        lower = [c for c in allowed[i] if c < counts[i]]
        if not lower:
            continue
        trial = counts[:i] + [lower[-1]] + counts[i + 1:]
        c = cost_of(trial)
        if c < target - band:
            continue
        counts = trial
        if abs(c - target) <= band:
            break
    return counts


def prune_to_macs(model: nn.Module, criterion: Criterion, input_shape: tuple[int, ...], cfg: PruneConfig,
                  calib: tuple[torch.Tensor, torch.Tensor | None] | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """A pruned copy of ``model`` keeping ``cfg.target_macs`` of its MACs (within
    ``cfg.tolerance``); the report says what was done."""
    return prune_to_target(model, criterion, input_shape, cfg, calib)
