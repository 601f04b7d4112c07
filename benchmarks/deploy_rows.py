"""What a deployed model gains (docs/METHODS.md sections 7-11): speed in ONNX
Runtime, the runtime a device uses, for models pruned to a LATENCY target
(the per-layer latency table) beside models pruned to the same MACs ratio,
one row per model with depth reduction and folding, each fine-tuned (10
epochs, distilled from the unpruned model) and each in fp32 and INT8.

Every row runs ``entroprune.compress`` (channels by ``greedy_refit``,
reconstructed, fine-tuned, quantized) into ``work/deploy/<row>/`` and writes
``results/deploy/<row>.json``; finished rows are skipped, an interrupted one
resumes its fine-tuning. A MACs row takes the MACs ratio its latency row
reached. Latency: median of repeated runs, unpruned fp32 and the row's model
interleaved in one process, 1 thread (and 2 threads), batch 1 and 64; rerun
``--relatency`` alone on the machine before quoting (rows then say
``latency_pass: quiet``). Summary and plot: ``results/DEPLOY.md``,
``results/figures/deploy.png``.

    python benchmarks/deploy_rows.py --commit
    python benchmarks/deploy_rows.py --only resnet20 --commit
    python benchmarks/deploy_rows.py --relatency
    python benchmarks/deploy_rows.py --table
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from entroprune import CompressConfig, compress
from entroprune.data import load_data
from entroprune.io import atomic_write_json, atomic_write_text, load
from entroprune.measure import latency_pairs
from entroprune.models.pretrained import pretrained_path
from entroprune.pruning.structural import PruningError
from entroprune.reporting import markdown_table, save_figure
from entroprune.reporting.provenance import commit_files, provenance

ROOT = Path(__file__).resolve().parent
RESULTS, WORK = ROOT / "results" / "deploy", ROOT / "work" / "deploy"
MODELS = ("resnet20", "vgg_small", "mobilenetv2")
EPOCHS = 10

# (model, kind, speedup): kind "none" (unpruned), "latency", "macs" (the MACs ratio of the latency row of the
# same speedup), "depth" (latency target, then EASIER and folding); most useful rows first
ROWS = ([(m, "none", 1.0) for m in ("resnet20", "vgg_small")]
        + [(m, k, 3.0) for m in ("resnet20", "vgg_small") for k in ("latency", "macs")]
        + [("vgg_small", "latency", 4.0)]
        + [(m, "depth", 3.0) for m in ("resnet20", "vgg_small")]
        + [("mobilenetv2", "none", 1.0), ("mobilenetv2", "latency", 2.0)]
        + [(m, k, s) for s in (2.0, 4.0) for m in ("resnet20", "vgg_small") for k in ("latency", "macs")
           if (m, k, s) != ("vgg_small", "latency", 4.0)]
        + [("mobilenetv2", "macs", 2.0)] + [("mobilenetv2", k, s) for s in (3.0, 4.0) for k in ("latency", "macs")]
        + [("mobilenetv2", "depth", 3.0)])


def row_id(model: str, kind: str, speedup: float) -> str:
    return f"{model}-unpruned" if kind == "none" else f"{model}-{kind}-{speedup:g}x-ft{EPOCHS}-kd"


class Unreachable(RuntimeError):
    """A row that cannot run because the row it is paired with could not reach its target."""


def config(model: str, kind: str, speedup: float) -> CompressConfig:
    common = dict(method="greedy_refit", finetune_epochs=EPOCHS, distill=True, quantize=True, threads=1,
                  latency_batches=(1, 64), latency_repeats=50, progress=False)
    if kind == "none":
        return CompressConfig(method="none", finetune_epochs=0, quantize=True, threads=1, latency_batches=(1, 64),
                              latency_repeats=50, progress=False)
    if kind == "macs":      # the MACs ratio the latency row of the same speedup reached
        twin = json.loads((RESULTS / f"{row_id(model, 'latency', speedup)}.json").read_text())
        if "unreachable" in twin:
            raise Unreachable(f"its latency twin is unreachable ({twin['unreachable']})")
        return CompressConfig(target=1.0 / twin["macs_ratio"], target_kind="macs", **common)
    return CompressConfig(target=f"{speedup:g}x", target_kind="latency", depth="easier" if kind == "depth" else None,
                          fold=kind == "depth", **common)


def _pairs(base, model, shape, threads: int) -> dict:
    pairs = latency_pairs(base, model, shape, (1, 64), repeats=50, threads=threads)
    return {f"bs{p.batch_size}": {"base_ms": p.base_ms, "pruned_ms": p.pruned_ms, "speedup": p.speedup}
            for p in pairs}


def run_row(model: str, kind: str, speedup: float, rid: str) -> dict:
    data = load_data("fashion_mnist", seed=0)
    net = load(pretrained_path(model))
    shape = tuple(data.train_x.shape[1:])
    t0 = time.time()
    small, rep = compress(net, data, config(model, kind, speedup), out=WORK / rid, label=rid)
    final = rep.get("after_finetune") or rep["deployed"]
    q = rep["quantized"]
    row = {"id": rid, "model": model, "kind": kind, "speedup_target": speedup if kind != "none" else None,
           "finetune_epochs": rep["config"]["finetune_epochs"], "macs_ratio": rep["macs_ratio"],
           "params_ratio": rep["params_ratio"], "acc_before": rep["before"]["test_acc"],
           "acc_fp32": final["test_acc"], "val_fp32": final["val_acc"], "acc_int8": q["int8_test_acc"],
           "val_int8": q["int8_acc"], "fp32_bytes": q["fp32_bytes"], "int8_bytes": q["int8_bytes"],
           "latency_1t": {"fp32": rep["latency"]["onnxruntime"], "int8": q["latency"]},
           "latency_2t": {"fp32": _pairs(net, small, shape, 2), "int8": _pairs(net, WORK / rid / "model.int8.onnx",
                                                                              shape, 2)},
           "target": rep["target"], "remove": {k: v for k, v in rep["remove"].items() if k not in ("history",)},
           "depth": rep.get("depth"), "fold": rep.get("fold"), "latency_pass": "in-run",
           "row_seconds": time.time() - t0, "config": rep["config"], "provenance": provenance()}
    return row


def remeasure(only: list[str] | None) -> None:
    """Both thread counts again for every row, from the kept models, alone on the machine."""
    data = load_data("fashion_mnist", seed=0)
    shape = tuple(data.train_x.shape[1:])
    for path in sorted(RESULTS.glob("*.json")):
        row = json.loads(path.read_text())
        folder = WORK / row["id"]
        if (only and not any(o in row["id"] for o in only)) or "unreachable" in row \
                or not (folder / "model.safetensors").exists():
            continue
        base, small = load(pretrained_path(row["model"])), load(folder / "model.safetensors")
        for threads in (1, 2):
            row[f"latency_{threads}t"] = {"fp32": _pairs(base, small, shape, threads),
                                          "int8": _pairs(base, folder / "model.int8.onnx", shape, threads)}
        row["latency_pass"] = "quiet"
        atomic_write_json(path, row)
        print(f"{row['id']}: fp32 x{row['latency_1t']['fp32']['bs1']['speedup']:.2f}, "
              f"int8 x{row['latency_1t']['int8']['bs1']['speedup']:.2f} (bs1, 1 thread)", flush=True)


def write_table() -> Path:
    rows = [json.loads(p.read_text()) for p in sorted(RESULTS.glob("*.json"))]
    unreachable = [r for r in rows if "unreachable" in r]
    rows = [r for r in rows if "unreachable" not in r]
    order = {m: i for i, m in enumerate(MODELS)}
    rows.sort(key=lambda r: (order[r["model"]], r["speedup_target"] or 0, r["kind"]))
    cells = []
    for r in rows:
        l1, l2 = r["latency_1t"], r["latency_2t"]
        t = r["target"]
        cells.append([r["model"], r["kind"], r["speedup_target"], r["macs_ratio"],
                      t.get("measured_speedup"), r["acc_before"], r["acc_fp32"], r["acc_int8"],
                      l1["fp32"]["bs1"]["speedup"], l1["fp32"]["bs64"]["speedup"], l1["int8"]["bs1"]["speedup"],
                      l1["int8"]["bs64"]["speedup"], l2["fp32"]["bs1"]["speedup"], l2["int8"]["bs1"]["speedup"],
                      l1["fp32"]["bs1"]["pruned_ms"], r["fp32_bytes"], r["int8_bytes"], r["latency_pass"]])
    table = markdown_table(
        ["model", "pruned to", "speedup asked", "MACs ratio", "speedup at pruning", "test acc unpruned",
         "test acc fp32", "test acc INT8", "fp32 x bs1", "fp32 x bs64", "INT8 x bs1", "INT8 x bs64",
         "fp32 x bs1 2t", "INT8 x bs1 2t", "fp32 ms bs1", "fp32 bytes", "INT8 bytes", "latency pass"], cells)
    plot(rows)
    text = ("# Deployment: ONNX Runtime speed and accuracy, latency- vs MACs-targeted pruning, fp32 and INT8\n\n"
            "Generated by `python benchmarks/deploy_rows.py` (docs/METHODS.md sections 7-11). `latency`: pruned to "
            "the speedup asked, predicted by the per-layer latency table and checked by measurement; `macs`: pruned "
            "to the MACs ratio the latency row reached; `depth`: the latency target, then EASIER and folding. "
            "Channels by `greedy_refit`, reconstructed, fine-tuned 10 epochs with distillation from the unpruned "
            "model, then static INT8 (QDQ). Speedups are against the UNPRUNED fp32 model in ONNX Runtime (`x`), "
            "1 thread unless `2t`; `speedup at pruning`: measured at batch 1 right after pruning. Accuracies in % "
            "on the Fashion-MNIST test set. `latency pass`: `quiet` = measured again alone on the machine.\n\n"
            + table + "\n\n![accuracy against speedup](figures/deploy.png)\n"
            + ("\n## Targets not reachable\n\n" + "\n".join(f"- `{r['id']}`: {r['unreachable']}" for r in unreachable)
               + "\n" if unreachable else ""))
    return atomic_write_text(RESULTS.parent / "DEPLOY.md", text)


def plot(rows: list[dict]) -> None:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(MODELS), figsize=(5 * len(MODELS), 4), squeeze=False)
    for ax, model in zip(axes[0], MODELS):
        mine = [r for r in rows if r["model"] == model]
        for kind, color in (("latency", "#c53"), ("macs", "#37a"), ("depth", "#2a7"), ("none", "#555")):
            for prec, marker, ls in (("fp32", "o", "-"), ("int8", "s", "--")):
                pts = sorted((r["latency_1t"][prec]["bs1"]["speedup"], r[f"acc_{prec}"]) for r in mine
                             if r["kind"] == kind)
                if pts:
                    ax.plot(*zip(*pts), marker=marker, ls=ls, color=color, label=f"{kind} {prec}")
        ax.set_title(model)
        ax.set_xlabel("speedup vs unpruned fp32 (ONNX Runtime, batch 1, 1 thread)")
        ax.set_ylabel("test accuracy (%)")
        ax.legend(fontsize=7)
    save_figure(fig, RESULTS.parent / "figures" / "deploy.png")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="*", help="row ids (or substrings) to run")
    ap.add_argument("--threads", type=int, default=1, help="torch threads for training")
    ap.add_argument("--commit", action="store_true", help="git-commit each finished row")
    ap.add_argument("--table", action="store_true", help="only rebuild DEPLOY.md")
    ap.add_argument("--relatency", action="store_true", help="re-measure every row alone on the machine")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.relatency:
        remeasure(args.only)
    elif not args.table:
        for model, kind, speedup in ROWS:
            rid = row_id(model, kind, speedup)
            path = RESULTS / f"{rid}.json"
            if (args.only and not any(o in rid for o in args.only)) or path.exists():
                continue
            print(f"run {rid}", flush=True)
            try:
                row = run_row(model, kind, speedup, rid)
            except (PruningError, Unreachable) as e:      # a target the model cannot reach is a result too
                print(f"{rid}: {e}", flush=True)
                row = {"id": rid, "model": model, "kind": kind, "speedup_target": speedup, "unreachable": str(e),
                       "provenance": provenance()}
            atomic_write_json(path, row)
            table = write_table()
            if args.commit:
                commit_files([path, table, RESULTS.parent / "figures" / "deploy.png"], f"benchmark row {rid}")
    print(write_table().read_text())


if __name__ == "__main__":
    sys.exit(main())
