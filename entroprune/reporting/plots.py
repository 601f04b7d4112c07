"""Figures of the reports (matplotlib, Agg backend, written atomically)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch.nn as nn  # noqa: E402

from ..io import atomic_write  # noqa: E402


def save_figure(fig, path: str | Path) -> Path:
    out = atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, bbox_inches="tight", format="png"))
    plt.close(fig)
    return out


def layer_widths(model: nn.Module) -> dict[str, int]:
    """Output channels of every convolution and linear layer, by name."""
    return {n: (m.out_channels if isinstance(m, nn.Conv2d) else m.out_features)
            for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}


def plot_widths(before: nn.Module, after: nn.Module, path: str | Path, title: str) -> Path:
    """Bar chart of channels per layer before and after pruning."""
    wb, wa = layer_widths(before), layer_widths(after)
    names = list(wb)
    fig, ax = plt.subplots(figsize=(max(6, 0.32 * len(names)), 4))
    xs = range(len(names))
    ax.bar([x - 0.2 for x in xs], [wb[n] for n in names], width=0.4, label="before", color="#9ab")
    ax.bar([x + 0.2 for x in xs], [wa.get(n, 0) for n in names], width=0.4, label="after", color="#c53")
    ax.set_xticks(list(xs))
    ax.set_xticklabels(names, rotation=90, fontsize=7)
    ax.set_ylabel("output channels")
    ax.set_title(title)
    ax.legend()
    return save_figure(fig, path)
