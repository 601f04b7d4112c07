"""``entroprune train`` and ``entroprune eval``."""

from __future__ import annotations

import json
import shlex
import sys
import time
from pathlib import Path
from typing import Optional

import typer

from ..io import save
from ..training import TrainConfig, evaluate, train
from ..training import distributed as dist_utils
from .common import check_output, fail, get_data, get_model, output_lock, set_threads
from .options import BatchSize, DataDir, Dataset, Epochs, LimitTrain, Lr, Seed, Threads


def train_cmd(
    model: str = typer.Argument(..., help="zoo name (new model), model file, or pretrained:NAME"),
    out: Path = typer.Option(..., "--out", "-o", help="where to write the trained model file"),
    dataset: Dataset = "fashion_mnist",
    data_dir: DataDir = None,
    epochs: Epochs = 10,
    batch_size: BatchSize = 128,
    lr: Lr = 0.1,
    weight_decay: float = typer.Option(5e-4, help="L2 weight decay (>= 0)"),
    warmup_epochs: float = typer.Option(0.0, help="epochs of linear learning-rate warm-up (0 to --epochs)"),
    augment: bool = typer.Option(True, help="random crop + flip"),
    seed: Seed = 0,
    limit_train: LimitTrain = None,
    checkpoint: Optional[Path] = typer.Option(None, help="epoch checkpoint (default: OUT.ckpt); resumed if present"),
    restart: bool = typer.Option(False, "--restart", help="discard an existing checkpoint and start over"),
    threads: Threads = None,
) -> None:
    """Train a model; checkpoints every epoch and resumes after an interruption."""
    set_threads(threads)
    torch_seed = seed
    import torch
    torch.manual_seed(torch_seed)
    try:
        cfg = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                          warmup_epochs=warmup_epochs, augment=augment, seed=seed)
    except ValueError as e:
        fail(str(e))
    ckpt = checkpoint or out.with_suffix(out.suffix + ".ckpt")
    check_output(out, folder=False)
    check_output(ckpt, folder=False)
    with output_lock(out):
        data = get_data(dataset, data_dir, limit_train=limit_train)
        net = get_model(model, data)
        t0 = time.time()
        try:
            history = train(net, data, cfg, checkpoint=ckpt, restart=restart)
        except ValueError as e:
            fail(str(e))
        if dist_utils.rank() != 0:
            return
        val = evaluate(net, data.val_x, data.val_y)
        test = evaluate(net, data.test_x, data.test_y)
        info = {"dataset": dataset, "val_acc": val, "test_acc": test, "seed": seed,
                "command": "entroprune " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
                "train_seconds_this_run": time.time() - t0, "history": history}
        save(net, out, info=info)
    typer.echo(json.dumps({"out": str(out), "val_acc": val, "test_acc": test,
                           "world_size": history[-1]["world_size"] if history else 1}))


def eval_cmd(
    model: str = typer.Argument(..., help="model file or pretrained:NAME"),
    dataset: Dataset = "fashion_mnist",
    data_dir: DataDir = None,
    split: str = typer.Option("test", help="test or val"),
    threads: Threads = None,
) -> None:
    """Print the top-1 accuracy of a model on the test (or validation) split."""
    set_threads(threads)
    if split not in ("test", "val"):
        fail(f"--split must be test or val, got {split!r}")
    data = get_data(dataset, data_dir)
    net = get_model(model, data)
    x, y = (data.test_x, data.test_y) if split == "test" else (data.val_x, data.val_y)
    acc = evaluate(net, x, y)
    typer.echo(json.dumps({"model": model, "split": split, "accuracy": round(acc, 2)}))
