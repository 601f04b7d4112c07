"""The model's data flow, as one torch.fx view shared by every analysis that
reads it (docs/METHODS.md sections 1, 4 and 5; torch.fx: J. Reed et al.,
"Torch.fx: Practical Program Capture and Transformation for Deep Learning in
Python", MLSys 2022):

- entropy sites (``entroprune.entropy.sites``): where a filter's
  post-activation output is read;
- NEPENTHE (``entroprune.depth.nepenthe``): which weighted layer feeds which
  rectifier, and which rectifier's input is exactly a conv/linear(+BatchNorm);
- folding (``entroprune.depth.fold_graph.FlowGraph``, a subclass): who feeds
  whom among the leaves, what passes a value unchanged.

(Structural pruning reads torch-pruning's own DependencyGraph; that one is
not this.) The trace is only read, never compiled. Every module without
children is one ``call_module`` node, so custom leaves (``Zero``,
``Constant``) stay whole; what the forward code does with functions
(``F.relu(x)``, ``x + y``, ``x.sigmoid()``) are ``call_function`` /
``call_method`` nodes, which this module also recognises as activations.

Activations, by what EASIER / NEPENTHE may do with them:
- a *rectifier* is a ReLU-like module (``RECTIFIERS``: ReLU, ReLU6, LeakyReLU,
  PReLU, GELU, SiLU, Hardswish, ELU), the kind EASIER replaces by the identity;
- a *gate* is an activation whose output, through scalar arithmetic and
  reshapes only, is multiplied into another tensor: a squeeze-and-excitation
  ``sigmoid``/``hardsigmoid``, or a ReLU-like one scaled first, as in the hard
  sigmoid ``relu6(z + 3) / 6`` (a bare ``relu(x) * g`` is the gated value).
  Replacing a gate would change what the block computes, so it is never a
  candidate, whatever its type;
- any other activation (Sigmoid, Tanh, ...) is measured as an entropy site's
  activation but never removed.
"""

from __future__ import annotations

import inspect
import operator
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from .measure.depth import NONLINEAR

# ReLU-like modules: the candidates EASIER may replace by the identity (gates excepted)
RECTIFIERS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.GELU, nn.SiLU, nn.Hardswish, nn.ELU)
WEIGHTED = (nn.Conv2d, nn.Linear)
# modules a filter's value passes through on its way to its activation (eval mode: affine or identity)
PASS_THROUGH = (nn.BatchNorm1d, nn.BatchNorm2d, nn.Identity, nn.Dropout)

# activations the forward code calls as functions: fx target -> is it ReLU-like
_FUNCTIONS: dict[Callable, bool] = {
    F.relu: True, torch.relu: True, F.relu_: True, torch.relu_: True, F.relu6: True, F.leaky_relu: True,
    F.leaky_relu_: True, F.gelu: True, F.silu: True, F.hardswish: True, F.elu: True, F.elu_: True,
    torch.sigmoid: False, F.sigmoid: False, torch.tanh: False, F.tanh: False, F.hardsigmoid: False,
    F.hardtanh: False, F.hardtanh_: False, F.mish: False, F.softplus: False,
}
_METHODS = {"relu": True, "relu_": True, "sigmoid": False, "sigmoid_": False, "tanh": False, "tanh_": False}
# in-place functions, replayed out of place
_OUT_OF_PLACE = {F.relu_: F.relu, torch.relu_: torch.relu, F.leaky_relu_: F.leaky_relu, F.elu_: F.elu,
                 F.hardtanh_: F.hardtanh}

ADD_TARGETS = (operator.add, operator.iadd, torch.add)
_MUL_FUNCTIONS = (operator.mul, operator.imul, torch.mul)
_ARITH_FUNCTIONS = (*ADD_TARGETS, *_MUL_FUNCTIONS, operator.sub, operator.truediv, operator.itruediv, torch.sub,
                    torch.div)
_ARITH_METHODS = {"add", "add_", "sub", "sub_", "mul", "mul_", "div", "div_"}
_RESHAPE_FUNCTIONS = (torch.flatten, torch.reshape, torch.unsqueeze, torch.squeeze)
_RESHAPE_METHODS = {"view", "view_as", "reshape", "expand", "expand_as", "unsqueeze", "squeeze", "flatten"}
_RESHAPE_MODULES = (nn.Flatten, nn.Unflatten, nn.Identity)


class GraphError(ValueError):
    """torch.fx cannot trace the model (data-dependent control flow, ...)."""


class FunctionalActivation:
    """An activation the forward code calls as a function (``F.relu(x)``,
    ``torch.relu(x)``, ``x.relu()``), replayable on a tensor: the same call
    with the node's constant arguments, never in place."""

    def __init__(self, node: fx.Node):
        self.method = node.op == "call_method"
        name = node.target if self.method else node.target.__name__
        self.name = name.rstrip("_")                             # relu_ -> relu
        self.fn = None if self.method else _OUT_OF_PLACE.get(node.target, node.target)
        args, kwargs = tuple(node.args[1:]), dict(node.kwargs)
        if self.fn is not None:
            try:  # F.relu(x, True) / inplace=True: bind to the signature and turn it off
                bound = inspect.signature(self.fn).bind(None, *args, **kwargs)
                if "inplace" in bound.arguments:
                    bound.arguments["inplace"] = False
                args, kwargs = bound.args[1:], bound.kwargs
            except (TypeError, ValueError):  # builtins without a Python signature (torch.relu) take no flag
                pass
        self.args, self.kwargs = args, kwargs
        # a further tensor argument (a weight, another value) cannot be replayed from one output
        self.replayable = not any(isinstance(a, fx.Node) for a in (*args, *kwargs.values()))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.method:
            return getattr(x, self.name)(*self.args, **self.kwargs)
        return self.fn(x, *self.args, **self.kwargs)

    def __repr__(self) -> str:
        return f"FunctionalActivation({self.name})"


@dataclass(frozen=True)
class Activation:
    """An activation call in the trace."""

    node: fx.Node
    module: str | None      # the module's name; None: a function called in the forward code
    kind: str               # module type or function name: "ReLU", "relu", "Sigmoid", "sigmoid"
    rectifier: bool         # ReLU-like: EASIER may replace it by the identity (unless a gate)
    gate: bool              # its output multiplies another tensor (squeeze-and-excitation)
    after: str | None       # the nearest module upstream (what a warning names)


class _LeafTracer(fx.Tracer):
    """Every module without children is a leaf (a ``call_module`` node)."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return next(m.children(), None) is None or super().is_leaf_module(m, module_qualified_name)


class ModelGraph:
    """Who feeds whom in ``model``'s forward pass (an fx trace, leaves whole)."""

    def __init__(self, model: nn.Module):
        try:
            self.graph = _LeafTracer().trace(model)
        except Exception as e:  # fx raises many types on dynamic control flow
            raise GraphError(f"torch.fx cannot trace {type(model).__name__} ({type(e).__name__}: {e})") from None
        self.nodes: list[fx.Node] = list(self.graph.nodes)
        self.modules = dict(model.named_modules())
        self.calls = Counter(n.target for n in self.nodes if n.op == "call_module")
        self.shared = {t for t, c in self.calls.items() if c > 1}  # modules called at several places

    @classmethod
    def of(cls, model: nn.Module) -> ModelGraph | None:
        """The graph, or None when the model cannot be traced."""
        try:
            return cls(model)
        except GraphError:
            return None

    # ---- nodes ----
    def module(self, node: object) -> nn.Module | None:
        if isinstance(node, fx.Node) and node.op == "call_module":
            return self.modules.get(node.target)
        return None

    def is_add(self, node: fx.Node) -> bool:
        """Any addition (a residual sum, or a shift by a constant)."""
        return node.op == "call_function" and node.target in ADD_TARGETS

    def is_residual_add(self, node: fx.Node) -> bool:
        """An addition of exactly two traced values."""
        return self.is_add(node) and len(node.args) == 2 and not node.kwargs and all(
            isinstance(a, fx.Node) for a in node.args)

    def single_input(self, node: fx.Node) -> fx.Node | None:
        """The only input of a ``call_module`` node, if it has exactly one."""
        if len(node.args) == 1 and not node.kwargs and isinstance(node.args[0], fx.Node):
            return node.args[0]
        return None

    def module_before(self, node: fx.Node) -> str | None:
        """The nearest module upstream of ``node`` along first arguments."""
        cur = node.args[0] if node.args else None
        while isinstance(cur, fx.Node):
            if cur.op == "call_module":
                return cur.target
            cur = cur.args[0] if cur.args else None
        return None

    # ---- activations ----
    def activation(self, node: fx.Node) -> Activation | None:
        """``node`` as an activation call (module or function), or None."""
        if node.op == "call_module":
            m = self.modules.get(node.target)
            if not isinstance(m, NONLINEAR):
                return None
            relu_like = isinstance(m, RECTIFIERS)
            return Activation(node, node.target, type(m).__name__, relu_like, self.is_gate(node, relu_like),
                              self.module_before(node))
        if node.op == "call_function" and node.target in _FUNCTIONS:
            relu_like, kind = _FUNCTIONS[node.target], node.target.__name__
        elif node.op == "call_method" and node.target in _METHODS:
            relu_like, kind = _METHODS[node.target], node.target
        else:
            return None
        return Activation(node, None, kind, relu_like, self.is_gate(node, relu_like), self.module_before(node))

    def activations(self) -> list[Activation]:
        """Every activation call, in execution order."""
        return [a for a in map(self.activation, self.nodes) if a is not None]

    def is_gate(self, node: fx.Node, relu_like: bool = False) -> bool:
        """Is ``node``'s output multiplied into another tensor, through scalar
        arithmetic and reshapes only? A ReLU-like activation counts only when
        scalar arithmetic comes first (``relu6(z + 3) / 6``, a hard sigmoid):
        a plain ``relu(x) * gate`` is the gated value, not the gate."""
        todo, seen = [(node, not relu_like)], set()     # (value, scaled: a product here makes a gate)
        while todo:
            cur, scaled = todo.pop()
            for user in cur.users:
                if user in seen:
                    continue
                seen.add(user)
                tensors = [a for a in (*user.args, *user.kwargs.values()) if isinstance(a, fx.Node)]
                arith = ((user.op == "call_function" and user.target in _ARITH_FUNCTIONS)
                         or (user.op == "call_method" and user.target in _ARITH_METHODS))
                if arith and len(tensors) >= 2:
                    if scaled and (user.target in _MUL_FUNCTIONS or user.target in ("mul", "mul_")):
                        return True
                elif arith:
                    todo.append((user, True))                               # z + 3, z / 6
                elif self._reshapes(user, cur):
                    todo.append((user, scaled))                             # z.view(N, C, 1, 1)
        return False

    def _reshapes(self, user: fx.Node, src: fx.Node) -> bool:
        if user.op == "call_module":
            return isinstance(self.modules.get(user.target), _RESHAPE_MODULES)
        first = user.args[0] if user.args else None
        return first is src and ((user.op == "call_function" and user.target in _RESHAPE_FUNCTIONS)
                                 or (user.op == "call_method" and user.target in _RESHAPE_METHODS))

    def rectifier_names(self) -> list[str]:
        """ReLU-like activation modules never used as a gate, in module order."""
        gates = {a.module for a in self.activations() if a.gate and a.module is not None}
        return [n for n, m in self.modules.items() if isinstance(m, RECTIFIERS) and n not in gates]

    def activation_after(self, node: fx.Node) -> tuple[Activation | None, str, bool]:
        """Walk forward from a weighted layer's node, while the value has one
        consumer, through ``PASS_THROUGH`` modules and additions, to its
        activation. Returns the activation (None if the walk ends first), the
        last module passed (the layer itself if none) and whether an addition
        was passed."""
        last, cur, added = node.target, node, False
        while len(cur.users) == 1:
            nxt = next(iter(cur.users))
            act = self.activation(nxt)
            if act is not None:
                return act, last, added
            if isinstance(self.module(nxt), PASS_THROUGH):
                last = nxt.target
            elif self.is_add(nxt):
                added = True
            else:
                break
            cur = nxt
        return None, last, added

    def input_chain(self, node: fx.Node) -> tuple[str, str | None] | None:
        """``(conv/linear, BatchNorm or None)`` when ``node``'s input is exactly
        that chain's output and each value has no other consumer."""
        src, bn = (node.args[0] if node.args else None), None
        if not isinstance(src, fx.Node) or src.op != "call_module" or len(src.users) != 1:
            return None
        if isinstance(self.modules[src.target], (nn.BatchNorm1d, nn.BatchNorm2d)):
            bn, src = src.target, src.args[0]
            if not isinstance(src, fx.Node) or src.op != "call_module" or len(src.users) != 1:
                return None
        return (src.target, bn) if isinstance(self.modules[src.target], WEIGHTED) else None


def warn_functional(model: nn.Module, what: str, graph: ModelGraph | None = None) -> list[Activation]:
    """Warn (once per activation, naming the layer it follows) that ``what``
    cannot remove activations the forward code calls as functions; returns them."""
    graph = graph or ModelGraph.of(model)
    found = [a for a in graph.activations() if a.module is None] if graph is not None else []
    for a in found:
        warnings.warn(f"{what} cannot remove the {a.kind} that {type(model).__name__}'s forward code calls as a "
                      f"function after {a.after or 'its input'} (fx node {a.node.name}): it stays; use an "
                      "activation module to make it a candidate", stacklevel=3)
    return found

