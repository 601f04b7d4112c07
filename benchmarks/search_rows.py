"""Benchmark rows of the RL search of per-layer sparsity (docs/METHODS.md
section 3): the policy found with the entropy reward (B. Musat, R. Andonie,
arXiv 2312.04918) beside the accuracy reward of AMC (arXiv 1802.03494), the
uniform policy and a random policy, all at the same MACs target (the action
wall makes every policy end there), pruned with L1 inside each group,
fine-tuned for the same epochs (lr 0.01) and evaluated on the test set.

Resumable at two levels: a finished row is a JSON in ``results/search/`` and
is skipped; an interrupted row resumes its search (the runner's checkpoint)
and its fine-tuning (epoch checkpoint) from ``work/search/<row>/``. The
summary, with mean and spread over seeds, is ``results/SEARCH.md``.

    python benchmarks/search_rows.py                       # every row of docs/METHODS.md section 3
    python benchmarks/search_rows.py --only resnet20-entropy-5x
    python benchmarks/search_rows.py --summary
    python benchmarks/search_rows.py --commit              # git-commit each finished row
    python benchmarks/search_rows.py --relatency --threads 2   # latency again, alone on the machine
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from entroprune.data import load_data
from entroprune.io import atomic_write_json, atomic_write_text, load, save
from entroprune.models.pretrained import pretrained_path
from entroprune.pruning import parse_macs_target
from entroprune.reporting import latency_dict, summarize
from entroprune.search import RewardConfig, SearchConfig, run_search
from entroprune.search.runner import make_env
from entroprune.training import TrainConfig, train

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import base_model, commit_row, remeasure_rows  # noqa: E402  (shared with benchmarks/run.py)

ROOT = Path(__file__).resolve().parent
RESULTS, WORK = ROOT / "results" / "search", ROOT / "work" / "search"
KINDS = ("entropy", "accuracy", "uniform", "random")

# (model, policy kind, MACs reduction factor, seed); 3 seeds for resnet20 and vgg_small at 5x
ROWS = ([("resnet20", k, 5.0, s) for s in (0, 1, 2) for k in KINDS]
        + [("resnet20", k, 10.0, 0) for k in KINDS]
        + [("vgg_small", k, f, 0) for f in (5.0, 10.0) for k in KINDS]
        + [("vgg_small", k, 5.0, s) for s in (1, 2) for k in KINDS])


def row_id(model: str, kind: str, factor: float, seed: int, epochs: int, episodes: int) -> str:
    search = f"-ep{episodes}" if kind in ("entropy", "accuracy") else ""
    return f"{model}-{kind}-{factor:g}x{search}-ft{epochs}-s{seed}"


def search_diagnostics(records: list[dict], best_episode: int) -> dict:
    """How much the reward separated the policies a search tried: distinct
    reward values (to 1e-6) over its episodes, and whether the best one
    (the runner's choice) was a random warm-up episode."""
    distinct = len({round(r["reward"], 6) for r in records})
    return {"distinct_rewards": distinct, "best_in_warmup": bool(records[best_episode]["warmup"])}


def policy_model(net, data, kind: str, target: float, seed: int, episodes: int, folder: Path):
    """The pruned (not fine-tuned) model of one policy kind, and the search's record."""
    cfg = SearchConfig(target_macs=target, episodes=episodes, reward=kind if kind in ("entropy", "accuracy") else
                       "entropy", seed=seed, rewards=RewardConfig(calib_seed=seed))
    if kind in ("entropy", "accuracy"):
        result = run_search(net, data, cfg, folder / "search")
        best = result.best
        # the search's wall time is the sum of its episodes' (kept in its log, so a resumed search counts all)
        return result.best_model(), {"policy": best["policy"], "channels": best["channels"],
                                     "search_reward": best["reward"], "best_episode": best["episode"],
                                     "val_acc_unfinetuned": best["val_acc"],
                                     "search_seconds": float(sum(r["seconds"] for r in result.records)),
                                     **search_diagnostics(result.records, best["episode"])}
    env = make_env(net, data, cfg, with_reward=False)
    if kind == "uniform":
        proposed = [env.pruner.uniform_ratio(target)] * env.n_steps
    else:
        proposed = np.random.default_rng(seed).uniform(cfg.lbound, 1.0, env.n_steps).tolist()
    info = env.play(proposed)
    return env.last_pruned, {"policy": info["policy"], "channels": info["channels"]}


def run_row(model: str, kind: str, factor: float, seed: int, epochs: int, episodes: int, rid: str) -> dict:
    data = load_data("fashion_mnist", seed=0)
    net = load(pretrained_path(model))
    folder = WORK / rid
    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    pruned, record = policy_model(net, data, kind, 1.0 / factor, seed, episodes, folder)
    method_seconds = record.pop("search_seconds", time.time() - t0)
    before, after = summarize(net, data), summarize(pruned, data)
    train(pruned, data, TrainConfig(epochs=epochs, lr=0.01, seed=seed, progress=False),
          checkpoint=folder / "finetune.ckpt")
    save(pruned, folder / "finetuned.safetensors")  # kept for --relatency and for inspection
    finetuned = summarize(pruned, data)
    latency = latency_dict(net, pruned, data)
    return {"id": rid, "model": model, "kind": kind, "target": f"{factor:g}x", "seed": seed,
            "episodes": episodes if kind in ("entropy", "accuracy") else 0, "finetune_epochs": epochs,
            "macs_ratio": before.macs / after.macs, "params_ratio": before.params / after.params,
            "latency_speedup_bs1": latency["bs1"]["speedup"], "latency_speedup_bs64": latency["bs64"]["speedup"],
            "acc_before": before.test_acc, "acc_pruned": after.test_acc, "acc_finetuned": finetuned.test_acc,
            "val_finetuned": finetuned.val_acc, "method_seconds": method_seconds,
            "torch_threads": torch.get_num_threads(), **record}


def remeasure_latency(repeats: int = 50, only: list[str] | None = None) -> None:
    """Measure again, alone on the machine, the latency pair of every row: the
    fine-tuned model kept in ``work/`` or, for rows that predate it, the row's
    architecture rebuilt from its channel counts (latency does not depend on
    the weights' values)."""
    data = load_data("fashion_mnist", seed=0)

    def measure(row: dict) -> tuple[float, float]:
        base = base_model(row["model"])
        kept = WORK / row["id"] / "finetuned.safetensors"
        if kept.exists():
            pruned = load(kept)
        else:
            cfg = SearchConfig(target_macs=parse_macs_target(row["target"]))
            pruned = make_env(base, data, cfg, with_reward=False).pruner.apply(row["channels"])
        lat = latency_dict(base, pruned, data, repeats=repeats)
        row.update(latency_speedup_bs1=lat["bs1"]["speedup"], latency_speedup_bs64=lat["bs64"]["speedup"],
                   latency=lat, latency_pass=f"quiet, {torch.get_num_threads()} threads")
        return lat["bs1"]["speedup"], lat["bs64"]["speedup"]

    remeasure_rows(RESULTS, only, measure)


def _diagnostics(rows: list[dict]) -> str:
    """The two search-diagnostic cells of a group of rows (empty for policies without a search)."""
    if not all("distinct_rewards" in r for r in rows) or not rows[0]["episodes"]:
        return " | "
    distinct = ", ".join(str(r["distinct_rewards"]) for r in rows)
    return f"{distinct} | {sum(r['best_in_warmup'] for r in rows)} of {len(rows)}"


def summary() -> Path:
    rows = [json.loads(p.read_text()) for p in sorted(RESULTS.glob("*.json"))]
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["model"], r["target"], r["kind"], r["episodes"], r["finetune_epochs"]), []).append(r)
    lines = ["# RL search of per-layer sparsity: entropy reward vs accuracy reward vs uniform vs random", "",
             "Generated by `python benchmarks/search_rows.py`. Every policy ends at the MACs target (action wall), "
             "is applied with L1 inside each group, fine-tuned (lr 0.01, epochs stated) and evaluated on the "
             "Fashion-MNIST test set. With several seeds: mean ± standard deviation (n seeds). "
             "Search s: the sum of the search's episode times, from its log (a resumed search counts every "
             "episode; 0 for uniform and random; the row's JSON states its torch threads). Latency: median of "
             "repeated CPU runs, base and pruned interleaved; rows whose JSON says `latency_pass` were measured "
             "again alone on the machine (`--relatency`). Distinct rewards: how many different reward values "
             "(to 1e-6) the search saw over its episodes, per seed (1: the reward told no policy from another). "
             "Best in warm-up: seeds whose best policy came from the random warm-up episodes.", "",
             "| model | target | policy | episodes | FT epochs | seeds | MACs ratio | latency x bs1 | latency x bs64 "
             "| acc before | acc pruned | acc fine-tuned | search s | distinct rewards | best in warm-up |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]

    def stat(values: list[float]) -> str:
        return f"{np.mean(values):.2f}" + (f" ± {np.std(values, ddof=1):.2f}" if len(values) > 1 else "")

    for (model, target, kind, episodes, epochs), rs in sorted(groups.items()):
        lines.append(f"| {model} | {target} | {kind} | {episodes} | {epochs} | {len(rs)} | "
                     f"{stat([r['macs_ratio'] for r in rs])} | {stat([r['latency_speedup_bs1'] for r in rs])} | "
                     f"{stat([r['latency_speedup_bs64'] for r in rs])} | {stat([r['acc_before'] for r in rs])} | "
                     f"{stat([r['acc_pruned'] for r in rs])} | {stat([r['acc_finetuned'] for r in rs])} | "
                     f"{stat([r['method_seconds'] for r in rs])} | {_diagnostics(rs)} |")
    return atomic_write_text(RESULTS.parent / "SEARCH.md", "\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=10, help="fine-tuning epochs of every row")
    ap.add_argument("--episodes", type=int, default=200, help="search episodes (AMC: 800)")
    ap.add_argument("--only", nargs="*", help="row ids (or substrings) to run")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--summary", action="store_true", help="only rebuild SEARCH.md")
    ap.add_argument("--relatency", action="store_true",
                    help="re-measure every row's latency (run it with nothing else on the machine)")
    ap.add_argument("--commit", action="store_true", help="git-commit each finished row")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.relatency:
        remeasure_latency(only=args.only)
    elif not args.summary:
        for model, kind, factor, seed in ROWS:
            rid = row_id(model, kind, factor, seed, args.epochs, args.episodes)
            path = RESULTS / f"{rid}.json"
            if (args.only and not any(o in rid for o in args.only)) or path.exists():
                continue
            print(f"run {rid}", flush=True)
            atomic_write_json(path, run_row(model, kind, factor, seed, args.epochs, args.episodes, rid))
            table = summary()
            if args.commit:
                commit_row(rid, [path, table])
    print(summary().read_text())


if __name__ == "__main__":
    sys.exit(main())
