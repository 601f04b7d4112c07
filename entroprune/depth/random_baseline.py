"""The random-rectifier comparison of EASIER (docs/METHODS.md section 4,
"Comparison"; Quetu et al., arXiv 2404.18949): step k removes as many
rectifiers as EASIER's step k did, chosen at random (seeded), with the same
fine-tuning and the shared resumable loop (``runner.run_steps``), and no stop
rule. Its final measurements are the caller's, as EASIER's
(``entroprune.reporting.depth_report.finish_run``)."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import torch.nn as nn

from ..data import DataBundle
from ..entropy import rectifiers
from .runner import DepthConfig, DepthResult, finetune, remove_rectifiers, run_steps, state_entropies


def random_choice(alive: list[str], count: int, seed: int, step: int) -> list[str]:
    """``count`` of the ``alive`` rectifiers (all if fewer), drawn by a
    generator seeded by ``(seed, step)`` alone, in forward order."""
    names = random.Random(seed * 100003 + step).sample(alive, min(count, len(alive)))
    return [n for n in alive if n in names]


def random_removal(model: nn.Module, data: DataBundle, counts: list[int], cfg: DepthConfig | None = None,
                   out_dir: str | Path = "runs/random", seed: int = 0) -> DepthResult:
    """The comparison row: step k removes ``counts[k-1]`` rectifiers chosen at
    random (``random_choice``), with the same fine-tuning as EASIER; no stop rule."""
    cfg = dataclasses.replace(cfg or DepthConfig(), tolerance=None)

    def entropy_fn(m: nn.Module) -> dict[str, float]:
        return state_entropies(m, data.train_x, cfg.entropy_batch_size, cfg.entropy_batches)

    def step_fn(m, rows, step, ckpt):
        names = random_choice(list(rectifiers(m)), counts[step - 1], seed, step)
        remove_rectifiers(m, names)
        info = finetune(m, data, cfg, step, ckpt)
        return m, {"removed": names, "entropies": entropy_fn(m), **info}

    def more_fn(m, rows):
        if len(rows) > len(counts):
            return f"removed {sum(counts)} random rectifiers"
        return None if rectifiers(m) else "no rectifier left"

    return run_steps(model, data, cfg, out_dir, f"random-{seed}", entropy_fn=entropy_fn, step_fn=step_fn,
                     more_fn=more_fn)
