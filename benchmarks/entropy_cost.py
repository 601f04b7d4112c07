"""Cost of a streaming entropy statistics pass relative to a plain forward
pass over the same calibration data (the target of docs/METHODS.md section 1: aura entropy over
every convolution of ResNet-20 at most 1.5x a plain forward).

Both passes run in the same process, interleaved, repeated. This machine's
speed drifts (the same convolution has measured 3x apart minutes apart), so
the ratio reported is the median over repeats of each repeat's ratio of
adjacent runs, beside the median seconds; results go to
``benchmarks/results/entropy_cost.json`` (one entry per thread count).

    python benchmarks/entropy_cost.py [--images 512] [--batch 128] [--repeats 15] [--threads 1 2]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from entroprune.data import load_data
from entroprune.entropy import ActivationStats, aura_kernel, conv_sites
from entroprune.io import atomic_write_json, load
from entroprune.models.pretrained import pretrained_path

OUT = Path(__file__).resolve().parent / "results" / "entropy_cost.json"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="resnet20")
    ap.add_argument("--images", type=int, default=512)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = ap.parse_args()
    model = load(pretrained_path(args.model)).eval()
    images = load_data("fashion_mnist").calibration(args.images, seed=0)
    sites = conv_sites(model)

    def plain() -> None:
        with torch.no_grad():
            for xb in images.split(args.batch):
                model(xb)

    def with_stats(estimators) -> None:
        with ActivationStats(model, sites, estimators), torch.no_grad():
            for xb in images.split(args.batch):
                model(xb)

    runs = {"plain": plain, "aura": lambda: with_stats(("aura",)), "mass": lambda: with_stats(("mass",)),
            "aura+mass": lambda: with_stats(("aura", "mass"))}
    results = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        for f in runs.values():  # warm-up (and numba compilation)
            f()
        times: dict[str, list[float]] = {k: [] for k in runs}
        for _ in range(args.repeats):
            for k, f in runs.items():
                t0 = time.perf_counter()
                f()
                times[k].append(time.perf_counter() - t0)
        med = {k: statistics.median(v) for k, v in times.items()}
        ratios = {k: statistics.median(t / p for t, p in zip(times[k], times["plain"]))
                  for k in runs if k != "plain"}
        results.append({"threads": threads, "median_seconds": med, "ratio_to_plain": ratios})
        print(results[-1])
    atomic_write_json(OUT, {"model": args.model, "images": args.images, "batch": args.batch,
                            "repeats": args.repeats, "convolutions": len(sites),
                            "aura_kernel": "numba" if aura_kernel.available() else "torch reference",
                            "results": results})


if __name__ == "__main__":
    main()
