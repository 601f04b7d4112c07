"""How a latency table times things: one-layer models against their null
graphs, and whole models, in ONNX Runtime.

On a shared machine, speed drifts over seconds with what other jobs do; an
entry timed in one go inherits the speed of its moment. So configurations (and
models) are timed in *rounds*: sessions for a chunk of them are opened, then
every round takes a few samples of each in turn, so each one's samples spread
over the whole chunk's measurement time and the median sees its typical speed.
A layer is always timed interleaved with its null graph, sample by sample.

Every round also times a fixed *reference* layer (``REFERENCE``, a 16-channel
3x3 convolution on 28x28 at the same batch size); its median over the chunk
is returned with every result (``ref_ms``), so that a table can express its
times relative to the machine's speed at that moment (``latency_table.py``).
"""

from __future__ import annotations

import statistics
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch.nn as nn

from .layer_graph import LayerConfig
from .onnx_layers import layer_model, null_model
from .runtime import OnnxRuntime, Runner, import_onnxruntime, make_session, session_options, time_models, time_samples

SAMPLE_MS = 1.0     # a timed sample lasts at least about this long (several calls of fast layers)
CHUNK = 24          # configurations with open sessions at once
REFERENCE = LayerConfig("conv", 16, 16, (3, 3), padding=(1, 1), in_hw=(28, 28), bias=True, act=True)


class _StaticRunner(Runner):
    """A one-layer model on a seeded input of its static input shape.
    ``inspect``: also record whether ORT turned it into its blocked NCHWc
    layout (``self.nchwc``), read from the optimised graph it writes."""

    def __init__(self, model_bytes: bytes, threads: int, seed: int = 0, inspect: bool = False):
        self.nchwc = False
        if inspect:
            self.session, self.nchwc = _inspected_session(model_bytes, threads)
        else:
            self.session = make_session(model_bytes, threads)
        shape = self.session.get_inputs()[0].shape                    # [B, C, H, W] or [B, F]: static
        self.feed = {self.session.get_inputs()[0].name:
                     np.random.default_rng(seed).standard_normal(shape).astype(np.float32)}

    def __call__(self) -> None:
        self.session.run(None, self.feed)


def _inspected_session(model_bytes: bytes, threads: int):
    """A session of ``model_bytes`` and whether its optimised graph has NCHWc nodes."""
    import onnx

    ort = import_onnxruntime()
    with tempfile.TemporaryDirectory(prefix="entroprune-opt-") as tmp:
        so = session_options(threads)
        so.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        session = ort.InferenceSession(model_bytes, sess_options=so, providers=["CPUExecutionProvider"])
        graph = onnx.load(so.optimized_model_filepath).graph
    return session, any(n.domain == "com.microsoft.nchwc" for n in graph.node)


def calls_per_sample(runner: Callable[[], object], clock: str) -> int:
    """Calls per timed sample so that a sample lasts about ``SAMPLE_MS`` (1 to 200)."""
    one = time_models([runner], repeats=3, warmup=2, clock=clock)[0]
    return int(min(200, max(1, round(SAMPLE_MS / max(one, 1e-4)))))


def _rounds(groups: list[list[Runner]], reference: Runner, repeats: int, rounds: int, clock: str,
            tick: Callable[[], None]) -> tuple[list[list[list[float]]], float]:
    """Samples of every runner of every group: ``rounds`` passes over the
    groups, each taking ``ceil(repeats / rounds)`` samples of a group's
    runners interleaved, then of ``reference``. Returns
    ``samples[group][runner] -> [ms, ...]`` and the reference's median ms."""
    per = -(-repeats // rounds)
    inners = [[calls_per_sample(r, clock) for r in g] for g in groups]
    inners = [[max(g)] * len(g) for g in inners]    # a group's runners share a count (the null: the layer's)
    ref_inner = calls_per_sample(reference, clock)
    out: list[list[list[float]]] = [[[] for _ in g] for g in groups]
    ref: list[float] = []
    for _ in range(rounds):
        for gi, g in enumerate(groups):
            for ri, s in enumerate(time_samples(g, per, warmup=1, inner=inners[gi], clock=clock)):
                out[gi][ri] += s
            tick()
        ref += time_samples([reference], per, warmup=1, inner=ref_inner, clock=clock)[0]
    return out, statistics.median(ref)


def reference_runner(batch_size: int, threads: int) -> Runner:
    return _StaticRunner(layer_model(REFERENCE, batch_size), threads)


def measure_layers(configs: Sequence[LayerConfig], batch_size: int, threads: int, repeats: int = 15,
                   rounds: int = 3, clock: str = "wall",
                   tick: Callable[[], None] = lambda: None) -> dict[str, dict[str, float]]:
    """``{config.key: {"ms", "layer_ms", "null_ms", "ref_ms", "nchwc"}}``:
    medians of the one-layer model and of its null graph (``repeats`` samples
    each, in ``rounds``), their difference ``ms`` floored at 0, the reference
    layer's median over the same chunk, and whether ORT ran the layer in its
    blocked NCHWc layout. ``tick`` is called after every configuration of
    every round (a progress bar)."""
    out = {}
    reference = reference_runner(batch_size, threads)
    for start in range(0, len(configs), CHUNK):
        chunk = configs[start:start + CHUNK]
        groups = [[_StaticRunner(layer_model(c, batch_size), threads, inspect=True),
                   _StaticRunner(null_model(c, batch_size), threads)] for c in chunk]
        samples, ref_ms = _rounds(groups, reference, repeats, rounds, clock, tick)
        for c, g, (layer, null) in zip(chunk, groups, samples):
            layer_ms, null_ms = statistics.median(layer), statistics.median(null)
            out[c.key] = {"ms": max(0.0, layer_ms - null_ms), "layer_ms": layer_ms, "null_ms": null_ms,
                          "ref_ms": ref_ms, "nchwc": g[0].nchwc}
    return out


def measure_models(models: Sequence[nn.Module], input_shape: tuple[int, ...], batch_size: int, threads: int,
                   repeats: int = 30, rounds: int = 3, clock: str = "wall",
                   tick: Callable[[], None] = lambda: None) -> list[tuple[float, float]]:
    """``(median ms, reference median ms)`` of each whole model in ORT, timed
    in rounds like the layers."""
    ort = OnnxRuntime(threads)
    reference = reference_runner(batch_size, threads)
    out: list[tuple[float, float]] = []
    for start in range(0, len(models), CHUNK):
        groups = [[ort.runner(m, input_shape, batch_size)] for m in models[start:start + CHUNK]]
        samples, ref_ms = _rounds(groups, reference, repeats, rounds, clock, tick)
        out += [(statistics.median(s[0]), ref_ms) for s in samples]
    return out
