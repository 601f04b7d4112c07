"""The data-flow view that folding works on (docs/METHODS.md section 5,
"Folding"): ``FlowGraph`` is the project's one fx view of a model
(``entroprune.graph.ModelGraph``: every leaf module one node) with what
folding asks of it.

The trace is only read, never compiled: folding swaps leaves of the original
module tree (a convolution for a merged one, a BatchNorm for ``Identity``, a
skip path for ``Zero``), so the model keeps its class and forward code and
``entroprune.save`` / ``entroprune.load`` rebuild it from leaf specs.

"Transparent" nodes pass a value unchanged: ``nn.Identity`` leaves (rectifiers
replaced by EASIER/NEPENTHE, folded BatchNorms) and additions of a ``Zero``
(an absorbed skip path). Dropout, pooling and reshapes are barriers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx as fx
import torch.nn as nn

from ..graph import GraphError, ModelGraph
from .fold_layers import Constant, FoldError, Zero


@dataclass
class FoldPlan:
    """One merge a folding pass proposes: leaves to swap, and how to check it."""

    kind: str                                   # "bn", "chain", "skip" or "dead"
    layers: list[str]                           # modules merged, in data-flow order
    replacements: dict[str, nn.Module]          # name -> new leaf
    entry: str                                  # the module whose input is the merge's input
    original: list[nn.Module] | Callable        # the computation replaced, for measure_merge
    merged: nn.Module
    info: dict[str, Any] = field(default_factory=dict)


def skip_entry(kind: str, layers: list[str], reason: str) -> dict[str, Any]:
    """A report entry for a merge not done, with the reason."""
    return {"kind": kind, "layers": layers, "reason": reason}


class FlowGraph(ModelGraph):
    """Who feeds whom among the leaf modules of ``model``, as folding reads it."""

    def __init__(self, model: nn.Module):
        try:
            super().__init__(model)
        except GraphError as e:
            raise FoldError(f"{e}; folding needs a traceable forward") from None

    def is_identity(self, node: object) -> bool:
        return type(self.module(node)) is nn.Identity

    def is_zero(self, node: object) -> bool:
        """Does ``node`` always output zero (a ``Zero``, possibly through Identities)?"""
        m = self.module(node)
        if isinstance(m, Zero):
            return True
        return type(m) is nn.Identity and bool(node.args) and self.is_zero(node.args[0])

    def ignores_input(self, node: object) -> bool:
        """Is ``node`` a ``Zero`` or a ``Constant``, whose output does not depend on its input?"""
        return self.is_zero(node) or isinstance(self.module(node), Constant)

    def users(self, node: fx.Node) -> list[fx.Node]:
        """Users that consume the value (``Zero`` and ``Constant`` ignore their input)."""
        return [u for u in node.users if not self.ignores_input(u)]

    def transparent(self, user: fx.Node, src: fx.Node) -> bool:
        """Does ``user`` output its input ``src`` unchanged?"""
        if self.is_identity(user):
            return user.args[0] is src
        if self.is_residual_add(user):
            a, b = user.args
            return (a is src and self.is_zero(b)) or (b is src and self.is_zero(a))
        return False

    def follow(self, node: fx.Node) -> tuple[fx.Node | None, list[fx.Node]]:
        """Walk downstream through transparent nodes while the value has one
        consumer. Returns the first non-transparent consumer (None if the value
        branches or ends) and the transparent nodes passed."""
        path: list[fx.Node] = []
        cur = node
        while True:
            users = self.users(cur)
            if len(users) != 1:
                return None, path
            if self.transparent(users[0], cur):
                cur = users[0]
                path.append(cur)
                continue
            return users[0], path

    def upstream(self, node: fx.Node) -> fx.Node:
        """Walk upstream through transparent nodes to the value's producer."""
        while True:
            if self.is_identity(node):
                node = node.args[0]
            elif self.is_residual_add(node) and any(self.is_zero(a) for a in node.args):
                a, b = node.args
                node = b if self.is_zero(a) else a
            else:
                return node

    def exclusive_source(self, node: fx.Node) -> tuple[fx.Node, list[fx.Node]]:
        """Walk upstream through Identity nodes that are this path's alone
        (one consumer, module called once); returns the node reached and the
        Identity nodes passed, nearest first."""
        path: list[fx.Node] = []
        while (self.is_identity(node) and node.target not in self.shared
               and len(self.users(node)) == 1):
            path.append(node)
            node = node.args[0]
        return node, path


Shapes = dict[str, tuple[tuple[int, ...], tuple[int, ...]]]


@torch.no_grad()
def record_shapes(model: nn.Module, x: torch.Tensor) -> Shapes:
    """``{leaf name: (input shape, output shape)}`` of one image (batch dim
    dropped), from a forward pass on ``x[:1]``."""
    shapes: Shapes = {}
    hooks = []
    for name, m in model.named_modules():
        if name and next(m.children(), None) is None:
            def hook(mod, inp, out, name=name):
                if name not in shapes and inp and isinstance(inp[0], torch.Tensor):
                    shapes[name] = (tuple(inp[0].shape[1:]), tuple(out.shape[1:]))
            hooks.append(m.register_forward_hook(hook))
    try:
        model(x[:1])
    finally:
        for h in hooks:
            h.remove()
    return shapes


@torch.no_grad()
def capture_inputs(model: nn.Module, x: torch.Tensor, names: set[str]) -> dict[str, torch.Tensor]:
    """The input tensor of each module in ``names`` during ``model(x)``."""
    seen: dict[str, torch.Tensor] = {}
    hooks = [model.get_submodule(n).register_forward_pre_hook(
        lambda mod, inp, n=n: seen.setdefault(n, inp[0].detach().clone())) for n in names]
    try:
        model(x)
    finally:
        for h in hooks:
            h.remove()
    return seen
