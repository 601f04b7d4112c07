"""``entroprune fold``: merge the linear neighbours of a model (BatchNorm into
convolutions, chains of layers with no nonlinearity between them, residual
additions into convolutions), as described in ``entroprune/depth/fold.py``
(METHODS.md sections 4 and 5)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import torch
import typer

from ..depth import FoldConfig, FoldError, fold, summarize
from ..io import save
from ..io.atomic import atomic_write_json
from ..training import evaluate
from .common import check_output, fail, get_data, get_model, parse_shape, set_threads
from .options import DataDir, Dataset, Seed, Threads


def fold_cmd(
    model: str = typer.Argument(..., help="model file, pretrained:NAME or zoo name"),
    out: Path = typer.Option(..., "--out", "-o", help="folded model file"),
    force: bool = typer.Option(False, "--force", help="merge even when a merge raises MACs"),
    bn_only: bool = typer.Option(False, "--bn-only", help="only fold BatchNorm into convolutions"),
    skips: bool = typer.Option(True, "--skips/--no-skips", help="fold residual additions into convolutions"),
    dead: bool = typer.Option(True, "--dead/--no-dead", help="emptied layers (all weights zero) -> their "
                              "bias, and the computation only they consumed removed; ties the model to "
                              "the input size"),
    input_shape: str = typer.Option("1,28,28", help="C,H,W of one input (without --evaluate)"),
    evaluate_acc: bool = typer.Option(False, "--evaluate", help="test accuracy before and after (loads data)"),
    examples: int = typer.Option(64, min=1, help="example images the deviation is measured on"),
    report: Optional[Path] = typer.Option(None, help="write the fold report as JSON"),
    dataset: Dataset = "fashion_mnist",
    data_dir: DataDir = None,
    seed: Seed = 0,
    threads: Threads = None,
) -> None:
    """Fold BatchNorm, linear chains and emptied layers left by depth reduction into fewer layers."""
    set_threads(threads)
    check_output(out, folder=False)
    if report is not None:
        check_output(report, folder=False)
    shape = None if evaluate_acc else parse_shape(input_shape)
    data = get_data(dataset, data_dir) if evaluate_acc else None
    net = get_model(model, data)
    if data is not None:
        idx = torch.randperm(data.val_x.shape[0], generator=torch.Generator().manual_seed(seed))[:examples]
        x = data.val_x[idx]                                             # (examples, C, H, W) real images
    else:
        x = torch.randn(examples, *shape, generator=torch.Generator().manual_seed(seed))
    cfg = FoldConfig(merge_chains=not bn_only, merge_skips=skips and not bn_only, fold_dead=dead and not bn_only,
                     force=force)
    try:
        folded, rep = fold(net, x, cfg)
    except (FoldError, RuntimeError) as e:
        fail(f"cannot fold {model}: {e}")
    info = {"folded_from": model}
    if data is not None:
        info["test_acc_before"] = evaluate(net, data.test_x, data.test_y)
        info["test_acc"] = evaluate(folded, data.test_x, data.test_y)
    save(folded, out, info=info)
    if report is not None:
        atomic_write_json(report, rep)
    typer.echo(summarize(rep))
    typer.echo(json.dumps({"out": str(out), "conv_linear": [rep["conv_linear_before"], rep["conv_linear_after"]],
                           "macs_ratio": round(rep["macs_ratio"], 4),
                           "max_abs_deviation": rep["max_abs_deviation"],
                           "merged": len(rep["merges"]), "skipped": len(rep["skipped"]),
                           **{k: round(v, 2) for k, v in info.items() if k.startswith("test_acc")}}))
