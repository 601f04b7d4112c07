"""Reports of depth-reduction runs (EASIER, Quetu et al., arXiv 2404.18949;
NEPENTHE, Liao et al., arXiv 2404.16890; METHODS.md sections 4 and 5): the
per-step Markdown table, per-rectifier entropies over the steps (table and
heatmap), accuracy versus rectifiers removed, the final fold, and the
comparison with random removal. Everything is read from the run's
``state.json`` document, so a report can be rewritten without rerunning."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator

from ..io import atomic_write_text
from ..reporting import markdown_table, save_figure


def _removed_so_far(rows: list[dict[str, Any]]) -> list[int]:
    total, out = 0, []
    for r in rows:
        total += len(r.get("removed", []))
        out.append(total)
    return out


def step_line(method: str, row: dict[str, Any]) -> str:
    """``easier step 2: removed layer1.1.relu2 | val 93.62% | MACs folded 31.02M | 110 s``."""
    parts = [f"removed {', '.join(row['removed']) or 'no rectifier'}"]
    if "sparsity" in row:
        parts.append(f"weight sparsity {100 * row['sparsity']:.1f}%")
    parts.append(f"val {row['val_acc']:.2f}%")
    if "macs_folded" in row:
        parts.append(f"MACs folded {row['macs_folded'] / 1e6:.2f}M")
    if "seconds" in row:
        parts.append(f"{row['seconds']:.0f} s")
    return f"{method} step {row['step']}: " + " | ".join(parts)


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
