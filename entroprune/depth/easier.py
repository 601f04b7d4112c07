"""EASIER: removing whole rectifiers by neuron-state entropy (V. Quetu, Z. Liao,
E. Tartaglione, "The Simpler The Better: An Entropy-Based Importance Metric To
Reduce Neural Networks' Depth", ECML PKDD 2024, arXiv 2404.18949;
docs/METHODS.md section 4).

Each step measures the ON/OFF state entropy of every rectifier over training
batches, replaces the lowest-entropy rectifier (and any at entropy 0) by
``nn.Identity`` and fine-tunes. The published code has no stopping rule; the
shared loop (``runner.run_steps``) stops when validation accuracy falls more
than ``tolerance`` points below the starting model's (or after
``max_removals``), and the result is the last step within tolerance. Folding
it, so that the removed nonlinearities save MACs and time, and the report are
the caller's (``entroprune.reporting.depth_report.finish_run``).

Candidates are ``entropy.rectifiers``: ReLU-like modules, never a
squeeze-and-excitation gate; activations the forward code calls as functions
cannot be replaced and are named in a warning.

Project choices, where the paper leaves room:
- entropies are measured in eval mode, without augmentation, over the first
  ``entropy_batches`` training batches in split order (None: the whole epoch);
- "entropy exactly 0" means every channel always ON or always OFF; since
  probabilities are clamped at 1e-10 such a layer measures ~3e-9 bits, so the
  test is ``H <= zero_tol``;
- ``train_limit`` fine-tunes each step on a window of that many training
  images (the window moves on with every step), for runs shorter than an epoch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch.nn as nn

from ..data import DataBundle
from ..entropy import rectifiers
from ..graph import warn_functional
from .runner import DepthConfig, DepthResult, finetune, remove_rectifiers, run_steps, state_entropies


@dataclass
class EasierConfig(DepthConfig):
    max_removals: int | None = None     # stop after this many rectifiers are removed
    zero_tol: float = 1e-6              # "entropy 0": every channel always ON or always OFF


def easier_select(entropies: dict[str, float], zero_tol: float = 1e-6, limit: int | None = None) -> list[str]:
    """The lowest-entropy rectifier plus every one at entropy 0, lowest first,
    at most ``limit`` of them."""
    order = sorted(entropies, key=entropies.__getitem__)   # stable: ties keep forward order
    chosen = order[:1] + [n for n in order[1:] if entropies[n] <= zero_tol]
    return chosen if limit is None else chosen[:max(0, limit)]


def easier(model: nn.Module, data: DataBundle, cfg: EasierConfig | None = None,
           out_dir: str | Path = "runs/easier") -> DepthResult:
    """Run (or resume) EASIER on ``model`` (not modified) in ``out_dir``;
    returns the steps and the best step's model, unfolded."""
    cfg = cfg or EasierConfig()
    warn_functional(model, "EASIER")

    def entropy_fn(m: nn.Module) -> dict[str, float]:
        return state_entropies(m, data.train_x, cfg.entropy_batch_size, cfg.entropy_batches)

    def step_fn(m, rows, step, ckpt):
        prev = rows[-1]["entropies"]
        done = sum(len(r["removed"]) for r in rows)
        names = easier_select(prev, cfg.zero_tol, None if cfg.max_removals is None else cfg.max_removals - done)
        remove_rectifiers(m, names)
        info = finetune(m, data, cfg, step, ckpt)
        return m, {"removed": names, "removed_entropy": [prev[n] for n in names], "entropies": entropy_fn(m),
                   **info}

    def more_fn(m, rows):
        if not rectifiers(m):
            return "no rectifier left"
        if cfg.max_removals is not None and sum(len(r["removed"]) for r in rows) >= cfg.max_removals:
            return f"max_removals ({cfg.max_removals}) reached"
        return None

    return run_steps(model, data, cfg, out_dir, "easier", entropy_fn=entropy_fn, step_fn=step_fn, more_fn=more_fn)
