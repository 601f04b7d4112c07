"""A sweep of generalized entropic sparsification (docs/METHODS.md section 6):
one ``sparsify`` per value of eps_E (or of the per-layer channel target), each
scored on the validation split, so that a user sees how far sparsity can go
before accuracy falls. Plotting lives in ``reporting/sparsify_plots.py``."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch.nn as nn

from ..data import DataBundle
from ..training import evaluate
from .layerwise import SparsifyConfig, sparsify

SWEEP_OVER = ("eps_e", "target")


def sweep_configs(cfg: SparsifyConfig, over: str, values: list[float]) -> list[SparsifyConfig]:
    """``cfg`` with eps_E (``over="eps_e"``) or the channel target (``"target"``) set to each value."""
    if over not in SWEEP_OVER:
        raise ValueError(f"a sweep varies one of {', '.join(SWEEP_OVER)}, not {over!r}")
    if over == "eps_e":
        return [replace(cfg, solver=replace(cfg.solver, eps_e=v)) for v in values]
    return [replace(cfg, target=v) for v in values]


def sparsify_sweep(model: nn.Module, data: DataBundle, cfg: SparsifyConfig, over: str, values: list[float],
                   calib_images: int = 2048, seed: int = 0, on_row: Any = None) -> list[dict[str, Any]]:
    """One row per value: sparsity reached, MACs, parameters and validation accuracy
    (not fine-tuned). ``on_row(row)`` is called as each row finishes."""
    calib = data.calibration(calib_images, seed=seed)                   # (n, C, H, W), training split
    rows = []
    for value, c in zip(values, sweep_configs(cfg, over, values)):
        small, rep = sparsify(model, calib, c)
        row = {over: value, "channel_sparsity": rep["channel_sparsity"], "weight_sparsity": rep["weight_sparsity"],
               "macs_ratio": rep["macs_ratio"], "params_after": rep["params_after"], "macs_after": rep["macs_after"],
               "val_acc": evaluate(small, data.val_x, data.val_y), "seconds": rep["seconds"]}
        rows.append(row)
        if on_row is not None:
            on_row(row)
    return rows
