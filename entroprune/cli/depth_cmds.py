"""``entroprune depth``: depth reduction by neuron-state entropy, EASIER
(Quetu et al., arXiv 2404.18949) or NEPENTHE (Liao et al., arXiv 2404.16890),
METHODS.md sections 4 and 5; implemented in ``entroprune/depth/easier.py``
and ``entroprune/depth/nepenthe.py`` (the random baseline in
``random_baseline.py``), finished and reported by
``entroprune/reporting/depth_report.py``. The run folder is resumable: rerun
the same command to continue after an interruption."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from ..depth.easier import EasierConfig, easier
from ..depth.nepenthe import NepentheConfig, nepenthe
from ..depth.random_baseline import random_removal
from ..depth.runner import RunFolder
from ..reporting.depth_report import add_random_comparison, finish_run
from ..training import TrainConfig
from .common import check_number, check_output, fail, get_data, get_model, set_threads
from .options import DataDir, Dataset, Epochs, Lr, Restart, Seed, Threads

METHODS = ("easier", "nepenthe")


def depth_cmd(
    model: str = typer.Argument("pretrained:resnet20", help="model file, pretrained:NAME or zoo name"),
    method: str = typer.Option("easier", help="easier (remove rectifiers) or nepenthe (prune weights)"),
    out: Path = typer.Option(Path("runs/depth"), "--out", "-o", help="run folder (rerun to resume)"),
    tolerance: float = typer.Option(0.5, help="stop when val accuracy falls more than this many points (>= 0)"),
    max_removals: Optional[int] = typer.Option(None, min=1, help="easier: stop after this many rectifiers"),
    max_rounds: int = typer.Option(10, min=1, help="nepenthe: at most this many rounds"),
    epochs: Epochs = 1,
    lr: Lr = 0.01,
    train_limit: Optional[int] = typer.Option(None, min=1, help="fine-tune each step on this many training images"),
    entropy_batches: Optional[int] = typer.Option(None, min=1, help="training batches entropies average over "
                                                  "(default: one epoch)"),
    zeta: float = typer.Option(0.5, help="nepenthe: fraction of remaining weights removed per round"),
    temperature: float = typer.Option(1.0, help="nepenthe: softmax temperature of the layer shares"),
    max_layer_fraction: float = typer.Option(1.0, help="nepenthe: per-round cap per layer"),
    random_baseline: bool = typer.Option(False, "--random-baseline",
                                         help="easier: also remove as many random rectifiers (comparison row)"),
    latency: bool = typer.Option(True, "--latency/--no-latency", help="measure CPU latency"),
    dataset: Dataset = "fashion_mnist",
    data_dir: DataDir = None,
    seed: Seed = 0,
    threads: Threads = None,
    restart: Restart = False,
) -> None:
    """Remove rectifiers guided by their ON/OFF entropy, fine-tune, fold; resumable."""
    set_threads(threads)
    if method not in METHODS:
        fail(f"unknown --method {method!r}; choose one of {', '.join(METHODS)}")
    check_number("--tolerance", tolerance, 0)
    check_number("--zeta", zeta, 0, 1, low_open=True, high_open=True)
    check_number("--max-layer-fraction", max_layer_fraction, 0, 1, low_open=True)
    check_number("--temperature", temperature, 0, low_open=True)
    try:
        ft = TrainConfig(epochs=epochs, lr=lr, seed=seed, progress=False)
    except ValueError as e:
        fail(str(e))
    check_output(out, folder=True)
    data = get_data(dataset, data_dir, seed=seed)
    net = get_model(model, data)
    common = dict(tolerance=tolerance, finetune=ft, train_limit=train_limit, entropy_batches=entropy_batches,
                  latency=latency, latency_threads=threads or 2, progress=True)
    with RunFolder(out).locked():              # one job per run folder
        if restart:
            for folder in (out, out / "random"):
                RunFolder(folder).clear()
        try:
            if method == "easier":
                cfg = EasierConfig(max_removals=max_removals, **common)
                result = easier(net, data, cfg, out)
            else:
                cfg = NepentheConfig(zeta=zeta, temperature=temperature, max_layer_fraction=max_layer_fraction,
                                     max_rounds=max_rounds, **common)
                result = nepenthe(net, data, cfg, out)
            finish_run(result, data, cfg)     # fold the best step, measure it, write the report
        except ValueError as e:
            fail(str(e))
        if random_baseline and method == "easier" and result.best_step > 0:
            counts = [len(r["removed"]) for r in result.rows[1:result.best_step + 1]]
            rnd = random_removal(get_model(model, data), data, counts, cfg, out / "random", seed=seed)
            add_random_comparison(result, finish_run(rnd, data, cfg, report=False), seed)
    f = result.final
    typer.echo((out / "report.md").read_text())
    typer.echo(json.dumps({"out": str(out), "best_step": result.best_step, "stop_reason": result.stop_reason,
                           "rectifiers_removed": f.get("rectifiers_removed"),
                           "val_acc": [round(f["val_acc_base"], 2), round(f["val_acc"], 2)],
                           "conv_linear": [f.get("conv_linear_before"), f.get("conv_linear_after")],
                           "macs": [f.get("macs_base"), f.get("macs_after")],
                           "folded": str(out / "folded.safetensors")}))
