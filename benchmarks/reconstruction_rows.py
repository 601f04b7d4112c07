"""Accuracy BEFORE any fine-tuning, with and without feature-map
reconstruction (docs/METHODS.md sections 7 and 8), for every channel
criterion at 2x, 5x and 10x fewer MACs on the shipped resnet20, vgg_small and
mobilenetv2.

One row = one (model, criterion, scope, target): the shipped checkpoint is
pruned with ``prune_to_macs`` (scores on 512 calibration images of the
training split), evaluated on the validation and test splits, then
reconstructed with the default ``ReconstructConfig`` (the same 512 images)
and evaluated again. Rows are JSON files in ``results/reconstruction/``
(skipped when present, so the grid fills across runs) with their
configuration, commit and command; the table is ``results/RECONSTRUCTION.md``.

    python benchmarks/reconstruction_rows.py                 # the whole grid, cheapest rows first
    python benchmarks/reconstruction_rows.py --only resnet20 --commit
    python benchmarks/reconstruction_rows.py --table
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch

from entroprune.data import load_data
from entroprune.io import atomic_write_json, atomic_write_text, load
from entroprune.models.pretrained import pretrained_path
from entroprune.pruning import PruneConfig, get_criterion, prune_to_macs
from entroprune.reconstruct import ReconstructConfig, reconstruct
from entroprune.reporting import markdown_table
from entroprune.reporting.provenance import commit_files, provenance
from entroprune.training import evaluate

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results" / "reconstruction"
MODELS = ("resnet20", "vgg_small", "mobilenetv2")
# (criterion, scope): "uniform" is the uniform policy (L1 inside each group)
METHODS = (("l1", "global"), ("l1", "uniform"), ("aura", "global"), ("mass", "global"), ("random", "global"),
           ("greedy_refit", "global"), ("greedy_refit", "uniform"))
FACTORS = (2.0, 5.0, 10.0)
CALIB = 512
# a larger calibration set for the refit (the scores keep 512 images): (criterion, scope, images, positions)
LARGE = (("greedy_refit", "global", 2048, 32768), ("greedy_refit", "uniform", 2048, 32768))


def row_id(model: str, criterion: str, scope: str, factor: float, images: int = CALIB) -> str:
    return f"{model}-{criterion}-{scope}-{factor:g}x" + (f"-rec{images}" if images != CALIB else "")


def run_row(model: str, criterion: str, scope: str, factor: float, data, images: int = CALIB,
            positions: int = 16384) -> dict:
    net = load(pretrained_path(model))
    calib = data.calibration(max(images, CALIB), 0)                        # (n, 1, 28, 28), training split
    cfg = PruneConfig(target_macs=1.0 / factor, scope=scope)
    rcfg = ReconstructConfig(images=images, positions=positions)
    t0 = time.time()
    pruned, rep = prune_to_macs(net, get_criterion(criterion), tuple(calib.shape[1:]), cfg,
                                calib=(calib[:CALIB], None))
    prune_seconds = time.time() - t0
    raw = {"val": evaluate(pruned, data.val_x, data.val_y), "test": evaluate(pruned, data.test_x, data.test_y)}
    rec = reconstruct(pruned, net, calib, rcfg)
    done = {"val": evaluate(pruned, data.val_x, data.val_y), "test": evaluate(pruned, data.test_x, data.test_y)}
    return {"id": row_id(model, criterion, scope, factor, images), "model": model, "criterion": criterion,
            "scope": scope, "refit_images": images,
            "target": f"{factor:g}x", "macs_ratio": rep["macs_ratio"],
            "params_ratio": rep["params_before"] / rep["params_after"],
            "val_raw": raw["val"], "test_raw": raw["test"], "val_reconstructed": done["val"],
            "test_reconstructed": done["test"], "prune_seconds": prune_seconds,
            "reconstruct_seconds": rec["seconds"], "refitted_layers": len(rec["refitted"]),
            "kept_weights": rec["kept_weights"],
            "config": {"prune": asdict(cfg), "reconstruct": asdict(rcfg), "calibration_images": CALIB,
                       "calibration_seed": 0, "dataset": "fashion_mnist"},
            "provenance": provenance()}


def write_table() -> Path:
    rows = [json.loads(p.read_text()) for p in sorted(RESULTS.glob("*.json"))]
    order = {m: i for i, m in enumerate(MODELS)}
    rows.sort(key=lambda r: (order.get(r["model"], 9), float(r["target"][:-1]), r["criterion"], r["scope"],
                             r.get("refit_images", CALIB)))
    table = markdown_table(
        ["model", "target", "criterion", "scope", "refit images", "MACs ratio", "val raw", "val reconstructed",
         "test raw", "test reconstructed", "prune s", "reconstruct s", "kept weights"],
        [[r["model"], r["target"], r["criterion"], r["scope"], r.get("refit_images", CALIB), r["macs_ratio"],
          r["val_raw"], r["val_reconstructed"],
          r["test_raw"], r["test_reconstructed"], r["prune_seconds"], r["reconstruct_seconds"],
          len(r["kept_weights"])] for r in rows])
    text = ("# Accuracy before fine-tuning, with and without feature-map reconstruction\n\n"
            "Generated by `python benchmarks/reconstruction_rows.py` (docs/METHODS.md sections 7-8). The shipped "
            "checkpoints, pruned to the MACs target by each criterion (scope `global` ranks all channel groups "
            "together, `uniform` removes the same fraction of each), NOT fine-tuned; `reconstructed`: after the "
            "least-squares refit of every layer whose inputs lost channels, to the original model's outputs on "
            f"{CALIB} calibration images of the training split. Accuracies in % on the 5,000-image validation "
            "split and the 10,000-image test set of Fashion-MNIST. `kept weights`: layers whose refit did not "
            "lower their held-out error. Each row's JSON holds its configuration, commit and command.\n\n"
            + table + "\n")
    return atomic_write_text(ROOT / "results" / "RECONSTRUCTION.md", text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="*", help="row ids (or substrings) to run")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--commit", action="store_true", help="git-commit each finished row")
    ap.add_argument("--table", action="store_true", help="only rebuild RECONSTRUCTION.md")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if not args.table:
        data = load_data("fashion_mnist", seed=0)
        todo = [(f, m, c, s, CALIB, 16384) for f in FACTORS for m in MODELS for c, s in METHODS]
        todo += [(f, m, c, s, n, p) for f in (5.0, 10.0) for m in MODELS for c, s, n, p in LARGE]
        for factor, model, criterion, scope, images, positions in todo:
            rid = row_id(model, criterion, scope, factor, images)
            path = RESULTS / f"{rid}.json"
            if (args.only and not any(o in rid for o in args.only)) or path.exists():
                continue
            print(f"run {rid}", flush=True)
            atomic_write_json(path, run_row(model, criterion, scope, factor, data, images, positions))
            table = write_table()
            if args.commit:
                commit_files([path, table], f"benchmark row {rid}")
    print(write_table().read_text())


if __name__ == "__main__":
    sys.exit(main())
