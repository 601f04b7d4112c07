"""The pruning environment of an AMC-style search (Y. He et al., "AMC: AutoML
for Model Compression and Acceleration on Mobile Devices", ECCV 2018, arXiv
1802.03494), with the entropy reward of B. Musat, R. Andonie, "Pruning
Convolutional Filters via Reinforcement Learning with Entropy Minimization",
arXiv 2312.04918 (METHODS.md section 3).

One episode walks the model's prunable channel groups in execution order (a
group couples every layer tied by a residual addition, so they share one
action). At step ``t`` the agent sees the AMC state embedding of group ``t``
(``OBS_FEATURES``; every feature in ``[0, 1]``) and answers a preserve ratio in
``[lbound, 1]``. The action wall clips it to a channel count that keeps the
MACs target reachable:
- upper side (AMC's): even if every later group is pruned to its minimum, the
  model must not exceed the target;
- lower side (``wall="both"``, the default; AMC had none): even if every later
  group is kept whole, the model must still reach the target, so that the
  episode ends *at* the budget (METHODS.md) rather than below it;
- ``wall="spread"`` (our variant, docs/METHODS.md section 3): besides both
  sides, group ``t`` may keep at most its share of the remaining budget, the
  preserve ratio that, given to every group still to come, would meet the
  target. The walk from first to last then cannot spend the budget early and
  force the last groups to the lower bound; budget left unused by a group is
  spread over the groups after it.
The cost is the analytic MACs model of ``PolicyPruner`` (exact for whole
channels) or any other cost of the kept fractions (``cost_fn``: a predicted
latency). At the end the policy is applied structurally, the pruned model is
reconstructed (``reconstructor``, docs/METHODS.md section 7: the reward then
scores a model whose layers were refitted, as AMC did), the true MACs are
measured and the reward is computed on it. Intermediate rewards are 0.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn

from ..measure import count_macs
from ..pruning.policy import LAYER_TYPES, PolicyPruner
from ..pruning.structural import PruningError, parse_macs_target
from ..reconstruct import Reconstructor

OBS_FEATURES = ("index", "layer_type", "in_channels", "out_channels", "stride", "kernel",
                "group_macs", "macs_removed", "macs_to_come", "previous_action")

RewardFn = Callable[[nn.Module, int], float]   # (pruned model, its MACs) -> reward
WALLS = ("both", "upper", "spread")


@dataclass
class EnvConfig:
    target_macs: float = 0.5     # fraction of the MACs to keep
    lbound: float = 0.2          # smallest preserve ratio of a group
    round_to: int = 1            # kept channel counts a multiple of this (AMC: 8)
    importance: str = "l1"       # which channels a group loses: "l1" or "aura"
    wall: str = "both"           # "both" (end at the target), "upper" (AMC: at or below), "spread" (budget shares)

    def __post_init__(self) -> None:
        self.target_macs = parse_macs_target(self.target_macs)     # "5x" or a fraction to keep


def _minmax(values: Sequence[float]) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64)
    span = v.max() - v.min()
    return (v - v.min()) / span if span > 0 else np.zeros_like(v)


def _count_where(counts: list[int], pred: Callable[[int], bool], last: bool) -> int | None:
    """For a predicate monotone over the sorted ``counts`` (true up to a point if
    ``last``, else from a point on): the last (first) count where it holds."""
    lo, hi = 0, len(counts)                       # invariant: the boundary lies in [lo, hi]
    while lo < hi:
        mid = (lo + hi) // 2
        if pred(counts[mid]) == last:
            lo = mid + 1
        else:
            hi = mid
    if last:
        return counts[lo - 1] if lo > 0 else None
    return counts[lo] if lo < len(counts) else None


class PruningEnv(gym.Env):
    """``reset()`` -> observation of group 0; ``step([ratio])`` -> next observation;
    the last step applies the policy and returns the reward."""

    metadata = {"render_modes": []}

    def __init__(self, model: nn.Module, input_shape: tuple[int, ...], reward_fn: RewardFn | None,
                 cfg: EnvConfig, calib: tuple[torch.Tensor, torch.Tensor] | None = None,
                 pruner: PolicyPruner | None = None, reconstructor: Reconstructor | None = None,
                 cost_fn: Callable[[Sequence[float]], float] | None = None,
                 allowed: Sequence[Sequence[int] | None] | None = None):
        super().__init__()
        if cfg.wall not in WALLS:
            raise ValueError(f"wall must be one of {', '.join(WALLS)}, got {cfg.wall!r}")
        if not 0.0 < cfg.lbound <= 1.0:
            raise ValueError(f"lbound must be in (0, 1], got {cfg.lbound}")
        self.cfg, self.reward_fn, self.reconstructor = cfg, reward_fn, reconstructor
        self.pruner = pruner or PolicyPruner(model, input_shape, cfg.importance, calib)
        self.cost = cost_fn or self.pruner.macs                             # kept fractions -> cost
        self.groups = self.pruner.groups
        self.n_steps = len(self.groups)
        self.allowed = [self.pruner.allowed_counts(i, cfg.lbound, cfg.round_to) for i in range(self.n_steps)]
        if allowed is not None:      # a cost model's widths (e.g. never slower than a larger one), within lbound
            self.allowed = [sorted({c for c in (pref or a) if c >= a[0]} | {a[-1]}) for a, pref in
                            zip(self.allowed, allowed)]
        self.min_keep = [a[0] / g.channels for a, g in zip(self.allowed, self.groups)]
        self.total = float(self.cost([1.0] * self.n_steps))
        self.macs_before = count_macs(self.pruner.base, self.pruner.input_shape)  # measured
        self.target = cfg.target_macs * self.total
        floor = self.cost(self.min_keep)
        if floor > self.target:
            raise PruningError(f"cannot reach {cfg.target_macs:.3f} of the cost: pruning every group to "
                               f"lbound={cfg.lbound} keeps {floor / self.total:.3f}; lower --lbound or "
                               "ask for less")
        self.observation_space = gym.spaces.Box(0.0, 1.0, (len(OBS_FEATURES),), np.float32)
        self.action_space = gym.spaces.Box(cfg.lbound, 1.0, (1,), np.float32)
        g = self.groups
        self.static = np.stack([                                            # (T, 7)
            _minmax(range(self.n_steps)), _minmax([LAYER_TYPES[x.kind] for x in g]),
            _minmax([x.in_channels for x in g]), _minmax([x.out_channels for x in g]),
            _minmax([x.stride for x in g]), _minmax([x.kernel for x in g]),
            _minmax([self.pruner.group_macs(i) for i in range(self.n_steps)])], axis=1)
        self._after = [self.pruner.touched_after(i) for i in range(self.n_steps)]
        self.last_pruned: nn.Module | None = None
        self.reset()

    # ---- state ----
    def _observation(self) -> np.ndarray:
        t = self.t
        keep = self.keep + [1.0] * (self.n_steps - t)
        removed = (self.pruner.total_macs - self.pruner.macs(keep)) / self.pruner.total_macs
        to_come = (sum(self.pruner.layer_cost(n, keep) for n in self._after[t]) / self.pruner.total_macs
                   if t < self.n_steps else 0.0)
        prev = self.keep[-1] if self.keep else 1.0
        obs = np.concatenate([self.static[min(t, self.n_steps - 1)], [removed, to_come, prev]])
        return np.clip(obs, 0.0, 1.0).astype(np.float32)                   # (10,)

    # ---- the action wall ----
    def _share(self) -> float:
        """The preserve ratio that, given to group t and every group after it, meets the target."""
        lo, hi = 0.0, 1.0
        for _ in range(30):                    # bisection: the cost grows with the ratio
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if self.cost(self.keep + [mid] * (self.n_steps - self.t)) < self.target else (lo, mid)
        return hi

    def wall(self, ratio: float) -> int:
        """The channel count group ``t`` keeps for a proposed preserve ratio."""
        t, n = self.t, self.groups[self.t].channels
        counts = self.allowed[t]
        low_later, whole_later = self.min_keep[t + 1:], [1.0] * (self.n_steps - t - 1)
        slack = 1e-6 * self.total

        def cost_low(c: int) -> float:       # later groups at their minimum
            return self.cost(self.keep + [c / n] + low_later)

        # the cost grows with the count: the walls are found by bisection over the allowed counts
        fits = _count_where(counts, lambda c: cost_low(c) <= self.target + slack, last=True)
        c_max = fits if fits is not None else counts[0]
        if self.cfg.wall == "spread":            # at most the group's share of the remaining budget
            share = self._share() * n
            c_max = min(c_max, next((c for c in counts if c >= share - 1e-9), counts[-1]))
        c_min = counts[0]
        if self.cfg.wall in ("both", "spread"):
            reach = _count_where(counts, lambda c: self.cost(self.keep + [c / n] + whole_later)
                                 >= self.target - slack, last=False)
            c_min = reach if reach is not None else counts[-1]
        wanted = min(counts, key=lambda c: (abs(c - ratio * n), c))
        if c_min <= c_max:
            return min(max(wanted, c_min), c_max)
        if t == self.n_steps - 1:  # channels too coarse to hit the target: the closer side
            return min((c_max, c_min), key=lambda c: abs(cost_low(c) - self.target))
        return c_max

    # ---- gymnasium API ----
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self.t = 0
        self.keep: list[float] = []
        self.channels: list[int] = []
        return self._observation(), {}

    def step(self, action):
        if self.t >= self.n_steps:
            raise RuntimeError("the episode is over; call reset()")
        ratio = float(np.clip(np.asarray(action, dtype=np.float64).reshape(-1)[0], self.cfg.lbound, 1.0))
        count = self.wall(ratio)
        n = self.groups[self.t].channels
        self.channels.append(count)
        self.keep.append(count / n)
        self.t += 1
        info: dict[str, Any] = {"action": count / n, "proposed": ratio, "group": self.groups[self.t - 1].layer}
        if self.t < self.n_steps:
            return self._observation(), 0.0, False, False, info
        info.update(self.finish())
        return self._observation(), info["reward"], True, False, info

    def apply(self, channels: Sequence[int]) -> tuple[nn.Module, float]:
        """The pruned (and, with a reconstructor, refitted) model of a policy, and
        the seconds the refit took."""
        pruned = self.pruner.apply(channels)
        if self.reconstructor is None:
            return pruned, 0.0
        return pruned, float(self.reconstructor(pruned)["seconds"])

    def finish(self) -> dict[str, Any]:
        """Apply the episode's policy, measure it and compute the reward."""
        pruned, refit_seconds = self.apply(self.channels)
        macs = count_macs(pruned, self.pruner.input_shape)
        analytic = self.pruner.macs(self.keep)
        cost = self.cost(self.keep) / self.total
        reward = float(self.reward_fn(pruned, macs)) if self.reward_fn is not None else 0.0
        self.last_pruned = pruned
        return {"reward": reward, "policy": list(self.keep), "channels": list(self.channels),
                "macs": macs, "macs_fraction": macs / self.macs_before,
                "macs_fraction_analytic": analytic / self.pruner.total_macs,
                "macs_gap": (macs - analytic) / self.macs_before, "cost_fraction": cost,
                "target_error": cost / self.cfg.target_macs - 1.0, "reconstruct_seconds": refit_seconds}

    def play(self, ratios: Sequence[float]) -> dict[str, Any]:
        """Run one whole episode with the given proposed ratios; the final info."""
        if len(ratios) != self.n_steps:
            raise ValueError(f"an episode has {self.n_steps} steps, got {len(ratios)} ratios")
        self.reset()
        info: dict[str, Any] = {}
        for r in ratios:
            _, _, done, _, info = self.step([r])
        assert done
        return info
