"""What every method reports (METHODS.md, last section): MACs, parameters,
latency, accuracy and depth before and after, as one ``ModelSummary`` per
model and a before/after table."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch.nn as nn

from ..data import DataBundle
from ..measure import count_depth, count_macs, count_params, latency_pairs
from ..training import evaluate
from .tables import markdown_table


@dataclass
class ModelSummary:
    macs: int
    params: int
    nonlinear: int
    conv_linear: int     # Conv and Linear layers (count_depth)
    val_acc: float
    test_acc: float

    def to_dict(self) -> dict:
        return asdict(self)


def summarize(model: nn.Module, data: DataBundle) -> ModelSummary:
    shape = tuple(data.train_x.shape[1:])
    depth = count_depth(model)
    return ModelSummary(count_macs(model, shape), count_params(model), depth.nonlinear, depth.conv_linear,
                        evaluate(model, data.val_x, data.val_y), evaluate(model, data.test_x, data.test_y))


def latency_dict(base: nn.Module, pruned: nn.Module, data: DataBundle, repeats: int = 30) -> dict:
    """``{"bs1": {...}, "bs64": {...}}`` of base/pruned median ms and speedup."""
    pairs = latency_pairs(base, pruned, tuple(data.train_x.shape[1:]), (1, 64), repeats=repeats)
    return {f"bs{p.batch_size}": {"base_ms": p.base_ms, "pruned_ms": p.pruned_ms, "speedup": p.speedup}
            for p in pairs}


def before_after_table(before: ModelSummary, after: ModelSummary, latency: dict | None = None,
                       finetuned: ModelSummary | None = None) -> str:
    rows = [
        ["MACs", before.macs, after.macs, f"{before.macs / after.macs:.2f}x fewer"],
        ["parameters", before.params, after.params, f"{before.params / after.params:.2f}x fewer"],
        ["nonlinear layers", before.nonlinear, after.nonlinear, ""],
        ["conv/linear layers", before.conv_linear, after.conv_linear, ""],
    ]
    for key, lat in (latency or {}).items():
        rows.append([f"latency {key} (ms)", lat["base_ms"], lat["pruned_ms"], f"{lat['speedup']:.2f}x faster"])
    rows.append(["val accuracy (%)", before.val_acc, after.val_acc, f"{after.val_acc - before.val_acc:+.2f}"])
    rows.append(["test accuracy (%)", before.test_acc, after.test_acc, f"{after.test_acc - before.test_acc:+.2f}"])
    if finetuned is not None:
        rows.append(["val acc. fine-tuned (%)", before.val_acc, finetuned.val_acc,
                     f"{finetuned.val_acc - before.val_acc:+.2f}"])
        rows.append(["test acc. fine-tuned (%)", before.test_acc, finetuned.test_acc,
                     f"{finetuned.test_acc - before.test_acc:+.2f}"])
    return markdown_table(["", "before", "after", "change"], rows)
