"""The "remove" stage of ``compress``: which channels (or layers) go, by the
method the config names. Each returns the reduced model, NOT yet
reconstructed or fine-tuned, and a record of what it did.

- a channel criterion (docs/METHODS.md sections 2, 8): ``prune_to_target``
  with that criterion, to a MACs or a predicted-latency target;
- ``search`` (section 3): the AMC-style search of per-group widths (each
  episode scored on a reconstructed model), its best policy applied raw;
- ``ges`` (section 6): generalized entropic sparsification, which refits
  as it goes (so ``compress`` does not reconstruct it again);
- ``none``: the model as it is (for depth reduction, folding or INT8 alone);
- depth reduction (sections 4, 5) runs after the channel stage:
  ``reduce_depth``.
"""

from __future__ import annotations

import copy
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from ..data import DataBundle
from ..depth.easier import EasierConfig, easier
from ..depth.nepenthe import NepentheConfig, nepenthe
from ..io.model_file import record_step
from ..pruning import PruneConfig, get_criterion, prune_to_target
from ..search import run_search
from ..search.runner import make_env
from ..sparsify import SparsifyConfig, sparsify
from ..training import TrainConfig
from .config import CompressConfig, CompressError


def _calib(data: DataBundle, cfg: CompressConfig) -> tuple[torch.Tensor, None]:
    """Calibration images of the training split, (n, C, H, W); no labels (taylor uses predictions)."""
    return data.calibration(cfg.calib_size, cfg.seed), None


def remove_channels(model: nn.Module, data: DataBundle, cfg: CompressConfig, folder: Path | None,
                    cost_model: Any = None) -> tuple[nn.Module, dict[str, Any]]:
    """The channel stage; ``cost_model`` (a latency cost) replaces MACs as the target's cost."""
    shape = tuple(data.train_x.shape[1:])
    t0 = time.time()
    if cfg.method == "none":
        return copy.deepcopy(model).eval(), {"op": "none", "seconds": 0.0}
    if cfg.method == "ges":
        images = data.calibration(cfg.calib_size, cfg.seed)
        pruned, rep = sparsify(model, images, SparsifyConfig(target=cfg.ges_target, seed=cfg.seed))
        if rep["channels_after"] == rep["channels_before"]:
            skipped = "; ".join(f"{n}: {why}" for n, why in rep["skipped"].items()) or "none"
            every = len(rep["skipped"]) == len(rep["layers"])
            advice = ("no layer of this model can be sparsified this way; use a channel criterion (method "
                      "'greedy_refit')" if every else
                      f"lower eps_E, raise ges_target (now {cfg.ges_target}), or use a channel criterion")
            raise CompressError(f"generalized entropic sparsification removed no channel (skipped layers: "
                                f"{skipped}); {advice}")
        return pruned, {**rep, "seconds": time.time() - t0}
    if cfg.method == "search":
        search_cfg = replace(cfg.search, target_macs=cfg.keep, seed=cfg.seed, progress=cfg.progress,
                             reconstruct=cfg.search.reconstruct if cfg.reconstruct is not None else None)
        folder = (folder or Path(".")) / "search"
        result = run_search(model, data, search_cfg, folder, cost_model=cost_model)
        best = result.best
        miss = best["macs_fraction"] / cfg.keep - 1.0
        if cost_model is None and abs(miss) > cfg.tolerance:
            raise CompressError(f"the search's best policy keeps {best['macs_fraction']:.3f} of the MACs, "
                                f"{100 * miss:+.1f}% off the target {cfg.keep:.3f} (tolerance "
                                f"{100 * cfg.tolerance:.0f}%): the channel groups are too coarse or coupled for "
                                "the action wall here; use a criterion (method l1, greedy_refit) instead")
        pruned = result.env.pruner.apply(best["channels"])                # raw: compress reconstructs it
        seconds = float(sum(r["seconds"] for r in result.records))       # a resumed search counts every episode
        rec = {"op": "rl_search", "reward": search_cfg.reward, "criterion": search_cfg.importance,
               "target": cfg.keep, "groups": result.groups, "channels": best["channels"],
               "preserve": best["policy"], "episodes": len(result.records), "best_episode": best["episode"],
               "search_reward": best["reward"], "val_acc_search": best["val_acc"],
               "distinct_rewards": len({round(r["reward"], 6) for r in result.records}),
               "best_in_warmup": bool(best.get("warmup")), "uniform_preserve": result.uniform_preserve,
               "seconds_per_episode": seconds / max(1, len(result.records)),
               "reconstruct_seconds_per_episode": float(sum(r.get("reconstruct_seconds", 0.0)
                                                            for r in result.records)) / max(1, len(result.records)),
               "folder": "search", "seconds": seconds}
        record_step(pruned, model, rec)
        return pruned, rec
    if cfg.method == "policy":
        return _apply_policy(model, data, cfg, cost_model)
    kwargs = {"seed": cfg.seed} if cfg.method == "random" else {}
    prune_cfg = PruneConfig(target_macs=cfg.keep, scope=cfg.scope, min_keep=cfg.min_keep,
                            min_channels=cfg.min_channels, tolerance=cfg.tolerance)
    pruned, rep = prune_to_target(model, get_criterion(cfg.method, **kwargs), shape, prune_cfg,
                                  calib=_calib(data, cfg), cost_model=cost_model)
    return pruned, rep


def _apply_policy(model: nn.Module, data: DataBundle, cfg: CompressConfig, cost_model: Any
                  ) -> tuple[nn.Module, dict[str, Any]]:
    """A given per-group policy (preserve ratios), or the uniform one, or a seeded
    random one (ratios uniform in [lbound, 1]), made to meet the target by the
    search's action wall; L1 (``cfg.search.importance``) inside each group."""
    t0 = time.time()
    search_cfg = replace(cfg.search, target_macs=cfg.keep, seed=cfg.seed, reconstruct=None)
    env = make_env(model, data, search_cfg, with_reward=False, cost_model=cost_model)
    if cfg.policy == "uniform":
        proposed = [env.pruner.uniform_ratio(cfg.keep)] * env.n_steps
    elif cfg.policy == "random":
        proposed = np.random.default_rng(cfg.seed).uniform(search_cfg.lbound, 1.0, env.n_steps).tolist()
    else:
        proposed = [float(r) for r in cfg.policy]
        if len(proposed) != env.n_steps:
            raise CompressError(f"the policy has {len(proposed)} ratios but the model {env.n_steps} channel groups "
                                f"({', '.join(g.layer for g in env.groups)})")
    info = env.play(proposed)
    pruned = env.last_pruned
    rec = {"op": "prune_policy", "policy": cfg.policy if isinstance(cfg.policy, str) else "given",
           "criterion": search_cfg.importance, "groups": [g.layer for g in env.groups], "proposed": proposed,
           "channels": info["channels"], "preserve": info["policy"], "macs_ratio": 1 / info["macs_fraction"],
           "seconds": time.time() - t0}
    record_step(pruned, model, rec)
    return pruned, rec


def reduce_depth(model: nn.Module, data: DataBundle, cfg: CompressConfig, folder: Path | None
                 ) -> tuple[nn.Module, dict[str, Any]]:
    """EASIER or NEPENTHE on ``model`` (each step fine-tuned one epoch), in
    ``folder/depth`` (resumable); returns the best step's model, unfolded."""
    ft = TrainConfig(epochs=1, lr=cfg.finetune_lr, seed=cfg.seed, progress=False)
    common = dict(tolerance=cfg.depth_tolerance, finetune=ft, latency=False, progress=cfg.progress)
    out = (folder or Path(".")) / "depth"
    if cfg.depth == "easier":
        result = easier(model, data, EasierConfig(max_removals=cfg.depth_max_steps, **common), out)
    else:
        result = nepenthe(model, data, NepentheConfig(max_rounds=cfg.depth_max_steps or 10, **common), out)
    removed = sum(len(r["removed"]) for r in result.rows[1:result.best_step + 1])
    return result.model, {"op": cfg.depth, "best_step": result.best_step, "stop_reason": result.stop_reason,
                          "rectifiers_removed": removed, "folder": "depth",
                          "val_acc_steps": [r["val_acc"] for r in result.rows]}
