"""How well does the latency table predict a whole model's ONNX Runtime latency?

For every zoo model (untrained, ``entroprune.create``) and every shipped
checkpoint (``entroprune.load(pretrained_path(name))``), unpruned and pruned by
L1 magnitude to 2x and 5x fewer MACs, at one thread and batch 1 and 64:
predicted ms (``LatencyTable.predict``) against measured ms (the whole model
in ORT, timed in rounds, interleaved across models), and the relative error.

The overhead model is calibrated on ``default_calibration_models``: the
untrained zoo models unpruned plus copies with randomly / uniformly reduced
widths. The L1-pruned rows are held out (never calibrated on); the unpruned
rows are architectures the fit has seen, flagged ``in_calibration`` and
summarised apart. Each table starts empty (a temporary cache) unless
``--cache-dir`` is given, and the seconds to build the entries of resnet20,
vgg_small and mobilenetv2 from scratch are recorded.

At one thread the table's clock is the CPU time of the calling thread. Each
row gives the prediction (``predicted_ms``) against the measured CPU time
(``measured_ms``, ``error``) and wall time (``measured_wall_ms``,
``error_wall``), and the same with the table's optional speed normalisation
(``normalize=True``: a reference layer timed alongside every measurement,
times brought to the quietest speed seen; ``predicted_normalized_ms`` against
``measured_quiet_ms``, ``error_normalized``); all agree on a quiet machine.
The load average is sampled during the run and ``machine_busy`` says whether
other jobs were running.

    python benchmarks/latency_table_error.py                # writes results/latency_table_error.json
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

import entroprune
from entroprune.io import atomic_write_json
from entroprune.measure import count_macs
from entroprune.measure.latency_table import (
    FEATURES,
    LatencyTable,
    default_calibration_models,
    model_profile,
    model_signature,
)
from entroprune.measure.table_timing import measure_models
from entroprune.models.pretrained import pretrained_path
from entroprune.pruning import PruneConfig, get_criterion, prune_to_macs

HERE = Path(__file__).resolve().parent
OUT = HERE / "results" / "latency_table_error.json"
SHAPE = (1, 28, 28)
PRETRAINED = ("resnet20", "vgg_small", "mobilenetv2", "lenet5")
BUILD_TIMED = ("resnet20", "vgg_small", "mobilenetv2")


class LoadLog:
    """1-minute load averages, sampled at every ``note()``."""

    def __init__(self):
        self.samples: list[float] = []

    def note(self) -> None:
        self.samples.append(os.getloadavg()[0])


def _zoo(name: str) -> torch.nn.Module:
    torch.manual_seed(0)        # the same untrained weights, hence the same L1-pruned widths, on every run
    return entroprune.create(name)


def eval_models(log: LoadLog) -> list[dict]:
    """Rows to validate on: every zoo model and shipped checkpoint, unpruned and L1-pruned 2x / 5x."""
    sources = [("zoo", n, _zoo(n)) for n in entroprune.list_models()]
    sources += [("pretrained", n, entroprune.load(pretrained_path(n))) for n in PRETRAINED]
    out = []
    for source, name, base in sources:
        out.append({"model": name, "source": source, "pruning": "none", "net": base.eval()})
        for label, target in (("l1-2x", 0.5), ("l1-5x", 0.2)):
            small, _ = prune_to_macs(base, get_criterion("l1"), SHAPE, PruneConfig(target_macs=target))
            out.append({"model": name, "source": source, "pruning": label, "net": small.eval()})
        log.note()
    return out


def build_seconds(batch: int, threads: int, log: LoadLog) -> dict:
    """Seconds to measure every entry of each unpruned model into an empty table."""
    out = {}
    for name in BUILD_TIMED:
        with tempfile.TemporaryDirectory(prefix="entroprune-lt-") as tmp:
            table = LatencyTable(threads, batch, cache_dir=tmp, progress=False)
            configs = [c for _, c in model_profile(entroprune.create(name), SHAPE).layers]
            t0 = time.perf_counter()
            table.ensure(configs)
            out[name] = {"seconds": round(time.perf_counter() - t0, 2), "entries": table.measured}
        log.note()
    return out


def summarise(rows: list[dict], key: str) -> dict:
    errs = [abs(r[key]) for r in rows]
    return {"rows": len(errs), "median_abs_error": statistics.median(errs), "max_abs_error": max(errs)} if errs else {}


def run(batches: list[int], threads: int, cache_dir: str | None) -> dict:
    log = LoadLog()
    log.note()
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=HERE, capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "entroprune/measure", "benchmarks"],
                           cwd=HERE.parent, capture_output=True, text=True).stdout.strip()
    t_start = time.time()
    calib = default_calibration_models(SHAPE)
    calib_sigs = {model_signature(model_profile(m, SHAPE), SHAPE) for _, m in calib}
    evals = eval_models(log)
    rows, per_batch = [], {}
    tmp = tempfile.TemporaryDirectory(prefix="entroprune-lt-") if cache_dir is None else None
    folder = cache_dir or tmp.name
    try:
        for batch in batches:
            info: dict = {"build": build_seconds(batch, threads, log)}
            table = LatencyTable(threads, batch, cache_dir=folder, progress=sys.stderr.isatty())
            t0 = time.perf_counter()
            fit = table.calibrate(calib, SHAPE)
            info.update(calibrate_seconds=round(time.perf_counter() - t0, 1), fit=fit.to_dict(), key=table.key,
                        entries=len(table))
            log.note()
            nets = [e["net"] for e in evals]
            table.ensure(c for n in nets for _, c in model_profile(n, SHAPE).layers)   # then one quiet speed
            predicted = [table.predict(n, SHAPE) for n in nets]
            measured = table.measure_models(nets, SHAPE)
            log.note()
            wall = measure_models(nets, SHAPE, batch, threads, repeats=30 if batch < 16 else 12,
                                  rounds=table.rounds, clock="wall")
            log.note()
            batch_rows = []
            # the same measurements, normalised: no new timing (entries and calibration are in the file)
            norm = LatencyTable(threads, batch, cache_dir=folder, normalize=True, progress=False)
            info["fit_normalized"] = norm.calibrate(calib, SHAPE).to_dict()
            predicted_norm = [norm.predict(n, SHAPE) for n in nets]
            for e, p, pn, (m, ref), (w, _) in zip(evals, predicted, predicted_norm, measured, wall):
                q = norm.quiet_ms(m, ref)
                batch_rows.append({
                    "model": e["model"], "source": e["source"], "pruning": e["pruning"], "batch": batch,
                    "threads": threads, "macs": count_macs(e["net"], SHAPE),
                    "in_calibration": model_signature(model_profile(e["net"], SHAPE), SHAPE) in calib_sigs,
                    "predicted_ms": p, "measured_ms": m, "error": p / m - 1.0,
                    "measured_wall_ms": w, "error_wall": p / w - 1.0, "reference_ms": ref,
                    "predicted_normalized_ms": pn, "measured_quiet_ms": q, "error_normalized": pn / q - 1.0})
            info["quiet_reference_ms"] = norm.quiet_ref_ms
            refs = [e["ref_ms"] for e in table.entries.values()]
            info["reference_ms_of_entries"] = {"min": min(refs), "median": statistics.median(refs), "max": max(refs)}
            held = [r for r in batch_rows if not r["in_calibration"]]
            for part, rs in (("held_out", held), ("all_rows", batch_rows)):
                info[part] = {"cpu": summarise(rs, "error"), "wall": summarise(rs, "error_wall"),
                              "normalized": summarise(rs, "error_normalized")}
            per_batch[str(batch)] = info
            rows += batch_rows
            h = info["held_out"]["cpu"]
            print(f"batch {batch}: held-out median |error| {h['median_abs_error']:.3f} max {h['max_abs_error']:.3f}; "
                  f"fit {fit.coef}", flush=True)
    finally:
        if tmp is not None:
            tmp.cleanup()
    import onnxruntime

    return {
        "commit": commit, "uncommitted_changes": dirty.splitlines(),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "configuration": {"threads": threads, "batches": batches, "input_shape": list(SHAPE),
                          "features": list(FEATURES), "calibration_models": [n for n, _ in calib],
                          "held_out": "L1-pruned 2x and 5x rows (zoo and shipped checkpoints); unpruned rows "
                                      "share their architecture with calibration models",
                          "cache": "fresh temporary tables" if cache_dir is None else str(cache_dir),
                          "onnxruntime": onnxruntime.__version__, "torch": torch.__version__,
                          "cpu": per_batch[str(batches[0])]["key"]["cpu"], "cpus": os.cpu_count()},
        "machine_busy": max(log.samples) > threads + 0.5,
        "load_average_1min": {"min": min(log.samples), "max": max(log.samples), "samples": log.samples},
        "seconds": round(time.time() - t_start, 1),
        "per_batch": per_batch,
        "rows": rows,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 64])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cache-dir", default=None, help="reuse / keep the tables here (default: fresh, temporary)")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    result = run(args.batches, args.threads, args.cache_dir)
    atomic_write_json(args.out, result)
    print(f"wrote {args.out} (machine busy: {result['machine_busy']})")


if __name__ == "__main__":
    main()
