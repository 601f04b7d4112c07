"""Rewards of the pruning search, pluggable by name (METHODS.md section 3).

- ``entropy``: the novelty of B. Musat, R. Andonie, "Pruning Convolutional
  Filters via Reinforcement Learning with Entropy Minimization", arXiv
  2312.04918: ``R = -S(pruned) / S(original)``, where ``S`` is the network's
  spatial aura entropy (arXiv 2312.04926) on a FIXED calibration batch: the
  mean over convolution layers of the mean over filters and images, measured
  where ``entropy.conv_sites`` says (post-activation). The pruned model is not
  fine-tuned. ``R(original) = -1`` exactly; the agent maximises R, i.e.
  minimises the entropy.
- ``mass_entropy``: the same with the mass entropy estimator.
- ``accuracy``: AMC's ``R_err = -error`` (Y. He et al., arXiv 1802.03494),
  error as a fraction, on the held-out validation split (or a fixed subset of
  its first images, ``val_subset``, for speed).
- ``accuracy_flops``: AMC's ``R_FLOPs = -error * log(MACs)``.

With ``RewardConfig.adapt_bn > 0`` (not in AMC; off by default), the accuracy
rewards first re-estimate the BatchNorm statistics of the pruned copy on that
many calibration images (``training.recalibrate_batchnorm``, "adaptive BN").

A reward is called as ``reward(pruned_model, macs) -> float``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn as nn

from ..data import DataBundle, iterate_batches
from ..entropy import ActivationStats, EntropyConfig, Site, conv_sites
from ..training import evaluate, recalibrate_batchnorm


@dataclass
class RewardConfig:
    calib_size: int = 128        # images of the fixed calibration batch (entropy rewards)
    calib_seed: int = 0
    val_subset: int = 1000       # first images of the validation split (accuracy rewards); 0 = all
    levels: int = 8              # aura quantisation levels
    connectivity: int = 8        # aura neighbourhood
    adapt_bn: int = 0            # accuracy rewards: re-estimate BatchNorm stats on this many images first


def network_entropy(model: nn.Module, images: torch.Tensor, sites: dict[str, Site], estimator: str = "aura",
                    cfg: EntropyConfig | None = None, batch_size: int = 256) -> float:
    """``S``: mean over convolution layers of the mean entropy of their filters
    (each the mean over ``images``), at ``sites``."""
    was_training = model.training
    model.eval()
    with ActivationStats(model, sites, (estimator,), cfg) as stats, torch.no_grad():
        for xb, _ in iterate_batches(images, torch.zeros(len(images)), batch_size):
            model(xb)
    model.train(was_training)
    per_layer = [v[estimator] for v in stats.per_layer().values()]
    if not per_layer:
        raise ValueError("the model has no convolution with spatial outputs to measure the entropy of")
    return sum(per_layer) / len(per_layer)


class Reward:
    name = "base"

    def __call__(self, model: nn.Module, macs: int) -> float:
        raise NotImplementedError


class EntropyReward(Reward):
    """``-S(pruned) / S(original)`` on a fixed calibration batch."""

    def __init__(self, base: nn.Module, images: torch.Tensor, estimator: str = "aura",
                 cfg: EntropyConfig | None = None):
        self.name = "entropy" if estimator == "aura" else f"{estimator}_entropy"
        self.images, self.estimator, self.cfg = images, estimator, cfg
        # pruning keeps module names, so the sites of the original serve every pruned copy
        self.sites = conv_sites(base)
        self.reference = network_entropy(base, images, self.sites, estimator, cfg)
        if self.reference <= 0:
            raise ValueError("the original model's activation entropy is 0 (constant maps): "
                             "the entropy reward is undefined")

    def entropy(self, model: nn.Module) -> float:
        return network_entropy(model, self.images, self.sites, self.estimator, self.cfg)

    def __call__(self, model, macs):
        return -self.entropy(model) / self.reference


class AccuracyReward(Reward):
    """AMC's ``-error`` (a fraction) on validation images."""

    name = "accuracy"

    def __init__(self, val_x: torch.Tensor, val_y: torch.Tensor, bn_images: torch.Tensor | None = None):
        self.val_x, self.val_y, self.bn_images = val_x, val_y, bn_images

    def error(self, model: nn.Module) -> float:
        if self.bn_images is not None:   # the pruned copy is the episode's own: adapting it in place is safe
            recalibrate_batchnorm(model, self.bn_images)
        return 1.0 - evaluate(model, self.val_x, self.val_y) / 100.0

    def __call__(self, model, macs):
        return -self.error(model)


class AccuracyFlopsReward(AccuracyReward):
    """AMC's ``-error * log(FLOPs)`` (MACs, natural logarithm)."""

    name = "accuracy_flops"

    def __call__(self, model, macs):
        return -self.error(model) * math.log(macs)


def _validation(data: DataBundle, cfg: RewardConfig) -> tuple[torch.Tensor, torch.Tensor]:
    n = cfg.val_subset if cfg.val_subset > 0 else data.val_x.shape[0]
    return data.val_x[:n], data.val_y[:n]


def _accuracy_args(data: DataBundle, cfg: RewardConfig) -> tuple:
    bn = data.calibration(cfg.adapt_bn, cfg.calib_seed) if cfg.adapt_bn > 0 else None
    return (*_validation(data, cfg), bn)


def _entropy_cfg(cfg: RewardConfig) -> EntropyConfig:
    return EntropyConfig(levels=cfg.levels, connectivity=cfg.connectivity)


REWARDS: dict[str, Callable[[nn.Module, DataBundle, RewardConfig], Reward]] = {
    "entropy": lambda base, data, cfg: EntropyReward(
        base, data.calibration(cfg.calib_size, cfg.calib_seed), "aura", _entropy_cfg(cfg)),
    "mass_entropy": lambda base, data, cfg: EntropyReward(
        base, data.calibration(cfg.calib_size, cfg.calib_seed), "mass", _entropy_cfg(cfg)),
    "accuracy": lambda base, data, cfg: AccuracyReward(*_accuracy_args(data, cfg)),
    "accuracy_flops": lambda base, data, cfg: AccuracyFlopsReward(*_accuracy_args(data, cfg)),
}


def make_reward(name: str, base: nn.Module, data: DataBundle, cfg: RewardConfig | None = None) -> Reward:
    """The reward ``name`` for pruned copies of ``base``."""
    if name not in REWARDS:
        raise ValueError(f"unknown reward {name!r}; choose one of {', '.join(REWARDS)}")
    return REWARDS[name](base, data, cfg or RewardConfig())


def register_reward(name: str, factory: Callable[[nn.Module, DataBundle, RewardConfig], Reward]) -> None:
    REWARDS[name] = factory
