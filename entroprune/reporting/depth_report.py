"""Reports of depth-reduction runs (EASIER, Quetu et al., arXiv 2404.18949;
NEPENTHE, Liao et al., arXiv 2404.16890; docs/METHODS.md sections 4 and 5).

``finish_run`` is what a caller does with a finished run
(``entroprune.depth.easier`` / ``nepenthe`` / ``random_baseline``): fold the
best model and save it as ``folded.safetensors``, measure it against the
starting model (accuracy, depth, MACs, latency), store that as ``final`` in
``state.json`` and write the report. ``add_random_comparison`` adds the
random-removal row to an EASIER run's report.

The report: the per-step Markdown table, per-rectifier entropies over the
steps (table and heatmap), accuracy versus rectifiers removed, the final fold,
and the comparison with random removal. Everything is read from the run's
``state.json`` document, so a report can be rewritten without rerunning."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator

from ..data import DataBundle
from ..depth.fold import fold
from ..depth.fold_layers import FoldError
from ..depth.runner import DepthConfig, DepthResult, RunFolder
from ..io import atomic_write_text, load, save
from ..measure import latency_pairs
from ..training import evaluate
from .plots import save_figure
from .tables import markdown_table


def _removed_so_far(rows: list[dict[str, Any]]) -> list[int]:
    total, out = 0, []
    for r in rows:
        total += len(r.get("removed", []))
        out.append(total)
    return out


def steps_table(state: dict[str, Any]) -> str:
    """One line per step: what was removed, accuracy, MACs, depth, latency."""
    rows, method = state["rows"], state["method"]
    base = rows[0]["val_acc"]
    best = state.get("best_step")
    nep = method == "nepenthe"
    headers = ["step", "removed", "H removed" if not nep else "sparsity", "val acc", "delta",
               "MACs (folded)", "conv/linear (folded)", "nonlinear", "latency x (b=1)"]
    if nep:
        headers.insert(3, "emptied layers")
    out = []
    for r in rows:
        removed = ", ".join(r.get("removed", [])) or "-"
        if r["step"] == best:
            removed += " (best)"
        third = (r.get("sparsity") if nep else
                 (", ".join(f"{h:.3f}" for h in r.get("removed_entropy", [])) or "-"))
        line = [r["step"], removed, third, r["val_acc"], r["val_acc"] - base,
                r.get("macs_folded", r["macs"]), r.get("conv_linear_folded", r["conv_linear"]),
                r["nonlinear"], r.get("latency_ratio")]
        if nep:
            line.insert(3, ", ".join(r.get("emptied", [])) or "-")
        out.append(line)
    return markdown_table(headers, out)


def entropy_matrix(rows: list[dict[str, Any]]) -> tuple[list[str], np.ndarray]:
    """Rectifier names (forward order) and entropies (rectifiers, steps); NaN once removed."""
    names: list[str] = []
    for r in rows:
        names += [n for n in r["entropies"] if n not in names]
    mat = np.full((len(names), len(rows)), np.nan)
    for j, r in enumerate(rows):
        for i, n in enumerate(names):
            if n in r["entropies"]:
                mat[i, j] = r["entropies"][n]
    return names, mat


def entropy_table(rows: list[dict[str, Any]]) -> str:
    names, mat = entropy_matrix(rows)
    return markdown_table(["rectifier"] + [f"step {r['step']}" for r in rows],
                          [[n] + [None if np.isnan(v) else f"{v:.3f}" for v in mat[i]] for i, n in enumerate(names)])


def plot_entropies(rows: list[dict[str, Any]], path: str | Path, title: str) -> Path:
    """Heatmap of every rectifier's state entropy over the steps (blank once removed)."""
    names, mat = entropy_matrix(rows)
    fig, ax = plt.subplots(figsize=(max(4, 0.5 * len(rows) + 2), max(3, 0.28 * len(names) + 1)))
    im = ax.imshow(np.ma.masked_invalid(mat), aspect="auto", cmap="viridis", vmin=0, vmax=1,
                   interpolation="nearest")
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels([str(r["step"]) for r in rows])
    ax.set_yticks(range(len(names)))
    ax.set_yticklabels(names, fontsize=7)
    ax.set_xlabel("step")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, label="state entropy (bits)")
    return save_figure(fig, path)


def plot_accuracy(rows: list[dict[str, Any]], path: str | Path, title: str, tolerance: float | None = None,
                  others: dict[str, list[dict[str, Any]]] | None = None) -> Path:
    """Validation accuracy versus rectifiers removed (with the tolerance floor)."""
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(_removed_so_far(rows), [r["val_acc"] for r in rows], "o-", label="entropy-guided")
    for label, other in (others or {}).items():
        ax.plot(_removed_so_far(other), [r["val_acc"] for r in other], "s--", label=label)
    lowest = min(r["val_acc"] for rs in [rows, *(others or {}).values()] for r in rs)
    if tolerance is not None and rows[0]["val_acc"] - tolerance >= lowest - 5:   # only when on the scale
        ax.axhline(rows[0]["val_acc"] - tolerance, color="#c53", lw=1, ls=":", label=f"start - {tolerance}")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("rectifiers removed")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title(title)
    ax.legend()
    return save_figure(fig, path)


def final_lines(final: dict[str, Any]) -> list[str]:
    lines = [f"- best step: {final['best_step']} ({final['rectifiers_removed']} rectifiers removed); "
             f"stopped: {final.get('stop_reason') or '-'}",
             f"- validation accuracy {final['val_acc_base']:.2f} -> {final['val_acc']:.2f} "
             f"(folded {final['val_acc_folded']:.2f}); test {final['test_acc_base']:.2f} -> {final['test_acc']:.2f}"]
    if "fold_error" in final:
        lines.append(f"- fold failed: {final['fold_error']}")
    else:
        lines += [f"- conv/linear layers {final['conv_linear_before']} -> {final['conv_linear_after']} "
                  f"({final['layers_removed']} physically removed; the start folded has "
                  f"{final['conv_linear_base_folded']}); nonlinear {final['nonlinear_before']} -> "
                  f"{final['nonlinear_after']}",
                  f"- MACs {final['macs_base']:,} -> {final['macs_after']:,} "
                  f"({final['macs_base'] / max(1, final['macs_after']):.3f}x fewer; the start folded: "
                  f"{final['macs_base_folded']:,}); fold max deviation {final['max_abs_deviation']:.3g}"]
    for key, what in (("latency", "start"), ("latency_vs_base_folded", "start folded")):
        for p in final.get(key, []):
            lines.append(f"- latency batch {p['batch_size']}: {what} {p['base_ms']:.3f} ms, folded "
                         f"{p['folded_ms']:.3f} ms ({p['speedup']:.2f}x)")
    return lines


def comparison_table(comparison: list[dict[str, Any]]) -> str:
    headers = ["run", "rectifiers removed", "val acc", "test acc", "MACs (folded)", "conv/linear", "latency x (b=1)"]
    return markdown_table(headers, [[c["label"], c["rectifiers_removed"], c["val_acc"], c["test_acc"],
                                     c["macs_after"], c["conv_linear_after"], c["speedup_b1"]]
                                    for c in comparison])


def write_report(folder: str | Path, state: dict[str, Any],
                 others: dict[str, list[dict[str, Any]]] | None = None) -> Path:
    """``report.md``, ``entropies.png`` and ``accuracy.png`` in ``folder``."""
    folder = Path(folder)
    method, rows = state["method"], state["rows"]
    tol = state.get("config", {}).get("tolerance")
    plot_entropies(rows, folder / "entropies.png", f"{method}: rectifier state entropy")
    plot_accuracy(rows, folder / "accuracy.png", f"{method}: accuracy vs depth", tol, others)
    parts = [f"# {method.upper()} run", "", f"Stopped: {state.get('stop_reason') or '-'}; "
             f"best step {state.get('best_step')} (tolerance {tol} points).", "", "## Steps", "", steps_table(state),
             "", "## State entropy per rectifier (bits; after each step)", "", entropy_table(rows), "",
             "![entropies](entropies.png)", "", "![accuracy](accuracy.png)", ""]
    if state.get("final"):
        parts += ["## Best model, folded", ""] + final_lines(state["final"]) + [""]
    if state.get("comparison"):
        parts += ["## Comparison", "", comparison_table(state["comparison"]), ""]
    return atomic_write_text(folder / "report.md", "\n".join(parts))


# ------------------------------------------------------------------ finishing a run

def finish_run(result: DepthResult, data: DataBundle, cfg: DepthConfig, report: bool = True) -> DepthResult:
    """Fold the best model, save it as ``folded.safetensors``, measure it
    against the starting model (and the starting model folded), store the
    measurements as ``state["final"]`` and (``report``) write the report.
    Fills ``result.folded`` and ``result.final``; returns ``result``."""
    folder = RunFolder(result.out_dir)
    with folder.locked():
        shape = tuple(data.train_x.shape[1:])
        base = load(folder.model_path(0))
        chosen = result.model
        x = data.val_x[:cfg.fold_examples]                                # (n, C, H, W) real images
        removed = sum(len(r["removed"]) for r in result.rows[1:result.best_step + 1])
        final: dict[str, Any] = {"best_step": result.best_step, "stop_reason": result.stop_reason,
                                 "rectifiers_removed": removed,
                                 "val_acc_base": result.rows[0]["val_acc"],
                                 "val_acc": result.rows[result.best_step]["val_acc"],
                                 "test_acc_base": evaluate(base, data.test_x, data.test_y)}
        try:
            folded, rep = fold(chosen, x)
            base_folded, base_rep = fold(base, x)
            final.update(conv_linear_before=rep["conv_linear_before"], conv_linear_after=rep["conv_linear_after"],
                         layers_removed=rep["conv_linear_before"] - rep["conv_linear_after"],
                         nonlinear_before=base_rep["nonlinear_before"], nonlinear_after=rep["nonlinear_after"],
                         macs_base=base_rep["macs_before"], macs_after=rep["macs_after"],
                         macs_base_folded=base_rep["macs_after"],
                         conv_linear_base_folded=base_rep["conv_linear_after"],
                         max_abs_deviation=rep["max_abs_deviation"])
        except (FoldError, RuntimeError) as e:
            folded, base_folded = chosen, None
            final["fold_error"] = str(e)
        final["test_acc"] = evaluate(folded, data.test_x, data.test_y)
        final["val_acc_folded"] = evaluate(folded, data.val_x, data.val_y)
        save(folded, folder.path / "folded.safetensors", info={"method": result.method, "step": result.best_step})
        if cfg.latency:
            final["latency"] = _latency(base, folded, shape, cfg)
            if base_folded is not None:
                final["latency_vs_base_folded"] = _latency(base_folded, folded, shape, cfg)
        state = folder.read_state() or {}
        state["final"] = final
        folder.write_state(state)
        result.folded, result.final = folded, final
        if report:
            write_report(folder.path, state)
    return result


def _latency(base, folded, shape: tuple[int, ...], cfg: DepthConfig) -> list[dict[str, Any]]:
    """Base vs folded median latency at the final batch sizes."""
    return [dict(batch_size=p.batch_size, base_ms=p.base_ms, folded_ms=p.pruned_ms, speedup=p.speedup)
            for p in latency_pairs(base, folded, shape, cfg.final_latency_batches, repeats=cfg.latency_repeats,
                                   threads=cfg.latency_threads)]


def comparison_row(result: DepthResult, label: str) -> dict[str, Any]:
    """One row for the comparison table of a report (from a finished run's ``final``)."""
    f = result.final
    return {"label": label, "rectifiers_removed": f.get("rectifiers_removed"), "val_acc": f.get("val_acc"),
            "test_acc": f.get("test_acc"), "macs_after": f.get("macs_after"),
            "conv_linear_after": f.get("conv_linear_after"),
            "speedup_b1": next((p["speedup"] for p in f.get("latency", []) if p["batch_size"] == 1), None)}


def add_random_comparison(result: DepthResult, random_run: DepthResult, seed: int) -> Path:
    """Store the comparison of finished ``result`` (EASIER) with its finished
    random-removal baseline in ``result``'s ``state.json`` and rewrite its
    report with both accuracy curves."""
    folder = RunFolder(result.out_dir)
    with folder.locked():
        state = folder.read_state()
        state["comparison"] = [comparison_row(result, result.method),
                               comparison_row(random_run, f"random (seed {seed})")]
        folder.write_state(state)
        return write_report(folder.path, state, others={"random": random_run.rows})
