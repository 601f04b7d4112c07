"""``entroprune search`` and ``entroprune compress``: the AMC-style search of
per-layer sparsity (Y. He et al., arXiv 1802.03494) with the spatial-entropy
reward of B. Musat, R. Andonie, arXiv 2312.04918 (METHODS.md section 3);
``compress`` also applies the best policy, fine-tunes and writes a report.

Defaults are sized for a few minutes on 2 CPU cores (80 episodes, 20 of them
warm-up, 1 fine-tune epoch); ``--amc-full`` runs AMC's 800 episodes with 100
warm-up episodes and accuracy rewards on the whole validation split.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Optional

import typer

from ..io import atomic_write_json, atomic_write_text, save
from ..pruning import PruningError, parse_macs_target
from ..reporting import before_after_table, latency_dict, plot_widths, summarize
from ..search import REWARDS, DDPGConfig, RewardConfig, SearchConfig, SearchResult, run_search
from ..search.env import WALLS
from ..training import TrainConfig, train
from .common import fail, get_data, get_model, set_threads

IMPORTANCE = ("l1", "aura", "mass")
AMC_FULL = {"episodes": 800, "warmup": 100, "val_subset": 0}


def _config(target_macs: str, reward: str, importance: str, episodes: int, warmup: int, lbound: float,
            round_to: int, wall: str, calib_size: int, val_subset: int, top_k: int, checkpoint_every: int,
            seed: int, amc_full: bool, adapt_bn: int = 0) -> SearchConfig:
    try:
        target = parse_macs_target(target_macs)
    except PruningError as e:
        fail(str(e))
        raise
    if reward not in REWARDS:
        fail(f"unknown --reward {reward!r}; choose one of {', '.join(REWARDS)}")
    if importance not in IMPORTANCE:
        fail(f"unknown --importance {importance!r}; choose one of {', '.join(IMPORTANCE)}")
    if wall not in WALLS:
        fail(f"--wall must be one of {', '.join(WALLS)}, got {wall!r}")
    if amc_full:
        episodes, warmup, val_subset = AMC_FULL["episodes"], AMC_FULL["warmup"], AMC_FULL["val_subset"]
    if episodes < 1 or warmup < 0 or round_to < 1 or calib_size < 1 or top_k < 1 or checkpoint_every < 1:
        fail("--episodes, --round-to, --calib-size, --top-k and --checkpoint-every must be >= 1, "
             "--warmup >= 0")
    if adapt_bn < 0:
        fail(f"--adapt-bn must be >= 0 (images), got {adapt_bn}")
    if not 0.0 < lbound <= 1.0:
        fail(f"--lbound must be in (0, 1], got {lbound}")
    return SearchConfig(target_macs=target, episodes=episodes, reward=reward, importance=importance,
                        lbound=lbound, round_to=round_to, wall=wall, top_k=top_k,
                        checkpoint_every=checkpoint_every, seed=seed,
                        rewards=RewardConfig(calib_size=calib_size, calib_seed=seed, val_subset=val_subset,
                                             adapt_bn=adapt_bn),
                        agent=DDPGConfig(warmup=warmup, lbound=lbound))


def _best_model(net, cfg: SearchConfig, result: SearchResult):
    """The model pruned by the best policy, with the search in its history."""
    best = result.best
    pruned = result.best_model()
    step = {"op": "rl_search", "reward": cfg.reward, "criterion": cfg.importance, "target_macs": cfg.target_macs,
            "groups": result.groups, "channels": best["channels"], "preserve": best["policy"],
            "episodes": len(result.records), "best_episode": best["episode"], "search_reward": best["reward"]}
    pruned.entroprune_history = list(getattr(net, "entroprune_history", [])) + [step]
    return pruned


def _search(net, data, cfg: SearchConfig, folder: Path) -> SearchResult:
    try:
        return run_search(net, data, cfg, folder)
    except (PruningError, ValueError) as e:
        fail(str(e))
        raise


def search_cmd(
    model: str = typer.Argument("pretrained:resnet20", help="model file, pretrained:NAME or zoo name"),
    target_macs: str = typer.Option("2x", help="'5x' = 5 times fewer MACs; 0.2 = keep 20%"),
    reward: str = typer.Option("entropy", help=f"reward: {', '.join(REWARDS)}"),
    importance: str = typer.Option("l1", help=f"channels removed inside a group: {', '.join(IMPORTANCE)}"),
    episodes: int = typer.Option(80, help="search episodes (AMC: 800)"),
    warmup: int = typer.Option(20, help="episodes of uniform random actions first (AMC: 100)"),
    lbound: float = typer.Option(0.2, help="smallest preserve ratio of a group"),
    round_to: int = typer.Option(1, help="kept channels a multiple of this (AMC: 8)"),
    wall: str = typer.Option("both", help="action wall: both (end at target), upper (AMC) or spread (budget shares)"),
    calib_size: int = typer.Option(128, help="images of the fixed calibration batch (entropy rewards)"),
    val_subset: int = typer.Option(1000, help="validation images of the accuracy rewards (0 = all 5,000)"),
    top_k: int = typer.Option(3, help="best policies whose validation accuracy is measured"),
    checkpoint_every: int = typer.Option(10, help="episodes between checkpoints"),
    amc_full: bool = typer.Option(False, "--amc-full", help="AMC's settings: 800 episodes, 100 warm-up, full val"),
    adapt_bn: int = typer.Option(0, help="accuracy rewards: re-estimate BatchNorm stats on this many images first"),
    out: Path = typer.Option(Path("runs/search"), "--out", "-o", help="search folder (rerun to resume)"),
    save_model: Optional[Path] = typer.Option(None, help="also save the best pruned (not fine-tuned) model"),
    dataset: str = typer.Option("fashion_mnist"),
    data_dir: Optional[str] = typer.Option(None),
    seed: int = typer.Option(0),
    threads: Optional[int] = typer.Option(None),
) -> None:
    """Search per-layer preserve ratios with DDPG (AMC) and an entropy or accuracy reward."""
    set_threads(threads)
    cfg = _config(target_macs, reward, importance, episodes, warmup, lbound, round_to, wall, calib_size,
                  val_subset, top_k, checkpoint_every, seed, amc_full, adapt_bn)
    data = get_data(dataset, data_dir)
    net = get_model(model, data)
    result = _search(net, data, cfg, out)
    if save_model is not None:
        save(_best_model(net, cfg, result), save_model, info={"val_acc_after_prune": result.best["val_acc"],
                                                    "search": str(out)})
    best = result.best
    typer.echo(json.dumps({"folder": str(out), "episodes": len(result.records), "reward": round(best["reward"], 4),
                           "episode": best["episode"], "macs_fraction": round(best["macs_fraction"], 4),
                           "val_acc": round(best["val_acc"], 2), "channels": best["channels"]}))


def compress_cmd(
    model: str = typer.Argument("pretrained:resnet20", help="model file, pretrained:NAME or zoo name"),
    target_macs: str = typer.Option("2x", help="'5x' = 5 times fewer MACs; 0.2 = keep 20%"),
    reward: str = typer.Option("entropy", help=f"reward: {', '.join(REWARDS)}"),
    importance: str = typer.Option("l1", help=f"channels removed inside a group: {', '.join(IMPORTANCE)}"),
    episodes: int = typer.Option(80, help="search episodes (AMC: 800)"),
    warmup: int = typer.Option(20, help="episodes of uniform random actions first (AMC: 100)"),
    lbound: float = typer.Option(0.2, help="smallest preserve ratio of a group"),
    round_to: int = typer.Option(1, help="kept channels a multiple of this (AMC: 8)"),
    wall: str = typer.Option("both", help="action wall: both (end at target), upper (AMC) or spread (budget shares)"),
    calib_size: int = typer.Option(128, help="images of the fixed calibration batch (entropy rewards)"),
    val_subset: int = typer.Option(1000, help="validation images of the accuracy rewards (0 = all 5,000)"),
    top_k: int = typer.Option(3, help="best policies whose validation accuracy is measured"),
    checkpoint_every: int = typer.Option(10, help="episodes between checkpoints"),
    amc_full: bool = typer.Option(False, "--amc-full", help="AMC's settings: 800 episodes, 100 warm-up, full val"),
    adapt_bn: int = typer.Option(0, help="accuracy rewards: re-estimate BatchNorm stats on this many images first"),
    finetune_epochs: int = typer.Option(1, help="fine-tune epochs after pruning"),
    finetune_lr: float = typer.Option(0.01),
    latency_repeats: int = typer.Option(30, help="timed runs per latency measurement"),
    out: Path = typer.Option(Path("runs/compress"), "--out", "-o", help="report folder (rerun to resume)"),
    dataset: str = typer.Option("fashion_mnist"),
    data_dir: Optional[str] = typer.Option(None),
    seed: int = typer.Option(0),
    threads: Optional[int] = typer.Option(None),
) -> None:
    """Search a policy, apply it, fine-tune, and write a report folder."""
    set_threads(threads)
    cfg = _config(target_macs, reward, importance, episodes, warmup, lbound, round_to, wall, calib_size,
                  val_subset, top_k, checkpoint_every, seed, amc_full, adapt_bn)
    if finetune_epochs < 0 or latency_repeats < 1:
        fail("--finetune-epochs must be >= 0 and --latency-repeats >= 1")
    data = get_data(dataset, data_dir)
    _compress(model, get_model(model, data), data, cfg, out, finetune_epochs, finetune_lr, latency_repeats)


def demo_cmd(
    target_macs: str = typer.Option("5x", help="'5x' = 5 times fewer MACs"),
    episodes: int = typer.Option(80, help="search episodes"),
    finetune_epochs: int = typer.Option(2),
    out: Path = typer.Option(Path("runs/demo"), "--out", "-o", help="report folder (rerun to resume)"),
    threads: Optional[int] = typer.Option(None),
) -> None:
    """The main job on the embedded default: the shipped ResNet-20, its per-layer
    sparsity searched by DDPG with the spatial-entropy reward to 5x fewer MACs,
    pruned, briefly fine-tuned, with a before/after report."""
    set_threads(threads)
    if finetune_epochs < 0:
        fail("--finetune-epochs must be >= 0")
    cfg = _config(target_macs, "entropy", "l1", episodes, min(20, episodes // 4), 0.2, 1, "both", 128, 1000, 3,
                  10, 0, False)
    data = get_data("fashion_mnist", None)
    model = "pretrained:resnet20"
    _compress(model, get_model(model, data), data, cfg, out, finetune_epochs, 0.01, 30)


def _compress(model: str, net, data, cfg: SearchConfig, out: Path, finetune_epochs: int, finetune_lr: float,
              latency_repeats: int) -> None:
    seed = cfg.seed
    out.mkdir(parents=True, exist_ok=True)
    before = summarize(net, data)
    t0 = time.time()
    result = _search(net, data, cfg, out / "search")
    search_seconds = time.time() - t0
    best = result.best
    pruned = _best_model(net, cfg, result)
    after = summarize(pruned, data)
    history: list = []
    if finetune_epochs > 0:
        history = train(pruned, data, TrainConfig(epochs=finetune_epochs, lr=finetune_lr, seed=seed),
                        checkpoint=out / "finetune.ckpt")
    finetuned = summarize(pruned, data) if finetune_epochs > 0 else None
    latency = latency_dict(net, pruned, data, repeats=latency_repeats)
    table = before_after_table(before, after, latency, finetuned)
    ratio = before.macs / after.macs
    plot_widths(net, pruned, out / "widths.png", f"{model}: channels per layer, RL search to {ratio:.1f}x fewer MACs")
    save(pruned, out / "model.safetensors",
         info={"label": model, "test_acc": (finetuned or after).test_acc, "dataset": data.name})
    report = {
        "label": model, "method": f"rl_search/{cfg.reward}", "config": asdict(cfg),
        "before": before.to_dict(), "after_prune": after.to_dict(),
        "after_finetune": finetuned.to_dict() if finetuned else None, "latency": latency,
        "macs_ratio": ratio, "params_ratio": before.params / after.params, "method_seconds": search_seconds,
        "search": {"best": best, "top": result.top, "uniform_preserve": result.uniform_preserve,
                   "groups": result.groups, "folder": "search"},
        "finetune_history": history}
    atomic_write_json(out / "report.json", report)
    atomic_write_text(out / "report.md", "\n".join([
        f"# {model}: RL search ({cfg.reward} reward) to {1 / cfg.target_macs:.2f}x fewer MACs", "",
        table, "",
        f"Search: {len(result.records)} episodes ({cfg.agent.warmup} warm-up) in {search_seconds:.1f} s; "
        f"best episode {best['episode']}, reward {best['reward']:.4f}, validation accuracy before "
        f"fine-tuning {best['val_acc']:.2f}%. Fine-tuning {finetune_epochs} epochs at lr {finetune_lr}. "
        "Latency: median of repeated CPU runs, base and pruned interleaved in the same process.", "",
        "![reward and MACs per episode](search/search_rewards.png)", "",
        "![best policy vs uniform](search/search_policy.png)", "",
        "![channels per layer](widths.png)", ""]))
    (out / "finetune.ckpt").unlink(missing_ok=True)
    typer.echo(table)
    typer.echo(f"report: {out}/report.md")
