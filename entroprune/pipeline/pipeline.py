"""``entroprune.compress``: the one pipeline every command and benchmark runs.

    plan -> remove -> reconstruct -> (depth) -> fine-tune -> (fold) -> measure -> (quantize) -> report

- remove: the method of the config (``methods.py``) to a MACs or latency target;
- reconstruct (docs/METHODS.md section 7): the least-squares refit that makes
  the pruned model usable before fine-tuning (criteria and the search);
- depth: EASIER or NEPENTHE on the pruned model (sections 4, 5);
- fine-tune: ``finetune_epochs`` with the unpruned model as the teacher
  (section 9), or the user's own ``finetune_fn(model, data)``;
- fold: BatchNorm, linear chains and emptied layers merged (section 5);
- measure: accuracy after every stage, MACs, parameters, depth, and latency
  in the deployment runtime (ONNX Runtime by default) beside eager torch,
  unpruned and compressed interleaved in one process (section 10);
- quantize: static INT8 in ONNX Runtime, checked on the validation split
  (section 11).
With ``out``, the run folder holds the report, the model file (and the ONNX
files), resumable state (the search, the depth steps, the fine-tuning
checkpoint) and a lock: a rerun of the same job resumes, or reuses a
finished result; a different job into the same folder is refused.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ..data import DataBundle
from ..data.adapters import as_data
from ..errors import first_line
from ..io import load, save
from ..io.fingerprint import check_fingerprint, data_digest, normalise, weights_digest
from ..io.lock import RunLock
from ..measure import latency_pairs
from ..reconstruct import reconstruct
from ..reporting import plot_widths, summarize
from ..reporting.compress_report import summary_table, write_compress_report
from ..reporting.provenance import provenance
from ..training import TrainConfig, train
from .config import CompressConfig, CompressError
from .methods import reduce_depth, remove_channels

FINGERPRINT = "compress.json"
# settings that change what the report shows, not the compressed model: a rerun that differs only in
# these resumes (or reuses) the run instead of refusing it
REPORT_ONLY = ("config.eval_stages", "config.measure_latency")
# the model after remove/reconstruct/depth, and those stages' report, kept until the run finishes
STRUCTURE_MODEL, STRUCTURE_REPORT = "structure.safetensors", "structure.json"
STRUCTURE_KEYS = ("remove", "after_prune", "reconstruct", "after_reconstruct", "depth", "after_depth")


def check_model(model: nn.Module, data: DataBundle) -> None:
    """Refuse, before any work, a model that cannot run on the data or holds non-finite weights."""
    for name, t in model.state_dict().items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise CompressError(f"the model's tensor {name!r} holds NaN or infinite values; it cannot be "
                                "compressed (was it trained with too high a learning rate?)")
    shape = tuple(data.train_x.shape[1:])
    try:
        with torch.no_grad():
            out = model.eval()(torch.zeros(2, *shape))
    except RuntimeError as e:
        raise CompressError(f"the model does not run on the data's {shape} images "
                            f"({first_line(e)}); pick the matching data set or model") from None
    if out.ndim != 2 or out.shape[1] != data.num_classes:
        raise CompressError(f"the model outputs {tuple(out.shape[1:])} per image but {data.name} has "
                            f"{data.num_classes} classes")


def _cost_model(cfg: CompressConfig, shape: tuple[int, ...]):
    if cfg.target_kind != "latency":
        return None
    from ..pruning.latency_cost import LatencyCost
    return LatencyCost.for_setting(shape, threads=cfg.threads, batch_size=cfg.latency_batches[0],
                                   progress=cfg.progress)


def _latency(base: nn.Module, model: nn.Module | Path, shape: tuple[int, ...], cfg: CompressConfig,
             runtime: str, batches: tuple[int, ...] | None = None) -> dict[str, dict[str, float]]:
    pairs = latency_pairs(base, model, shape, batches or cfg.latency_batches, repeats=cfg.latency_repeats,
                          threads=cfg.threads, runtime=runtime)
    return {f"bs{p.batch_size}": {"base_ms": p.base_ms, "pruned_ms": p.pruned_ms, "speedup": p.speedup}
            for p in pairs}


def _finished(folder: Path) -> tuple[nn.Module, dict] | None:
    """The saved result of the same job, if it finished."""
    report, model = folder / "report.json", folder / "model.safetensors"
    if not (report.exists() and model.exists()):
        return None
    print(f"reusing the finished compression in {folder} (same settings, data and model)", flush=True)
    rep = json.loads(report.read_text())
    rep["table"] = summary_table(rep)
    return load(model), rep


def compress(model: nn.Module, data: Any, config: CompressConfig | None = None, *, out: str | Path | None = None,
             finetune_fn: Callable[[nn.Module, DataBundle], Any] | None = None, label: str = "model",
             factory: str | None = None, factory_kwargs: dict[str, Any] | None = None, restart: bool = False,
             **overrides: Any) -> tuple[nn.Module, dict[str, Any]]:
    """Compress ``model`` (left untouched) on ``data``; returns the compressed
    model and its report. ``config`` fields may also be given as keywords
    (``compress(model, "fashion_mnist", target="5x", method="greedy_refit")``).
    A model from outside the zoo is saved with ``factory`` ("package.module:function"
    that builds it, with ``factory_kwargs``), so that the file reloads anywhere.
    ``restart`` discards an earlier run in ``out`` (under the lock) and starts over."""
    try:
        cfg = replace(config or CompressConfig(), **overrides)
    except TypeError as e:
        raise CompressError(f"unknown compress setting: {e}") from None
    data = as_data(data, seed=cfg.seed)
    check_model(model, data)
    if factory is not None:
        model = copy.deepcopy(model)
        model.entroprune_arch = {"factory": factory, "kwargs": dict(factory_kwargs or {})}
    folder = Path(out) if out is not None else None
    if (folder is not None or cfg.depth is not None) and getattr(model, "entroprune_arch", None) is None:
        raise CompressError(f"a {type(model).__name__} cannot be saved to the run folder: entroprune does not know "
                            "how to rebuild it; pass factory='package.module:function' (and factory_kwargs) that "
                            "builds it, or build it with entroprune.create(...)")
    if folder is None:
        return _run(model, data, cfg, None, finetune_fn, label)
    if folder.exists() and not folder.is_dir():
        raise CompressError(f"output {folder} is a file, not a folder; choose a folder for the report")
    folder.mkdir(parents=True, exist_ok=True)
    with RunLock(folder):
        if restart:
            _clear(folder)
        fingerprint = {"config": cfg.to_dict(), "data": data_digest(data), "model": weights_digest(model),
                       "finetune_fn": getattr(finetune_fn, "__qualname__", None)}
        path = folder / FINGERPRINT
        if path.exists():
            check_fingerprint(json.loads(path.read_text()).get("fingerprint"), fingerprint, f"run folder {folder}",
                              ignore=REPORT_ONLY)
            done = _finished(folder)
            if done is not None:
                return done
        else:
            from ..io import atomic_write_json
            atomic_write_json(path, {"fingerprint": normalise(fingerprint)})
        try:
            return _run(model, data, cfg, folder, finetune_fn, label)
        except BaseException:
            # a job that failed before it saved anything to resume (an unreachable target, a bad option)
            # must not bind the folder to its settings: forget the fingerprint
            if {p.name for p in folder.iterdir()} <= {FINGERPRINT, ".entroprune.lock"}:
                path.unlink(missing_ok=True)
            raise


def _clear(folder: Path) -> None:
    """Remove what a compression job writes into its folder (nothing else)."""
    import shutil

    for name in (FINGERPRINT, STRUCTURE_MODEL, STRUCTURE_REPORT, "report.json", "report.md", "finetune.ckpt",
                 "model.safetensors", "model.int8.onnx",
                 "widths.png"):
        (folder / name).unlink(missing_ok=True)
    for sub in ("search", "depth"):
        shutil.rmtree(folder / sub, ignore_errors=True)


def _run(model: nn.Module, data: DataBundle, cfg: CompressConfig, folder: Path | None,
         finetune_fn: Callable | None, label: str) -> tuple[nn.Module, dict[str, Any]]:
    torch.manual_seed(cfg.seed)
    shape = tuple(data.train_x.shape[1:])
    base = copy.deepcopy(model).eval()
    seconds: dict[str, float] = {}
    report: dict[str, Any] = {"label": label, "data": data.name, "config": cfg.to_dict(),
                              "before": summarize(base, data).to_dict()}
    cost_model = _cost_model(cfg, shape)
    stage = (lambda m: summarize(m, data).to_dict()) if cfg.eval_stages else (lambda m: None)
    pruned = _load_structure(folder, report, seconds)
    if pruned is None:
        pruned = _change_structure(base, data, cfg, folder, cost_model, report, seconds, stage)
    t0 = time.time()
    if finetune_fn is not None:
        report["finetune"] = {"by": getattr(finetune_fn, "__qualname__", "user function"),
                              "result": finetune_fn(pruned, data)}
    elif cfg.finetune_epochs > 0:
        tcfg = TrainConfig(epochs=cfg.finetune_epochs, lr=cfg.finetune_lr, seed=cfg.seed, progress=cfg.progress,
                           distill_weight=cfg.distill_weight, distill_temperature=cfg.distill_temperature)
        history = train(pruned, data, tcfg, checkpoint=folder / "finetune.ckpt" if folder else None,
                        teacher=base if cfg.distill else None)
        report["finetune"] = {"epochs": cfg.finetune_epochs, "lr": cfg.finetune_lr, "distill": cfg.distill,
                              "history": history}
    if "finetune" in report:
        seconds["finetune"] = time.time() - t0
        report["after_finetune"] = stage(pruned)
    deployed = pruned
    if cfg.fold:
        from ..depth import fold
        deployed, fold_rep = fold(copy.deepcopy(pruned), data.val_x[:64])
        report["fold"] = {k: fold_rep[k] for k in ("conv_linear_before", "conv_linear_after", "macs_before",
                                                   "macs_after", "max_abs_deviation") if k in fold_rep}
    report["deployed"] = summarize(deployed, data).to_dict()
    t0 = time.time()
    report["latency"] = {}
    if cfg.measure_latency or cfg.target_kind == "latency":
        report["latency"][cfg.runtime] = _latency(base, deployed, shape, cfg, cfg.runtime)
        if cfg.runtime != "torch":
            report["latency"]["torch"] = _latency(base, deployed, shape, cfg, "torch")
    seconds["measure"] = time.time() - t0
    report["macs_ratio"] = report["before"]["macs"] / report["deployed"]["macs"]
    report["params_ratio"] = report["before"]["params"] / report["deployed"]["params"]
    report["target"] = _target_report(cfg, report, cost_model)
    if cfg.quantize:
        t0 = time.time()
        report["quantized"] = _quantize(base, deployed, data, cfg, folder, shape)
        seconds["quantize"] = time.time() - t0
    report["seconds"] = seconds
    report["provenance"] = provenance()
    history = list(getattr(deployed, "entroprune_history", []))       # remove's (and depth's) steps are in it
    if "reconstruct" in report:
        history.append({"op": "reconstruct", "refitted": len(report["reconstruct"]["refitted"]),
                        "images": report["reconstruct"]["images"]})
    if "finetune" in report:
        history.append({"op": "finetune", "epochs": cfg.finetune_epochs, "distill": cfg.distill,
                        "by": report["finetune"].get("by", "entroprune")})
    deployed.entroprune_history = history
    if folder is not None:
        save(deployed, folder / "model.safetensors",
             info={"label": label, "dataset": data.name, "test_acc": report["deployed"]["test_acc"]})
        plot_widths(base, deployed, folder / "widths.png",
                    f"{label}: channels per layer, {cfg.method} to {report['macs_ratio']:.1f}x fewer MACs")
        write_compress_report(folder, report)
        for name in ("finetune.ckpt", STRUCTURE_MODEL, STRUCTURE_REPORT):
            (folder / name).unlink(missing_ok=True)
    report["table"] = summary_table(report)
    return deployed.eval(), report


def _change_structure(base: nn.Module, data: DataBundle, cfg: CompressConfig, folder: Path | None,
                      cost_model: Any, report: dict, seconds: dict, stage: Callable) -> nn.Module:
    """remove -> reconstruct -> depth; the result is saved in the run folder, so that a
    resumed job fine-tunes the SAME model (a latency target's measured corrections, or a
    search, would not pick the same channels twice)."""
    t0 = time.time()
    pruned, report["remove"] = remove_channels(base, data, cfg, folder, cost_model)
    if cost_model is not None and cfg.method not in ("search", "policy", "ges", "none"):
        pruned, report["remove"], corrections = _meet_latency(base, pruned, report["remove"], data, cfg, folder,
                                                              cost_model)
        report["remove"]["corrections"] = corrections
    seconds["remove"] = time.time() - t0
    report["after_prune"] = stage(pruned)
    if cfg.reconstruct is not None and cfg.structural:
        t0 = time.time()
        rec = reconstruct(pruned, base, data.calibration(cfg.reconstruct.images, cfg.seed), cfg.reconstruct)
        seconds["reconstruct"] = time.time() - t0
        report["reconstruct"] = {k: rec[k] for k in ("refitted", "kept_weights", "images", "seconds", "config")}
        report["after_reconstruct"] = stage(pruned)
    if cfg.depth is not None:
        t0 = time.time()
        pruned, report["depth"] = reduce_depth(pruned, data, cfg, folder)
        seconds["depth"] = time.time() - t0
        report["after_depth"] = stage(pruned)
    if folder is not None:
        from ..io import atomic_write_json
        save(pruned, folder / STRUCTURE_MODEL)
        done = {k: report[k] for k in STRUCTURE_KEYS if k in report}
        atomic_write_json(folder / STRUCTURE_REPORT, {"report": done, "seconds": seconds})
    return pruned


def _load_structure(folder: Path | None, report: dict, seconds: dict) -> nn.Module | None:
    """The pruned (reconstructed, depth-reduced) model an interrupted run saved, if any."""
    if folder is None or not (folder / STRUCTURE_MODEL).exists() or not (folder / STRUCTURE_REPORT).exists():
        return None
    saved = json.loads((folder / STRUCTURE_REPORT).read_text())
    report.update(saved["report"])
    seconds.update(saved["seconds"])
    print(f"resuming after the structural stages saved in {folder}", flush=True)
    return load(folder / STRUCTURE_MODEL)


def _meet_latency(base: nn.Module, pruned: nn.Module, rep: dict, data: DataBundle, cfg: CompressConfig,
                  folder: Path | None, cost_model: Any, attempts: int = 2, band: float = 0.05
                  ) -> tuple[nn.Module, dict, list[dict]]:
    """Close the loop on a latency target: measure the speedup the table's
    prediction gave; if it is off by more than ``band``, plan again for a
    target scaled by the miss (at most ``attempts`` times)."""
    shape, batch = tuple(data.train_x.shape[1:]), cfg.latency_batches[0]
    keep, log, best = cfg.keep, [], None
    for _ in range(attempts + 1):
        measured = _latency(base, pruned, shape, cfg, cfg.runtime, (batch,))[f"bs{batch}"]["speedup"]
        log.append({"planned_keep": keep, "measured_speedup": measured})
        miss = measured * cfg.keep                      # 1.0: the asked speedup exactly
        if best is None or abs(miss - 1.0) < best[0]:
            best = (abs(miss - 1.0), pruned, rep)
        if abs(miss - 1.0) <= band or len(log) > attempts:
            break
        keep = min(1.0, keep * miss)
        pruned, rep = remove_channels(base, data, replace(cfg, target=keep), folder, cost_model)
    return best[1], best[2], log


def _target_report(cfg: CompressConfig, report: dict[str, Any], cost_model: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"kind": cfg.target_kind, "keep": cfg.keep, "asked": 1.0 / cfg.keep}
    if cfg.target_kind == "macs":
        out["reached"] = report["macs_ratio"]
        return out
    batch = f"bs{cfg.latency_batches[0]}"
    measured = report["latency"][cfg.runtime][batch]["speedup"]
    rem = report["remove"]
    out.update(batch=cfg.latency_batches[0], measured_speedup=measured,
               predicted_speedup=rem.get("cost_ratio"), error=measured * cfg.keep - 1.0)
    return out


def _quantize(base: nn.Module, model: nn.Module, data: DataBundle, cfg: CompressConfig, folder: Path | None,
              shape: tuple[int, ...]) -> dict[str, Any]:
    """INT8 in ONNX Runtime (calibrated on training images), its accuracy on the
    validation and test splits, and its latency against the unpruned fp32 model."""
    import tempfile

    from ..deploy import onnx_accuracy, quantize

    with tempfile.TemporaryDirectory() as tmp:
        path = (folder or Path(tmp)) / "model.int8.onnx"
        rep = quantize(model, data.calibration(256, cfg.seed), path, val=(data.val_x, data.val_y))
        lat = _latency(base, path, shape, cfg, "onnxruntime")
        test = onnx_accuracy(path, data.test_x, data.test_y)
    return {"int8_acc": rep["int8_accuracy"], "fp32_acc": rep["fp32_accuracy"], "int8_test_acc": test,
            "fp32_bytes": rep["fp32_bytes"], "int8_bytes": rep["int8_bytes"], "size_ratio": rep["size_ratio"],
            "latency": lat, "file": "model.int8.onnx" if folder else None,
            "report": {k: v for k, v in rep.items() if k != "config"}}
