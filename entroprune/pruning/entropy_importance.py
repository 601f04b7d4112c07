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

``EntropyImportance`` is a torch-pruning ``Importance`` (usable with any of
its pruners); ``EntropyCriterion`` plugs it into entroprune's pruner to a
MACs target, like the ``l1`` and ``taylor`` criteria.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch_pruning as tp
from torch_pruning.pruner import function as tpf

from ..data import iterate_batches
from ..entropy import ActivationStats, EntropyConfig, conv_sites
from .importance import TorchPruningCriterion, register_criterion

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


class EntropyImportance(tp.importance.Importance):
    """A torch-pruning ``Importance``: per-channel entropy scores of a group.

    Calibrate once on images, then call it on groups, directly or from any
    torch-pruning pruner::

        imp = EntropyImportance("aura").calibrate(model, images)   # images (N, C, H, W)
        pruner = tp.pruner.MetaPruner(model, example, importance=imp, pruning_ratio=0.5)
        pruner.step()

    Entropies are measured on the model as it is at calibration; when a
    pruner has removed channels since (iterative pruning), the next call
    measures them again on the same images.
    """

    def __init__(self, estimator: str = "aura", reduction: str = "mean", normalizer: str | None = "mean",
                 cfg: EntropyConfig | None = None):
        if reduction not in ("mean", "max"):
            raise ValueError(f"reduction must be 'mean' or 'max', got {reduction!r}")
        if normalizer not in ("mean", None):
            raise ValueError(f"normalizer must be 'mean' or None, got {normalizer!r}")
        self.estimator, self.reduction, self.normalizer, self.cfg = estimator, reduction, normalizer, cfg
        self.entropies: dict[str, torch.Tensor] | None = None     # {conv name: (C,)}
        self.fallback_groups: list[str] = []                      # groups scored by L1 instead
        self._l1 = tp.importance.GroupMagnitudeImportance(p=1, normalizer="mean")

    def calibrate(self, model: nn.Module, images: torch.Tensor) -> EntropyImportance:
        if not isinstance(images, torch.Tensor) or images.dim() != 4 or len(images) == 0:
            raise ValueError(f"the {self.estimator} importance needs calibration images (N, C, H, W), got "
                             f"{getattr(images, 'shape', type(images).__name__)}")
        self._model, self._images = model, images
        self._measure()
        return self

    def _measure(self) -> None:
        self.entropies = filter_entropies(self._model, self._images, self.estimator, self.cfg)
        self.name_of = {m: n for n, m in self._model.named_modules()}
        self.fallback_groups = []

    def _stale(self, group) -> bool:
        """True when a member convolution's width differs from the measured one."""
        for dep, _ in group:
            name = self.name_of.get(dep.target.module)
            if dep.handler in CONV_OUT and name in self.entropies:
                if dep.target.module.out_channels != len(self.entropies[name]):
                    return True
        return False

    def group_scores(self, group) -> torch.Tensor | None:
        """Aggregate the entropies of every member convolution's output
        channels onto the group's channels; None when no member has any."""
        n = len(group[0].idxs)
        acc = torch.full((n,), float("-inf")) if self.reduction == "max" else torch.zeros(n)
        members = 0
        for i, (dep, idxs) in enumerate(group):
            layer = dep.target.module
            name = self.name_of.get(layer)
            if dep.handler not in CONV_OUT or name not in self.entropies:
                continue
            root = torch.as_tensor(group[i].root_idxs)
            vals = self.entropies[name][torch.as_tensor(idxs)]
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

    @torch.no_grad()
    def __call__(self, group) -> torch.Tensor:
        if self.entropies is None:
            raise RuntimeError(f"EntropyImportance({self.estimator!r}) is not calibrated: "
                               "call .calibrate(model, images) before pruning")
        if self._stale(group):
            self._measure()
        s = self.group_scores(group)
        if s is None:  # no activation map (hidden units of a classifier): L1 magnitude
            self.fallback_groups.append(self.name_of.get(group[0].dep.target.module, "?"))
            s = self._l1(group)
        return s


class EntropyCriterion(TorchPruningCriterion):
    """The entropy importance as an entroprune criterion (calibrated on the
    pruner's calibration images)."""

    needs_data = True

    def __init__(self, estimator: str = "aura", **kwargs):
        super().__init__(EntropyImportance(estimator, **kwargs))
        self.name = estimator

    @property
    def fallback_groups(self) -> list[str]:
        return self.importance.fallback_groups

    def scores(self, model, groups, calib):
        if calib is None:
            raise ValueError(f"the {self.name} criterion needs calibration images")
        self.importance.calibrate(model, calib[0])
        return super().scores(model, groups, calib)


register_criterion("aura", lambda **kw: EntropyCriterion("aura", **kw))
register_criterion("mass", lambda **kw: EntropyCriterion("mass", **kw))
