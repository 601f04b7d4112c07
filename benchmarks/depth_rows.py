"""Benchmark rows of depth reduction (docs/METHODS.md sections 4-5):
EASIER (Quetu et al., arXiv 2404.18949) with its random-rectifier comparison,
and NEPENTHE (Liao et al., arXiv 2404.16890), on the shipped checkpoints.

Each row is one ``entroprune depth`` run (resumable: its folder in
``work/depth/<row>/`` keeps every step's model), under the same fine-tuning
budget per step for every row (``--epochs`` over ``--train-limit`` training
images, lr 0.01). The final measurements of the run (rectifiers removed,
layers physically removed by folding, MACs, latency of the folded model
against the starting model at batch 1 and 64, accuracy at each step) are
copied to ``results/depth/<row>.json``; a finished row is skipped. The
summary is ``results/DEPTH.md``.

    python benchmarks/depth_rows.py --models resnet20 --methods easier
    python benchmarks/depth_rows.py --summary
    python benchmarks/depth_rows.py --commit      # git-commit each finished row
    python benchmarks/depth_rows.py --relatency   # latency again, alone on the machine
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from entroprune.data import load_data
from entroprune.depth.fold import fold
from entroprune.io import atomic_write_json, atomic_write_text, load
from entroprune.measure import latency_pairs
from entroprune.reporting.provenance import OLDER_ROWS_NOTE, commit_files

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import remeasure_rows  # noqa: E402  (shared with benchmarks/run.py)

ROOT = Path(__file__).resolve().parent
RESULTS, WORK = ROOT / "results" / "depth", ROOT / "work" / "depth"


def row_id(model: str, method: str, epochs: int, limit: int, tolerance: float, zeta: float = 0.5,
           cap: float = 1.0) -> str:
    knobs = f"-zeta{zeta:g}" if method == "nepenthe" and zeta != 0.5 else ""  # 0.5: the paper's
    knobs += f"-cap{cap:g}" if method == "nepenthe" and cap != 1.0 else ""    # 1.0: the authors' code
    return f"{model}-{method}{knobs}-ft{epochs}x{limit // 1000}k-tol{tolerance:g}"


def run_row(model: str, method: str, epochs: int, limit: int, tolerance: float, threads: int,
            zeta: float = 0.5, cap: float = 1.0) -> dict:
    rid = row_id(model, method, epochs, limit, tolerance, zeta, cap)
    folder = WORK / rid
    cmd = ["entroprune", "depth", f"pretrained:{model}", "--method", method, "--out", str(folder),
           "--epochs", str(epochs), "--train-limit", str(limit), "--tolerance", str(tolerance),
           "--threads", str(threads)]
    if method == "easier":
        cmd.append("--random-baseline")
    else:
        cmd += ["--zeta", str(zeta)] + (["--max-layer-fraction", str(cap)] if cap != 1.0 else [])
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    state = json.loads((folder / "state.json").read_text())
    steps = [{k: v for k, v in r.items() if k != "entropies"} for r in state.get("rows", [])]  # per step
    knobs = {"zeta": zeta, "max_layer_fraction": cap} if method == "nepenthe" else {}
    return {"id": rid, "model": model, "method": method, **knobs,
            "finetune_epochs_per_step": epochs,
            "train_images_per_step": limit, "tolerance": tolerance, "final": state["final"],
            "comparison": state.get("comparison"), "steps": steps, "command": " ".join(cmd)}


def remeasure_latency(repeats: int = 50, threads: int = 2, only: list[str] | None = None) -> None:
    """Measure again, alone on the machine, every row's latency pairs from the
    models its run folder kept: the starting model (step 0), the folded best
    model and the starting model with only its BatchNorm folded; the random
    baseline's folded model too."""
    data = load_data("fashion_mnist", seed=0)
    shape, x = tuple(data.train_x.shape[1:]), data.val_x[:64]

    def pairs(a, b, batches: tuple[int, ...] = (1, 64)) -> list[dict]:
        return [dict(batch_size=p.batch_size, base_ms=p.base_ms, folded_ms=p.pruned_ms, speedup=p.speedup)
                for p in latency_pairs(a, b, shape, batches, repeats=repeats, threads=threads)]

    def measure(row: dict) -> tuple[float, float] | None:
        folder = WORK / row["id"]
        if not (folder / "folded.safetensors").exists():
            return None
        base, folded, f = load(folder / "step_000.safetensors"), load(folder / "folded.safetensors"), row["final"]
        f["latency"] = pairs(base, folded)
        if "latency_vs_base_folded" in f:
            f["latency_vs_base_folded"] = pairs(fold(base, x)[0], folded)
        for c in row.get("comparison") or []:
            other = folder / "random" / "folded.safetensors"
            c["speedup_b1"] = (pairs(base, load(other), (1,))[0]["speedup"]
                               if c["label"].startswith("random") and other.exists() else f["latency"][0]["speedup"])
        row["latency_pass"] = f"quiet, {threads} threads, {repeats} repeats"
        return f["latency"][0]["speedup"], f["latency"][1]["speedup"]

    remeasure_rows(RESULTS, only, measure)


def _speed(final: dict, batch: int, key: str = "latency") -> str:
    return next((f"{p['speedup']:.2f}" for p in final.get(key) or [] if p["batch_size"] == batch), "-")


def summary() -> Path:
    lines = ["# Depth reduction: EASIER, NEPENTHE and random rectifiers", "",
             "Generated by `python benchmarks/depth_rows.py`. " + OLDER_ROWS_NOTE
             + "Fine-tuning budget per step as stated (lr 0.01); "
             "the best step is the last within the tolerance of the starting validation accuracy. "
             "Layers removed: convolution/linear layers physically removed by folding (BatchNorm folds "
             "excluded from the count by comparing with the folded starting model). Latency: folded model "
             "against the starting model, median of repeated CPU runs in one process (rows with `latency_pass` "
             "in their JSON were measured again alone on the machine); 'vs folded start': against the "
             "starting model with only its BatchNorm folded, i.e. what the depth reduction itself gains. "
             "Accuracies in %.", "",
             "| model | method | FT / step | steps | rectifiers removed | conv+linear (start folded -> after) "
             "| MACs ratio | latency x bs1 | latency x bs64 | vs folded start bs1 / bs64 "
             "| val start -> best | test start -> folded |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for p in sorted(RESULTS.glob("*.json")):
        r = json.loads(p.read_text())
        f = r["final"]
        macs = f"{f['macs_base'] / f['macs_after']:.2f}" if f.get("macs_after") else "-"
        cap = r.get("max_layer_fraction", 1.0)
        knobs = (f"zeta {r.get('zeta', 0.5):g}, " + (f"cap {cap:g}, " if cap != 1.0 else "")
                 if r["method"] == "nepenthe" else "")
        label = f"{r['method']} ({knobs}tol {r['tolerance']:g})"
        lines.append(f"| {r['model']} | {label} | {r['finetune_epochs_per_step']} ep x "
                     f"{r['train_images_per_step'] // 1000}k | {f['best_step']} | {f['rectifiers_removed']} | "
                     f"{f.get('conv_linear_base_folded', '-')} -> {f.get('conv_linear_after', '-')} | {macs} | "
                     f"{_speed(f, 1)} | {_speed(f, 64)} | {_speed(f, 1, 'latency_vs_base_folded')} / "
                     f"{_speed(f, 64, 'latency_vs_base_folded')} | {f['val_acc_base']:.2f} -> {f['val_acc']:.2f} | "
                     f"{f['test_acc_base']:.2f} -> {f['test_acc']:.2f} |")
        for c in r.get("comparison") or []:
            if c["label"] == r["method"]:
                continue  # the method's own best step, already the row above
            b1 = f"{c['speedup_b1']:.2f}" if c.get("speedup_b1") else "-"
            lines.append(f"| {r['model']} | {c['label']} | | | {c['rectifiers_removed']} | "
                         f"-> {c.get('conv_linear_after', '-')} | | {b1} | | | "
                         f"-> {c['val_acc']:.2f} | -> {c['test_acc']:.2f} |")
    return atomic_write_text(RESULTS.parent / "DEPTH.md", "\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="*", default=["resnet20", "vgg_small", "mobilenetv2"])
    ap.add_argument("--methods", nargs="*", default=["easier", "nepenthe"])
    ap.add_argument("--epochs", type=int, default=1, help="fine-tuning epochs per step")
    ap.add_argument("--train-limit", type=int, default=20000, help="training images per fine-tuning step")
    ap.add_argument("--tolerance", type=float, default=0.5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--zeta", type=float, default=0.5, help="nepenthe: fraction of weights removed per round")
    ap.add_argument("--max-layer-fraction", type=float, default=1.0,
                    help="nepenthe: a layer loses at most this fraction of its remaining weights per round")
    ap.add_argument("--summary", action="store_true", help="only rebuild DEPTH.md")
    ap.add_argument("--commit", action="store_true", help="git-commit each finished row")
    ap.add_argument("--relatency", action="store_true",
                    help="re-measure every row's latency (run it with nothing else on the machine)")
    ap.add_argument("--only", nargs="*", help="with --relatency: row ids (or substrings) to re-measure")
    args = ap.parse_args()
    if args.relatency:
        remeasure_latency(threads=args.threads, only=args.only)
    elif not args.summary:
        for model in args.models:
            for method in args.methods:
                rid = row_id(model, method, args.epochs, args.train_limit, args.tolerance, args.zeta,
                             args.max_layer_fraction)
                path = RESULTS / f"{rid}.json"
                if path.exists():
                    continue
                atomic_write_json(path, run_row(model, method, args.epochs, args.train_limit, args.tolerance,
                                                args.threads, args.zeta, args.max_layer_fraction))
                table = summary()
                if args.commit:
                    commit_files([path, table], f"benchmark row {path.stem}")
    print(summary().read_text())


if __name__ == "__main__":
    sys.exit(main())
