"""The main job, end to end: measure a model, prune it to a MACs target,
fine-tune, measure again, and write a report folder::

    report/
      report.md        before/after table, per-layer widths, what was done
      report.json      the same numbers, machine-readable
      model.safetensors  the pruned, fine-tuned model (entroprune.load)
      widths.png       channels per layer before and after
      finetune.ckpt    (while fine-tuning; lets an interrupted run resume)

Used by ``entroprune prune``, ``entroprune demo`` and the benchmark runner.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from .data import DataBundle
from .io import atomic_write_json, atomic_write_text, save
from .pruning import PruneConfig, get_criterion, prune_to_macs
from .reporting import before_after_table, latency_dict, plot_widths, summarize
from .training import TrainConfig, train


@dataclass
class JobConfig:
    method: str = "l1"
    target_macs: float = 0.2
    scope: str = "global"
    min_keep: float = 0.1         # every channel group keeps >= this fraction ...
    min_channels: int = 1         # ... and at least this many channels
    tolerance: float = 0.02       # relative MACs tolerance of the target
    finetune_epochs: int = 10
    finetune_lr: float = 0.01
    calib_size: int = 256
    seed: int = 0
    latency_repeats: int = 30
    progress: bool = True


def prune_step(model: nn.Module, data: DataBundle, cfg: JobConfig) -> tuple[nn.Module, dict, float]:
    """The seeded pruning of the job alone: a pruned copy of ``model``, the
    pruner's report and the method's wall time. Deterministic for a seed, so
    the same architecture can be rebuilt later (benchmarks/run.py --relatency)."""
    torch.manual_seed(cfg.seed)
    shape = tuple(data.train_x.shape[1:])
    g = torch.Generator().manual_seed(cfg.seed)
    idx = torch.randperm(data.train_x.shape[0], generator=g)[: cfg.calib_size]
    calib = (data.train_x[idx], data.train_y[idx])
    criterion = get_criterion(cfg.method, **({"seed": cfg.seed} if cfg.method == "random" else {}))
    t0 = time.time()
    pruned, prune_report = prune_to_macs(
        model, criterion, shape, PruneConfig(target_macs=cfg.target_macs, scope=cfg.scope, min_keep=cfg.min_keep,
                                            min_channels=cfg.min_channels, tolerance=cfg.tolerance), calib=calib)
    return pruned, prune_report, time.time() - t0


def run_prune_job(model: nn.Module, data: DataBundle, cfg: JobConfig, out_dir: str | Path,
                  label: str = "model") -> dict[str, Any]:
    """Prune ``model`` (left untouched) and write the report; returns report.json."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    before = summarize(model, data)
    pruned, prune_report, method_seconds = prune_step(model, data, cfg)
    after = summarize(pruned, data)
    history: list = []
    if cfg.finetune_epochs > 0:
        history = train(pruned, data, TrainConfig(epochs=cfg.finetune_epochs, lr=cfg.finetune_lr,
                                                  seed=cfg.seed, progress=cfg.progress),
                        checkpoint=out / "finetune.ckpt")
    finetuned = summarize(pruned, data) if cfg.finetune_epochs > 0 else None
    latency = latency_dict(model, pruned, data, repeats=cfg.latency_repeats)
    table = before_after_table(before, after, latency, finetuned)
    plot_widths(model, pruned, out / "widths.png",
                f"{label}: channels per layer, {cfg.method} to {before.macs / after.macs:.1f}x fewer MACs")
    report = {
        "label": label, "method": cfg.method, "config": cfg.__dict__,
        "before": before.to_dict(), "after_prune": after.to_dict(),
        "after_finetune": finetuned.to_dict() if finetuned else None,
        "latency": latency, "macs_ratio": before.macs / after.macs,
        "params_ratio": before.params / after.params, "method_seconds": method_seconds,
        "prune": prune_report, "finetune_history": history,
    }
    save(pruned, out / "model.safetensors",
         info={"label": label, "test_acc": (finetuned or after).test_acc, "dataset": data.name})
    atomic_write_json(out / "report.json", report)
    atomic_write_text(out / "report.md", "\n".join([
        f"# {label}: {cfg.method} pruning to {1 / cfg.target_macs:.2f}x fewer MACs", "",
        table, "",
        f"Pruning took {method_seconds:.1f} s; fine-tuning {cfg.finetune_epochs} epochs "
        f"at lr {cfg.finetune_lr}. Latency: median of repeated CPU runs, base and pruned "
        "interleaved in the same process.", "",
        "![channels per layer](widths.png)", ""]))
    (out / "finetune.ckpt").unlink(missing_ok=True)
    report["table"] = table
    return report
