"""EASIER: removing whole rectifiers by neuron-state entropy (V. Quetu, Z. Liao,
E. Tartaglione, "The Simpler The Better: An Entropy-Based Importance Metric To
Reduce Neural Networks' Depth", ECML PKDD 2024, arXiv 2404.18949;
METHODS.md section 4).

Loop: measure the ON/OFF state entropy of every rectifier over training
batches, replace the lowest-entropy rectifier (and any at entropy 0) by
``nn.Identity``, fine-tune, repeat. The published code has no stopping rule;
this one stops when validation accuracy falls more than ``tolerance`` points
below the starting model's (or after ``max_removals``), and returns the last
step within tolerance, folded (``entroprune.depth.fold``) so that the removed
nonlinearities save MACs and time.

Project choices, where the paper leaves room:
- entropies are measured in eval mode, without augmentation, over the first
  ``entropy_batches`` training batches in split order (None: the whole epoch);
- "entropy exactly 0" means every channel always ON or always OFF; since
  probabilities are clamped at 1e-10 such a layer measures ~3e-9 bits, so the
  test is ``H <= zero_tol``;
- ``train_limit`` fine-tunes each step on a window of that many training
  images (the window moves on with every step), for runs shorter than an epoch.

The run folder is resumable: ``state.json`` lists the finished steps (row 0
is the starting model), ``step_NNN.safetensors`` is the model after step NNN,
``step_NNN.ckpt`` is the fine-tune checkpoint of a step in progress (train()'s
own resume). A rerun skips finished steps and gives the same rows.

This module also holds the step loop NEPENTHE shares (``run_steps``,
``finish``) and the seeded random-removal baseline (``random_removal``).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import random
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ..data import DataBundle
from ..entropy import RectifierStats, rectifiers
from ..io import atomic_write_json, load, save
from ..io.module_specs import set_submodule
from ..measure import count_depth, count_macs, latency_pairs
from ..training import TrainConfig, evaluate, train
from .depth_report import step_line, write_report
from .fold import fold
from .fold_layers import FoldError

# config fields that may change between a run and its resumption
RESUMABLE_CHANGES = ("max_removals", "max_rounds", "latency", "latency_repeats", "latency_threads", "progress",
                     "final_latency_batches")


@dataclass
class DepthConfig:
    tolerance: float | None = 0.5       # stop when val acc < start - tolerance (points); None: never
    finetune: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=1, lr=0.01, progress=False))
    train_limit: int | None = None      # fine-tune each step on this many training images (None: all)
    entropy_batches: int | None = None  # training batches entropies average over (None: one epoch)
    entropy_batch_size: int = 128
    fold_steps: bool = True             # fold every step's model to measure MACs, depth, latency
    fold_examples: int = 64             # validation images fold() checks its merges on
    latency: bool = True                # measure CPU latency (base / folded step model)
    latency_repeats: int = 20
    latency_threads: int = 2            # torch threads while timing (the project's latency convention)
    final_latency_batches: tuple[int, ...] = (1, 64)
    progress: bool = False              # one line per finished step on stderr (long runs are not silent)


@dataclass
class EasierConfig(DepthConfig):
    max_removals: int | None = None     # stop after this many rectifiers are removed
    zero_tol: float = 1e-6              # "entropy 0": every channel always ON or always OFF


@dataclass
class DepthResult:
    method: str
    rows: list[dict[str, Any]]          # row 0 = starting model, row k = after step k
    best_step: int                      # last step within tolerance
    stop_reason: str
    model: nn.Module                    # the model of best_step
    folded: nn.Module | None = None     # best model folded (after finish)
    final: dict[str, Any] = field(default_factory=dict)
    out_dir: Path = Path(".")


# ------------------------------------------------------------------ entropy

@torch.no_grad()
def measure_rectifiers(model: nn.Module, images: torch.Tensor, batch_size: int = 128,
                       max_batches: int | None = None) -> RectifierStats:
    """ON/OFF counts of every rectifier of ``model`` (eval mode) over the
    first ``max_batches`` batches of ``images`` (N, C, H, W)."""
    was_training = model.training
    model.eval()
    stats = RectifierStats(model, list(rectifiers(model)))
    try:
        with stats:
            for i, start in enumerate(range(0, images.shape[0], batch_size)):
                if max_batches is not None and i >= max_batches:
                    break
                model(images[start:start + batch_size])          # (B, C, H, W)
    finally:
        model.train(was_training)
    return stats


def state_entropies(model: nn.Module, images: torch.Tensor, batch_size: int = 128,
                    max_batches: int | None = None, nondegenerate: bool = False) -> dict[str, float]:
    """``{rectifier: layer state entropy in bits}``, in forward order."""
    return measure_rectifiers(model, images, batch_size, max_batches).per_layer(nondegenerate)


def easier_select(entropies: dict[str, float], zero_tol: float = 1e-6, limit: int | None = None) -> list[str]:
    """The lowest-entropy rectifier plus every one at entropy 0, lowest first,
    at most ``limit`` of them."""
    order = sorted(entropies, key=entropies.__getitem__)   # stable: ties keep forward order
    chosen = order[:1] + [n for n in order[1:] if entropies[n] <= zero_tol]
    return chosen if limit is None else chosen[:max(0, limit)]


def remove_rectifiers(model: nn.Module, names: list[str]) -> None:
    for name in names:
        set_submodule(model, name, nn.Identity())


# ------------------------------------------------------------------ step loop helpers

def train_window(data: DataBundle, limit: int | None, step: int) -> DataBundle:
    """``data`` with a window of ``limit`` training images, moved on each step."""
    n = data.train_x.shape[0]
    if limit is None or limit >= n:
        return data
    idx = (torch.arange(limit) + (step - 1) * limit) % n                 # (limit,)
    return dataclasses.replace(data, train_x=data.train_x[idx], train_y=data.train_y[idx])


def finetune(model: nn.Module, data: DataBundle, cfg: DepthConfig, step: int, ckpt: Path) -> dict[str, Any]:
    """Fine-tune ``model`` in place for step ``step``; resumable via ``ckpt``."""
    if cfg.finetune.epochs <= 0:
        return {}
    tcfg = dataclasses.replace(cfg.finetune, seed=cfg.finetune.seed + step)
    history = train(model, train_window(data, cfg.train_limit, step), tcfg, checkpoint=ckpt)
    return {"train_loss": history[-1]["train_loss"]} if history else {}


def measure_step(model: nn.Module, base: nn.Module, data: DataBundle, cfg: DepthConfig) -> dict[str, Any]:
    """Validation accuracy, MACs, depth (of the folded model with ``fold_steps``)
    and the batch-1 latency ratio base / model."""
    shape = tuple(data.train_x.shape[1:])
    d = count_depth(model)
    row: dict[str, Any] = {"val_acc": evaluate(model, data.val_x, data.val_y), "macs": count_macs(model, shape),
                           "nonlinear": d.nonlinear, "conv_linear": d.conv_linear}
    target = model
    if cfg.fold_steps:
        try:
            target, rep = fold(model, data.val_x[:cfg.fold_examples])
            row.update(macs_folded=rep["macs_after"], conv_linear_folded=rep["conv_linear_after"])
        except (FoldError, RuntimeError) as e:
            row["fold_error"] = str(e)
    row["latency_ratio"] = None
    if cfg.latency:
        row["latency_ratio"] = latency_pairs(base, target, shape, batch_sizes=(1,), repeats=cfg.latency_repeats,
                                             threads=cfg.latency_threads)[0].speedup
    return row


def best_step(rows: list[dict[str, Any]], tolerance: float | None) -> int:
    """The last step before the first one below ``start - tolerance``."""
    if tolerance is None:
        return len(rows) - 1
    floor = rows[0]["val_acc"] - tolerance
    best = 0
    for r in rows[1:]:
        if r["val_acc"] < floor:
            break
        best = r["step"]
    return best


def _config_doc(cfg: DepthConfig) -> dict[str, Any]:
    return json.loads(json.dumps(asdict(cfg)))


class RunFolder:
    """``state.json`` and the per-step model files of a depth-reduction run."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.state_path = self.path / "state.json"

    def model_path(self, step: int) -> Path:
        return self.path / f"step_{step:03d}.safetensors"

    def ckpt_path(self, step: int) -> Path:
        return self.path / f"step_{step:03d}.ckpt"

    def read_state(self) -> dict[str, Any] | None:
        """The run's state, None for a new run; a damaged ``state.json`` is a
        ValueError naming it."""
        if not self.state_path.exists():
            return None
        try:
            state = json.loads(self.state_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{self.state_path} is damaged ({e}); delete it (or pass --restart) to start the "
                             "run over") from None
        if not isinstance(state, dict) or not isinstance(state.get("rows"), list) or not state["rows"] \
                or not isinstance(state.get("config"), dict):
            raise ValueError(f"{self.state_path} is not the state of a depth-reduction run (no config or "
                             "steps); delete it (or pass --restart) to start the run over")
        return state

    def clear(self) -> None:
        """Forget the run: its state and step files (a new run rewrites the rest)."""
        self.state_path.unlink(missing_ok=True)
        for pattern in ("step_*.safetensors", "step_*.ckpt"):
            for f in self.path.glob(pattern):
                f.unlink()

    def write_state(self, state: dict[str, Any]) -> None:
        atomic_write_json(self.state_path, state)

    def check(self, state: dict[str, Any], method: str, cfg: DepthConfig) -> None:
        if state.get("method") != method:
            raise ValueError(f"{self.path} holds a {state.get('method')} run, not {method}; use another folder")
        old, new = dict(state["config"]), _config_doc(cfg)
        for k in RESUMABLE_CHANGES:
            old.pop(k, None)
            new.pop(k, None)
        if old != new:
            diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
            raise ValueError(f"{self.path} was started with other settings ({', '.join(diff)}); "
                             "use the same settings to resume, or another folder")


StepFn = Callable[[nn.Module, list[dict[str, Any]], int, Path], tuple[nn.Module, dict[str, Any]]]


def _progress(cfg: DepthConfig, method: str, row: dict[str, Any]) -> None:
    if cfg.progress:  # one line per step on stderr, so a long run is not silent
        print(step_line(method, row), file=sys.stderr, flush=True)


def run_steps(model: nn.Module, data: DataBundle, cfg: DepthConfig, out_dir: str | Path, method: str, *,
              entropy_fn: Callable[[nn.Module], dict[str, float]], step_fn: StepFn,
              more_fn: Callable[[nn.Module, list[dict[str, Any]]], str | None]) -> DepthResult:
    """The resumable loop: ``step_fn(model, rows, step, ckpt)`` changes and
    fine-tunes the model and returns it with the row's method columns (at
    least ``removed`` and ``entropies``); ``more_fn(model, rows)`` gives a
    reason to stop, or None. The tolerance rule is checked before each step."""
    folder = RunFolder(out_dir)
    state = folder.read_state()
    if state is None:
        model = copy.deepcopy(model)
        save(model, folder.model_path(0), info={"method": method, "step": 0})
        model = load(folder.model_path(0))
        row0 = {"step": 0, "removed": [], "entropies": entropy_fn(model),
                **measure_step(model, model, data, cfg)}
        state = {"method": method, "config": _config_doc(cfg), "rows": [row0], "stop_reason": None}
        folder.write_state(state)
        _progress(cfg, method, row0)
    else:
        folder.check(state, method, cfg)
        state["config"] = _config_doc(cfg)
    rows = state["rows"]
    base = load(folder.model_path(0))
    model = load(folder.model_path(len(rows) - 1))
    while True:
        reason = None
        if cfg.tolerance is not None and len(rows) > 1 and rows[-1]["val_acc"] < rows[0]["val_acc"] - cfg.tolerance:
            reason = (f"validation accuracy {rows[-1]['val_acc']:.2f} fell more than {cfg.tolerance} points "
                      f"below the start ({rows[0]['val_acc']:.2f})")
        reason = reason or more_fn(model, rows)
        if reason:
            break
        step, t0 = len(rows), time.time()
        model, info = step_fn(model, rows, step, folder.ckpt_path(step))
        row = {"step": step, **info, **measure_step(model, base, data, cfg), "seconds": time.time() - t0}
        model.entroprune_history = list(getattr(model, "entroprune_history", [])) + [
            {"op": method, "step": step, "removed": row["removed"], "val_acc": row["val_acc"]}]
        save(model, folder.model_path(step), info={"method": method, "step": step, "val_acc": row["val_acc"]})
        rows.append(row)
        folder.write_state(state)
        _progress(cfg, method, row)
        folder.ckpt_path(step).unlink(missing_ok=True)
        model = load(folder.model_path(step))   # resumed and uninterrupted runs continue from the same file
    state["stop_reason"] = reason
    state["best_step"] = best_step(rows, cfg.tolerance)
    folder.write_state(state)
    return DepthResult(method, rows, state["best_step"], reason, load(folder.model_path(state["best_step"])),
                       out_dir=folder.path)


def finish(result: DepthResult, data: DataBundle, cfg: DepthConfig, report: bool = True) -> DepthResult:
    """Fold the best model, save it as ``folded.safetensors``, measure it
    against the starting model (and the starting model folded), write the report."""
    folder = RunFolder(result.out_dir)
    shape = tuple(data.train_x.shape[1:])
    base = load(folder.model_path(0))
    chosen = result.model
    x = data.val_x[:cfg.fold_examples]                                    # (n, C, H, W) real images
    removed = sum(len(r["removed"]) for r in result.rows[1:result.best_step + 1])
    final: dict[str, Any] = {"best_step": result.best_step, "stop_reason": result.stop_reason,
                             "rectifiers_removed": removed,
                             "val_acc_base": result.rows[0]["val_acc"],
                             "val_acc": result.rows[result.best_step]["val_acc"],
                             "test_acc_base": evaluate(base, data.test_x, data.test_y)}
    try:
        folded, rep = fold(chosen, x)
        base_folded, base_rep = fold(base, x)
        final.update(conv_linear_before=rep["conv_linear_before"], conv_linear_after=rep["conv_linear_after"],
                     layers_removed=rep["conv_linear_before"] - rep["conv_linear_after"],
                     nonlinear_before=base_rep["nonlinear_before"], nonlinear_after=rep["nonlinear_after"],
                     macs_base=base_rep["macs_before"], macs_after=rep["macs_after"],
                     macs_base_folded=base_rep["macs_after"], conv_linear_base_folded=base_rep["conv_linear_after"],
                     max_abs_deviation=rep["max_abs_deviation"])
    except (FoldError, RuntimeError) as e:
        folded, base_folded = chosen, None
        final["fold_error"] = str(e)
    final["test_acc"] = evaluate(folded, data.test_x, data.test_y)
    final["val_acc_folded"] = evaluate(folded, data.val_x, data.val_y)
    save(folded, folder.path / "folded.safetensors", info={"method": result.method, "step": result.best_step})
    if cfg.latency:
        final["latency"] = [dict(batch_size=p.batch_size, base_ms=p.base_ms, folded_ms=p.pruned_ms,
                                 speedup=p.speedup)
                            for p in latency_pairs(base, folded, shape, cfg.final_latency_batches,
                                                   repeats=cfg.latency_repeats, threads=cfg.latency_threads)]
        if base_folded is not None:
            final["latency_vs_base_folded"] = [
                dict(batch_size=p.batch_size, base_ms=p.base_ms, folded_ms=p.pruned_ms, speedup=p.speedup)
                for p in latency_pairs(base_folded, folded, shape, cfg.final_latency_batches,
                                       repeats=cfg.latency_repeats, threads=cfg.latency_threads)]
    state = folder.read_state() or {}
    state["final"] = final
    folder.write_state(state)
    result.folded, result.final = folded, final
    if report:
        write_report(folder.path, state)
    return result


# ------------------------------------------------------------------ EASIER and the random baseline

def easier(model: nn.Module, data: DataBundle, cfg: EasierConfig | None = None,
           out_dir: str | Path = "runs/easier") -> DepthResult:
    """Run (or resume) EASIER on ``model`` (not modified); returns the best
    step's model, folded, with the rows and the final measurements."""
    cfg = cfg or EasierConfig()

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

    result = run_steps(model, data, cfg, out_dir, "easier", entropy_fn=entropy_fn, step_fn=step_fn, more_fn=more_fn)
    return finish(result, data, cfg)


def random_removal(model: nn.Module, data: DataBundle, counts: list[int], cfg: DepthConfig | None = None,
                   out_dir: str | Path = "runs/random", seed: int = 0) -> DepthResult:
    """The comparison row: step k removes ``counts[k-1]`` rectifiers chosen at
    random (seeded), with the same fine-tuning as EASIER; no stop rule."""
    cfg = dataclasses.replace(cfg or DepthConfig(), tolerance=None)

    def entropy_fn(m: nn.Module) -> dict[str, float]:
        return state_entropies(m, data.train_x, cfg.entropy_batch_size, cfg.entropy_batches)

    def step_fn(m, rows, step, ckpt):
        alive = list(rectifiers(m))
        names = random.Random(seed * 100003 + step).sample(alive, min(counts[step - 1], len(alive)))
        names = [n for n in alive if n in names]                                # forward order
        remove_rectifiers(m, names)
        info = finetune(m, data, cfg, step, ckpt)
        return m, {"removed": names, "entropies": entropy_fn(m), **info}

    def more_fn(m, rows):
        if len(rows) > len(counts):
            return f"removed {sum(counts)} random rectifiers"
        return None if rectifiers(m) else "no rectifier left"

    result = run_steps(model, data, cfg, out_dir, f"random-{seed}", entropy_fn=entropy_fn, step_fn=step_fn,
                       more_fn=more_fn)
    return finish(result, data, cfg, report=False)


def comparison_row(result: DepthResult, label: str) -> dict[str, Any]:
    """One row for the comparison table of a report."""
    f = result.final
    return {"label": label, "rectifiers_removed": f.get("rectifiers_removed"), "val_acc": f.get("val_acc"),
            "test_acc": f.get("test_acc"), "macs_after": f.get("macs_after"),
            "conv_linear_after": f.get("conv_linear_after"),
            "speedup_b1": next((p["speedup"] for p in f.get("latency", []) if p["batch_size"] == 1), None)}
