"""``entroprune finetune`` and ``entroprune info``: a model file fine-tuned, or described."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from ..io import save
from ..measure import count_depth, count_macs, count_params, layer_costs
from ..measure.runtime import RUNTIMES as RUNTIME_NAMES
from ..reporting import markdown_table
from ..training import TrainConfig, evaluate, train
from .common import check_output, fail, get_data, get_model, input_shape_of, output_lock, set_threads
from .options import DataDir, Dataset, DistillTemperature, DistillWeight, Epochs, Lr, Restart, Seed, Threads


def finetune_cmd(
    model: str = typer.Argument(..., help="model file to fine-tune"),
    out: Path = typer.Option(..., "--out", "-o"),
    epochs: Epochs = 10,
    lr: Lr = 0.01,
    distill: Optional[str] = typer.Option(None, help="teacher to distil from: a model file or pretrained:NAME "
                                          "(the unpruned model)"),
    distill_weight: DistillWeight = 0.7,
    distill_temperature: DistillTemperature = 4.0,
    dataset: Dataset = "fashion_mnist",
    data_dir: DataDir = None,
    seed: Seed = 0,
    threads: Threads = None,
    restart: Restart = False,
) -> None:
    """Fine-tune a (pruned) model, optionally distilled from a teacher; checkpointed and resumable like train."""
    set_threads(threads)
    try:
        cfg = TrainConfig(epochs=epochs, lr=lr, seed=seed, distill_weight=distill_weight,
                          distill_temperature=distill_temperature)
    except ValueError as e:
        fail(str(e))
    check_output(out, folder=False)
    with output_lock(out):
        data = get_data(dataset, data_dir)
        net = get_model(model, data)
        teacher = get_model(distill, data) if distill else None
        ckpt = out.with_suffix(out.suffix + ".ckpt")
        try:
            train(net, data, cfg, checkpoint=ckpt, teacher=teacher, restart=restart)
        except ValueError as e:
            fail(str(e))
        test = evaluate(net, data.test_x, data.test_y)
        save(net, out, info={"test_acc": test, "finetune_epochs": epochs, "distilled_from": distill})
        ckpt.unlink(missing_ok=True)
    typer.echo(json.dumps({"out": str(out), "test_acc": round(test, 2)}))


def info_cmd(
    model: str = typer.Argument(..., help="model file, pretrained:NAME or zoo name"),
    input_shape: str = typer.Option("1,28,28", help="C,H,W of one input image"),
    runtime: Optional[str] = typer.Option(None, help="also measure latency in: onnxruntime, torch or both"),
    threads: int = typer.Option(1, min=1, help="threads of the latency measurement"),
    batch: int = typer.Option(1, min=1, help="batch size of the latency measurement"),
    repeats: int = typer.Option(30, min=1, help="timed runs of the latency measurement (median)"),
) -> None:
    """Per-layer table of a model: shape, output size, MACs, parameters; depth; latency with --runtime."""
    if runtime is not None and runtime not in (*RUNTIME_NAMES, "both"):
        fail(f"unknown --runtime {runtime!r}: choose one of {', '.join(RUNTIME_NAMES)} or both")
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

    names = list(RUNTIME_NAMES) if runtime == "both" else [runtime]
    try:
        rts = [get_runtime(n, threads) for n in names]
        medians = time_models([rt.runner(net, shape, batch) for rt in rts], repeats=repeats, warmup=5)
    except ImportError as e:      # onnx / onnxruntime missing: the message says what to install
        fail(str(e))
    for rt, ms in zip(rts, medians):
        typer.echo(f"latency ({rt.name} {rt.version}, {threads} thread{'s' if threads > 1 else ''}, batch {batch}): "
                   f"{ms:.3f} ms, median of {repeats} runs")
