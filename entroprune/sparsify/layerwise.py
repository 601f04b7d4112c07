"""Generalized entropic sparsification of a whole network, layer by layer.

Source: T. Barisin, I. Horenko, "Towards Generalized Entropic Sparsification
for Convolutional Neural Networks", arXiv 2404.04734 (Neural Computation
2025); METHODS.md section 6. The per-layer solver is ``entropic.solve``.

For every convolution (``groups == 1``) and linear layer, in execution order:
1. sample patches: positions (image, output pixel) are drawn once per layer
   from the calibration images; the inputs ``X`` come from the network
   sparsified so far, the targets ``Y`` are the ORIGINAL network's outputs of
   this layer at the same positions (before its activation and BatchNorm);
2. if the layer's input channels come from exactly one producer layer, whose
   output channels feed only this layer (BatchNorm, activations, pooling and
   flattening in between are fine), solve for the channel weights ``w`` and
   remove the channels whose weight is below ``threshold / C`` (or the
   ``target`` fraction with the smallest weights) structurally: the
   producer's output group (with its BatchNorm) and this layer's inputs, with
   torch-pruning's dependency graph;
3. refit the layer's remaining weights (and bias) by ridge least squares to
   the original outputs ``Y``; layers whose inputs are unchanged are left as
   they are, and so is a layer whose refit (fitted without every
   ``holdout``-th sampled row) does not reconstruct those held-out rows
   better than its current weights (over-fitting a small calibration set).
Skipped (reported with the reason): the network's first layer (its inputs are
the image), layers whose input channels are coupled to a residual addition or
a concatenation or also feed another layer, grouped/depthwise convolutions
(these are not refitted either), non-zero padding modes.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch_pruning as tp

from ..io.model_file import record_step
from ..measure import count_macs, count_params, layer_costs
from ..pruning.structural import min_width
from .entropic import EntropicConfig, moments, refit, relative_error, solve


class SparsifyError(ValueError):
    """The requested sparsification cannot be done; the message says why."""


@dataclass
class SparsifyConfig:
    solver: EntropicConfig = field(default_factory=EntropicConfig)
    threshold: float = 0.1           # remove channels with w_c < threshold / C (uniform = 1 / C)
    target: float | None = None      # instead: remove this fraction of each layer's channels
    min_keep: float = 0.1            # every layer keeps >= this fraction of its input channels
    min_channels: int = 1            # ... and at least this many
    n_patches: int = 8192            # sampled (image, position) pairs per layer
    refit_ridge: float = 1e-4        # ridge of the refit, relative to the mean input variance
    holdout: int = 5                 # every holdout-th sampled row checks that a refit helps (0: off)
    seed: int = 0
    ignored_layers: list[str] = field(default_factory=list)  # never sparsified (still refitted)


class _Stop(Exception):
    """Raised in a hook to end a forward pass once the wanted input is seen."""


def _layers(model: nn.Module, example: torch.Tensor) -> list[tuple[str, tuple[int, ...]]]:
    """(name, output shape of one image) of every Conv2d/Linear in execution order."""
    names = {m: n for n, m in model.named_modules()}
    seen: list[tuple[str, tuple[int, ...]]] = []
    hooks = [m.register_forward_hook(lambda mod, i, o: seen.append((names[mod], tuple(o.shape[1:]))))
             for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in hooks:
            h.remove()
    return seen


def _patches(layer: nn.Module, inp: torch.Tensor) -> torch.Tensor:
    """All regression rows of one input batch: (b * L, D)."""
    if isinstance(layer, nn.Linear):
        return inp.reshape(-1, inp.shape[-1])                            # (b, D)
    cols = F.unfold(inp, layer.kernel_size, layer.dilation, layer.padding, layer.stride)  # (b, D, L)
    return cols.transpose(1, 2).reshape(-1, cols.shape[1])               # (b * L, D)


def _local(idx: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
    """Sorted flat indices in [lo, hi), shifted to start at 0."""
    a, b = torch.searchsorted(idx, lo), torch.searchsorted(idx, hi)
    return idx[a:b] - lo


@torch.no_grad()
def _targets(model: nn.Module, calib: torch.Tensor, sel: dict[str, tuple[torch.Tensor, int]],
             chunk: int = 64) -> dict[str, torch.Tensor]:
    """Outputs (n, O) of every layer of ``sel`` at its sampled positions, one pass."""
    got: dict[str, list[torch.Tensor]] = {n: [] for n in sel}
    start = [0]

    def hook(mod, inp, out, name):
        idx, per = sel[name]
        rows = out.reshape(out.shape[0], out.shape[1], -1).transpose(1, 2).reshape(-1, out.shape[1])  # (b*L, O)
        got[name].append(rows[_local(idx, start[0] * per, (start[0] + out.shape[0]) * per)])

    hooks = [model.get_submodule(n).register_forward_hook(lambda m, i, o, n=n: hook(m, i, o, n)) for n in sel]
    try:
        for i in range(0, calib.shape[0], chunk):
            start[0] = i
            model(calib[i:i + chunk])
    finally:
        for h in hooks:
            h.remove()
    return {n: torch.cat(v) for n, v in got.items()}


@torch.no_grad()
def _inputs(model: nn.Module, name: str, calib: torch.Tensor, idx: torch.Tensor, per: int) -> torch.Tensor:
    """Patches (n, D) of layer ``name`` at the sampled positions; each forward
    pass stops at the layer."""
    layer = model.get_submodule(name)
    width = layer.in_features if isinstance(layer, nn.Linear) else (
        layer.in_channels * math.prod(layer.kernel_size))
    chunk = max(1, min(64, (1 << 22) // max(1, width * per)))
    got: list[torch.Tensor] = []
    start = [0]

    def pre(mod, inp):
        rows = _patches(mod, inp[0])
        got.append(rows[_local(idx, start[0] * per, (start[0] + inp[0].shape[0]) * per)])
        raise _Stop

    h = layer.register_forward_pre_hook(pre)
    try:
        for i in range(0, calib.shape[0], chunk):
            start[0] = i
            try:
                model(calib[i:i + chunk])
            except _Stop:
                pass
    finally:
        h.remove()
    return torch.cat(got)


def _is_out(dep) -> bool:
    return dep.handler.__name__ == "prune_out_channels"


def find_producer(model: nn.Module, layer: nn.Module, example: torch.Tensor, dg: tp.DependencyGraph | None = None):
    """``(dg, producer, handler, block)`` if ``layer``'s input channels can be
    removed alone, where ``block`` is the number of input features per producer
    channel (1 for a convolution, H*W after a flatten); else the reason (str).
    ``dg``: the model's dependency graph, built once by the caller (it follows
    the removals made through it); built here if not given."""
    if isinstance(layer, nn.Conv2d) and layer.groups > 1:
        return "grouped or depthwise convolution"
    if dg is None:
        dg = tp.DependencyGraph().build_dependency(model, example_inputs=example)
    for group in dg.get_all_groups(root_module_types=[nn.Conv2d, nn.Linear]):
        mods = [(dep.target.module, _is_out(dep)) for dep, _ in group]
        if not any(m is layer and not out for m, out in mods):
            continue
        producers = [m for m, out in mods if out and isinstance(m, (nn.Conv2d, nn.Linear))]
        consumers = {id(m) for m, out in mods if not out and isinstance(m, (nn.Conv2d, nn.Linear))}
        if any(isinstance(m, nn.Conv2d) and m.groups > 1 for m in producers):
            return "input channels pass through a grouped or depthwise convolution"
        if len(producers) != 1:
            return "input channels coupled to a residual addition or concatenation"
        if consumers != {id(layer)}:
            return "the producer's channels also feed another layer"
        producer = producers[0]
        others = [type(m).__name__ for m, _ in mods if not isinstance(
            m, (nn.Conv2d, nn.Linear, nn.modules.batchnorm._BatchNorm)) and isinstance(m, nn.Module)
            and any(True for _ in m.parameters(recurse=False))]
        if others:
            return f"coupled to a {others[0]}, which the solver does not model"
        width = layer.in_features if isinstance(layer, nn.Linear) else layer.in_channels
        n_out = producer.out_channels if isinstance(producer, nn.Conv2d) else producer.out_features
        block = width // n_out
        handler = group[0].dep.handler
        probe = dg.get_pruning_group(producer, handler, [1] if n_out > 1 else [0])
        seen = [sorted(i) for dep, i in probe if dep.target.module is layer and not _is_out(dep)]
        first = block if n_out > 1 else 0
        if width % n_out or seen != [list(range(first, first + block))]:
            return "its input features are not contiguous blocks of the producer's channels"
        return dg, producer, handler, block
    return "no single layer produces its input channels (the network input, or a split/chunk on the way)"


def select_channels(w: torch.Tensor, cfg: SparsifyConfig) -> list[int]:
    """Indices of the channels to remove, by weight (smallest first)."""
    c = w.numel()
    keep_min = min_width(c, cfg.min_keep, cfg.min_channels)
    order = torch.argsort(w, stable=True).tolist()
    if cfg.target is not None:
        n = int(round(cfg.target * c))
    else:
        n = int((w < cfg.threshold / c).sum())
    return sorted(order[:max(0, min(n, c - keep_min))])


def _refit_helps(x: torch.Tensor, y: torch.Tensor, group: int, current, cfg: SparsifyConfig) -> bool:
    """Does a refit beat the current weights on held-out rows (every
    ``holdout``-th sampled row, fitted on the others)? Guards against a refit
    that only fits the calibration sample (few images, wide linear layers)."""
    held = torch.zeros(x.shape[0], dtype=torch.bool)
    held[::cfg.holdout] = True
    if cfg.holdout < 2 or int(held.sum()) < 2:
        return True
    fit = moments(x[~held], y[~held], group, current[1] is not None)
    weight, b = refit(fit, None, list(range(fit.channels)), ridge=cfg.refit_ridge,
                      fit_intercept=current[1] is not None)
    return relative_error(x[held], y[held], weight, b) < relative_error(x[held], y[held], *current)


def _write(layer: nn.Module, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
    with torch.no_grad():
        layer.weight.copy_(weight.view_as(layer.weight).to(layer.weight.dtype))
        if bias is not None:
            layer.bias.copy_(bias.to(layer.bias.dtype))


def _check(model: nn.Module, calib: torch.Tensor, cfg: SparsifyConfig) -> None:
    if calib.ndim < 2 or calib.shape[0] < 2:
        raise SparsifyError("calibration data must be a batch of at least 2 inputs")
    if cfg.target is not None and not 0.0 <= cfg.target < 1.0:
        raise SparsifyError(f"target {cfg.target} must be a fraction of channels to remove in [0, 1)")
    if cfg.threshold < 0 or cfg.solver.eps_e <= 0 or cfg.solver.ridge <= 0:
        raise SparsifyError("threshold must be >= 0, eps_E and the ridge > 0")
    for n in cfg.ignored_layers:
        try:
            model.get_submodule(n)
        except AttributeError:
            raise SparsifyError(f"ignored layer {n!r} is not a module of the model") from None


def _sample(order, n_images: int, cfg: SparsifyConfig) -> dict[str, tuple[torch.Tensor, int]]:
    """Sorted flat (image, position) indices of every layer, and positions per image."""
    gen = torch.Generator().manual_seed(cfg.seed)
    sel = {}
    for name, shape in order:
        per = math.prod(shape[1:]) if len(shape) == 3 else 1     # output positions per image
        total = n_images * per
        sel[name] = (torch.sort(torch.randperm(total, generator=gen)[:min(cfg.n_patches, total)])[0], per)
    return sel


def _skip_reason(layer: nn.Module) -> str | None:
    if isinstance(layer, nn.Conv2d):
        if layer.groups > 1:
            return "grouped or depthwise convolution"
        if isinstance(layer.padding, str) or layer.padding_mode != "zeros":
            return f"padding {layer.padding!r} / mode {layer.padding_mode!r} (patches need zero padding)"
    return None


def _process(net: nn.Module, name: str, calib: torch.Tensor, sel, y: torch.Tensor,
             cfg: SparsifyConfig, dg: tp.DependencyGraph) -> dict[str, Any]:
    """Sparsify (if it can) and refit one layer of ``net`` in place; its record."""
    layer = net.get_submodule(name)
    is_conv = isinstance(layer, nn.Conv2d)
    rec: dict[str, Any] = {"kind": type(layer).__name__,
                           "in_channels_before": layer.in_channels if is_conv else layer.in_features}
    reason = _skip_reason(layer)
    if reason is not None:
        rec["skipped"] = reason
        return rec
    example = calib[:1]
    found = find_producer(net, layer, example, dg) if name not in cfg.ignored_layers else "ignored layer"
    x = _inputs(net, name, calib, *sel)                         # (n, D)
    group = (math.prod(layer.kernel_size) if is_conv else 1) * (1 if isinstance(found, str) else found[3])
    mom = moments(x, y, group, layer.bias is not None)
    keep = list(range(mom.channels))
    if isinstance(found, str):
        rec["skipped"] = found
    else:
        dg, producer, handler, _ = found
        res = solve(mom, cfg=cfg.solver)
        removed = select_channels(res.w, cfg)
        keep = [c for c in keep if c not in removed]
        if removed:  # the producer's output group (with its BatchNorm) and our inputs
            dg.get_pruning_group(producer, handler, removed).prune()
        rec.update(producer={m: n for n, m in net.named_modules()}[producer], removed=removed,
                   w=[round(float(v), 6) for v in res.w], iterations=res.iterations,
                   converged=res.converged, objective=[float(v) for v in res.objective],
                   solver_seconds=res.seconds)
    cols = torch.tensor([c * group + j for c in keep for j in range(group)], dtype=torch.long)
    x_keep = x[:, cols]                                          # (n, D')
    bias = layer.bias.detach() if layer.bias is not None else None
    current = (layer.weight.detach().reshape(y.shape[1], -1), bias)
    rec["rel_error_pruned"] = relative_error(x_keep, y, *current)
    rec["rel_error_refit"], rec["refitted"] = rec["rel_error_pruned"], False
    if rec["rel_error_pruned"] > 1e-9 and _refit_helps(x_keep, y, group, current, cfg):
        weight, b = refit(mom, None, keep, ridge=cfg.refit_ridge, fit_intercept=bias is not None)
        _write(layer, weight, b)
        rec["rel_error_refit"], rec["refitted"] = relative_error(x_keep, y, weight, b), True
    return rec


def sparsify(model: nn.Module, calib: torch.Tensor, cfg: SparsifyConfig | None = None,
             ) -> tuple[nn.Module, dict[str, Any]]:
    """A sparsified copy of ``model`` (the original is untouched), and a report:
    channels, weights and MACs before/after per layer and in total.

    ``calib`` is a batch of calibration inputs (N, C, H, W)."""
    cfg = cfg or SparsifyConfig()
    from ..io.finite import NONFINITE_ADVICE, describe_nonfinite, first_nonfinite
    from ..reconstruct.least_squares import NonFiniteError
    if (bad := first_nonfinite(model)) is not None:
        raise NonFiniteError(f"cannot sparsify a model with non-finite weights, first {bad}; {NONFINITE_ADVICE}")
    if (bad := describe_nonfinite("calibration batch", calib)) is not None:
        raise NonFiniteError(f"cannot sparsify: the {bad} is not finite; check the data")
    _check(model, calib, cfg)
    t0 = time.time()
    orig = copy.deepcopy(model).eval()
    net = copy.deepcopy(model).eval()
    input_shape = tuple(calib.shape[1:])
    order = _layers(orig, calib[:1])
    sel = _sample(order, calib.shape[0], cfg)
    targets = _targets(orig, calib, sel)                        # original outputs, (n, O) per layer
    costs0 = {r.name: r.macs for r in layer_costs(orig, input_shape)}
    weights0 = {n: m.weight.numel() for n, m in orig.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    layers: dict[str, dict[str, Any]] = {}
    dg = tp.DependencyGraph().build_dependency(net, example_inputs=calib[:1])   # once: it follows the removals
    for name, _ in order:
        t1 = time.time()
        layers[name] = _process(net, name, calib, sel[name], targets[name], cfg, dg)
        layers[name]["seconds"] = time.time() - t1
    costs1 = {r.name: r.macs for r in layer_costs(net, input_shape)}
    total_c = removed_c = 0
    for name, rec in layers.items():
        layer = net.get_submodule(name)
        rec["in_channels_after"] = layer.in_channels if isinstance(layer, nn.Conv2d) else layer.in_features
        rec["weights_before"], rec["weights_after"] = weights0[name], layer.weight.numel()
        rec["weight_sparsity"] = 1 - rec["weights_after"] / rec["weights_before"]
        rec["macs_before"], rec["macs_after"] = costs0[name], costs1[name]
        if "skipped" not in rec:
            total_c += len(rec["w"])
            removed_c += len(rec["removed"])
    macs0, params0 = sum(costs0.values()), count_params(orig)
    macs1, params1 = count_macs(net, input_shape), count_params(net)
    s = cfg.solver
    report = {
        "op": "sparsify", "method": "ges", "eps_e": s.eps_e, "ridge": s.ridge,
        "threshold": None if cfg.target is not None else cfg.threshold, "target": cfg.target,
        "n_patches": cfg.n_patches, "calib_images": int(calib.shape[0]), "seed": cfg.seed,
        "channels_before": total_c, "channels_after": total_c - removed_c,
        "channel_sparsity": removed_c / max(1, total_c),
        "params_before": params0, "params_after": params1, "weight_sparsity": 1 - params1 / params0,
        "macs_before": macs0, "macs_after": macs1, "macs_ratio": macs0 / max(1, macs1),
        "layers": layers, "skipped": {n: r["skipped"] for n, r in layers.items() if "skipped" in r},
        "seconds": time.time() - t0,
    }
    record_step(net, model, report)
    return net, report
