"""Where to measure a convolution's activations.

METHODS.md section 2 scores a filter on the post-activation output of the
layer it belongs to. ``conv_sites`` finds, for every Conv2d, the module whose
output that is, by tracing the model with torch.fx and walking forward from
the convolution through BatchNorm and residual additions to the first
activation module. When no activation follows (MobileNetV2's linear
projections), the site is the last module reached (the BatchNorm). When the
activation module is called at several places (a shared ``self.relu``), its
output would mix several layers, so the site is the module before it and the
activation is applied inside the hook.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.fx
import torch.nn as nn

from ..measure.depth import NONLINEAR

PASS_THROUGH_MODULES = (nn.BatchNorm2d, nn.Identity)
PASS_THROUGH_FUNCTIONS = (operator.add, operator.iadd, torch.add)


@dataclass
class Site:
    module: str                                   # name of the module to hook
    activation: Callable[[torch.Tensor], torch.Tensor] | None = None  # applied in the hook
    traced: bool = True                           # False: fx failed, raw conv output


def rectifiers(model: nn.Module) -> dict[str, nn.Module]:
    """Every activation module of ``model`` by name (EASIER's candidates)."""
    return {n: m for n, m in model.named_modules() if isinstance(m, NONLINEAR)}


def conv_sites(model: nn.Module) -> dict[str, Site]:
    """``{conv name: Site}`` for every Conv2d of ``model``."""
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    try:
        graph = torch.fx.symbolic_trace(model).graph
    except Exception:  # untraceable model (data-dependent control flow): raw outputs
        return {n: Site(n, traced=False) for n in convs}
    modules = dict(model.named_modules())
    calls: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    sites = {}
    for node in graph.nodes:
        if node.op != "call_module" or node.target not in convs:
            continue
        last_module, cur = node.target, node
        site = Site(node.target)
        while len(cur.users) == 1:
            nxt = next(iter(cur.users))
            if nxt.op == "call_module" and isinstance(modules[nxt.target], NONLINEAR):
                if calls[nxt.target] == 1:
                    site = Site(nxt.target)
                else:
                    site = Site(last_module, activation=modules[nxt.target])
                break
            if nxt.op == "call_module" and isinstance(modules[nxt.target], PASS_THROUGH_MODULES):
                last_module = nxt.target
                site = Site(last_module)
            elif not (nxt.op == "call_function" and nxt.target in PASS_THROUGH_FUNCTIONS):
                break
            cur = nxt
        sites[node.target] = site
    for n in convs:  # a conv called through a path fx did not see
        sites.setdefault(n, Site(n, traced=False))
    return sites
