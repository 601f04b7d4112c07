"""Figures of the per-layer sparsity search (AMC, Y. He et al., arXiv
1802.03494, with the entropy reward of B. Musat, R. Andonie, arXiv
2312.04918; METHODS.md section 3): reward and MACs fraction per episode, and
the best policy's preserve ratio per group beside the uniform policy."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .plots import plt, save_figure


def plot_search(records: Sequence[dict[str, Any]], target_macs: float, path: str | Path, title: str) -> Path:
    """Two panels over episodes: the reward (and best so far), the MACs fraction kept."""
    episodes = [r["episode"] for r in records]
    rewards = [r["reward"] for r in records]
    best, running = [], float("-inf")
    for v in rewards:
        running = max(running, v)
        best.append(running)
    warm = [r["episode"] for r in records if r.get("warmup")]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 5.5), sharex=True)
    for ax in (top, bottom):
        if warm:
            ax.axvspan(min(warm) - 0.5, max(warm) + 0.5, color="#eee", label="warm-up (random)")
    top.plot(episodes, rewards, ".", color="#37a", ms=4, label="episode reward")
    top.plot(episodes, best, "-", color="#c53", lw=1.5, label="best so far")
    top.set_ylabel("reward")
    top.set_title(title)
    top.legend(fontsize=8)
    bottom.plot(episodes, [r["macs_fraction"] for r in records], ".", color="#37a", ms=4, label="measured")
    bottom.axhline(target_macs, color="#888", ls="--", lw=1, label="target")
    bottom.set_ylabel("MACs kept (fraction)")
    bottom.set_xlabel("episode")
    bottom.legend(fontsize=8)
    return save_figure(fig, path)


def plot_policy(groups: Sequence[str], preserve: Sequence[float], uniform: float, path: str | Path,
                title: str) -> Path:
    """Bars of the preserve ratio of every channel group: best policy vs uniform."""
    fig, ax = plt.subplots(figsize=(max(6, 0.45 * len(groups)), 4))
    xs = list(range(len(groups)))
    ax.bar([x - 0.2 for x in xs], list(preserve), width=0.4, label="searched", color="#c53")
    ax.bar([x + 0.2 for x in xs], [uniform] * len(groups), width=0.4, label=f"uniform ({uniform:.2f})",
           color="#9ab")
    ax.set_xticks(xs)
    ax.set_xticklabels(list(groups), rotation=90, fontsize=7)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("preserve ratio (channels kept)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    return save_figure(fig, path)
