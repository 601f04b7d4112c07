"""Benchmark rows of the RL search of per-layer sparsity (docs/METHODS.md
section 3): the policy found with the entropy reward (B. Musat, R. Andonie,
arXiv 2312.04918) beside the accuracy reward of AMC (arXiv 1802.03494), the
uniform policy and a random policy, all at the same MACs target (the action
wall makes every policy end there), L1 inside each group, then fine-tuned and
evaluated on the test set. Every row runs ``entroprune.compress``.

Two generations of rows live in ``results/search/`` (the summary keeps them
apart by their settings):
- ``...-ft10-sN`` (earlier code): every episode scored on the raw pruned
  model, 200 episodes (20 warm-up), plain fine-tuning;
- ``...-rec-kd-sN`` (this script): every episode scored on a RECONSTRUCTED
  model (section 7), AMC's budget of 100 warm-up + 300 episodes, the chosen
  model reconstructed, then fine-tuned with distillation from the unpruned
  model (section 9); ``-rec-sN`` without distillation; ``-spread`` with the
  spread action wall.

Resumable at two levels: a finished row is a JSON in ``results/search/`` and
is skipped; an interrupted row resumes its search and its fine-tuning from
``work/search/<row>/`` (compress's run folder). The summary, with mean and
spread over seeds, is ``results/SEARCH.md``.

    python benchmarks/search_rows.py --commit --threads 1      # the rows, most useful first
    python benchmarks/search_rows.py --only resnet20-entropy-5x
    python benchmarks/search_rows.py --summary
    python benchmarks/search_rows.py --relatency               # latency again, alone on the machine
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from entroprune import CompressConfig, compress
from entroprune.data import load_data
from entroprune.io import atomic_write_json, atomic_write_text, load
from entroprune.measure import latency_pairs
from entroprune.models.pretrained import pretrained_path
from entroprune.reporting.provenance import commit_files, provenance
from entroprune.search import DDPGConfig, RewardConfig, SearchConfig

ROOT = Path(__file__).resolve().parent
RESULTS, WORK = ROOT / "results" / "search", ROOT / "work" / "search"
EPISODES, WARMUP = 400, 100

# (model, policy kind, MACs reduction factor, seed, distill, wall), most useful first
ROWS = ([("resnet20", k, 5.0, 0, True, "both") for k in ("uniform", "accuracy", "entropy")]
        + [("resnet20", k, 5.0, s, True, "both") for k in ("uniform", "accuracy", "entropy") for s in (1, 2)]
        + [("resnet20", "random", 5.0, s, True, "both") for s in (0, 1, 2)]
        + [("resnet20", "uniform", 5.0, 0, False, "both")]
        + [("resnet20", k, 5.0, 0, True, "spread") for k in ("accuracy", "entropy")]
        + [("vgg_small", k, 5.0, 0, True, "both") for k in ("uniform", "accuracy", "entropy", "random")]
        + [(m, k, 10.0, 0, True, "both") for m in ("resnet20", "vgg_small")
           for k in ("uniform", "accuracy", "entropy", "random")]
        + [("resnet20", "uniform", 5.0, s, False, "both") for s in (1, 2)])


def row_id(model: str, kind: str, factor: float, seed: int, epochs: int, distill: bool, wall: str) -> str:
    search = f"-ep{EPISODES}" if kind in ("entropy", "accuracy") else ""
    tail = ("-kd" if distill else "") + ("-spread" if wall == "spread" else "")
    return f"{model}-{kind}-{factor:g}x{search}-ft{epochs}-rec{tail}-s{seed}"


def config(kind: str, factor: float, seed: int, epochs: int, distill: bool, wall: str) -> CompressConfig:
    search = SearchConfig(episodes=EPISODES, reward=kind if kind in ("entropy", "accuracy") else "entropy",
                          wall=wall, seed=seed, rewards=RewardConfig(calib_seed=seed),
                          agent=DDPGConfig(warmup=WARMUP))
    method = "search" if kind in ("entropy", "accuracy") else "policy"
    return CompressConfig(target=f"{factor:g}x", method=method, policy=kind if method == "policy" else "uniform",
                          search=search, finetune_epochs=epochs, distill=distill, threads=1, seed=seed,
                          progress=False)


def run_row(model: str, kind: str, factor: float, seed: int, epochs: int, distill: bool, wall: str,
            rid: str) -> dict:
    data = load_data("fashion_mnist", seed=0)
    net = load(pretrained_path(model))
    cfg = config(kind, factor, seed, epochs, distill, wall)
    t0 = time.time()
    _, rep = compress(net, data, cfg, out=WORK / rid, label=rid)
    rem = rep["remove"]
    lat = rep["latency"]["onnxruntime"]
    row = {"id": rid, "model": model, "kind": kind, "target": f"{factor:g}x", "seed": seed,
           "episodes": rem.get("episodes", 0), "finetune_epochs": epochs, "reconstruct": True, "distill": distill,
           "wall": wall, "macs_ratio": rep["macs_ratio"], "params_ratio": rep["params_ratio"],
           "latency_speedup_bs1": lat["bs1"]["speedup"], "latency_speedup_bs64": lat["bs64"]["speedup"],
           "latency_runtime": "onnxruntime, 1 thread", "acc_before": rep["before"]["test_acc"],
           "acc_pruned": rep["after_prune"]["test_acc"], "acc_reconstructed": rep["after_reconstruct"]["test_acc"],
           "val_reconstructed": rep["after_reconstruct"]["val_acc"],
           "acc_finetuned": rep["after_finetune"]["test_acc"], "val_finetuned": rep["after_finetune"]["val_acc"],
           "method_seconds": rem["seconds"], "channels": rem["channels"], "row_seconds": time.time() - t0,
           "config": rep["config"], "provenance": provenance()}
    for key in ("search_reward", "best_episode", "distinct_rewards", "best_in_warmup", "seconds_per_episode",
                "reconstruct_seconds_per_episode", "val_acc_search"):
        if key in rem:
            row[key] = rem[key]
    return row


def remeasure_latency(repeats: int = 50, only: list[str] | None = None) -> None:
    """Latency again, alone on the machine, for the rows whose model is kept in work/ (ORT, 1 thread)."""
    data = load_data("fashion_mnist", seed=0)
    shape = tuple(data.train_x.shape[1:])
    for path in sorted(RESULTS.glob("*-rec*.json")):
        row = json.loads(path.read_text())
        kept = WORK / row["id"] / "model.safetensors"
        if (only and not any(o in row["id"] for o in only)) or not kept.exists():
            continue
        base, pruned = load(pretrained_path(row["model"])), load(kept)
        pairs = latency_pairs(base, pruned, shape, (1, 64), repeats=repeats, threads=1)
        row.update(latency_speedup_bs1=pairs[0].speedup, latency_speedup_bs64=pairs[1].speedup,
                   latency_pass="quiet, onnxruntime, 1 thread")
        atomic_write_json(path, row)
        print(f"{row['id']}: x{pairs[0].speedup:.2f} (bs1), x{pairs[1].speedup:.2f} (bs64)", flush=True)


def _diagnostics(rows: list[dict]) -> str:
    if not all("distinct_rewards" in r for r in rows) or not rows[0]["episodes"]:
        return " | "
    distinct = ", ".join(str(r["distinct_rewards"]) for r in rows)
    return f"{distinct} | {sum(r['best_in_warmup'] for r in rows)} of {len(rows)}"


def summary() -> Path:
    rows = [json.loads(p.read_text()) for p in sorted(RESULTS.glob("*.json"))]
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        key = (r["model"], r["target"], r["kind"], r["episodes"], r["finetune_epochs"], r.get("reconstruct", False),
               r.get("distill", False), r.get("wall", "both"))
        groups.setdefault(key, []).append(r)
    lines = ["# RL search of per-layer sparsity: entropy reward vs accuracy reward vs uniform vs random", "",
             "Generated by `python benchmarks/search_rows.py` (docs/METHODS.md sections 3, 7, 9). Every policy ends "
             "at the MACs target (action wall), is applied with L1 inside each group, fine-tuned (lr 0.01, epochs "
             "stated) and evaluated on the Fashion-MNIST test set; with several seeds: mean ± standard deviation. "
             "`rec`: every search episode scored on a reconstructed model and the chosen model reconstructed before "
             "fine-tuning; `kd`: fine-tuned with distillation from the unpruned model. Rows without `rec` are from "
             "earlier code (raw episodes, 200 episodes with 20 warm-up, plain fine-tuning; latency in eager torch at "
             "2 threads); `rec` rows time ONNX Runtime at 1 thread. Search s: the sum of the search's episode "
             "times. Distinct rewards: different reward values (to 1e-6) the search saw, per seed. Best in warm-up: "
             "seeds whose best policy came from the random warm-up. Each row's JSON holds its configuration, "
             "commit and command (the `rec` rows).", "",
             "| model | target | policy | rec | kd | wall | episodes | FT epochs | seeds | MACs ratio | latency x bs1 "
             "| latency x bs64 | acc pruned | acc reconstructed | acc fine-tuned | search s | distinct rewards "
             "| best in warm-up |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]

    def stat(values: list) -> str:
        values = [v for v in values if v is not None]
        if not values:
            return "-"
        return f"{np.mean(values):.2f}" + (f" ± {np.std(values, ddof=1):.2f}" if len(values) > 1 else "")

    for (model, target, kind, episodes, epochs, rec, kd, wall), rs in sorted(groups.items()):
        lines.append(f"| {model} | {target} | {kind} | {'yes' if rec else 'no'} | {'yes' if kd else 'no'} | {wall} "
                     f"| {episodes} | {epochs} | {len(rs)} | {stat([r['macs_ratio'] for r in rs])} | "
                     f"{stat([r['latency_speedup_bs1'] for r in rs])} | "
                     f"{stat([r['latency_speedup_bs64'] for r in rs])} | {stat([r['acc_pruned'] for r in rs])} | "
                     f"{stat([r.get('acc_reconstructed') for r in rs])} "
                     f"| {stat([r['acc_finetuned'] for r in rs])} | {stat([r['method_seconds'] for r in rs])} "
                     f"| {_diagnostics(rs)} |")
    return atomic_write_text(RESULTS.parent / "SEARCH.md", "\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=10, help="fine-tuning epochs of every row")
    ap.add_argument("--only", nargs="*", help="row ids (or substrings) to run")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--summary", action="store_true", help="only rebuild SEARCH.md")
    ap.add_argument("--relatency", action="store_true",
                    help="re-measure every row's latency (run it with nothing else on the machine)")
    ap.add_argument("--commit", action="store_true", help="git-commit each finished row")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.relatency:
        remeasure_latency(only=args.only)
    elif not args.summary:
        for model, kind, factor, seed, distill, wall in ROWS:
            rid = row_id(model, kind, factor, seed, args.epochs, distill, wall)
            path = RESULTS / f"{rid}.json"
            if (args.only and not any(o in rid for o in args.only)) or path.exists():
                continue
            print(f"run {rid}", flush=True)
            atomic_write_json(path, run_row(model, kind, factor, seed, args.epochs, distill, wall, rid))
            table = summary()
            if args.commit:
                commit_files([path, table], f"benchmark row {rid}")
    print(summary().read_text())


if __name__ == "__main__":
    sys.exit(main())
