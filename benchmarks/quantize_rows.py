"""Static INT8 quantization of the shipped models (entroprune.deploy.quantize):
accuracy, file size and ONNX Runtime latency, fp32 against INT8.

For each model (``--models``): quantize with the default QuantizeConfig
(256 training images, unless flags change it), then
- validation accuracy of the fp32 and INT8 ONNX models in ORT (the split that
  decides; test accuracy is reported beside it, it decides nothing);
- the .onnx file sizes;
- latency at batch 1 and 64 in ORT on ONE thread (intra- and inter-op), fp32
  and INT8 sessions interleaved run by run (``time_models``), median of
  ``--repeats`` samples; a batch-1 sample averages ``--inner`` calls.
``--sweep`` also compares the calibration methods (minmax / entropy /
percentile) over ``--sweep-seeds`` calibration samples and the activation
types (quint8 / qint8, latency included) on ``--sweep-models``.

One JSON per model in ``results/quantize/<model>.json`` (``<model>-sweep.json``
for the sweep), each with the git commit, the command line, the config and
the machine note; the summary is ``results/QUANTIZE.md``. The INT8 files go to
``benchmarks/work/quantize/`` (not committed).

    python benchmarks/quantize_rows.py --models resnet20 vgg_small mobilenetv2 --sweep
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch

from entroprune.data import load_data
from entroprune.deploy import QuantizeConfig, onnx_accuracy, quantize
from entroprune.io import atomic_write_json, atomic_write_text, load
from entroprune.measure.runtime import OnnxRuntime
from entroprune.models.pretrained import pretrained_path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
ROWS = RESULTS / "quantize"
WORK = HERE / "work" / "quantize"
SHARED_NOTE = ("2 CPU cores shared with other jobs: absolute milliseconds may be inflated by them; fp32 and INT8 "
               "are timed interleaved run by run in one process, so their ratio is the robust figure")


def _machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    return {"cpu": cpu, "cores": os.cpu_count(), "shared": True, "note": SHARED_NOTE}


def _provenance(args) -> dict:
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=HERE, capture_output=True, text=True).stdout.strip()
    import onnxruntime
    return {"commit": commit, "command": " ".join([sys.executable.rsplit("/", 1)[-1], *sys.argv]),
            "torch": torch.__version__, "onnxruntime": onnxruntime.__version__, "machine": _machine(),
            "threads": 1, "repeats": args.repeats, "inner_bs1": args.inner, "rounds": args.rounds}


def _samples(runners: list, repeats: int, inner: int, warmup: int = 5) -> list[list[float]]:
    """Milliseconds of every sample of every runner, the runners interleaved
    sample by sample (the loop of ``entroprune.measure.time_models``, keeping
    all samples so that the minimum can be reported beside the median)."""
    for r in runners:
        r.__enter__()
    try:
        for _ in range(warmup):
            for r in runners:
                r()
        times: list[list[float]] = [[] for _ in runners]
        for _ in range(repeats):
            for i, r in enumerate(runners):
                t0 = time.perf_counter()
                for _ in range(inner):
                    r()
                times[i].append(1000.0 * (time.perf_counter() - t0) / inner)
    finally:
        for r in runners:
            r.__exit__(None, None, None)
    return times


def _latency(models: list, shape: tuple[int, ...], args) -> dict:
    """Per batch size: ``ms`` (each model's median over ``args.rounds``
    back-to-back rounds of its per-round median, the figure asked for),
    ``min_ms`` (each model's fastest sample: the run least disturbed by other
    jobs, a cross-check when the machine is loaded) and ``rounds`` (every
    round's medians). The models' sessions run on one thread, interleaved."""
    rt = OnnxRuntime(threads=1)
    sessions = [rt.session(m, shape) for m in models]
    out = {"loadavg_1min_before": os.getloadavg()[0]}     # other jobs' load on the 2 cores when timing began
    for bs in (1, 64):
        runners = [rt.runner(m, shape, bs, session=s) for m, s in zip(models, sessions)]
        samples = [_samples(runners, args.repeats, args.inner if bs == 1 else 1) for _ in range(args.rounds)]
        rounds = [[statistics.median(t) for t in rnd] for rnd in samples]
        out[bs] = {"ms": [statistics.median(r[i] for r in rounds) for i in range(len(models))],
                   "min_ms": [min(min(rnd[i]) for rnd in samples) for i in range(len(models))], "rounds": rounds}
    out["loadavg_1min_after"] = os.getloadavg()[0]
    return out


def _speedups(lat: dict, i: int) -> dict:
    """fp32 (model 0) over model ``i``: from the medians, its range over the
    rounds, and from the fastest samples."""
    res = {}
    for bs in (1, 64):
        v = lat[bs]
        per_round = [r[0] / r[i] for r in v["rounds"]]
        res[str(bs)] = {"fp32": v["ms"][0], "int8": v["ms"][i], "speedup": v["ms"][0] / v["ms"][i],
                        "speedup_min": min(per_round), "speedup_max": max(per_round),
                        "fp32_fastest": v["min_ms"][0], "int8_fastest": v["min_ms"][i],
                        "speedup_fastest": v["min_ms"][0] / v["min_ms"][i], "rounds": v["rounds"]}
    return res


def run_model(name: str, data, args) -> dict:
    net = load(pretrained_path(name))
    shape = tuple(data.train_x.shape[1:])
    cfg = QuantizeConfig(calib_size=args.calib_size, method=args.method, activation_type=args.activations)
    int8 = WORK / f"{name}.int8.onnx"
    rep = quantize(net, data.calibration(cfg.calib_size, seed=args.seed), int8, val=(data.val_x, data.val_y),
                   config=cfg)
    rt = OnnxRuntime(threads=2)
    test = {"fp32": onnx_accuracy(rt.session(net, shape), data.test_x, data.test_y),
            "int8": onnx_accuracy(int8, data.test_x, data.test_y)}
    lat = _latency([net, int8], shape, args)
    return {"model": name, **_provenance(args), "config": asdict(cfg), "calibration_seed": args.seed,
            "val_fp32": rep["fp32_accuracy"], "val_int8": rep["int8_accuracy"],
            "test_fp32": test["fp32"], "test_int8": test["int8"], "top1_agreement": rep["top1_agreement"],
            "fp32_bytes": rep["fp32_bytes"], "int8_bytes": rep["int8_bytes"], "size_ratio": rep["size_ratio"],
            "latency_ms": _speedups(lat, 1),
            "loadavg_1min": [lat["loadavg_1min_before"], lat["loadavg_1min_after"]],
            "quantize_report": rep}


def run_sweep(name: str, data, args) -> dict:
    """Calibration methods x activation types x calibration seeds: validation
    accuracy and logit deviation; latency of each (method, type) at seed 0."""
    net = load(pretrained_path(name))
    shape = tuple(data.train_x.shape[1:])
    rows, files = [], {}
    # every calibration seed with quint8 (the accuracy question); qint8 and the all-int8 model (first conv
    # quantized too) on the first seed only (their speed)
    configs = [(m, "quint8", True, args.sweep_seeds) for m in ("minmax", "entropy", "percentile")]
    configs += [(m, "qint8", True, args.sweep_seeds[:1]) for m in ("minmax", "entropy", "percentile")]
    configs += [("minmax", "quint8", False, args.sweep_seeds[:1])]
    for method, act, first_float, seeds in configs:
        for seed in seeds:
            cfg = QuantizeConfig(calib_size=args.calib_size, method=method, activation_type=act,
                                 float_first_conv=first_float)
            key = (method, act, first_float)
            path = WORK / f"{name}-{method}-{act}-{'f' if first_float else 'q'}1-s{seed}.int8.onnx"
            t0 = time.perf_counter()
            rep = quantize(net, data.calibration(cfg.calib_size, seed=seed), path,
                           val=(data.val_x, data.val_y), config=cfg)
            rows.append({"method": method, "activations": act, "float_first_conv": first_float, "seed": seed,
                         "val_fp32": rep["fp32_accuracy"], "val_int8": rep["int8_accuracy"],
                         "top1_agreement": rep["top1_agreement"],
                         "max_abs_logit_deviation": rep["max_abs_logit_deviation"],
                         "int8_bytes": rep["int8_bytes"], "seconds": time.perf_counter() - t0})
            if seed == args.sweep_seeds[0]:
                files[key] = path
            print(f"  {name} {key} seed {seed}: val {rep['int8_accuracy']:.2f} ({rows[-1]['seconds']:.0f} s)",
                  flush=True)
    sweep = {"model": name, **_provenance(args), "calib_size": args.calib_size, "seeds": args.sweep_seeds,
             "rows": rows, "latency_files": {"|".join(map(str, k)): str(p.relative_to(HERE)) for k, p in files.items()}}
    return time_sweep(sweep, net, shape, args)


def time_sweep(sweep: dict, net, shape: tuple[int, ...], args) -> dict:
    """(Re)measure the latency of a sweep's first-seed models against fp32;
    ``--retime-sweep`` calls it on a stored sweep, keeping its accuracy rows."""
    keys = list(sweep["latency_files"])
    lat = _latency([net, *(HERE / sweep["latency_files"][k] for k in keys)], shape, args)
    sweep["latency"] = []
    for i, key in enumerate(keys):
        m, a, f = key.split("|")
        speed = _speedups(lat, i + 1)
        sweep["latency"].append({"method": m, "activations": a, "float_first_conv": f == "True",
                                 **{f"bs{bs}_{k}": v for bs, d in speed.items() for k, v in d.items()
                                    if k != "rounds"}})
    sweep.update(fp32_ms={str(bs): lat[bs]["ms"][0] for bs in (1, 64)},
                 latency_rounds={str(bs): lat[bs]["rounds"] for bs in (1, 64)},
                 loadavg_1min=[lat["loadavg_1min_before"], lat["loadavg_1min_after"]],
                 latency_commit=_provenance(args)["commit"], latency_command=_provenance(args)["command"])
    return sweep


def _mean(xs) -> float:
    return sum(xs) / len(xs)


def _x(d: dict, key: str) -> str:
    """'1.89x (1.80-1.95)': the speedup from the medians, and its range over the timing rounds."""
    return f"{d[key]:.2f}x ({d[key + '_min']:.2f}-{d[key + '_max']:.2f})"


def write_summary() -> None:
    lines = ["# Static INT8 quantization (ONNX Runtime, QDQ)", "",
             "Generated by `python benchmarks/quantize_rows.py`. Each shipped model (trained on Fashion-MNIST) "
             "exported to ONNX (opset 17) and quantized by `entroprune.deploy.quantize` with its defaults (ONNX "
             "Runtime's static quantizer: QDQ, per-channel symmetric int8 weights, uint8 activations calibrated with "
             "MinMax on 256 training images, seed 0; the first convolution, which reads the image, kept in float). "
             "Accuracy measured in ONNX Runtime, in %: validation (5,000 "
             "images held out of the training set) and test (reported only). Latency: ONNX Runtime CPU provider, 1 "
             "intra-op and 1 inter-op thread, fp32 and INT8 sessions interleaved run by run; per round the median "
             "of the samples, over rounds the median; speedup = fp32 ms / INT8 ms, with its range over the rounds "
             "in brackets; fastest-sample speedup = the same ratio from each model's fastest sample (least disturbed "
             "by other jobs); load = the machine's 1-minute load average when the timing began / ended (2 cores: "
             f"above 2, other jobs were queueing for them). Machine: {_machine()['cpu']}, {SHARED_NOTE}.", "",
             "| model | val fp32 | val INT8 | test fp32 | test INT8 | fp32 bytes | INT8 bytes | size ratio | "
             "bs1 ms fp32 / INT8 | bs1 speedup | bs64 ms fp32 / INT8 | bs64 speedup | fastest-sample speedup "
             "bs1 / bs64 | load |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for path in sorted(ROWS.glob("*.json")):
        if path.stem.endswith("-sweep"):
            continue
        r = json.loads(path.read_text())
        b1, b64 = r["latency_ms"]["1"], r["latency_ms"]["64"]
        lines.append(f"| {r['model']} | {r['val_fp32']:.2f} | {r['val_int8']:.2f} | {r['test_fp32']:.2f} | "
                     f"{r['test_int8']:.2f} | {r['fp32_bytes']:,} | {r['int8_bytes']:,} | {r['size_ratio']:.2f}x | "
                     f"{b1['fp32']:.3f} / {b1['int8']:.3f} | {_x(b1, 'speedup')} | "
                     f"{b64['fp32']:.2f} / {b64['int8']:.2f} | {_x(b64, 'speedup')} | "
                     f"{b1['speedup_fastest']:.2f}x / {b64['speedup_fastest']:.2f}x | "
                     f"{'/'.join(f'{v:.1f}' for v in r.get('loadavg_1min', []))} |")
    lines += ["", "Defaults of `QuantizeConfig`, from the comparisons below: uint8 activations (int8 activations take "
              "ORT's slower s8s8 path: slower than fp32 on resnet20 and at batch 1 on mobilenetv2, no faster on "
              "vgg_small), MinMax "
              "calibration (Percentile ties within 0.03 point on average and takes about twice as long; Entropy, "
              "computed with TensorRT's 2048 histogram / 128 quantized bins, loses 0.2-0.6 point: its KL range also "
              "clips the logits), the first convolution in float. ORT's own `quantize_static` builds its entropy "
              "calibrator with 128 / 128 bins, which leaves one candidate threshold, the full range: its 'Entropy' "
              "is MinMax."]
    for path in sorted(ROWS.glob("*-sweep.json")):
        s = json.loads(path.read_text())
        lines += ["", f"## Settings compared on {s['model']}", "",
                  f"Validation accuracy of the INT8 model (fp32: {s['rows'][0]['val_fp32']:.2f}) per calibration "
                  f"method and activation type, on calibration samples of {s['calib_size']} training images (seeds "
                  f"{', '.join(map(str, s['seeds']))} with quint8, the first with qint8 and with the first convolution "
                  "quantized too); max |INT8 - fp32| logit "
                  "on 64 validation images; calibration + check seconds; latency of the first seed's model "
                  f"(1 thread, interleaved with fp32: {s['fp32_ms']['1']:.3f} ms at batch 1, "
                  f"{s['fp32_ms']['64']:.2f} ms at batch 64; load average "
                  f"{'/'.join(f'{v:.1f}' for v in s.get('loadavg_1min', []))}).", "",
                  "| activations | method | first conv | val INT8 per seed | mean | logit deviation (mean) | "
                  "s (mean) | bs1 speedup | bs64 speedup | fastest-sample bs1 / bs64 |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for lat in s["latency"]:
            key = ("method", "activations", "float_first_conv")
            rs = [r for r in s["rows"] if all(r[k] == lat[k] for k in key)]
            accs = [r["val_int8"] for r in rs]
            first = "float" if lat["float_first_conv"] else "int8"
            lines.append(f"| {lat['activations']} | {lat['method']} | {first} | "
                         f"{' / '.join(f'{a:.2f}' for a in accs)} | "
                         f"{_mean(accs):.2f} | {_mean([r['max_abs_logit_deviation'] for r in rs]):.3f} | "
                         f"{_mean([r['seconds'] for r in rs]):.0f} | {_x(lat, 'bs1_speedup')} | "
                         f"{_x(lat, 'bs64_speedup')} | {lat.get('bs1_speedup_fastest', float('nan')):.2f}x / "
                         f"{lat.get('bs64_speedup_fastest', float('nan')):.2f}x |")
    atomic_write_text(RESULTS / "QUANTIZE.md", "\n".join(lines) + "\n")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="*", default=["lenet5", "resnet20", "vgg_small", "mobilenetv2"])
    ap.add_argument("--calib-size", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0, help="calibration sample of the main rows")
    ap.add_argument("--method", default="minmax")
    ap.add_argument("--activations", default="quint8")
    ap.add_argument("--repeats", type=int, default=50, help="timed samples per batch size (>= 30)")
    ap.add_argument("--inner", type=int, default=10, help="calls averaged per batch-1 sample")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds (median over rounds)")
    ap.add_argument("--sweep", action="store_true", help="also compare methods and activation types")
    ap.add_argument("--sweep-models", nargs="*", default=["resnet20"])
    ap.add_argument("--sweep-seeds", nargs="*", type=int, default=[0, 1, 2])
    ap.add_argument("--retime-sweep", action="store_true",
                    help="re-measure the latency of the stored sweeps (their INT8 files in benchmarks/work)")
    ap.add_argument("--summary-only", action="store_true")
    args = ap.parse_args(argv)
    if args.repeats < 30:
        ap.error("--repeats must be >= 30")
    if args.retime_sweep:
        for name in args.sweep_models:
            path = ROWS / f"{name}-sweep.json"
            sweep = json.loads(path.read_text())
            if "latency_files" not in sweep:     # a sweep stored before the file list was kept: rebuild it
                seed = sweep["seeds"][0]
                sweep["latency_files"] = {
                    f"{r['method']}|{r['activations']}|{r['float_first_conv']}":
                        f"work/quantize/{name}-{r['method']}-{r['activations']}-"
                        f"{'f' if r['float_first_conv'] else 'q'}1-s{seed}.int8.onnx"
                    for r in sweep["rows"] if r["seed"] == seed}
            print(f"timing the {name} sweep again ...", flush=True)
            atomic_write_json(path, time_sweep(sweep, load(pretrained_path(name)), (1, 28, 28), args))
    elif not args.summary_only:
        data = load_data("fashion_mnist", seed=0)
        for name in args.models:
            print(f"{name} ...", flush=True)
            row = run_model(name, data, args)
            atomic_write_json(ROWS / f"{name}.json", row)
            print(f"  val {row['val_fp32']:.2f} -> {row['val_int8']:.2f}, size {row['size_ratio']:.2f}x, speedup "
                  f"{row['latency_ms']['1']['speedup']:.2f}x / {row['latency_ms']['64']['speedup']:.2f}x", flush=True)
        if args.sweep:
            for name in args.sweep_models:
                atomic_write_json(ROWS / f"{name}-sweep.json", run_sweep(name, data, args))
    write_summary()


if __name__ == "__main__":
    main()
