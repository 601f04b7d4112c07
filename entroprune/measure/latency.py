"""Latency: median wall time of repeated forward passes after warm-up, on a
fixed thread count, in a chosen runtime (``runtime.py``): ONNX Runtime by
default, the runtime a deployed model sees, or eager ``"torch"``. Base and
pruned models are measured in the same process, interleaved run by run, so
their ratio is not skewed by a slower period of the machine."""

from __future__ import annotations

from dataclasses import dataclass

from .runtime import ModelLike, OnnxRuntime, Runtime, get_runtime, time_models


@dataclass
class LatencyPair:
    batch_size: int
    base_ms: float
    pruned_ms: float

    @property
    def speedup(self) -> float:
        """base / pruned: 2.0 means the pruned model runs twice as fast."""
        return self.base_ms / self.pruned_ms


def measure_latency(model: ModelLike, input_shape: tuple[int, ...], batch_size: int = 1,
                    repeats: int = 30, warmup: int = 5, threads: int = 2,
                    runtime: str | Runtime = "onnxruntime") -> float:
    """Median latency in milliseconds of ``model`` on a ``(batch_size, *input_shape)``
    input; ``model`` may be an .onnx file when ``runtime`` is "onnxruntime"."""
    return compare_latency(model, None, input_shape, batch_size, repeats, warmup, threads, runtime)[0]


def compare_latency(base: ModelLike, pruned: ModelLike | None, input_shape: tuple[int, ...],
                    batch_size: int = 1, repeats: int = 30, warmup: int = 5,
                    threads: int = 2, runtime: str | Runtime = "onnxruntime") -> tuple[float, float]:
    """Median latencies (ms) of ``base`` and ``pruned`` (NaN when None), interleaved run by run."""
    rt = get_runtime(runtime, threads)
    runners = [rt.runner(m, input_shape, batch_size) for m in (base, pruned) if m is not None]
    medians = time_models(runners, repeats, warmup)
    return medians[0], (medians[1] if pruned is not None else float("nan"))


def latency_pairs(base: ModelLike, pruned: ModelLike, input_shape: tuple[int, ...],
                  batch_sizes: tuple[int, ...] = (1, 64), repeats: int = 30,
                  threads: int = 2, runtime: str | Runtime = "onnxruntime") -> list[LatencyPair]:
    """Base/pruned latency at each batch size (default 1 and 64); batches of
    16 and more take a third of ``repeats`` (at least 5)."""
    rt = get_runtime(runtime, threads)
    sessions: list = [None, None]
    if isinstance(rt, OnnxRuntime):   # one export and session per model, reused across batch sizes
        sessions = [rt.session(m, input_shape) for m in (base, pruned)]
    out = []
    for bs in batch_sizes:
        reps = repeats if bs < 16 else max(5, repeats // 3)
        if isinstance(rt, OnnxRuntime):
            runners = [rt.runner(m, input_shape, bs, session=s) for m, s in zip((base, pruned), sessions)]
        else:
            runners = [rt.runner(m, input_shape, bs) for m in (base, pruned)]
        b, p = time_models(runners, reps, warmup=5)
        out.append(LatencyPair(bs, b, p))
    return out
