"""Per-group preserve-ratio policies, applied structurally (the action space of
AMC: Y. He et al., "AMC: AutoML for Model Compression and Acceleration on
Mobile Devices", ECCV 2018, arXiv 1802.03494; used with the entropy reward of
B. Musat, R. Andonie, arXiv 2312.04918; METHODS.md section 3).

A policy keeps, in every prunable channel group, a number of channels. A group
is a torch-pruning group (``structural._groups``): a convolution's outputs and
every layer tied to them by a residual addition, a concatenation or a
depthwise convolution, so one action of the agent prunes all of them together.

``PolicyPruner`` holds, for a model:
- its prunable groups in execution order, with the AMC descriptors of each
  (type, in/out channels, stride, kernel of the group's first layer);
- channel scores computed once on the unpruned model (criterion ``l1`` or
  ``aura``), which decide *which* channels a group loses;
- an analytic MACs model on the one definition of MACs
  (``measure.complexity``): each layer's unpruned MACs (``layer_costs``)
  times ``macs_kept(layer, keep(out group), keep(in group))``, i.e.
  ``keep_out * keep_in`` (a depthwise convolution ``keep(group)``), exact for
  whole channels, so the search never needs a forward pass to know the MACs
  of a policy;
- ``apply(channels)``: a pruned copy of the model (``structural.apply_plan``).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn

from ..io.model_file import record_step
from ..measure import layer_costs
from ..measure.complexity import macs_kept
from .importance import Criterion, get_criterion
from .structural import (
    PruningError,
    _channel_groups,
    _groups,
    apply_plan,
    broken_groups,
    check_supported,
    output_layers,
)

LAYER_TYPES = {"conv": 0.0, "depthwise": 0.5, "linear": 1.0}  # AMC's layer-type feature


@dataclass
class GroupInfo:
    """One prunable channel group, described by its first layer (in execution order)."""
    key: tuple[str, str]              # structural._groups key: (root layer, handler)
    channels: int                     # channels per block (what a policy keeps a part of)
    blocks: int                       # repeated channel blocks (grouped convolutions), usually 1
    layer: str                        # first layer (execution order) whose outputs the group prunes
    kind: str                         # "conv", "depthwise" or "linear"
    in_channels: int
    out_channels: int
    stride: int
    kernel: int
    out_layers: list[str] = field(default_factory=list)   # conv/linear whose outputs shrink
    in_layers: list[str] = field(default_factory=list)    # conv/linear whose inputs shrink
    once_layers: list[str] = field(default_factory=list)  # depthwise: cost shrinks once
    in_shares: dict[str, float] = field(default_factory=dict)  # in_layer -> fraction of its inputs in the group


def _kind(m: nn.Module) -> str:
    if isinstance(m, nn.Linear):
        return "linear"
    return "depthwise" if m.groups > 1 and m.groups == m.in_channels else "conv"


def _describe(name: str, m: nn.Module) -> dict[str, Any]:
    if isinstance(m, nn.Conv2d):
        return dict(layer=name, kind=_kind(m), in_channels=m.in_channels, out_channels=m.out_channels,
                    stride=m.stride[0], kernel=m.kernel_size[0])
    return dict(layer=name, kind="linear", in_channels=m.in_features, out_channels=m.out_features,
                stride=1, kernel=1)


class PolicyPruner:
    """Prunable groups, channel scores and the MACs model of ``model`` (copied)."""

    def __init__(self, model: nn.Module, input_shape: tuple[int, ...], importance: str | Criterion = "l1",
                 calib: tuple[torch.Tensor, torch.Tensor] | None = None,
                 ignored_layers: Sequence[str] = ()):
        self.base = copy.deepcopy(model).eval()
        self.input_shape = tuple(input_shape)
        self.example = torch.zeros(1, *self.input_shape)                  # (1, C, H, W)
        names = {m: n for n, m in self.base.named_modules()}
        for n in ignored_layers:
            try:
                self.base.get_submodule(n)
            except AttributeError:
                raise PruningError(f"ignored layer {n!r} is not a module of the model") from None
        self.ignored_names = list(ignored_layers) + [names[m] for m in output_layers(self.base, self.example)]
        check_supported(self.base, self.ignored_names)
        _, tp_groups = _groups(self.base, self.example, [self.base.get_submodule(n) for n in self.ignored_names])
        rows = [r for r in layer_costs(self.base, self.input_shape) if r.macs > 0]
        self.layer_macs = {r.name: r.macs for r in rows}                   # unpruned MACs per layer
        self._layers = {n: self.base.get_submodule(n) for n in self.layer_macs}
        order = {r.name: i for i, r in enumerate(rows)}
        self.total_macs = sum(self.layer_macs.values())
        self.groups: list[GroupInfo] = []
        kept_tp = []
        self.unprunable: list[str] = []       # groups left whole: partial inputs of a grouped conv, or no score
        for key, g in tp_groups.items():
            blocks = _channel_groups(g)
            if blocks is None:
                self.unprunable.append(key[0])  # part of a grouped convolution's inputs: cannot be pruned alone
                continue
            info = self._group_info(key, g, blocks, names, order)
            if info is not None:
                self.groups.append(info)
                kept_tp.append(g)
        # groups torch-pruning cannot remove correctly (split + shuffle) are left whole, with the reason
        broken = broken_groups(self.base, self.example, [g.key for g in self.groups],
                               {g.key: g.blocks for g in self.groups}, self.ignored_names)
        self.unprunable_reasons = {k[0]: why for k, why in broken.items()}
        pairs_ok = [(g, t) for g, t in zip(self.groups, kept_tp) if g.key not in broken]
        self.unprunable += [k[0] for k in broken]
        if broken and not pairs_ok:
            first, why = next(iter(self.unprunable_reasons.items()))
            raise PruningError(f"no channel group of the model can be removed structurally: removing channels "
                               f"of layer {first!r} breaks it ({why}); splits and channel shuffles are not "
                               "supported by the structural pruner")
        self.groups, kept_tp = [g for g, _ in pairs_ok], [t for _, t in pairs_ok]
        if not self.groups:
            raise PruningError("the model has no prunable channel group (no Conv2d/Linear with prunable outputs)")
        position = {id(g): order[g.layer] for g in self.groups}
        pairs = sorted(zip(self.groups, kept_tp), key=lambda p: position[id(p[0])])
        self.criterion = importance if isinstance(importance, Criterion) else get_criterion(importance)
        scores = self._scores(self.criterion, [p[0] for p in pairs], [p[1] for p in pairs], calib)
        self.unprunable += [p[0].layer for p, sc in zip(pairs, scores) if sc is None]
        self.groups = [p[0] for p, sc in zip(pairs, scores) if sc is not None]
        self.scores = [sc for sc in scores if sc is not None]
        if not self.groups:
            raise PruningError(f"criterion {self.criterion.name!r} scored no channel group of the model")
        self._out = {n: i for i, g in enumerate(self.groups) for n in g.out_layers}
        self._in: dict[str, list[tuple[int, float]]] = {}
        for i, g in enumerate(self.groups):
            for n in g.in_layers:
                self._in.setdefault(n, []).append((i, g.in_shares.get(n, 1.0)))
        self._once = {n: i for i, g in enumerate(self.groups) for n in g.once_layers}

    def _group_info(self, key, group, blocks: int, names, order) -> GroupInfo | None:
        outs, ins, once = set(), {}, set()
        for dep, idxs in group:
            m = dep.target.module
            name = names.get(m)
            if name not in self.layer_macs or not isinstance(m, (nn.Conv2d, nn.Linear)):
                continue
            if _kind(m) == "depthwise":
                once.add(name)
            elif dep.handler.__name__ == "prune_out_channels":
                outs.add(name)
            else:   # a concatenation feeds a layer from several groups: each owns a share of its inputs
                width = m.in_channels if isinstance(m, nn.Conv2d) else m.in_features
                ins[name] = min(1.0, len(idxs) / width)
        producers = sorted(outs | once, key=order.__getitem__)
        if not producers:
            return None
        modules = dict(self.base.named_modules())
        return GroupInfo(key=key, channels=len(group[0].idxs) // blocks, blocks=blocks,
                         **_describe(producers[0], modules[producers[0]]),
                         out_layers=sorted(outs, key=order.__getitem__),
                         in_layers=sorted(ins, key=order.__getitem__),
                         once_layers=sorted(once, key=order.__getitem__), in_shares=ins)

    def _scores(self, criterion: Criterion, infos: list[GroupInfo], tp_groups: list, calib
                ) -> list[torch.Tensor | None]:
        if criterion.needs_data and calib is None:
            raise PruningError(f"criterion {criterion.name!r} needs calibration images")
        raw = criterion.scores(self.base, tp_groups, calib)
        out: list[torch.Tensor | None] = []
        for info, s in zip(infos, raw):
            if s is None:
                out.append(None)
                continue
            s = s.detach().float().cpu()                                   # (blocks * channels,)
            out.append(s.view(info.blocks, -1).mean(0) if info.blocks > 1 else s)
        return out

    # ---- the analytic MACs model ----
    def layer_cost(self, name: str, keep: Sequence[float]) -> float:
        """MACs of layer ``name`` when group ``i`` keeps the fraction ``keep[i]``."""
        return self.layer_macs[name] * self.layer_keep(name, keep)[2]

    def layer_keep(self, name: str, keep: Sequence[float]) -> tuple[float, float, float]:
        """(kept fraction of the outputs, of the inputs, of the MACs) of layer ``name``."""
        if name in self._once:                           # depthwise: one channel in, one out
            k = keep[self._once[name]]
            return k, k, macs_kept(self._layers[name], k, k)
        k_out = keep[self._out[name]] if name in self._out else 1.0
        k_in = 1.0 - sum(share * (1.0 - keep[i]) for i, share in self._in.get(name, ()))
        return k_out, k_in, macs_kept(self._layers[name], k_out, k_in)

    def macs(self, keep: Sequence[float]) -> float:
        """MACs of one image when group ``i`` keeps the fraction ``keep[i]`` of its channels."""
        return sum(self.layer_cost(name, keep) for name in self.layer_macs)

    def group_macs(self, i: int) -> int:
        """Unpruned MACs of the layers whose cost depends on group ``i``."""
        g = self.groups[i]
        return sum(self.layer_macs[n] for n in {*g.out_layers, *g.in_layers, *g.once_layers})

    def touched_after(self, i: int) -> set[str]:
        """Layers whose cost depends on a group after ``i`` (their cost can still shrink)."""
        return {n for g in self.groups[i + 1:] for n in (*g.out_layers, *g.in_layers, *g.once_layers)}

    def uniform_ratio(self, target_fraction: float) -> float:
        """The preserve ratio that, applied to every group, keeps ``target_fraction`` of the MACs."""
        lo, hi = 0.0, 1.0
        for _ in range(50):  # bisection: MACs increase with the ratio
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if self.macs([mid] * len(self.groups)) < target_fraction * self.total_macs else (lo, mid)
        return (lo + hi) / 2

    # ---- channel counts ----
    def allowed_counts(self, i: int, lbound: float, round_to: int = 1) -> list[int]:
        """Channel counts a policy may keep in group ``i``: multiples of ``round_to``
        from ``ceil(lbound * channels)`` (at least one) to all of them; all of them always."""
        n = self.groups[i].channels
        low = max(1, math.ceil(lbound * n - 1e-9))
        counts = [c for c in range(low, n + 1) if c % round_to == 0]
        return sorted(set(counts) | {n})

    # ---- applying a policy ----
    def plan(self, channels: Sequence[int]) -> dict[tuple[str, str], list[int]]:
        """Channel indices (per block) each group loses: its lowest-scored ones."""
        if len(channels) != len(self.groups):
            raise PruningError(f"a policy needs {len(self.groups)} channel counts, got {len(channels)}")
        plan = {}
        for info, scores, keep in zip(self.groups, self.scores, channels):
            if not 1 <= keep <= info.channels:
                raise PruningError(f"group {info.layer}: cannot keep {keep} of {info.channels} channels")
            plan[info.key] = torch.argsort(scores, stable=True)[: info.channels - int(keep)].tolist()
        return plan

    def apply(self, channels: Sequence[int]) -> nn.Module:
        """A pruned copy of the model keeping ``channels[i]`` channels in group ``i``."""
        pruned = apply_plan(copy.deepcopy(self.base), self.example, self.plan(channels), self.ignored_names)
        if hasattr(self.base, "entroprune_arch"):
            pruned.entroprune_arch = self.base.entroprune_arch
        return pruned

    def channels_for(self, ratios: Sequence[float]) -> list[int]:
        """Channel counts nearest to preserve ratios (at least one channel)."""
        return [max(1, min(g.channels, round(r * g.channels))) for g, r in zip(self.groups, ratios)]


def apply_policy(model: nn.Module, input_shape: tuple[int, ...], ratios: Sequence[float],
                 importance: str = "l1", calib: tuple[torch.Tensor, torch.Tensor] | None = None,
                 ) -> tuple[nn.Module, dict[str, Any]]:
    """Prune ``model`` (left untouched) with one preserve ratio per prunable group
    (execution order); returns the pruned copy and a report."""
    pruner = PolicyPruner(model, input_shape, importance, calib)
    channels = pruner.channels_for(ratios)
    pruned = pruner.apply(channels)
    report = {"op": "prune_policy", "criterion": importance,
              "groups": [g.layer for g in pruner.groups], "channels": channels,
              "preserve": [c / g.channels for c, g in zip(channels, pruner.groups)],
              "macs_fraction_analytic": pruner.macs([c / g.channels for c, g in zip(channels, pruner.groups)])
              / pruner.total_macs}
    record_step(pruned, model, report)
    return pruned, report
