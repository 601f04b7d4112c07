"""Folding after depth reduction (METHODS.md sections 4 and 5): once EASIER or
NEPENTHE has replaced rectifiers by ``nn.Identity``, the now-linear
neighbours are physically merged so that the removed nonlinearities save time.

``fold(model, example_input)`` walks the model's data flow (``fold_graph``)
and repeats four passes until nothing changes:

1. BatchNorm into the preceding Conv2d / Linear (eval statistics; exact);
2. emptied layers (all weights zero, as NEPENTHE leaves them) into a
   ``Constant``, and the computation only they consumed into ``Zero``
   (exact; ``fold_dead.py``);
3. chains of Conv2d (or of Linear) layers with only transparent nodes between
   them into one layer. A chain is split into the segments that minimise MACs
   (dynamic programming over segmentations; ties go to fewer layers), so a
   merge that raises MACs is skipped, with the reason, unless
   ``FoldConfig.force`` is set (then: fewest layers). Inner zero padding makes
   k x k merges inexact in a border ring; every merge's deviation is measured
   on the example input and reported (fine-tuning repairs it);
4. residual additions ``conv(x) + skip(x)`` with an identity or convolution
   skip into the convolution, the skip module becoming ``Zero`` (exact).

Merges are leaf swaps in a deep copy: the model keeps its class and forward
code, so ``entroprune.save`` / ``entroprune.load`` round-trip it (``Zero`` and
``Constant`` are registered with save/load when ``entroprune.depth`` is
imported).
"""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn as nn

from ..io.model_file import record_step
from ..measure import count_depth, count_macs, count_params
from ..measure.complexity import conv_macs, layer_macs, linear_macs
from .fold_dead import plan_dead_branches
from .fold_graph import FlowGraph, FoldPlan, Shapes, capture_inputs, record_shapes, skip_entry
from .fold_layers import (
    ConvGeometry,
    FoldError,
    Zero,
    absorb_skip,
    compose_convs,
    compose_geometry,
    compose_linears,
    composite_groups,
    conv_kind,
    fold_batchnorm,
    measure_merge,
    unsupported_conv,
)


@dataclass
class FoldConfig:
    fold_bn: bool = True        # BatchNorm into the preceding Conv2d / Linear
    merge_chains: bool = True   # consecutive conv (or linear) layers with nothing nonlinear between
    merge_skips: bool = True    # residual additions into the main convolution
    fold_dead: bool = True      # emptied layers -> Constant, the computation only they consumed -> Zero
    force: bool = False         # merge even when MACs grow (then: fewest layers)
    max_rounds: int = 8         # passes repeat until nothing changes, at most this often


# ------------------------------------------------------------------ passes

def _plan_batchnorms(g: FlowGraph, shapes: Shapes, cfg: FoldConfig) -> tuple[list[FoldPlan], list[dict]]:
    plans, skipped = [], []
    for node in g.nodes:
        bn = g.module(node)
        if not isinstance(bn, (nn.BatchNorm1d, nn.BatchNorm2d)):
            continue
        name = node.target
        src = g.upstream(node.args[0])
        layer = g.module(src)
        if name in g.shared:
            skipped.append(skip_entry("bn", [name], "the BatchNorm is called at several places"))
            continue
        if not isinstance(layer, (nn.Conv2d, nn.Linear)):
            what = src.target if src.op == "call_module" else f"{src.op} {src.name}"
            skipped.append(skip_entry("bn", [name], f"not preceded by a convolution or linear layer ({what})"))
            continue
        lname = src.target
        if lname in g.shared or g.follow(src)[0] is not node:
            skipped.append(skip_entry("bn", [lname, name], f"the output of {lname} is also used elsewhere"))
            continue
        pairs = isinstance(bn, nn.BatchNorm2d) == isinstance(layer, nn.Conv2d)
        if not pairs or (isinstance(layer, nn.Linear) and len(shapes[lname][1]) != 1):
            skipped.append(skip_entry("bn", [lname, name], f"{type(bn).__name__} does not normalise the "
                                      f"output channels of this {type(layer).__name__}"))
            continue
        try:
            new = fold_batchnorm(layer, bn)
        except FoldError as e:
            skipped.append(skip_entry("bn", [lname, name], str(e)))
            continue
        plans.append(FoldPlan("bn", [lname, name], {lname: new, name: nn.Identity()}, lname, [layer, bn], new,
                              {"exact": True}))
    return plans, skipped


def _segment_macs(mods: list[nn.Module], names: list[str], shapes: Shapes) -> int:
    """MACs of ``mods`` merged into one layer; FoldError if they cannot be."""
    if len(mods) == 1:
        return layer_macs(mods[0], shapes[names[0]][1])
    out_shape = shapes[names[-1]][1]
    if isinstance(mods[0], nn.Linear):
        return linear_macs(out_shape, mods[0].in_features)
    for m in mods:
        reason = unsupported_conv(m)
        if reason:
            raise FoldError(reason)
    geo = compose_geometry(mods)
    in_hw = shapes[names[0]][0][1:]
    if geo.out_size(in_hw) != tuple(out_shape[1:]):
        raise FoldError(f"the composite convolution would give a {geo.out_size(in_hw)} output, "
                        f"not {tuple(out_shape[1:])} (stride rounding)")
    return conv_macs(out_shape, mods[0].in_channels, composite_groups(mods), geo.kernel)


def _describe(mods: list[nn.Module]) -> str:
    if isinstance(mods[0], nn.Linear):
        return " + ".join(f"linear {m.in_features}->{m.out_features}" for m in mods)
    parts = " + ".join(conv_kind(m) for m in mods)
    try:
        return f"{parts} -> {conv_kind(mods[0], compose_geometry(mods).kernel, composite_groups(mods))}"
    except FoldError:
        return parts


def _best_segmentation(mods: list[nn.Module], names: list[str], shapes: Shapes,
                       force: bool) -> list[tuple[int, int]]:
    """Segments ``(i, j)`` (inclusive) of the chain minimising (MACs, layers),
    or (layers, MACs) when forced."""
    n = len(mods)
    cost: dict[tuple[int, int], int] = {}
    for i in range(n):
        for j in range(i, n):
            try:
                cost[i, j] = _segment_macs(mods[i:j + 1], names[i:j + 1], shapes)
            except FoldError:
                pass
    best: list[tuple[tuple[int, int], list[tuple[int, int]]] | None] = [((0, 0), [])] + [None] * n
    for j in range(1, n + 1):      # best[j]: the best (key, segments) of the first j layers
        for i in range(j):
            if (i, j - 1) not in cost or best[i] is None:
                continue
            key, segs = best[i]
            macs, nseg = (key[1], key[0]) if force else key
            macs, nseg = macs + cost[i, j - 1], nseg + 1
            cand = (nseg, macs) if force else (macs, nseg)
            if best[j] is None or cand < best[j][0]:
                best[j] = (cand, segs + [(i, j - 1)])
    return best[n][1]


def _plan_chains(g: FlowGraph, shapes: Shapes, cfg: FoldConfig) -> tuple[list[FoldPlan], list[dict]]:
    weighted = {n for n in g.nodes if type(g.module(n)) in (nn.Conv2d, nn.Linear) and n.target not in g.shared}
    nxt = {}
    for n in weighted:
        end, path = g.follow(n)
        if (end in weighted and type(g.module(end)) is type(g.module(n))
                and g.single_input(end) is (path[-1] if path else n)):
            nxt[n] = end
    plans, skipped = [], []
    heads = [n for n in g.nodes if n in nxt and n not in set(nxt.values())]
    for head in heads:
        chain = [head]
        while chain[-1] in nxt:
            chain.append(nxt[chain[-1]])
        names = [n.target for n in chain]
        mods = [g.module(n) for n in chain]
        segs = _best_segmentation(mods, names, shapes, cfg.force)
        for (i, j), (k, last) in zip(segs, segs[1:]):   # why neighbouring segments stay apart
            try:
                before = (_segment_macs(mods[i:j + 1], names[i:j + 1], shapes)
                          + _segment_macs(mods[k:last + 1], names[k:last + 1], shapes))
                after = _segment_macs(mods[i:last + 1], names[i:last + 1], shapes)
                why = (f"merging would raise MACs from {before:,} to {after:,} ({_describe(mods[i:last + 1])}); "
                       "force to merge anyway" if after > before else
                       "another grouping of this chain has fewer MACs")
            except FoldError as e:
                why = str(e)
            skipped.append(skip_entry("chain", [names[j], names[k]], why))
        for i, j in segs:
            if j == i:
                continue
            seg, seg_names = mods[i:j + 1], names[i:j + 1]
            merged = compose_linears(seg) if isinstance(seg[0], nn.Linear) else compose_convs(seg)
            exact = isinstance(seg[0], nn.Linear) or all(tuple(m.padding) == (0, 0) for m in seg[1:])
            repl = {seg_names[0]: merged} | {nm: nn.Identity() for nm in seg_names[1:]}
            info = {"exact": exact, "what": _describe(seg),
                    "macs_before": sum(layer_macs(m, shapes[nm][1]) for m, nm in zip(seg, seg_names)),
                    "macs_after": _segment_macs(seg, seg_names, shapes)}
            plans.append(FoldPlan("chain", seg_names, repl, seg_names[0], list(seg), merged, info))
    return plans, skipped


def _plan_skips(g: FlowGraph, shapes: Shapes, cfg: FoldConfig) -> tuple[list[FoldPlan], list[dict]]:
    plans, skipped = [], []
    for node in g.nodes:
        if not g.is_residual_add(node) or any(g.is_zero(a) for a in node.args):
            continue
        for main, other in (node.args, node.args[::-1]):
            conv_node, _ = g.exclusive_source(main)
            conv = g.module(conv_node)
            if (type(conv) is not nn.Conv2d or conv_node.target in g.shared or g.follow(conv_node)[0] is not node
                    or g.single_input(conv_node) is None):
                continue
            root, _ = g.exclusive_source(g.single_input(conv_node))
            src, path = g.exclusive_source(other)
            skip_conv = g.module(src)
            if (type(skip_conv) is nn.Conv2d and src.target not in g.shared and len(g.users(src)) == 1
                    and g.single_input(src) is not None):
                skip_root, _ = g.exclusive_source(g.single_input(src))
                skip_name = src.target
            else:
                skip_conv, skip_root = None, src
                skip_name = path[0].target if path else None
            if skip_root is not root:
                continue
            name = conv_node.target
            layers = [name] + [skip_name or "(forward code)"]
            if skip_name is None:
                skipped.append(skip_entry("skip", layers, "the skip path is written in the model's forward code "
                                          "(no module to replace by Zero); the addition stays"))
                break
            in_shape, out_shape = shapes[name]
            if (skip_conv is None and in_shape != out_shape) or (
                    skip_conv is not None and shapes[skip_name][1] != out_shape):
                skipped.append(skip_entry("skip", layers, "the skip and the convolution give different shapes"))
                break
            try:
                merged = absorb_skip(conv, skip_conv)
            except FoldError as e:
                skipped.append(skip_entry("skip", layers, str(e)))
                break
            before = layer_macs(conv, shapes[name][1]) + (
                layer_macs(skip_conv, shapes[skip_name][1]) if skip_conv else 0)
            after = conv_macs(out_shape, merged.in_channels, merged.groups, tuple(merged.kernel_size))
            if after > before and not cfg.force:
                why = (f"absorbing the skip would raise MACs from {before:,} to {after:,} "
                       f"({conv_kind(conv)} -> {conv_kind(merged)}); force to merge anyway")
                skipped.append(skip_entry("skip", layers, why))
                break

            def original(x, conv=conv, skip_conv=skip_conv):
                return conv(x) + (skip_conv(x) if skip_conv is not None else x)
            what = "identity skip" if skip_conv is None else f"{conv_kind(skip_conv)} skip"
            plans.append(FoldPlan("skip", layers, {name: merged, skip_name: Zero()}, name, original, merged,
                               {"exact": True, "what": f"{conv_kind(conv)} + {what}",
                                "macs_before": before, "macs_after": after}))
            break
    return plans, skipped


# ------------------------------------------------------------------- apply

def _apply(model: nn.Module, plans: list[FoldPlan], x: torch.Tensor) -> list[dict[str, Any]]:
    """Measure each merge on the inputs it sees during ``model(x)``, then swap
    the leaves. Returns the report entries."""
    inputs = capture_inputs(model, x, {p.entry for p in plans})
    done = []
    for p in plans:
        dev = measure_merge(p.original, p.merged, inputs[p.entry])
        for name, new in p.replacements.items():
            model.set_submodule(name, new)
        names = {"max_abs": "max_dev", "mean_abs": "mean_dev", "interior_max_abs": "interior_max_dev",
                 "border_max_abs": "border_max_dev", "border_fraction": "border_fraction"}
        done.append({"kind": p.kind, "layers": p.layers, "into": p.entry} | p.info
                    | {names[k]: v for k, v in dev.as_dict().items()})
    return done


PASSES = (("bn", "fold_bn", _plan_batchnorms), ("dead", "fold_dead", plan_dead_branches),
          ("chain", "merge_chains", _plan_chains), ("skip", "merge_skips", _plan_skips))


@torch.no_grad()
def fold(model: nn.Module, example_input: torch.Tensor,
         cfg: FoldConfig | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """Fold ``model`` (not modified) into a new model in eval mode, and report.

    ``example_input`` ``(N, C, H, W)`` (real images preferably) fixes the
    shapes and is where deviations are measured. The report (also appended to
    the folded model's ``entroprune_history``) has depth, MACs and parameters
    before/after, the whole model's max/mean output deviation, and the merges
    done and skipped with reasons.
    """
    cfg = cfg or FoldConfig()
    t0 = time.time()
    shape = tuple(example_input.shape[1:])
    was_training = model.training
    folded = copy.deepcopy(model).eval()
    model.eval()
    try:
        reference = model(example_input)
    finally:
        model.train(was_training)
    depth0, macs0, params0 = count_depth(model), count_macs(model, shape), count_params(model)

    merges: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    rounds = 0
    view: tuple[FlowGraph, Shapes] | None = None   # trace + shapes of `folded`, redone only after a change
    while rounds < cfg.max_rounds:
        rounds += 1
        skipped, changed = [], False
        for _, flag, planner in PASSES:
            if not getattr(cfg, flag):
                continue
            view = view or (FlowGraph(folded), record_shapes(folded, example_input))
            plans, why = planner(*view, cfg)
            skipped += why
            if plans:
                merges += _apply(folded, plans, example_input)
                changed, view = True, None
        if not changed:
            break

    out = folded(example_input)
    diff = (out - reference).abs()
    depth1, macs1 = count_depth(folded), count_macs(folded, shape)
    report = {
        "op": "fold", "config": asdict(cfg), "input_shape": list(shape),
        "conv_linear_before": depth0.conv_linear, "conv_linear_after": depth1.conv_linear,
        "nonlinear_before": depth0.nonlinear, "nonlinear_after": depth1.nonlinear,
        "macs_before": macs0, "macs_after": macs1, "macs_ratio": macs0 / max(1, macs1),
        "params_before": params0, "params_after": count_params(folded),
        "max_abs_deviation": float(diff.max()), "mean_abs_deviation": float(diff.mean()),
        "output_max_abs": float(reference.abs().max()),
        "merges": merges, "skipped": skipped, "rounds": rounds, "seconds": time.time() - t0,
    }
    record_step(folded, model, report)
    return folded, report


def fold_summary_text(report: dict[str, Any]) -> str:
    """A few human-readable lines about a fold report (``entroprune fold`` prints them)."""
    lines = [f"conv/linear layers {report['conv_linear_before']} -> {report['conv_linear_after']}, "
             f"nonlinear {report['nonlinear_before']} -> {report['nonlinear_after']}, "
             f"MACs {report['macs_before']:,} -> {report['macs_after']:,} ({report['macs_ratio']:.3f}x fewer), "
             f"output deviation max {report['max_abs_deviation']:.3g} mean {report['mean_abs_deviation']:.3g}"]
    for m in report["merges"]:
        extra = f" ({m['what']})" if "what" in m else ""
        verb = "removed" if m["kind"] == "dead" else "merged"
        lines.append(f"{verb} {m['kind']}: {' + '.join(m['layers'])}{extra}, max dev {m['max_dev']:.3g}")
    for s in report["skipped"]:
        lines.append(f"skipped {s['kind']}: {' + '.join(s['layers'])}: {s['reason']}")
    return "\n".join(lines)


__all__ = ["ConvGeometry", "FoldConfig", "fold", "fold_summary_text"]
