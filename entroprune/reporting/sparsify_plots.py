"""Figure of a sparsification sweep (docs/METHODS.md section 6): validation
accuracy against the fraction of weights and of channels removed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .plots import save_figure


def plot_sweep(rows: list[dict[str, Any]], base_acc: float, over: str, path: Path, title: str) -> Path:
    """One line for weight sparsity, one for channel sparsity; each point labelled with its swept value."""
    import matplotlib.pyplot as plt  # after reporting.plots has chosen the Agg backend

    fig, ax = plt.subplots(figsize=(6, 4))
    for key, label, color in (("weight_sparsity", "weights removed", "#c53"),
                              ("channel_sparsity", "channels removed", "#37a")):
        xs = [100 * r[key] for r in rows]
        ax.plot(xs, [r["val_acc"] for r in rows], "o-", color=color, label=label)
        for x, r in zip(xs, rows):
            ax.annotate(f"{r[over]:g}", (x, r["val_acc"]), fontsize=7, textcoords="offset points",
                        xytext=(3, 3))
    ax.axhline(base_acc, color="#888", ls="--", lw=1, label="unsparsified")
    ax.set_xlabel("sparsity (%)")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title(f"{title} (labels: {over})")
    ax.legend()
    return save_figure(fig, path)
