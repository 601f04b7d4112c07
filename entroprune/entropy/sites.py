"""Where to measure a convolution's activations (docs/METHODS.md section 1,
"Where a filter is read"), and which activations are rectifiers.

METHODS.md section 2 scores a filter on the post-activation output of the
layer it belongs to. ``conv_sites`` finds, for every Conv2d, where that output
is, on the model's data flow (``entroprune.graph``): walking forward from the
convolution through BatchNorm, Identity, Dropout and residual additions to the
first activation, a module or a function of the forward code
(``F.relu(x)``, ``torch.relu(x)``, ``x.relu()``).

- an activation module called once: the site is its output;
- an activation module called at several places (a shared ``self.relu``)
  would mix several layers in its output, and a function has no module to
  hook: the site is the last module before it, and the activation is
  replayed inside the hook (``Site.activation``). If a residual addition lies
  between that module and the activation, the replayed value misses the
  other branch: a warning names the layer;
- no activation (MobileNetV2's linear projections): the last module reached
  (the BatchNorm);
- an untraceable model, or an activation that cannot be replayed (it takes
  another tensor): the raw convolution output, with a warning naming the
  layer (``Site.traced`` is False for the untraceable case).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn as nn

from ..graph import RECTIFIERS, FunctionalActivation, ModelGraph


@dataclass
class Site:
    module: str                                   # name of the module to hook
    activation: Callable[[torch.Tensor], torch.Tensor] | None = None  # applied in the hook
    traced: bool = True                           # False: fx failed, raw conv output


def activation_key(activation: Callable | None) -> str | None:
    """The name a replayed activation is keyed by (its type, or the function's name)."""
    if activation is None:
        return None
    return activation.name if isinstance(activation, FunctionalActivation) else type(activation).__name__


def rectifiers(model: nn.Module) -> dict[str, nn.Module]:
    """The ReLU-like activation modules of ``model`` (``graph.RECTIFIERS``)
    that are not gates, by name in module order: what EASIER may replace by
    the identity and NEPENTHE measures. Sigmoid, Tanh and the like, and any
    activation whose output multiplies another tensor (a squeeze-and-excitation
    gate), are left out. An untraceable model: every ReLU-like module."""
    graph = ModelGraph.of(model)
    if graph is None:
        return {n: m for n, m in model.named_modules() if isinstance(m, RECTIFIERS)}
    return {n: graph.modules[n] for n in graph.rectifier_names()}


def conv_sites(model: nn.Module) -> dict[str, Site]:
    """``{conv name: Site}`` for every Conv2d of ``model``."""
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    graph = ModelGraph.of(model)
    if graph is None:
        if convs:
            warnings.warn(f"torch.fx cannot trace {type(model).__name__}: entropy is read at the raw outputs of "
                          f"its convolutions ({', '.join(convs[:3])}{', ...' if len(convs) > 3 else ''}), "
                          "not after their activations", stacklevel=2)
        return {n: Site(n, traced=False) for n in convs}
    sites = {}
    for node in graph.nodes:
        if node.op == "call_module" and node.target in convs:
            sites[node.target] = _site(graph, node)
    for n in convs:  # a conv called through a path fx did not see
        sites.setdefault(n, Site(n, traced=False))
    return sites


def _site(graph: ModelGraph, node) -> Site:
    conv = node.target
    act, last, added = graph.activation_after(node)
    if act is None:
        return Site(last)
    if act.module is not None and act.module not in graph.shared:
        return Site(act.module)
    replay = graph.modules[act.module] if act.module is not None else FunctionalActivation(act.node)
    if not getattr(replay, "replayable", True):
        warnings.warn(f"the {act.kind} after {conv} takes another tensor and cannot be replayed: entropy of "
                      f"{conv} is read at the raw output of {last}", stacklevel=3)
        return Site(last)
    if added:
        warnings.warn(f"the {act.kind} after {conv} is {'shared' if act.module else 'a function'} and follows a "
                      f"residual addition: entropy of {conv} is read as {act.kind}({last}), without the other "
                      "branch of the addition", stacklevel=3)
    return Site(last, activation=replay)
