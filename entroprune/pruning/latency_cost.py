"""Predicted latency as the cost of a pruning target (docs/METHODS.md section
10): ``prune_to_target(..., cost_model=LatencyCost(...))`` and the search's
action wall then work on milliseconds in the deployment runtime, not MACs.

For the kept fractions of every channel group (``PolicyPruner``), each
convolution and linear layer has an input and an output width; its time comes
from the per-layer ``LatencyTable`` (measured in ONNX Runtime on this
machine) and the model's from the table's fitted overhead model
(``whole = a + b * sum(layers) + c * layers + ...``).

Which entries are measured (our choice, to keep the table small): for every
layer, the widths along its two axes, its full input width with every
candidate output width and every candidate input width with its full output
width (``candidate_widths``: all widths up to 16, then multiples of 4, 8,
16, 32). A layer at (in, out) inside the grid is estimated separably,
``t(in, out) = t(in, OUT) * t(IN, out) / t(IN, OUT)``, interpolated linearly
between neighbouring candidates; an exact entry is used when there is one.

Widths that are slower than a larger one (ORT's blocked layouts make, say,
60 channels slower than 64) are never kept: ``allowed_counts`` gives a group
only the widths whose summed layer time is below that of every larger
width, so ``round_to`` is a choice the table makes.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence
from typing import Any

from ..measure.latency_table import LatencyTable, candidate_widths, default_calibration_models
from ..measure.layer_graph import LayerConfig, model_profile
from .policy import PolicyPruner


class _Line:
    """Milliseconds of a layer along one width axis, interpolated between candidates."""

    def __init__(self, ms: dict[int, float]):
        self.widths = sorted(ms)
        self.ms = ms

    def __call__(self, w: float) -> float:
        ws = self.widths
        if w in self.ms:
            return self.ms[int(w)]
        j = bisect.bisect_left(ws, w)
        if j == 0:
            return self.ms[ws[0]]
        if j == len(ws):
            return self.ms[ws[-1]]
        a, b = ws[j - 1], ws[j]
        return self.ms[a] + (self.ms[b] - self.ms[a]) * (w - a) / (b - a)


class LatencyCost:
    """Predicted milliseconds of a pruned model from a ``LatencyTable``."""

    name = "latency"

    def __init__(self, table: LatencyTable, input_shape: tuple[int, ...]):
        if table.fit is None:
            raise ValueError("the latency table has no overhead fit; call LatencyCost.for_setting or "
                             "table.calibrate(...) first")
        self.table, self.input_shape = table, tuple(input_shape)
        self._allowed: dict[int, list[int]] = {}

    @classmethod
    def for_setting(cls, input_shape: tuple[int, ...], threads: int = 1, batch_size: int = 1,
                    progress: bool = True) -> LatencyCost:
        """The cached table of this machine, runtime, threads and batch; fitted
        on the zoo (and width-reduced copies) the first time."""
        table = LatencyTable(threads=threads, batch_size=batch_size, progress=progress)
        if table.fit is None:
            table.calibrate(default_calibration_models(input_shape), input_shape)
        return cls(table, input_shape)

    # ---- entries ----
    def _lines(self, cfg: LayerConfig, shrink_in: bool, shrink_out: bool) -> tuple[_Line, _Line, float]:
        """(ms over input widths at the full output, ms over output widths at the full input, ms at full)."""
        if cfg.depthwise:
            diag = self.table.widths_ms(cfg, out_widths=candidate_widths(cfg.out_channels) if shrink_out else
                                        [cfg.out_channels])
            line = _Line({w: ms for (w, _), ms in diag.items()})
            return line, line, line(cfg.out_channels)
        ins = candidate_widths(cfg.in_channels) if shrink_in and cfg.groups == 1 else [cfg.in_channels]
        outs = candidate_widths(cfg.out_channels) if shrink_out and cfg.groups == 1 else [cfg.out_channels]
        over_in = self.table.widths_ms(cfg, in_widths=ins, out_widths=[cfg.out_channels])
        over_out = self.table.widths_ms(cfg, in_widths=[cfg.in_channels], out_widths=outs)
        full = over_out[(cfg.in_channels, cfg.out_channels)]
        return _Line({i: ms for (i, _), ms in over_in.items()}), _Line({o: ms for (_, o), ms in over_out.items()}), \
            full

    def bind(self, pruner: PolicyPruner) -> Callable[[Sequence[float]], float]:
        """kept fractions of ``pruner``'s groups -> predicted milliseconds."""
        prof = model_profile(pruner.base, self.input_shape)
        layers = []
        half = [0.5] * len(pruner.groups)
        for name, cfg in prof.layers:       # which of its widths can shrink: probe every group at half
            k_out, k_in, _ = pruner.layer_keep(name, half) if name in pruner.layer_macs else (1.0, 1.0, 1.0)
            by_in, by_out, full = self._lines(cfg, k_in < 1.0, k_out < 1.0)
            layers.append((name, cfg, by_in, by_out, full, k_in < 1.0 or k_out < 1.0))
        fit, q = self.table.fit, self.table.quiet_ref_ms
        scale = q / fit.ref_ms
        other_mb = 4e-6 * self.table.batch_size * prof.other_elements

        def layer_ms(entry, keep: Sequence[float]) -> float:
            return layer_entry(entry, keep)[0]

        def layer_entry(entry, keep: Sequence[float]) -> tuple[float, bool]:
            """(ms, whether ORT runs the layer in its blocked NCHWc layout)."""
            name, cfg, by_in, by_out, full, shrinks = entry
            nchwc = bool(self.table.entries.get(cfg.key, {}).get("nchwc"))
            if not shrinks:
                return full, nchwc
            k_out, k_in, _ = pruner.layer_keep(name, keep)
            out_w, in_w = k_out * cfg.out_channels, k_in * cfg.in_channels
            if cfg.depthwise:
                return by_out(out_w), nchwc
            exact = cfg.with_widths(max(1, round(in_w)), max(1, round(out_w))) if cfg.groups == 1 else None
            if exact is not None and exact in self.table:
                e = self.table.entries[exact.key]
                return self.table.quiet_ms(e["ms"], e.get("ref_ms"), q), bool(e.get("nchwc", nchwc))
            return (by_in(in_w) * by_out(out_w) / full if full > 0 else 0.0), nchwc

        def cost(keep: Sequence[float]) -> float:
            ms = [layer_entry(e, keep) for e in layers]
            total = sum(t for t, _ in ms)
            blocked = sum(t for t, nchwc in ms if nchwc)
            mean_keep = sum(keep) / max(1, len(keep))
            feats = {"const": 1.0, "layers_ms": total / scale, "nchwc_ms": blocked / scale,
                     "plain_ms": (total - blocked) / scale, "layers": float(len(layers)),
                     "other_mb": other_mb * mean_keep, "others": float(len(prof.others))}
            return scale * fit.predict(feats)

        self._pareto(pruner, layers, layer_ms)
        return cost

    def _pareto(self, pruner: PolicyPruner, layers: list, layer_ms: Callable) -> None:
        """Per group: the candidate widths faster than every larger one."""
        self._allowed = {}
        for i, g in enumerate(pruner.groups):
            touched = [e for e in layers if e[0] in {*g.out_layers, *g.in_layers, *g.once_layers}]
            best, keep_widths = float("inf"), []
            for c in reversed(candidate_widths(g.channels)):
                keep = [1.0] * len(pruner.groups)
                keep[i] = c / g.channels
                t = sum(layer_ms(e, keep) for e in touched)
                if t < best - 1e-9:
                    best = t
                    keep_widths.append(c)
            self._allowed[i] = sorted(keep_widths)

    def allowed_counts(self, pruner: PolicyPruner, group: int) -> list[int] | None:
        return self._allowed.get(group)

    def describe(self) -> dict[str, Any]:
        return {"table": str(self.table.path), "key": self.table.key, "entries": len(self.table),
                "fit": self.table.fit.to_dict()}
