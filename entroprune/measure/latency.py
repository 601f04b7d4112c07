"""CPU latency: median wall time of repeated forward passes after warm-up,
with a fixed thread count. Base and pruned models are measured in the same
process, interleaved, so their ratio is not skewed by a slower period of the
machine."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import torch
import torch.nn as nn


@dataclass
class LatencyPair:
    batch_size: int
    base_ms: float
    pruned_ms: float

    @property
    def speedup(self) -> float:
        """base / pruned: 2.0 means the pruned model runs twice as fast."""
        return self.base_ms / self.pruned_ms


@torch.inference_mode()
def _time_once(model: nn.Module, x: torch.Tensor) -> float:
    t0 = time.perf_counter()
    model(x)
    return time.perf_counter() - t0


def measure_latency(model: nn.Module, input_shape: tuple[int, ...], batch_size: int = 1,
                    repeats: int = 30, warmup: int = 5, threads: int = 2) -> float:
    """Median latency in milliseconds of ``model`` on a ``(batch_size, *input_shape)`` input."""
    return compare_latency(model, None, input_shape, batch_size, repeats, warmup, threads)[0]


def compare_latency(base: nn.Module, pruned: nn.Module | None, input_shape: tuple[int, ...],
                    batch_size: int = 1, repeats: int = 30, warmup: int = 5,
                    threads: int = 2) -> tuple[float, float]:
    """Median latencies (ms) of ``base`` and ``pruned``, interleaved run by run."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    models = [m for m in (base, pruned) if m is not None]
    modes = [m.training for m in models]
    for m in models:
        m.eval()
    x = torch.randn(batch_size, *input_shape, generator=torch.Generator().manual_seed(0))
    try:
        for _ in range(warmup):
            for m in models:
                _time_once(m, x)
        times: list[list[float]] = [[] for _ in models]
        for _ in range(repeats):
            for i, m in enumerate(models):
                times[i].append(_time_once(m, x))
    finally:
        torch.set_num_threads(previous)
        for m, mode in zip(models, modes):
            m.train(mode)
    medians = [1000.0 * statistics.median(t) for t in times]
    return medians[0], (medians[1] if pruned is not None else float("nan"))


def latency_pairs(base: nn.Module, pruned: nn.Module, input_shape: tuple[int, ...],
                  batch_sizes: tuple[int, ...] = (1, 64), repeats: int = 30,
                  threads: int = 2) -> list[LatencyPair]:
    """Base/pruned latency at each batch size (default 1 and 64)."""
    out = []
    for bs in batch_sizes:
        reps = repeats if bs < 16 else max(5, repeats // 3)
        b, p = compare_latency(base, pruned, input_shape, bs, repeats=reps, threads=threads)
        out.append(LatencyPair(bs, b, p))
    return out
