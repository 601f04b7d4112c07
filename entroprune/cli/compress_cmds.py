"""``entroprune compress``, ``prune``, ``search`` and ``demo``: thin callers of
the one pipeline, ``entroprune.compress`` (docs/METHODS.md sections 2-11).

- ``compress``: any method, every stage, a report folder (resumable);
- ``prune``: a channel criterion to a MACs or latency target, the pruned
  (reconstructed) model written to ``--out``; a report with ``--report``;
- ``search``: the AMC-style search of per-group widths alone (no fine-tuning);
- ``demo``: the main job on a shipped model (VGG by default), with the
  settings the benchmarks support best.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from ..io import save
from ..pipeline import CompressConfig, CompressError, compress
from ..reconstruct import ReconstructConfig
from ..search import DDPGConfig, RewardConfig, SearchConfig
from .common import check_output, fail, get_data, get_model, set_threads
from .options import (
    AdaptBn,
    AmcFull,
    Batch,
    CalibSize,
    CheckpointEvery,
    DataDir,
    Dataset,
    Depth,
    Distill,
    DistillTemperature,
    DistillWeight,
    Episodes,
    Factory,
    FactoryKwargs,
    FinetuneEpochs,
    FinetuneLr,
    Fold,
    Importance,
    LatencyRepeats,
    Lbound,
    Method,
    MinChannels,
    MinKeep,
    ModelSpec,
    Quantize,
    Reconstruct,
    Report,
    Restart,
    RewardImages,
    RoundTo,
    Runtime,
    Scope,
    Seed,
    TargetLatency,
    TargetMacs,
    Threads,
    Tolerance,
    TopK,
    ValSubset,
    Wall,
    Warmup,
)
from .options import Reward as RewardOpt

AMC_FULL = {"episodes": 800, "warmup": 100, "val_subset": 0}


def _target(target_macs: str | None, target_latency: str | None, default: str) -> tuple[str, str]:
    if target_macs is not None and target_latency is not None:
        fail("give --target-macs or --target-latency, not both")
    if target_latency is not None:
        return target_latency, "latency"
    return target_macs or default, "macs"


def _batches(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        fail(f"--batch must be comma-separated batch sizes such as 1,64, got {text!r}")
    if not values or min(values) < 1:
        fail(f"--batch must hold batch sizes >= 1, got {text!r}")
    return values


def search_config(reward: str, importance: str, episodes: int, warmup: int, lbound: float, round_to: int,
                  wall: str, reward_images: int, val_subset: int, top_k: int, checkpoint_every: int,
                  amc_full: bool, adapt_bn: int, seed: int) -> SearchConfig:
    """The search settings of the command line, checked."""
    from ..search import REWARDS
    if reward not in REWARDS:
        fail(f"unknown --reward {reward!r}; choose one of {', '.join(REWARDS)}")
    if importance not in ("l1", "aura", "mass"):
        fail(f"unknown --importance {importance!r}; choose one of l1, aura, mass")
    if amc_full:
        episodes, warmup, val_subset = AMC_FULL["episodes"], AMC_FULL["warmup"], AMC_FULL["val_subset"]
    if episodes < 1 or warmup < 0 or round_to < 1 or reward_images < 1 or top_k < 1 or checkpoint_every < 1 \
            or val_subset < 0 or adapt_bn < 0:
        fail("--episodes, --round-to, --reward-images, --top-k and --checkpoint-every must be >= 1; --warmup, "
             "--val-subset and --adapt-bn >= 0")
    if warmup >= episodes:
        fail(f"--warmup {warmup} >= --episodes {episodes}: every episode would be random; lower --warmup")
    if not 0.0 < lbound <= 1.0:
        fail(f"--lbound must be in (0, 1], got {lbound}")
    return SearchConfig(episodes=episodes, reward=reward, importance=importance, lbound=lbound, round_to=round_to,
                        wall=wall, top_k=top_k, checkpoint_every=checkpoint_every, seed=seed,
                        rewards=RewardConfig(calib_size=reward_images, calib_seed=seed, val_subset=val_subset,
                                             adapt_bn=adapt_bn),
                        agent=DDPGConfig(warmup=warmup, lbound=lbound))


def run(model_spec: str, cfg_kwargs: dict[str, Any], dataset: str, data_dir: str | None, seed: int,
        threads: int | None, out: Path | None, factory: str | None = None, factory_kwargs: str | None = None,
        restart: bool = False):
    """Build the config (errors named), resolve model and data, run ``compress``."""
    set_threads(threads)
    try:
        cfg = CompressConfig(seed=seed, threads=threads or 1, **cfg_kwargs)
    except CompressError as e:
        fail(str(e))
    if out is not None:
        check_output(out, folder=True)
    data = get_data(dataset, data_dir)
    net = get_model(model_spec, data, factory=factory, factory_kwargs=factory_kwargs)
    try:
        return compress(net, data, cfg, out=out, label=model_spec, restart=restart)
    except ValueError as e:            # CompressError, PruningError, ... (cli/errors.py handles the rest)
        fail(str(e))


def compress_cmd(
    model: ModelSpec = "pretrained:resnet20",
    target_macs: TargetMacs = None, target_latency: TargetLatency = None, method: Method = "greedy_refit",
    scope: Scope = "global", min_keep: MinKeep = 0.1, min_channels: MinChannels = 1, tolerance: Tolerance = 0.02,
    calib_size: CalibSize = 512, reconstruct: Reconstruct = True, depth: Depth = None,
    finetune_epochs: FinetuneEpochs = 10, finetune_lr: FinetuneLr = 0.01, distill: Distill = True,
    distill_weight: DistillWeight = 0.7, distill_temperature: DistillTemperature = 4.0, fold: Fold = False,
    quantize: Quantize = False, runtime: Runtime = "onnxruntime", batch: Batch = "1,64",
    latency_repeats: LatencyRepeats = 30,
    reward: RewardOpt = "entropy", importance: Importance = "l1", episodes: Episodes = 80, warmup: Warmup = 20,
    lbound: Lbound = 0.2, round_to: RoundTo = 1, wall: Wall = "both", reward_images: RewardImages = 128,
    val_subset: ValSubset = 1000, top_k: TopK = 3, checkpoint_every: CheckpointEvery = 10,
    amc_full: AmcFull = False, adapt_bn: AdaptBn = 0,
    out: Path = typer.Option(Path("runs/compress"), "--out", "-o", help="report folder (rerun to resume)"),
    dataset: Dataset = "fashion_mnist", data_dir: DataDir = None, seed: Seed = 0, threads: Threads = None,
    factory: Factory = None, factory_kwargs: FactoryKwargs = None, restart: Restart = False,
) -> None:
    """Compress a model: remove, reconstruct, fine-tune (distilled), measure, quantize; a report folder."""
    target, kind = _target(target_macs, target_latency, "5x")
    search = search_config(reward, importance, episodes, warmup, lbound, round_to, wall, reward_images, val_subset,
                           top_k, checkpoint_every, amc_full, adapt_bn, seed) if method == "search" else SearchConfig()
    cfg = dict(target=target, target_kind=kind, method=method, scope=scope, min_keep=min_keep,
               min_channels=min_channels, tolerance=tolerance, calib_size=calib_size, search=search,
               reconstruct=ReconstructConfig(seed=seed) if reconstruct else None, depth=depth,
               finetune_epochs=finetune_epochs, finetune_lr=finetune_lr, distill=distill,
               distill_weight=distill_weight, distill_temperature=distill_temperature, fold=fold, quantize=quantize,
               runtime=runtime, latency_batches=_batches(batch), latency_repeats=latency_repeats)
    _, report = run(model, cfg, dataset, data_dir, seed, threads, out, factory, factory_kwargs, restart)
    typer.echo(report["table"])
    typer.echo(f"report: {out}/report.md")


def prune_cmd(
    model: ModelSpec = "pretrained:resnet20",
    target_macs: TargetMacs = None, target_latency: TargetLatency = None, method: Method = "l1",
    scope: Scope = "global", min_keep: MinKeep = 0.1, min_channels: MinChannels = 1, tolerance: Tolerance = 0.02,
    calib_size: CalibSize = 512, reconstruct: Reconstruct = True, finetune_epochs: FinetuneEpochs = 0,
    finetune_lr: FinetuneLr = 0.01, distill: Distill = True, quantize: Quantize = False,
    runtime: Runtime = "onnxruntime", batch: Batch = "1,64", latency_repeats: LatencyRepeats = 30,
    report: Report = None,
    out: Path = typer.Option(None, "--out", "-o", help="pruned model file (default: pruned-METHOD.safetensors)"),
    dataset: Dataset = "fashion_mnist", data_dir: DataDir = None, seed: Seed = 0, threads: Threads = None,
    factory: Factory = None, factory_kwargs: FactoryKwargs = None, restart: Restart = False,
) -> None:
    """Remove channels to a MACs or latency target (reconstructed); optionally fine-tune, quantize, report."""
    from ..pruning import CRITERIA
    if method not in CRITERIA:
        fail(f"unknown --method {method!r}; choose one of {', '.join(sorted(CRITERIA))} (or use compress)")
    target, kind = _target(target_macs, target_latency, "2x")
    path = out or Path(f"pruned-{method}.safetensors")
    check_output(path, folder=False)
    cfg = dict(target=target, target_kind=kind, method=method, scope=scope, min_keep=min_keep,
               min_channels=min_channels, tolerance=tolerance, calib_size=calib_size,
               reconstruct=ReconstructConfig(seed=seed) if reconstruct else None, finetune_epochs=finetune_epochs,
               finetune_lr=finetune_lr, distill=distill, quantize=quantize, runtime=runtime,
               latency_batches=_batches(batch), latency_repeats=latency_repeats,
               measure_latency=report is not None or kind == "latency" or quantize,
               eval_stages=report is not None, progress=report is not None)
    small, rep = run(model, cfg, dataset, data_dir, seed, threads, report, factory, factory_kwargs, restart)
    save(small, path, info={"val_acc": rep["deployed"]["val_acc"], "test_acc": rep["deployed"]["test_acc"],
                            "dataset": rep["data"]})
    if report is not None:
        typer.echo(rep["table"])
        typer.echo(f"report: {report}/report.md")
    line = {"out": str(path), "macs_ratio": round(rep["macs_ratio"], 3),
            "params_ratio": round(rep["params_ratio"], 3), "val_acc": round(rep["deployed"]["val_acc"], 2),
            "seconds": round(sum(rep["seconds"].values()), 1)}
    if rep["after_prune"]:
        line["val_acc_pruned"] = round(rep["after_prune"]["val_acc"], 2)
    if kind == "latency":
        line.update(target_speedup=rep["target"]["asked"],
                    measured_speedup=round(rep["target"]["measured_speedup"], 3))
    typer.echo(json.dumps(line))


def search_cmd(
    model: ModelSpec = "pretrained:resnet20",
    target_macs: TargetMacs = None, target_latency: TargetLatency = None,
    reward: RewardOpt = "entropy", importance: Importance = "l1", episodes: Episodes = 80, warmup: Warmup = 20,
    lbound: Lbound = 0.2, round_to: RoundTo = 1, wall: Wall = "both", reward_images: RewardImages = 128,
    val_subset: ValSubset = 1000, top_k: TopK = 3, checkpoint_every: CheckpointEvery = 10,
    amc_full: AmcFull = False, adapt_bn: AdaptBn = 0, reconstruct: Reconstruct = True,
    out: Path = typer.Option(Path("runs/search"), "--out", "-o", help="search folder (rerun to resume)"),
    save_model: Path = typer.Option(None, help="also save the best pruned (reconstructed, not fine-tuned) model"),
    dataset: Dataset = "fashion_mnist", data_dir: DataDir = None, seed: Seed = 0, threads: Threads = None,
    factory: Factory = None, factory_kwargs: FactoryKwargs = None, restart: Restart = False,
) -> None:
    """Search per-layer widths with DDPG (AMC), every episode scored on a reconstructed model."""
    target, kind = _target(target_macs, target_latency, "2x")
    if save_model is not None:
        check_output(save_model, folder=False)
    search = search_config(reward, importance, episodes, warmup, lbound, round_to, wall, reward_images, val_subset,
                           top_k, checkpoint_every, amc_full, adapt_bn, seed)
    cfg = dict(target=target, target_kind=kind, method="search", search=search, finetune_epochs=0,
               reconstruct=ReconstructConfig(seed=seed) if reconstruct else None, measure_latency=False)
    small, rep = run(model, cfg, dataset, data_dir, seed, threads, out, factory, factory_kwargs, restart)
    if save_model is not None:
        save(small, save_model, info={"val_acc": rep["deployed"]["val_acc"], "search": str(out)})
    r = rep["remove"]
    typer.echo(json.dumps({"folder": str(out / "search"), "episodes": r["episodes"],
                           "reward": round(r["search_reward"], 4), "episode": r["best_episode"],
                           "macs_fraction": round(1 / rep["macs_ratio"], 4), "distinct_rewards": r["distinct_rewards"],
                           "val_acc": round(rep["deployed"]["val_acc"], 2), "channels": r["channels"]}))


def demo_cmd(
    out: Path = typer.Option(Path("runs/demo"), "--out", "-o", help="report folder (rerun to resume)"),
    finetune_epochs: FinetuneEpochs = 10, threads: Threads = None, restart: Restart = False,
    model: str = typer.Option("pretrained:vgg_small", "--model", help="another shipped model (pretrained:NAME)"),
    speedup: str = typer.Option("3x", "--speedup", help="latency target in ONNX Runtime, e.g. 2x"),
    quantize: bool = typer.Option(True, "--quantize/--no-quantize", help="end with static INT8"),
) -> None:
    """The main job, with the settings the deployment benchmark supports best: the shipped VGG made 3x faster
    in ONNX Runtime (latency target), channels chosen by the error they leave after the refit, reconstructed,
    fine-tuned with distillation, then INT8; a before/after report that says which file to ship."""
    cfg = dict(target=speedup, target_kind="latency", method="greedy_refit", finetune_epochs=finetune_epochs,
               quantize=quantize)
    _, report = run(model, cfg, "fashion_mnist", None, 0, threads, out, restart=restart)
    typer.echo(report["table"])
    typer.echo(f"report: {out}/report.md")
