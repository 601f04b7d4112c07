"""The report of a compression job (docs/METHODS.md, "What every method
reports"): a before/after table (MACs, parameters, depth, accuracy at every
stage, latency in the deployment runtime and in eager torch, the INT8 model),
the figures, and the same numbers as JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..io import atomic_write_json, atomic_write_text
from .tables import fmt, markdown_table

STAGES = (("before", "unpruned"), ("after_prune", "pruned"), ("after_reconstruct", "reconstructed"),
          ("after_depth", "depth reduced"), ("after_finetune", "fine-tuned"))


def conv_linear(summary: dict[str, Any]) -> int:
    """A ModelSummary dict's conv/linear layer count (reports written before the
    field was renamed call it ``weighted``)."""
    return summary["conv_linear"] if "conv_linear" in summary else summary["weighted"]


def stage_table(report: dict[str, Any]) -> str:
    """Accuracy, MACs, parameters and depth of the model after every stage that ran."""
    rows = []
    for key, label in STAGES:
        s = report.get(key)
        if s:
            rows.append([label, s["val_acc"], s["test_acc"], s["macs"], s["params"], s["nonlinear"], conv_linear(s)])
    return markdown_table(["stage", "val acc (%)", "test acc (%)", "MACs", "params", "nonlinear", "conv/linear"],
                          rows)


def latency_table(report: dict[str, Any]) -> str:
    """Base vs compressed median latency per runtime and batch size (and the INT8 model's)."""
    rows = []
    for runtime, pairs in report.get("latency", {}).items():
        for key, p in pairs.items():
            rows.append([runtime, key, p["base_ms"], p["pruned_ms"], f"{p['speedup']:.2f}x"])
    for key, p in (report.get("quantized") or {}).get("latency", {}).items():
        rows.append(["onnxruntime INT8", key, p["base_ms"], p["pruned_ms"], f"{p['speedup']:.2f}x"])
    return markdown_table(["runtime", "batch", "unpruned ms", "compressed ms", "speedup"], rows)


def summary_table(report: dict[str, Any]) -> str:
    """The before/after table a user reads first (printed by the CLI)."""
    before = report["before"]
    final = report["deployed"]
    rows = [["MACs", before["macs"], report["deployed"]["macs"], f"{report['macs_ratio']:.2f}x fewer"],
            ["parameters", before["params"], report["deployed"]["params"], f"{report['params_ratio']:.2f}x fewer"],
            ["conv/linear layers", conv_linear(before), conv_linear(report["deployed"]), ""],
            ["nonlinear layers", before["nonlinear"], report["deployed"]["nonlinear"], ""]]
    main = report["config"]["runtime"]
    for key, p in report.get("latency", {}).get(main, {}).items():
        rows.append([f"latency {key} {main} (ms)", p["base_ms"], p["pruned_ms"], f"{p['speedup']:.2f}x faster"])
    rows.append(["val accuracy (%)", before["val_acc"], final["val_acc"],
                 f"{final['val_acc'] - before['val_acc']:+.2f}"])
    rows.append(["test accuracy (%)", before["test_acc"], final["test_acc"],
                 f"{final['test_acc'] - before['test_acc']:+.2f}"])
    q = report.get("quantized")
    if q:
        for key, p in q.get("latency", {}).items():
            rows.append([f"INT8 latency {key} (ms)", p["base_ms"], p["pruned_ms"], f"{p['speedup']:.2f}x faster"])
        rows.append(["INT8 val accuracy (%)", before["val_acc"], q["int8_acc"],
                     f"{q['int8_acc'] - before['val_acc']:+.2f}"])
        rows.append(["file size (bytes)", q["fp32_bytes"], q["int8_bytes"], f"{q['size_ratio']:.2f}x smaller"])
    return markdown_table(["", "before", "after", "change"], rows)


def ship_advice(report: dict[str, Any]) -> str | None:
    """Which file is faster to deploy when both fp32 and INT8 were measured: narrow
    pruned layers can run SLOWER in INT8 (the quantize/dequantize pairs cost more
    than the arithmetic they save), so the report says so instead of assuming."""
    q, main = report.get("quantized"), report["config"]["runtime"]
    fp32 = report.get("latency", {}).get(main, {})
    if not q or main != "onnxruntime" or not fp32:
        return None
    faster = {key: ("INT8" if p["pruned_ms"] < fp32[key]["pruned_ms"] else "fp32")
              for key, p in q.get("latency", {}).items() if key in fp32}
    if not faster:
        return None
    said = ", ".join(f"{who} at {key} ({q['latency'][key]['pruned_ms']:.3g} ms INT8, "
                     f"{fp32[key]['pruned_ms']:.3g} ms fp32)" for key, who in faster.items())
    pick = set(faster.values())
    head = (f"Ship the {pick.pop()} model: it is the faster one" if len(pick) == 1
            else "Neither file is faster at every batch size; choose by the batch size you deploy")
    return f"{head}: {said}."


def write_compress_report(folder: Path, report: dict[str, Any]) -> None:
    """``report.json`` and ``report.md`` in ``folder`` (atomic writes)."""
    cfg = report["config"]
    target = report["target"]
    lines = [f"# {report['label']}: {cfg['method']} to {fmt(1 / cfg['keep'])}x ({cfg['target_kind']})", "",
             summary_table(report), "", "## Stages", "", stage_table(report), "", "## Latency", "",
             "Median of repeated runs after warm-up, unpruned and compressed interleaved in one process, "
             f"{cfg['threads']} thread(s); `{cfg['runtime']}` is the deployment runtime, eager torch is shown "
             "beside it.", "", latency_table(report), ""]
    if target.get("measured_speedup") is not None:
        lines += [f"Target: {fmt(1 / cfg['keep'])}x {cfg['target_kind']}; predicted "
                  f"{fmt(target.get('predicted_speedup'))}x, measured {fmt(target['measured_speedup'])}x "
                  f"(batch {target.get('batch')}).", ""]
    advice = ship_advice(report)
    if advice:
        lines += [advice, ""]
    rec = report.get("reconstruct")
    if rec:
        kept = ", ".join(f"{n} ({why})" for n, why in rec["kept_weights"].items()) or "none"
        lines += ["## Reconstruction", "", f"{len(rec['refitted'])} layers refitted in {rec['seconds']:.1f} s on "
                  f"{rec['images']} calibration images; layers that kept their weights: {kept}.", ""]
    lines += ["## Time", "", markdown_table(["stage", "seconds"], [[k, v] for k, v in report["seconds"].items()]),
              "", "![channels per layer](widths.png)", "",
              f"Command: `{report['provenance']['command']}` at commit `{report['provenance']['commit']}`.", ""]
    atomic_write_json(folder / "report.json", report)
    atomic_write_text(folder / "report.md", "\n".join(lines))
