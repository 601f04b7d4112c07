"""Training and evaluation: SGD with momentum, cosine schedule, light
augmentation, a checkpoint after every epoch, resume after interruption, and
data-parallel training under ``torchrun`` (DDP; gloo on CPU, NCCL on CUDA).

A checkpoint holds model and optimiser state, the finished epoch, the
history and the run's fingerprint (every training setting, the data set and
split, the starting weights, the teacher), written atomically; ``train``
called again with the same checkpoint path continues after the last finished
epoch, so no finished epoch is lost, but only when the fingerprint matches:
another run's checkpoint (other settings, data, starting weights or
architecture) is refused with an error naming what differs.

Knowledge distillation (docs/METHODS.md section 9; G. Hinton, O. Vinyals,
J. Dean, "Distilling the Knowledge in a Neural Network", arXiv 1503.02531):
with a ``teacher`` (the unpruned model), the loss is
``(1 - a) * CE(student, labels) + a * T^2 * KL(softmax(teacher / T) || softmax(student / T))``
with ``a = distill_weight`` and ``T = distill_temperature``; the teacher's
logits are computed on the fly on the same augmented batch.

A non-finite loss stops training at once (``TrainingDiverged``): the last
good checkpoint is kept and the message suggests a lower learning rate.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from ..data import DataBundle, iterate_batches, num_batches
from ..errors import first_line
from ..io import atomic_torch_save
from ..io.fingerprint import check_fingerprint, data_digest, weights_digest
from . import distributed as dist_utils


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    nesterov: bool = True
    warmup_epochs: float = 0.0     # linear warm-up before the cosine decay
    augment: bool = True           # random crop (pad 2) + horizontal flip
    label_smoothing: float = 0.0
    distill_weight: float = 0.7    # with a teacher: weight of the soft-target term
    distill_temperature: float = 4.0
    seed: int = 0
    progress: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        checks = [("epochs", self.epochs >= 1, ">= 1"), ("batch_size", self.batch_size >= 1, ">= 1"),
                  ("lr", math.isfinite(self.lr) and self.lr > 0, "a finite number > 0"),
                  ("momentum", 0.0 <= self.momentum < 1.0, "in [0, 1)"),
                  ("weight_decay", math.isfinite(self.weight_decay) and self.weight_decay >= 0, ">= 0"),
                  ("warmup_epochs", 0.0 <= self.warmup_epochs <= self.epochs, "in [0, epochs]"),
                  ("label_smoothing", 0.0 <= self.label_smoothing < 1.0, "in [0, 1)"),
                  ("distill_weight", 0.0 <= self.distill_weight <= 1.0, "in [0, 1]"),
                  ("distill_temperature", math.isfinite(self.distill_temperature)
                   and self.distill_temperature > 0, "> 0")]
        for name, ok, rule in checks:
            if not ok:
                raise ValueError(f"training setting {name}={getattr(self, name)!r} must be {rule}")

    def fingerprint(self) -> dict[str, Any]:
        """The settings that determine the result (not the progress display)."""
        d = asdict(self)
        d.pop("progress")
        return d


class TrainingDiverged(ValueError):
    """The loss became NaN or infinite."""


def lr_at(step: int, total: int, cfg: TrainConfig, steps_per_epoch: int) -> float:
    """Cosine decay from ``cfg.lr`` to 0 over ``total`` steps, after warm-up."""
    warm = int(cfg.warmup_epochs * steps_per_epoch)
    if step < warm:
        return cfg.lr * (step + 1) / warm
    progress = (step - warm) / max(1, total - warm)
    return 0.5 * cfg.lr * (1.0 + math.cos(math.pi * progress))


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 500) -> float:
    """Top-1 accuracy in percent of ``model`` (set to eval mode) on ``(x, y)``."""
    was_training = model.training
    model.eval()
    correct = 0
    for xb, yb in iterate_batches(x, y, batch_size):
        correct += int((model(xb).argmax(1) == yb).sum())
    model.train(was_training)
    return 100.0 * correct / max(1, y.numel())


def _make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    # no weight decay on BatchNorm and bias parameters (1-D tensors)
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov)


def architecture_signature(state_dict: dict[str, Any]) -> str:
    """sha256 of the sorted (name, shape) pairs of a state dict: equal exactly
    when one model's weights fit the other's, whatever their values."""
    pairs = sorted((k, tuple(getattr(v, "shape", ()))) for k, v in state_dict.items())
    return hashlib.sha256(repr(pairs).encode()).hexdigest()


def _first_difference(saved: dict[str, Any], current: dict[str, Any]) -> str:
    """A short description of where two state dicts' shapes first differ."""
    for name in sorted(saved.keys() | current.keys()):
        if name not in current:
            return f"{name} is in the checkpoint but not in the model"
        if name not in saved:
            return f"{name} is in the model but not in the checkpoint"
        a, b = tuple(getattr(saved[name], "shape", ())), tuple(getattr(current[name], "shape", ()))
        if a != b:
            return f"{name} has shape {a} there but {b} here"
    return "same shapes, but another architecture signature"


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor, cfg: TrainConfig
                      ) -> torch.Tensor:
    """Hinton's loss: label cross-entropy and the KL divergence of the
    temperature-softened distributions (scaled by T^2 so that its gradients keep
    their size as T changes); logits (B, K)."""
    t = cfg.distill_temperature
    soft = F.kl_div(F.log_softmax(student / t, 1), F.log_softmax(teacher / t, 1), log_target=True,
                    reduction="batchmean") * t * t
    hard = F.cross_entropy(student, labels, label_smoothing=cfg.label_smoothing)
    return (1 - cfg.distill_weight) * hard + cfg.distill_weight * soft


def run_fingerprint(model: nn.Module, data: DataBundle, cfg: TrainConfig, teacher: nn.Module | None
                    ) -> dict[str, Any]:
    """What must match for a checkpoint to be resumed: settings, data, starting
    weights (the model as passed in, before any epoch) and the teacher."""
    return {"config": cfg.fingerprint(), "data": data_digest(data), "start_weights": weights_digest(model),
            "teacher": weights_digest(teacher) if teacher is not None else None}


def _check_architecture(state: dict[str, Any], model: nn.Module, path: Path) -> None:
    """Refuse a checkpoint of another architecture before load_state_dict
    fails with a raw "size mismatch"; old checkpoints have no signature, so
    the signature of their saved weights stands in for it."""
    current = model.state_dict()
    saved_sig = state.get("architecture") or architecture_signature(state["model"])
    if saved_sig == architecture_signature(current):
        return
    raise ValueError(f"checkpoint {path} was written for a different model "
                     f"({_first_difference(state['model'], current)}), e.g. another pruning "
                     "into the same report folder; delete it or choose another output/report folder")


def _load_checkpoint(path: Path) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated, foreign or not a torch file: name it
        raise ValueError(f"checkpoint {path} cannot be read ({first_line(e, 120)}); "
                         "delete it (or pass --restart) to start over") from None


def train(model: nn.Module, data: DataBundle, cfg: TrainConfig, checkpoint: str | Path | None = None,
          teacher: nn.Module | None = None, restart: bool = False) -> list[dict[str, Any]]:
    """Train ``model`` in place on ``data.train``; returns the per-epoch history.

    With ``checkpoint``, state is saved after each epoch and an existing
    checkpoint of the same run is resumed from (``restart`` discards it). With
    ``teacher``, the loss distils its logits. Under torchrun, every process
    calls this; rank 0 writes the checkpoint.
    """
    rank, world = dist_utils.setup()
    fingerprint = run_fingerprint(model, data, cfg, teacher)
    torch.manual_seed(cfg.seed)
    opt = _make_optimizer(model, cfg)
    history: list[dict[str, Any]] = []
    start_epoch = 0
    ckpt_path = Path(checkpoint) if checkpoint else None
    if ckpt_path is not None and restart and rank == 0:
        ckpt_path.unlink(missing_ok=True)
    if ckpt_path is not None and ckpt_path.exists():
        state = _load_checkpoint(ckpt_path)
        _check_architecture(state, model, ckpt_path)
        check_fingerprint(state.get("fingerprint"), fingerprint, f"checkpoint {ckpt_path}")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start_epoch, history = state["epoch"], state["history"]
        if rank == 0:
            print(f"resuming from {ckpt_path} after epoch {start_epoch}" if start_epoch < cfg.epochs else
                  f"reusing the finished run in {ckpt_path} ({start_epoch} epochs, same settings)", flush=True)
    if teacher is not None:
        teacher.eval()
    net = dist_utils.wrap(model)
    steps = num_batches(data.train_x.shape[0], cfg.batch_size, world)
    total = steps * cfg.epochs
    for epoch in range(start_epoch, cfg.epochs):
        t0 = time.time()
        net.train()
        loss_sum, correct, seen = 0.0, 0, 0
        batches = iterate_batches(data.train_x, data.train_y, cfg.batch_size, shuffle=True,
                                  augment_images=cfg.augment, seed=cfg.seed * 1000 + epoch,
                                  rank=rank, world_size=world)
        bar = tqdm(batches, total=steps, desc=f"epoch {epoch + 1}/{cfg.epochs}",
                   disable=not cfg.progress or rank != 0, leave=False)
        for i, (xb, yb) in enumerate(bar):
            lr = lr_at(epoch * steps + i, total, cfg, steps)
            for g in opt.param_groups:
                g["lr"] = lr
            out = net(xb)                                                  # (B, K) logits
            if teacher is None:
                loss = F.cross_entropy(out, yb, label_smoothing=cfg.label_smoothing)
            else:
                with torch.no_grad():
                    soft = teacher(xb)                                     # (B, K)
                loss = distillation_loss(out, soft, yb, cfg)
            if not torch.isfinite(loss):
                kept = f"the checkpoint {ckpt_path} keeps epoch {epoch}" if ckpt_path is not None and epoch else \
                    "no epoch finished"
                raise TrainingDiverged(f"the training loss became {float(loss)} at epoch {epoch + 1}, step {i + 1} "
                                       f"(lr {lr:.3g}); {kept}. Try a lower learning rate (--lr).")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += loss.item() * yb.numel()
            correct += int((out.argmax(1) == yb).sum())
            seen += yb.numel()
            if i % 20 == 0:
                bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{100 * correct / seen:.1f}")
        row = {"epoch": epoch + 1, "train_loss": loss_sum / max(1, seen),
               "train_acc": 100.0 * correct / max(1, seen),
               "val_acc": evaluate(model, data.val_x, data.val_y), "lr_end": lr,
               "seconds": time.time() - t0, "world_size": world}
        history.append(row)
        if rank == 0:
            if cfg.progress:
                print(f"epoch {row['epoch']}/{cfg.epochs}: loss {row['train_loss']:.4f} "
                      f"train {row['train_acc']:.2f}% val {row['val_acc']:.2f}% "
                      f"({row['seconds']:.0f}s)", flush=True)
            if ckpt_path is not None:
                atomic_torch_save({"model": model.state_dict(), "optimizer": opt.state_dict(),
                                   "epoch": epoch + 1, "history": history,
                                   "config": asdict(cfg), "fingerprint": fingerprint,
                                   "architecture": architecture_signature(model.state_dict())},
                                  ckpt_path)
        dist_utils.barrier()
    dist_utils.assert_in_sync(model)
    return history
