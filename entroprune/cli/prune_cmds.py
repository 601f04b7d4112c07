"""``entroprune prune``, ``finetune``, ``info`` and ``demo``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from ..io import save
from ..measure import count_depth, count_macs, count_params, layer_costs
from ..pipeline import JobConfig, prune_step, run_prune_job
from ..pruning import CRITERIA, PruningError, parse_macs_target
from ..reporting import markdown_table
from ..training import TrainConfig, evaluate, train
from .common import fail, get_data, get_model, input_shape_of, set_threads


def _target(text: str) -> float:
    try:
        return parse_macs_target(text)
    except PruningError as e:
        fail(str(e))
        raise


def prune_cmd(
    model: str = typer.Argument("pretrained:resnet20", help="model file, pretrained:NAME or zoo name"),
    target_macs: str = typer.Option("2x", help="'5x' = 5 times fewer MACs; 0.2 = keep 20%"),
    method: str = typer.Option("l1", help=f"channel criterion: {', '.join(sorted(CRITERIA))}"),
    scope: str = typer.Option("global", help="global ranking or uniform per-layer ratio"),
    min_keep: float = typer.Option(0.1, help="every layer keeps at least this fraction of its channels"),
    min_channels: int = typer.Option(1, help="... and at least this many channels"),
    tolerance: float = typer.Option(0.02, help="relative tolerance on the MACs target"),
    finetune_epochs: int = typer.Option(0, help="fine-tune after pruning (then a report is written)"),
    report: Optional[Path] = typer.Option(None, help="write a report folder (implies evaluation)"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="pruned model file"),
    dataset: str = typer.Option("fashion_mnist"),
    data_dir: Optional[str] = typer.Option(None),
    seed: int = typer.Option(0),
    threads: Optional[int] = typer.Option(None),
) -> None:
    """Remove channels to a MACs target; optionally fine-tune and report."""
    set_threads(threads)
    target = _target(target_macs)
    if method not in CRITERIA:
        fail(f"unknown --method {method!r}; choose one of {', '.join(sorted(CRITERIA))}")
    if scope not in ("global", "uniform"):
        fail(f"--scope must be 'global' or 'uniform', got {scope!r}")
    if not 0.0 <= min_keep < 1.0 or min_channels < 1 or not 0.0 < tolerance < 0.5:
        fail("--min-keep must be in [0, 1), --min-channels >= 1 and --tolerance in (0, 0.5)")
    data = get_data(dataset, data_dir)
    net = get_model(model, data)
    cfg = JobConfig(method=method, target_macs=target, scope=scope, min_keep=min_keep,
                    min_channels=min_channels, tolerance=tolerance, finetune_epochs=finetune_epochs, seed=seed)
    try:
        if report is not None or finetune_epochs > 0:
            folder = report or Path("runs") / f"prune-{method}-{target_macs}-{scope}-s{seed}"
            result = run_prune_job(net, data, cfg, folder, label=model)
            typer.echo(result["table"])
            typer.echo(f"report: {folder}/report.md")
            if out is not None:
                Path(out).write_bytes((Path(folder) / "model.safetensors").read_bytes())
            return
        pruned, rep, _ = prune_step(net, data, cfg)     # the job's seeded pruning, no fine-tuning
    except PruningError as e:
        fail(str(e))
        raise
    acc = evaluate(pruned, data.val_x, data.val_y)
    path = out or Path(f"pruned-{method}.safetensors")
    save(pruned, path, info={"val_acc_after_prune": acc})
    typer.echo(json.dumps({"out": str(path), "macs_ratio": round(rep["macs_ratio"], 3),
                           "params_ratio": round(rep["params_before"] / rep["params_after"], 3),
                           "val_acc": round(acc, 2), "seconds": round(rep["seconds"], 1)}))


def finetune_cmd(
    model: str = typer.Argument(..., help="model file to fine-tune"),
    out: Path = typer.Option(..., "--out", "-o"),
    epochs: int = typer.Option(10),
    lr: float = typer.Option(0.01),
    dataset: str = typer.Option("fashion_mnist"),
    data_dir: Optional[str] = typer.Option(None),
    seed: int = typer.Option(0),
    threads: Optional[int] = typer.Option(None),
) -> None:
    """Fine-tune a (pruned) model; checkpointed and resumable like train."""
    set_threads(threads)
    data = get_data(dataset, data_dir)
    net = get_model(model, data)
    try:
        train(net, data, TrainConfig(epochs=epochs, lr=lr, seed=seed),
              checkpoint=out.with_suffix(out.suffix + ".ckpt"))
    except ValueError as e:
        fail(str(e))
    test = evaluate(net, data.test_x, data.test_y)
    save(net, out, info={"test_acc": test, "finetune_epochs": epochs})
    out.with_suffix(out.suffix + ".ckpt").unlink(missing_ok=True)
    typer.echo(json.dumps({"out": str(out), "test_acc": round(test, 2)}))


def info_cmd(
    model: str = typer.Argument(..., help="model file, pretrained:NAME or zoo name"),
    input_shape: str = typer.Option("1,28,28", help="C,H,W of one input image"),
    runtime: Optional[str] = typer.Option(None, help="also measure latency in: onnxruntime, torch or both"),
    threads: int = typer.Option(1, help="threads of the latency measurement"),
    batch: int = typer.Option(1, help="batch size of the latency measurement"),
    repeats: int = typer.Option(30, help="timed runs of the latency measurement (median)"),
) -> None:
    """Per-layer table of a model: shape, output size, MACs, parameters; depth; latency with --runtime."""
    net = get_model(model)
    shape = input_shape_of(net, input_shape)
    rows = layer_costs(net, shape)
    total = sum(r.macs for r in rows)
    table = markdown_table(["layer", "type", "shape", "output", "MACs", "% MACs", "params"],
                           [[r.name, r.kind, r.shape, "x".join(map(str, r.out_shape)), r.macs,
                             100.0 * r.macs / max(1, total), r.params] for r in rows])
    typer.echo(table)
    d = count_depth(net)
    typer.echo(f"\ntotal: {count_macs(net, shape):,} MACs, {count_params(net):,} parameters; depth: {d}")
    for step in getattr(net, "entroprune_history", []):
        ratio = f" {step['macs_ratio']:.2f}x fewer MACs" if "macs_ratio" in step else ""
        typer.echo(f"history: {step.get('op')} {step.get('criterion', '')}{ratio}".rstrip())
    if runtime is None:
        return
    from ..measure import get_runtime, time_models  # both runtimes are timed interleaved, run by run
    from ..measure.runtime import RUNTIMES

    if runtime not in (*RUNTIMES, "both"):
        fail(f"unknown --runtime {runtime!r}: choose one of {', '.join(RUNTIMES)} or both")
    if threads < 1 or batch < 1 or repeats < 1:
        fail("--threads, --batch and --repeats must be >= 1")
    names = list(RUNTIMES) if runtime == "both" else [runtime]
    try:
        rts = [get_runtime(n, threads) for n in names]
        medians = time_models([rt.runner(net, shape, batch) for rt in rts], repeats=repeats, warmup=5)
    except ImportError as e:      # onnx / onnxruntime missing: the message says what to install
        fail(str(e))
    for rt, ms in zip(rts, medians):
        typer.echo(f"latency ({rt.name} {rt.version}, {threads} thread{'s' if threads > 1 else ''}, batch {batch}): "
                   f"{ms:.3f} ms, median of {repeats} runs")
