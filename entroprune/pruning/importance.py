"""Channel importance criteria, pluggable into the structural pruner
(docs/METHODS.md section 2, "The pruner").

A ``Criterion`` scores the channels of every prunable channel group of a
model (a group is the set of layers whose channels must be removed together:
a convolution's output, its BatchNorm, the consumers' inputs, and every layer
tied to it by a residual addition, a concatenation or a depthwise
convolution). Scores are computed once, on the unpruned model, and the pruner
removes the lowest-scored channels.

Criteria here: ``l1`` (weight magnitude, via torch-pruning), ``random``,
``taylor`` (first-order Taylor on a calibration batch, via torch-pruning).
The entropy criteria live in ``entropy_importance.py`` and register here.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch_pruning as tp


class Criterion:
    """Base class: ``scores(model, groups, calib)`` -> one 1-D tensor per group.

    ``groups`` are torch-pruning groups of ``model``; ``calib`` is a
    calibration batch ``(images, labels)`` (may be unused). Higher = keep.
    """

    name = "base"
    needs_data = False

    def scores(self, model: nn.Module, groups: list, calib: tuple[torch.Tensor, torch.Tensor] | None
               ) -> list[torch.Tensor]:
        raise NotImplementedError


class TorchPruningCriterion(Criterion):
    """Adapter for a torch-pruning ``Importance``: its scores as they are. The
    subclasses build theirs with ``normalizer="mean"`` (each group's scores
    divided by their mean), so that a global ranking compares groups fairly."""

    def __init__(self, importance: tp.importance.Importance):
        self.importance = importance

    def scores(self, model, groups, calib):
        return [self.importance(g) for g in groups]


class L1Criterion(TorchPruningCriterion):
    name = "l1"

    def __init__(self):
        super().__init__(tp.importance.GroupMagnitudeImportance(p=1, normalizer="mean"))


class RandomCriterion(Criterion):
    """Uniformly random scores, seeded: the baseline every criterion must beat."""

    name = "random"

    def __init__(self, seed: int = 0):
        self.seed = seed

    def scores(self, model, groups, calib):
        g = torch.Generator().manual_seed(self.seed)
        return [torch.rand(len(group[0].idxs), generator=g) for group in groups]


class TaylorCriterion(TorchPruningCriterion):
    """First-order Taylor importance (Molchanov et al., CVPR 2019) from the
    gradient of the loss on the calibration batch (its labels, or the model's
    own predictions when there are none)."""

    name = "taylor"
    needs_data = True

    def __init__(self):
        super().__init__(tp.importance.GroupTaylorImportance(normalizer="mean"))

    def scores(self, model, groups, calib):
        if calib is None:
            raise ValueError("the taylor criterion needs calibration images")
        x, y = calib
        model.zero_grad(set_to_none=True)
        was_training = model.training
        model.eval()
        if y is None:   # no labels: the model's own predictions stand in for them (our choice)
            with torch.no_grad():
                y = model(x).argmax(1)
        with torch.enable_grad():
            F.cross_entropy(model(x), y).backward()
        model.train(was_training)
        out = super().scores(model, groups, calib)
        model.zero_grad(set_to_none=True)
        return out


CRITERIA: dict[str, Callable[..., Criterion]] = {
    "l1": L1Criterion,
    "random": RandomCriterion,
    "taylor": TaylorCriterion,
}


def register_criterion(name: str, factory: Callable[..., Criterion]) -> None:
    CRITERIA[name] = factory


def get_criterion(name: str, **kwargs) -> Criterion:
    if name not in CRITERIA:
        raise ValueError(f"unknown pruning criterion {name!r}; choose one of {', '.join(sorted(CRITERIA))}")
    return CRITERIA[name](**kwargs)
