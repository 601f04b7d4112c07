"""Folding pass for emptied layers (METHODS.md section 5, NEPENTHE): a
convolution or linear layer whose weights are all zero outputs its bias at
every position, whatever it is fed. It becomes a ``Constant`` (exact), and
every upstream leaf whose output now reaches only layers that ignore it
(``Constant`` or ``Zero``) is dead computation and becomes a ``Zero``.

In a residual block ``relu(bn2(conv2(relu(bn1(conv1(x))))) + skip(x))`` with
``conv2`` emptied, the branch is then ``Constant + skip(x)``: ``conv1``,
``bn1`` and the rectifier are no longer computed, so the emptied layers save
MACs and time. Without this pass they cost as much as before.

Limits: a ``Constant`` has the spatial size seen on the example input, so the
folded model expects inputs of that size; a value passed through forward code
(``F.relu(...)``, ``torch.flatten``) rather than a module is still computed,
and the walk upstream stops there.
"""

from __future__ import annotations

from typing import Any

import torch.fx as fx
import torch.nn as nn

from ..measure.complexity import layer_macs
from .fold_graph import FlowGraph, FoldPlan, Shapes
from .fold_layers import Constant, Zero


def _emptied(m: nn.Module | None, out_shape: tuple[int, ...]) -> bool:
    """A Conv2d (output C, H, W) or Linear (output F) whose weights are all
    zero: its output is its bias, per channel."""
    rank = {nn.Conv2d: 3, nn.Linear: 1}.get(type(m))
    return rank == len(out_shape) and not bool(m.weight.detach().any())


def _constant(m: nn.Conv2d | nn.Linear, out_shape: tuple[int, ...]) -> Constant:
    """The ``Constant`` equal to emptied ``m``'s output ``out_shape`` (C, *spatial)."""
    const = Constant(out_shape[0], out_shape[1:]).to(m.weight)       # weight's dtype and device
    if m.bias is not None:
        const.value.copy_(m.bias.detach())
    return const


def plan_dead_branches(g: FlowGraph, shapes: Shapes, cfg: Any = None) -> tuple[list[FoldPlan], list[dict]]:
    """One plan per emptied layer: the layer -> ``Constant``, and the leaves
    upstream that only it consumes -> ``Zero``. Nodes are visited consumers
    first (reverse trace order), so a whole dead branch is found in one pass."""
    plans: list[FoldPlan] = []               # one per emptied layer
    owner: dict[fx.Node, FoldPlan] = {}      # node replaced this pass -> the plan it belongs to
    for node in reversed(g.nodes):
        m = g.module(node)
        if m is None or node.target in g.shared or node.target not in shapes or g.ignores_input(node):
            continue
        consumers = list(node.users)
        plan = next((owner[u] for u in consumers if u in owner), None)
        if consumers and plan is not None and all(u in owner or g.ignores_input(u) for u in consumers):
            plan.layers.insert(0, node.target)   # dead: data-flow order, producers first
            plan.replacements[node.target] = Zero()
            plan.info["macs_before"] += layer_macs(m, shapes[node.target][1])
            owner[node] = plan
        elif _emptied(m, shapes[node.target][1]):
            const = _constant(m, shapes[node.target][1])
            plan = FoldPlan("dead", [node.target], {node.target: const}, node.target, [m], const,
                            {"exact": True, "what": f"emptied {type(m).__name__} -> Constant (its bias)",
                             "macs_before": layer_macs(m, shapes[node.target][1]), "macs_after": 0})
            plans.append(plan)
            owner[node] = plan
    return plans, []

