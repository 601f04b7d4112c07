"""``entroprune sparsify``: generalized entropic sparsification (T. Barisin,
I. Horenko, arXiv 2404.04734; METHODS.md section 6), one run or a sweep of
validation accuracy against sparsity over eps_E values or channel targets
(the sweep itself: ``sparsify/sweep.py``)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Optional

import torch.nn as nn
import typer

from ..data import DataBundle
from ..io import atomic_write_json, save
from ..reporting.sparsify_plots import plot_sweep
from ..sparsify import EntropicConfig, SparsifyConfig, SparsifyError, sparsify
from ..sparsify.sweep import SWEEP_OVER, sparsify_sweep
from ..training import evaluate
from .common import check_number, check_output, fail, get_data, get_model, set_threads
from .options import DataDir, Dataset, Seed, Threads


def _values(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        fail(f"--sweep must be a comma-separated list of numbers such as 0.01,0.003,0.001, got {text!r}")
    if not values:
        fail("--sweep is empty")
    return values


def _run(net: nn.Module, data: DataBundle, cfg: SparsifyConfig, calib_images: int, seed: int):
    try:
        return sparsify(net, data.calibration(calib_images, seed=seed), cfg)
    except SparsifyError as e:
        fail(str(e))


def sparsify_cmd(
    model: str = typer.Argument("pretrained:lenet5", help="model file, pretrained:NAME or zoo name"),
    eps_e: float = typer.Option(0.003, "--eps-e", help="entropy weight eps_E: smaller = sparser"),
    ridge: float = typer.Option(0.5, help="ridge lambda of the solver (relative): larger = sparser"),
    target: Optional[float] = typer.Option(
        None, help="remove this fraction of every layer's input channels (instead of --threshold)"),
    threshold: float = typer.Option(0.1, help="remove channels whose weight is below threshold / C"),
    sweep: Optional[str] = typer.Option(
        None, help="comma list of values of --sweep-over; traces validation accuracy against sparsity"),
    sweep_over: str = typer.Option("eps_e", help="what --sweep varies: eps_e or target"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="sparsified model file (single run)"),
    report: Optional[Path] = typer.Option(
        None, help="folder: report.json (single run) or sweep.json + sweep.png (default runs/sparsify-sweep)"),
    calib_images: int = typer.Option(2048, min=2, help="calibration images from the training split"),
    patches: int = typer.Option(8192, min=1, help="sampled patches per layer"),
    max_iter: int = typer.Option(50, min=1, help="solver iterations per layer"),
    min_keep: float = typer.Option(0.1, help="every layer keeps at least this fraction of its channels"),
    dataset: Dataset = "fashion_mnist",
    data_dir: DataDir = None,
    seed: Seed = 0,
    threads: Threads = None,
) -> None:
    """Remove input channels layer by layer with entropic feature weights and
    refit each layer by least squares (generalized entropic sparsification)."""
    set_threads(threads)
    if sweep_over not in SWEEP_OVER:
        fail(f"--sweep-over must be one of {', '.join(SWEEP_OVER)}, got {sweep_over!r}")
    if sweep is not None and out is not None:
        fail("--out saves one model; a --sweep writes sweep.json and sweep.png to --report")
    if calib_images < 2 or patches < 1 or max_iter < 1:
        fail("--calib-images must be >= 2, --patches and --max-iter >= 1")
    if not (math.isfinite(eps_e) and math.isfinite(ridge) and eps_e > 0 and ridge > 0):
        fail(f"--eps-e (eps_E) and --ridge must be > 0, got {eps_e} and {ridge}")
    if target is not None and not 0.0 <= target < 1.0:
        fail(f"--target {target} must be a fraction of channels to remove in [0, 1)")
    check_number("--threshold", threshold, 0)
    check_number("--min-keep", min_keep, 0, 1)
    values = _values(sweep) if sweep is not None else None
    for v in values or []:
        if sweep_over == "target":
            check_number("every --sweep target", v, 0, 1, high_open=True)
        else:
            check_number("every --sweep eps_E", v, 0, low_open=True)
    if values is None:
        check_output(out or Path("sparsified.safetensors"), folder=False)
        if report is not None:
            check_output(Path(report), folder=True)
    else:
        check_output(Path(report or Path("runs") / "sparsify-sweep"), folder=True)
    data = get_data(dataset, data_dir)
    net = get_model(model, data)

    def config(eps: float, tgt: Optional[float]) -> SparsifyConfig:
        return SparsifyConfig(solver=EntropicConfig(eps_e=eps, ridge=ridge, max_iter=max_iter),
                              threshold=threshold, target=tgt, min_keep=min_keep, n_patches=patches,
                              seed=seed)

    base_acc = evaluate(net, data.val_x, data.val_y)
    if sweep is None:
        small, rep = _run(net, data, config(eps_e, target), calib_images, seed)
        for name, why in rep["skipped"].items():          # which layers GES could not touch, and why
            typer.echo(f"skipped {name}: {why}", err=True)
        if rep["channels_after"] == rep["channels_before"]:
            fail(f"entropic sparsification removed no channel ({len(rep['skipped'])} of {len(rep['layers'])} "
                 "layers skipped, reasons above); lower --eps-e, raise --ridge, or pass --target")
        acc = evaluate(small, data.val_x, data.val_y)
        path = out or Path("sparsified.safetensors")
        save(small, path, info={"val_acc_before": base_acc, "val_acc_after_sparsify": acc})
        if report is not None:
            atomic_write_json(Path(report) / "report.json", {**rep, "val_acc_before": base_acc,
                                                             "val_acc_after": acc})
        typer.echo(json.dumps({"out": str(path), "val_acc_before": round(base_acc, 2),
                               "val_acc": round(acc, 2), "channel_sparsity": round(rep["channel_sparsity"], 4),
                               "weight_sparsity": round(rep["weight_sparsity"], 4),
                               "macs_ratio": round(rep["macs_ratio"], 3), "seconds": round(rep["seconds"], 1)}))
        return
    folder = Path(report or Path("runs") / "sparsify-sweep")
    show = lambda row: typer.echo(json.dumps({k: round(x, 4) if isinstance(x, float) else x  # noqa: E731
                                              for k, x in row.items()}))
    try:
        rows = sparsify_sweep(net, data, config(eps_e, target), sweep_over, values, calib_images, seed, show)
    except SparsifyError as e:
        fail(str(e))
    doc = {"model": model, "sweep_over": sweep_over, "eps_e": eps_e, "ridge": ridge, "target": target,
           "threshold": threshold, "calib_images": calib_images, "patches": patches, "seed": seed,
           "val_acc_before": base_acc, "rows": rows}
    atomic_write_json(folder / "sweep.json", doc)
    plot_sweep(rows, base_acc, sweep_over, folder / "sweep.png", f"entropic sparsification of {model}")
    typer.echo(f"sweep: {folder}/sweep.json, {folder}/sweep.png")
