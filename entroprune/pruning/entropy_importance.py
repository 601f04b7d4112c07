"""Filter importance by activation entropy (METHODS.md section 2; B. Musat,
R. Andonie, "Accelerating Convolutional Neural Network Pruning via Spatial
Aura Entropy", arXiv 2312.04926).

A filter's score is the mean spatial aura entropy (or mass entropy) of its
post-activation map over the calibration images: high entropy = structured
output = keep; low entropy is removed first. A channel group coupled by a
residual addition, a concatenation or a depthwise convolution holds several
convolutions' output channels; its score per channel aggregates the scores of
every member convolution (mean by default, or max). Groups without any
convolution output (the hidden units of a classifier's linear layers) have no
activation map; they fall back to L1 magnitude, and the report says so.
Scores are divided by their group mean (a knob) so that a global ranking
compares layers on a relative scale, as the L1 criterion does.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch_pruning as tp
from torch_pruning.pruner import function as tpf

from ..data import iterate_batches
from ..entropy import ActivationStats, EntropyConfig, conv_sites
from .importance import Criterion, register_criterion

CONV_OUT = (tpf.prune_conv_out_channels, tpf.prune_depthwise_conv_out_channels)


def filter_entropies(model: nn.Module, images: torch.Tensor, estimator: str = "aura",
                     cfg: EntropyConfig | None = None, batch_size: int = 128) -> dict[str, torch.Tensor]:
    """``{conv name: (C,) mean entropy}`` of ``model`` over ``images``."""
    was_training = model.training
    model.eval()
    with ActivationStats(model, conv_sites(model), (estimator,), cfg) as stats, torch.no_grad():
        for xb, _ in iterate_batches(images, torch.zeros(len(images)), batch_size):
            model(xb)
    model.train(was_training)
    return {name: v[estimator] for name, v in stats.per_filter().items()}


class EntropyCriterion(Criterion):
    needs_data = True

    def __init__(self, estimator: str = "aura", reduction: str = "mean", normalizer: str | None = "mean",
                 cfg: EntropyConfig | None = None):
        if reduction not in ("mean", "max"):
            raise ValueError(f"reduction must be 'mean' or 'max', got {reduction!r}")
        self.name, self.estimator = estimator, estimator
        self.reduction, self.normalizer, self.cfg = reduction, normalizer, cfg
        self.fallback_groups: list[str] = []
        self._l1 = tp.importance.GroupMagnitudeImportance(p=1, normalizer="mean")

    def group_scores(self, group, name_of: dict[nn.Module, str], ent: dict[str, torch.Tensor]) -> torch.Tensor | None:
        n = len(group[0].idxs)
        acc = torch.full((n,), float("-inf")) if self.reduction == "max" else torch.zeros(n)
        members = 0
        for i, (dep, idxs) in enumerate(group):
            layer = dep.target.module
            if dep.handler not in CONV_OUT or name_of.get(layer) not in ent:
                continue
            root = torch.as_tensor(group[i].root_idxs)
            vals = ent[name_of[layer]][torch.as_tensor(idxs)]
            if self.reduction == "max":
                acc[root] = torch.maximum(acc[root], vals)
            else:
                acc.index_add_(0, root, vals)
            members += 1
        if members == 0:
            return None
        if self.reduction == "mean":
            acc /= members
        if self.normalizer == "mean":
            acc = acc / acc.mean().clamp(min=1e-12)
        return acc

    def scores(self, model, groups, calib):
        if calib is None:
            raise ValueError(f"the {self.estimator} criterion needs calibration images")
        ent = filter_entropies(model, calib[0], self.estimator, self.cfg)
        name_of = {m: n for n, m in model.named_modules()}
        out, self.fallback_groups = [], []
        for g in groups:
            s = self.group_scores(g, name_of, ent)
            if s is None:
                self.fallback_groups.append(name_of.get(g[0].dep.target.module, "?"))
                s = self._l1(g)
            out.append(s)
        return out


register_criterion("aura", lambda **kw: EntropyCriterion("aura", **kw))
register_criterion("mass", lambda **kw: EntropyCriterion("mass", **kw))
