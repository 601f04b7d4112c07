"""``entroprune analyze``: per-filter and per-layer entropies of a model on
calibration data, as JSON, a heatmap of spatial aura entropy (layers by
filters, as seed 002 shows) and a per-layer bar chart."""

from __future__ import annotations

import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn as nn

from ..data import iterate_batches
from ..entropy import ActivationStats, EntropyConfig, RectifierStats, conv_sites, rectifiers
from ..io import atomic_write_json
from .plots import save_figure


def measure_entropies(model: nn.Module, images: torch.Tensor, cfg: EntropyConfig | None = None,
                      batch_size: int = 128) -> dict:
    """One streaming pass: aura and mass entropy per filter of every
    convolution (post-activation), ON/OFF state entropy per rectifier."""
    model.eval()
    sites = conv_sites(model)
    t0 = time.time()
    with ActivationStats(model, sites, ("aura", "mass"), cfg) as act, \
            RectifierStats(model, list(rectifiers(model))) as rect, torch.no_grad():
        for xb, _ in iterate_batches(images, torch.zeros(len(images)), batch_size):
            model(xb)
    per_filter = act.per_filter()
    state = rect.per_channel()
    state_nd = rect.per_layer(nondegenerate=True)
    return {
        "calibration_images": int(images.shape[0]), "seconds": time.time() - t0,
        "config": vars(cfg or EntropyConfig()),
        "conv_layers": {name: {"site": sites[name].module, "filters": len(v["aura"]),
                               "aura_per_filter": v["aura"].tolist(), "mass_per_filter": v["mass"].tolist(),
                               "aura": float(v["aura"].mean()), "mass": float(v["mass"].mean())}
                        for name, v in per_filter.items()},
        "rectifiers": {name: {"state_per_channel": h.tolist(), "state": float(h.mean()),
                              "state_nondegenerate": state_nd[name]} for name, h in state.items()},
        "network": {"aura": float(np.mean([float(v["aura"].mean()) for v in per_filter.values()])),
                    "mass": float(np.mean([float(v["mass"].mean()) for v in per_filter.values()]))},
    }


def plot_heatmap(result: dict, path: str | Path, title: str, estimator: str = "aura") -> Path:
    layers = list(result["conv_layers"])
    width = max(v["filters"] for v in result["conv_layers"].values())
    grid = np.full((len(layers), width), np.nan)
    for i, name in enumerate(layers):
        vals = result["conv_layers"][name][f"{estimator}_per_filter"]
        grid[i, : len(vals)] = vals
    fig, ax = plt.subplots(figsize=(min(16, 4 + width * 0.05), 1.5 + 0.28 * len(layers)))
    im = ax.imshow(grid, aspect="auto", interpolation="nearest", cmap="viridis")
    ax.set_yticks(range(len(layers)))
    ax.set_yticklabels([f"{n} ({result['conv_layers'][n]['filters']})" for n in layers], fontsize=7)
    ax.set_xlabel("filter index (blank: layer has fewer filters)")
    ax.set_ylabel("convolution (filters)")
    label = "spatial aura entropy (bits)" if estimator == "aura" else "mass entropy (bits)"
    fig.colorbar(im, ax=ax, label=f"mean {label}")
    ax.set_title(title)
    return save_figure(fig, path)


def plot_layers(result: dict, path: str | Path, title: str) -> Path:
    layers = list(result["conv_layers"])
    fig, axes = plt.subplots(1, 2, figsize=(max(8, 0.45 * len(layers)), 4.5))
    for ax, est, color in ((axes[0], "aura", "#2a7"), (axes[1], "mass", "#37b")):
        ax.bar(range(len(layers)), [result["conv_layers"][n][est] for n in layers], color=color)
        ax.set_xticks(range(len(layers)))
        ax.set_xticklabels(layers, rotation=90, fontsize=7)
        ax.set_ylabel(f"mean {est} entropy (bits)")
        ax.set_title(f"{est} entropy per convolution")
    fig.suptitle(title)
    return save_figure(fig, path)


def analyze(model: nn.Module, images: torch.Tensor, out_dir: str | Path, label: str = "model",
            cfg: EntropyConfig | None = None) -> dict:
    """Measure, then write ``entropy.json``, ``heatmap_aura.png``, ``layers.png``."""
    out = Path(out_dir)
    result = measure_entropies(model, images, cfg)
    result["label"] = label
    atomic_write_json(out / "entropy.json", result)
    plot_heatmap(result, out / "heatmap_aura.png", f"{label}: spatial aura entropy of each filter "
                 f"({result['calibration_images']} calibration images)")
    plot_layers(result, out / "layers.png", f"{label}: per-layer entropy")
    return result
