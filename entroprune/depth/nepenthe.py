"""NEPENTHE: entropy-weighted unstructured pruning that empties layers (Z. Liao,
V. Quetu, V.-T. Nguyen, E. Tartaglione, "NEPENTHE: Entropy-Based Pruning as a
Neural Network Depth's Reducer", arXiv 2404.16890; the procedure of its
predecessor EGP, arXiv 2308.06619; docs/METHODS.md section 5).

One round:
1. every Conv2d / Linear that feeds a rectifier (on the model's fx graph,
   ``entroprune.graph``: through BatchNorm, Dropout and residual additions)
   gets the state entropy ``H_l`` of its rectifier, over non-degenerate
   neurons only, in eval mode over training batches;
2. irrelevance ``I_l = H_l * mean|w_l|`` over its non-zero weights; layers
   with ``H_l = 0`` (or without weights left) are not pruned further;
3. the round's budget, ``zeta`` times the remaining weights of those layers,
   is shared out by ``softmax(sum_k(I_k) / I_l / temperature)``; a layer
   cannot take more than ``max_layer_fraction`` of its remaining weights, and
   what a capped layer cannot take goes to the others by the same softmax
   recomputed over them (``allocate_budget``, exact in integers);
4. inside each layer, the smallest-magnitude non-zero weights are zeroed (L1
   unstructured); masks (``torch.nn.utils.prune``, mask = non-zero weights)
   stay applied while fine-tuning, then are removed so the model file holds
   plain weights whose zeros are the mask;
5. after fine-tuning, a ReLU whose channels are all always-ON over the
   measured batches is the identity there and becomes ``nn.Identity``; a
   ReLU whose channels are all degenerate with some always-OFF outputs a
   constant 0 on those: it becomes ``nn.Identity`` and the OFF channels'
   producer (conv/linear weights and bias, BatchNorm running mean and bias)
   is zeroed, so the channel is exactly 0 in eval mode. Plain leaves, so the
   model saves/loads; the zeroed weights stay masked, and a BatchNorm bias
   left trainable carries the channel's constant from then on. When the
   producer is not a plain conv/linear (+BatchNorm) chain (e.g. behind a
   residual addition), an always-OFF rectifier is kept.
The run loop, stop rule and resumption are shared with EASIER
(``runner.py``); folding the best model and the report are the caller's
(``entroprune.reporting.depth_report.finish_run``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.utils.prune as prune

from ..data import DataBundle
from ..entropy import RectifierStats
from ..graph import WEIGHTED, ModelGraph, warn_functional
from .runner import DepthConfig, DepthResult, finetune, measure_rectifiers, remove_rectifiers, run_steps


@dataclass
class NepentheConfig(DepthConfig):
    zeta: float = 0.5                   # fraction of the remaining weights removed per round
    temperature: float = 1.0            # softmax temperature of the budget shares
    max_layer_fraction: float = 1.0     # a layer loses at most this fraction of its remaining weights per round
    max_rounds: int | None = 10
    replace_degenerate: bool = True     # always-ON / always-OFF ReLUs become Identity


# ------------------------------------------------------------------ which weights feed which rectifier

def prunable_layers(model: nn.Module, graph: ModelGraph | None = None) -> dict[str, str]:
    """``{conv/linear name: rectifier name}`` for every weighted layer whose
    output reaches a rectifier module (through BatchNorm, Identity, Dropout,
    residual additions), in module order. Untraceable model: none."""
    graph = graph or ModelGraph.of(model)
    if graph is None:
        return {}
    rects = set(graph.rectifier_names())
    out: dict[str, str] = {}
    for node in graph.nodes:
        if isinstance(graph.module(node), WEIGHTED):
            act, _, _ = graph.activation_after(node)
            if act is not None and act.module in rects:
                out[node.target] = act.module
    return {n: out[n] for n in graph.modules if n in out}


def producer_chains(model: nn.Module, graph: ModelGraph | None = None) -> dict[str, tuple[str, str | None]]:
    """``{rectifier: (conv/linear, BatchNorm or None)}`` when the rectifier's
    input is exactly that chain's output (no addition, no other user)."""
    graph = graph or ModelGraph.of(model)
    if graph is None:
        return {}
    rects = set(graph.rectifier_names())
    out = {}
    for node in graph.nodes:
        if node.op == "call_module" and node.target in rects:
            chain = graph.input_chain(node)
            if chain is not None:
                out[node.target] = chain
    return out


# ------------------------------------------------------------------ budget and masks

def allocate_budget(irrelevance: dict[str, float], capacity: dict[str, int], budget: int,
                    temperature: float = 1.0) -> dict[str, int]:
    """Share ``budget`` weights among layers by ``softmax(sum(I) / I_l / T)``,
    layer ``l`` taking at most ``capacity[l]``; capped layers take their
    capacity and leave the pool, and what is left is shared among the others
    by the same softmax recomputed over them (``sum(I)`` over the layers still
    sharing, as in EGP's procedure). Integer counts (largest remainders),
    summing to ``min(budget, sum(capacity))``."""
    names = [n for n in irrelevance if capacity.get(n, 0) > 0 and irrelevance[n] > 0]
    target = min(int(budget), sum(int(capacity[n]) for n in names))
    alloc = {n: 0.0 for n in names}
    left, active = float(target), list(names)
    while left > 0 and active:
        total = sum(irrelevance[n] for n in active)      # the sum runs over the layers still sharing
        scores = torch.tensor([total / irrelevance[n] for n in active], dtype=torch.float64) / temperature
        shares = torch.softmax(scores, 0).tolist()
        full = [n for n, s in zip(active, shares) if s * left >= capacity[n]]
        if not full:
            for n, s in zip(active, shares):
                alloc[n] = s * left
            break
        for n in full:                   # capped: take everything, share the rest again
            alloc[n] = float(capacity[n])
            left -= capacity[n]
        active = [n for n in active if n not in full]
    counts = {n: min(int(capacity[n]), math.floor(alloc[n])) for n in names}
    short = target - sum(counts.values())
    for n in sorted(names, key=lambda n: alloc[n] - math.floor(alloc[n]), reverse=True):
        if short <= 0:
            break
        if counts[n] < capacity[n]:
            counts[n] += 1
            short -= 1
    return counts


def magnitude_mask(weight: torch.Tensor, n: int) -> torch.Tensor:
    """Mask (same shape, float) keeping the non-zero entries of ``weight``
    except its ``n`` smallest in magnitude."""
    flat = weight.detach().abs().flatten()                              # (numel,)
    keep = flat != 0
    n = min(int(n), int(keep.sum()))
    if n > 0:
        ranked = torch.where(keep, flat, torch.full_like(flat, float("inf")))
        keep[torch.topk(ranked, n, largest=False).indices] = False
    return keep.view_as(weight).to(weight.dtype)


def apply_masks(model: nn.Module, masks: dict[str, torch.Tensor]) -> None:
    """Zero and freeze the masked weights (a reparametrisation kept while training)."""
    for name, mask in masks.items():
        prune.custom_from_mask(model.get_submodule(name), "weight", mask)


def remove_masks(model: nn.Module) -> None:
    """Make the masked weights plain tensors again (the zeros stay), before saving."""
    for m in model.modules():
        if prune.is_pruned(m) and hasattr(m, "weight_orig"):
            prune.remove(m, "weight")


def sparsity(model: nn.Module) -> tuple[float, dict[str, float], list[str]]:
    """Global weight sparsity of the conv/linear layers, per layer, and the layers with no weight left."""
    per, zeros, total = {}, 0, 0
    for n, m in model.named_modules():
        if isinstance(m, WEIGHTED):
            z = int((m.weight == 0).sum())
            per[n] = z / m.weight.numel()
            zeros, total = zeros + z, total + m.weight.numel()
    return zeros / max(1, total), per, [n for n, s in per.items() if s == 1.0]


# ------------------------------------------------------------------ degenerate rectifiers

@torch.no_grad()
def replace_degenerate(model: nn.Module, stats: RectifierStats) -> dict[str, str]:
    """Replace ReLUs whose channels are all degenerate over ``stats``' data (see
    the module docstring); returns ``{rectifier: "identity" | "constant" | reason kept}``."""
    chains = producer_chains(model)
    done: dict[str, str] = {}
    for name, p in stats.p_on().items():                                  # p: (C,) fraction ON
        m = model.get_submodule(name)
        on, off = p == 1, p == 0
        if not bool((on | off).all()):
            continue
        if not off.any() and isinstance(m, (nn.ReLU, nn.LeakyReLU)):
            remove_rectifiers(model, [name])
            done[name] = "identity"
        elif not isinstance(m, nn.ReLU):
            done[name] = f"kept: degenerate {type(m).__name__}"
        elif name not in chains:
            done[name] = "kept: always-OFF channels behind a non-plain producer"
        else:
            layer, bn = chains[name]
            producer = model.get_submodule(layer)
            producer.weight[off] = 0                                      # output channels = dim 0
            if producer.bias is not None:
                producer.bias[off] = 0
            if bn is not None:
                norm = model.get_submodule(bn)
                norm.running_mean[off] = 0
                if norm.bias is not None:
                    norm.bias[off] = 0
            remove_rectifiers(model, [name])
            done[name] = "constant" if bool(off.all()) else "identity+constant"
    return done


# ------------------------------------------------------------------ the rounds

def plan_round(model: nn.Module, entropies: dict[str, float], cfg: NepentheConfig) -> dict[str, Any]:
    """Budget and per-layer counts of one round from the rectifiers' entropies."""
    layers = prunable_layers(model)
    weights = {n: model.get_submodule(n).weight.detach() for n in layers}
    remaining = {n: int((w != 0).sum()) for n, w in weights.items()}
    eligible = [n for n in layers if entropies.get(layers[n], 0.0) > 0 and remaining[n] > 0]
    irr = {n: entropies[layers[n]] * float(weights[n][weights[n] != 0].abs().mean()) for n in eligible}
    budget = int(round(cfg.zeta * sum(remaining[n] for n in eligible)))
    cap = {n: min(remaining[n], math.floor(cfg.max_layer_fraction * remaining[n])) for n in eligible}
    alloc = allocate_budget(irr, cap, budget, cfg.temperature)
    return {"layers": layers, "remaining": remaining, "irrelevance": irr, "budget": budget, "allocation": alloc}


def nepenthe(model: nn.Module, data: DataBundle, cfg: NepentheConfig | None = None,
             out_dir: str | Path = "runs/nepenthe") -> DepthResult:
    """Run (or resume) NEPENTHE on ``model`` (not modified) in ``out_dir``;
    returns the steps and the best step's model, unfolded."""
    cfg = cfg or NepentheConfig()
    warn_functional(model, "NEPENTHE")

    def measure(m: nn.Module) -> RectifierStats:
        return measure_rectifiers(m, data.train_x, cfg.entropy_batch_size, cfg.entropy_batches)

    def step_fn(m, rows, step, ckpt):
        plan = plan_round(m, rows[-1]["entropies"], cfg)
        masks = {}
        for n, mod in m.named_modules():
            if isinstance(mod, WEIGHTED) and (n in plan["allocation"] or bool((mod.weight == 0).any())):
                masks[n] = magnitude_mask(mod.weight, plan["allocation"].get(n, 0))
        apply_masks(m, masks)
        try:
            info = finetune(m, data, cfg, step, ckpt)
        finally:
            remove_masks(m)
        stats = measure(m)
        replaced = replace_degenerate(m, stats) if cfg.replace_degenerate else {}
        removed = [n for n, how in replaced.items() if not how.startswith("kept")]
        ent = {n: h for n, h in stats.per_layer(nondegenerate=True).items() if n not in removed}
        glob, per, emptied = sparsity(m)
        return m, {"removed": removed, "replaced": replaced, "entropies": ent, "budget": plan["budget"],
                   "allocation": plan["allocation"], "irrelevance": plan["irrelevance"], "sparsity": glob,
                   "layer_sparsity": per, "emptied": emptied, **info}

    def more_fn(m, rows):
        if cfg.max_rounds is not None and len(rows) > cfg.max_rounds:
            return f"max_rounds ({cfg.max_rounds}) reached"
        if plan_round(m, rows[-1]["entropies"], cfg)["budget"] <= 0:
            return "no layer left to prune (all entropies 0 or layers empty)"
        return None

    def entropy_fn(m: nn.Module) -> dict[str, float]:
        return measure(m).per_layer(nondegenerate=True)

    return run_steps(model, data, cfg, out_dir, "nepenthe", entropy_fn=entropy_fn, step_fn=step_fn,
                     more_fn=more_fn)
