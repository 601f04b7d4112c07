"""The resumable step loop and run folder that EASIER and NEPENTHE share
(docs/METHODS.md sections 4 and 5: "Files", the stop rule, "Our choice,
budget" and "measuring").

``run_steps`` repeats ``step_fn`` (the method's own change of the model and
its fine-tuning) until the tolerance rule or the method's ``more_fn`` says
stop; every finished step is measured (``measure_step``: validation accuracy,
MACs, depth, folded when ``fold_steps``, batch-1 latency ratio) and saved. It
returns a ``DepthResult``; folding the best model, the final measurements and
the report are the caller's (``entroprune.reporting.depth_report.finish_run``).

The run folder (``RunFolder``) is resumable: ``state.json`` lists the
finished steps (row 0 is the starting model), ``step_NNN.safetensors`` is the
model after step NNN, ``step_NNN.ckpt`` is the fine-tune checkpoint of a step
in progress (train()'s own resume). A rerun skips finished steps and gives the
same rows; changed settings are refused, except ``RESUMABLE_CHANGES``. A job
holds the folder's OS lock (``RunFolder.locked``) while it runs.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ..data import DataBundle
from ..entropy import RectifierStats, rectifiers
from ..io import atomic_write_json, load, save
from ..io.lock import RunLock
from ..io.model_file import record_step
from ..measure import count_depth, count_macs, latency_pairs
from ..training import TrainConfig, evaluate, train
from .fold import fold
from .fold_layers import FoldError

# config fields that may change between a run and its resumption
RESUMABLE_CHANGES = ("max_removals", "max_rounds", "latency", "latency_repeats", "latency_threads", "progress",
                     "final_latency_batches")
# what every step row of state.json holds (read back when a run resumes)
ROW_FIELDS = ("step", "removed", "val_acc")
_HELD: set[Path] = set()               # run folders whose lock this process holds


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
class DepthResult:
    method: str
    rows: list[dict[str, Any]]          # row 0 = starting model, row k = after step k
    best_step: int                      # last step within tolerance
    stop_reason: str
    model: nn.Module                    # the model of best_step
    folded: nn.Module | None = None     # best model folded (set by reporting.depth_report.finish_run)
    final: dict[str, Any] = field(default_factory=dict)   # final measurements (finish_run)
    out_dir: Path = Path(".")


# ------------------------------------------------------------------ what both methods measure and change

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


def remove_rectifiers(model: nn.Module, names: list[str]) -> None:
    """Replace the named rectifier modules by ``nn.Identity``, in place."""
    for name in names:
        model.set_submodule(name, nn.Identity())


# ------------------------------------------------------------------ step helpers

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


def step_line(method: str, row: dict[str, Any]) -> str:
    """``easier step 2: removed layer1.1.relu2 | val 93.62% | MACs folded 31.02M | 110 s``."""
    parts = [f"removed {', '.join(row['removed']) or 'no rectifier'}"]
    if "sparsity" in row:
        parts.append(f"weight sparsity {100 * row['sparsity']:.1f}%")
    parts.append(f"val {row['val_acc']:.2f}%")
    if "macs_folded" in row:
        parts.append(f"MACs folded {row['macs_folded'] / 1e6:.2f}M")
    if "seconds" in row:
        parts.append(f"{row['seconds']:.0f} s")
    return f"{method} step {row['step']}: " + " | ".join(parts)


def _progress(cfg: DepthConfig, method: str, row: dict[str, Any]) -> None:
    if cfg.progress:  # one line per step on stderr, so a long run is not silent
        print(step_line(method, row), file=sys.stderr, flush=True)


def _config_doc(cfg: DepthConfig) -> dict[str, Any]:
    return json.loads(json.dumps(asdict(cfg)))


# ------------------------------------------------------------------ the run folder and the loop

class RunFolder:
    """``state.json`` and the per-step model files of a depth-reduction run."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.state_path = self.path / "state.json"

    @contextmanager
    def locked(self) -> Iterator[RunFolder]:
        """Hold the folder's OS lock (``io.lock.RunLock``) while a job uses it;
        re-entrant within this process (the CLI holds it around a run, the run
        and its report take it again)."""
        key = self.path.resolve()
        if key in _HELD:
            yield self
            return
        with RunLock(self.path):
            _HELD.add(key)
            try:
                yield self
            finally:
                _HELD.discard(key)

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
        for i, row in enumerate(state["rows"]):
            bad = [k for k in ROW_FIELDS if not isinstance(row, dict) or k not in row]
            if bad or not isinstance(row["val_acc"], (int, float)):
                lacks = ", ".join(bad) or "a numeric val_acc"
                raise ValueError(f"{self.state_path} is damaged (step row {i} lacks {lacks}); delete it (or pass "
                                 "--restart) to start the run over")
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


def run_steps(model: nn.Module, data: DataBundle, cfg: DepthConfig, out_dir: str | Path, method: str, *,
              entropy_fn: Callable[[nn.Module], dict[str, float]], step_fn: StepFn,
              more_fn: Callable[[nn.Module, list[dict[str, Any]]], str | None]) -> DepthResult:
    """The resumable loop: ``step_fn(model, rows, step, ckpt)`` changes and
    fine-tunes the model and returns it with the row's method columns (at
    least ``removed`` and ``entropies``); ``more_fn(model, rows)`` gives a
    reason to stop, or None. The tolerance rule is checked before each step.
    ``model`` is not modified; the folder is locked while the loop runs."""
    folder = RunFolder(out_dir)
    with folder.locked():
        return _run(folder, model, data, cfg, method, entropy_fn, step_fn, more_fn)


def _run(folder: RunFolder, model: nn.Module, data: DataBundle, cfg: DepthConfig, method: str,
         entropy_fn: Callable[[nn.Module], dict[str, float]], step_fn: StepFn,
         more_fn: Callable[[nn.Module, list[dict[str, Any]]], str | None]) -> DepthResult:
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
        record_step(model, model, {"op": method, "step": step, "removed": row["removed"], "val_acc": row["val_acc"]})
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
