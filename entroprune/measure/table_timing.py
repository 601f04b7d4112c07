"""How a latency table times things: one-layer models against their null
graphs, and whole models, in ONNX Runtime.

On a shared machine, speed drifts over seconds with what other jobs do; an
entry timed in one go inherits the speed of its moment. So configurations (and
models) are timed in *rounds*: sessions for a chunk of them are opened, then
every round takes a few samples of each in turn, so each one's samples spread
over the whole chunk's measurement time and the median sees its typical speed.
A layer is always timed interleaved with its null graph, sample by sample.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence

import numpy as np
import torch.nn as nn

from .layer_graph import LayerConfig
from .onnx_layers import layer_model, null_model
from .runtime import OnnxRuntime, Runner, make_session, time_models, time_samples

SAMPLE_MS = 1.0     # a timed sample lasts at least about this long (several calls of fast layers)
CHUNK = 24          # configurations with open sessions at once


class _StaticRunner(Runner):
    """A one-layer model on a seeded input of its static input shape."""

    def __init__(self, model_bytes: bytes, threads: int, seed: int = 0):
        self.session = make_session(model_bytes, threads)
        shape = self.session.get_inputs()[0].shape                    # [B, C, H, W] or [B, F]: static
        self.feed = {self.session.get_inputs()[0].name:
                     np.random.default_rng(seed).standard_normal(shape).astype(np.float32)}

    def __call__(self) -> None:
        self.session.run(None, self.feed)


def calls_per_sample(runner: Callable[[], object], clock: str) -> int:
    """Calls per timed sample so that a sample lasts about ``SAMPLE_MS`` (1 to 200)."""
    one = time_models([runner], repeats=3, warmup=2, clock=clock)[0]
    return int(min(200, max(1, round(SAMPLE_MS / max(one, 1e-4)))))


def _rounds(groups: list[list[Runner]], repeats: int, rounds: int, clock: str,
            tick: Callable[[], None]) -> list[list[list[float]]]:
    """Samples of every runner of every group: ``rounds`` passes over the
    groups, each taking ``ceil(repeats / rounds)`` samples of a group's
    runners interleaved. Returns ``samples[group][runner] -> [ms, ...]``."""
    per = -(-repeats // rounds)
    inners = [[calls_per_sample(r, clock) for r in g] for g in groups]
    inners = [[max(g)] * len(g) for g in inners]    # a group's runners share a count (the null: the layer's)
    out: list[list[list[float]]] = [[[] for _ in g] for g in groups]
    for _ in range(rounds):
        for gi, g in enumerate(groups):
            for ri, s in enumerate(time_samples(g, per, warmup=1, inner=inners[gi], clock=clock)):
                out[gi][ri] += s
            tick()
    return out


def measure_layers(configs: Sequence[LayerConfig], batch_size: int, threads: int, repeats: int = 15,
                   rounds: int = 3, clock: str = "wall",
                   tick: Callable[[], None] = lambda: None) -> dict[str, dict[str, float]]:
    """``{config.key: {"ms", "layer_ms", "null_ms"}}``: medians of the
    one-layer model and of its null graph (``repeats`` samples each, in
    ``rounds``), and their difference ``ms`` floored at 0. ``tick`` is called
    after every configuration of every round (a progress bar)."""
    out = {}
    for start in range(0, len(configs), CHUNK):
        chunk = configs[start:start + CHUNK]
        groups = [[_StaticRunner(layer_model(c, batch_size), threads),
                   _StaticRunner(null_model(c, batch_size), threads)] for c in chunk]
        for c, (layer, null) in zip(chunk, _rounds(groups, repeats, rounds, clock, tick)):
            layer_ms, null_ms = statistics.median(layer), statistics.median(null)
            out[c.key] = {"ms": max(0.0, layer_ms - null_ms), "layer_ms": layer_ms, "null_ms": null_ms}
    return out


def measure_models(models: Sequence[nn.Module], input_shape: tuple[int, ...], batch_size: int, threads: int,
                   repeats: int = 30, rounds: int = 3, clock: str = "wall",
                   tick: Callable[[], None] = lambda: None) -> list[float]:
    """Median ms of each whole model in ORT, timed in rounds like the layers."""
    ort = OnnxRuntime(threads)
    out: list[float] = []
    for start in range(0, len(models), CHUNK):
        groups = [[ort.runner(m, input_shape, batch_size)] for m in models[start:start + CHUNK]]
        out += [statistics.median(s[0]) for s in _rounds(groups, repeats, rounds, clock, tick)]
    return out
