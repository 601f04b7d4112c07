"""Runtimes that a latency is measured in, and the one timing loop they share.

A deployed model does not run in eager PyTorch: per-operator dispatch and
memory traffic dominate on small 28x28 inputs, and ONNX Runtime (ORT) runs the
zoo several times faster at batch 1, so a speedup measured in eager torch says
little about the device. Every runtime here turns a model into a *runner*, a
zero-argument callable that performs one forward pass on a fixed input:

* ``TorchRuntime(threads)``: eager torch, eval mode, ``inference_mode``, on a
  fixed number of torch threads (set while the runner is entered, restored on
  exit).
* ``OnnxRuntime(threads)``: the model exported to ONNX (opset 17, eval mode,
  by ``entroprune.export.export_model``; BatchNorm is folded by the exporter
  and ORT), or an ``.onnx`` file (e.g. an INT8 model written by a quantizer),
  in an ``onnxruntime.InferenceSession`` on the CPU provider with
  ``intra_op_num_threads=threads``, one inter-op thread, sequential execution
  and every graph optimisation.

``time_models(runners, repeats, warmup)`` warms every runner up, then runs
them interleaved run by run in one process (a slow period of a shared machine
hits every model alike) and returns the median milliseconds of each
(``time_samples`` returns the samples). ``inner`` calls per timed sample steady
sub-0.1 ms runs; ``clock="cpu"`` times the calling thread's CPU time instead of
wall time (valid at one thread, blind to other jobs taking the core away).
"""

from __future__ import annotations

import contextlib
import statistics
import tempfile
import time
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

ModelLike = nn.Module | str | Path

INSTALL_HINT = "pip install 'entroprune[export]'"


class Runner:
    """One forward pass on a fixed input per call. Enter it (``with runner:``)
    around a timing loop: the runner then holds whatever global state it needs
    (torch threads, eval mode) and puts it back on exit; calling it without
    entering also works, with that state set around every call."""

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc) -> None:
        return None

    def __call__(self) -> None:
        raise NotImplementedError

    def output(self) -> np.ndarray:
        """The first output of one forward pass, as a numpy array (for checks)."""
        raise NotImplementedError


class Runtime(ABC):
    """Where a model runs. ``name`` and ``version`` identify it (latency
    tables are keyed by them); ``threads`` is the intra-op thread count."""

    name: str = ""

    def __init__(self, threads: int = 1):
        if int(threads) < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        self.threads = int(threads)

    @property
    @abstractmethod
    def version(self) -> str: ...

    @abstractmethod
    def runner(self, model: ModelLike, input_shape: tuple[int, ...], batch_size: int = 1) -> Runner:
        """A runner of ``model`` on a seeded ``(batch_size, *input_shape)`` input."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(threads={self.threads})"


def example_input(input_shape: tuple[int, ...], batch_size: int) -> torch.Tensor:
    """The fixed, seeded input every runner sees: ``(batch_size, *input_shape)``."""
    return torch.randn(batch_size, *input_shape, generator=torch.Generator().manual_seed(0))


# --------------------------------------------------------------------------- torch

class _TorchRunner(Runner):
    def __init__(self, model: nn.Module, x: torch.Tensor, threads: int):
        self.model, self.x, self.threads = model, x, threads
        self._saved: tuple[int, bool] | None = None   # (caller's threads, model's training flag)
        self._depth = 0                                # nested enters (a runner timed twice in one call)

    def __enter__(self) -> _TorchRunner:
        if self._depth == 0:
            self._saved = (torch.get_num_threads(), self.model.training)
            torch.set_num_threads(self.threads)
            self.model.eval()
        self._depth += 1
        return self

    def __exit__(self, *exc) -> None:
        self._depth -= 1
        if self._depth == 0 and self._saved is not None:
            threads, training = self._saved
            torch.set_num_threads(threads)
            self.model.train(training)
            self._saved = None

    @torch.inference_mode()
    def _forward(self) -> torch.Tensor:
        return self.model(self.x)

    def __call__(self) -> None:
        if self._depth:
            self._forward()
        else:
            with self:
                self._forward()

    def output(self) -> np.ndarray:
        with self:
            out = self._forward()
        out = out[0] if isinstance(out, (tuple, list)) else out
        return out.detach().float().numpy().copy()


class TorchRuntime(Runtime):
    """Eager PyTorch on ``threads`` threads."""

    name = "torch"

    @property
    def version(self) -> str:
        return torch.__version__

    def runner(self, model: ModelLike, input_shape: tuple[int, ...], batch_size: int = 1) -> Runner:
        if not isinstance(model, nn.Module):
            raise TypeError(f"the torch runtime runs an nn.Module, not the file {str(model)!r}; time an .onnx "
                            "file with runtime='onnxruntime', or load the model first (entroprune.load)")
        return _TorchRunner(model, example_input(input_shape, batch_size), self.threads)


# --------------------------------------------------------------------------- onnxruntime

def import_onnxruntime():
    """``onnxruntime``, or an ImportError that says how to install it."""
    try:
        import onnx  # noqa: F401  (the exporter needs it too)
        import onnxruntime
    except ImportError as e:
        raise ImportError(f"timing in ONNX Runtime needs the onnx and onnxruntime packages ({e}): "
                          f"{INSTALL_HINT}, or use runtime='torch'") from None
    return onnxruntime


# ORT's names of input element types -> numpy dtypes (an INT8 model may take uint8 / int8 inputs)
_ORT_DTYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16,
               "tensor(uint8)": np.uint8, "tensor(int8)": np.int8, "tensor(int32)": np.int32,
               "tensor(int64)": np.int64}


def session_options(threads: int):
    """The deployment settings: ``threads`` intra-op threads, one inter-op
    thread, sequential execution, every graph optimisation, warnings only."""
    ort = import_onnxruntime()
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    return so


def onnx_bytes(model: nn.Module, input_shape: tuple[int, ...]) -> bytes:
    """``model`` in eval mode as ONNX (opset 17, dynamic batch) via
    ``entroprune.export.export_model``; the model's training flag is kept."""
    from ..export import ExportError, export_model

    training = model.training
    try:
        with tempfile.TemporaryDirectory(prefix="entroprune-ort-") as tmp:
            path = Path(tmp) / "model.onnx"
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")      # the TorchScript exporter's deprecation notices
                export_model(model, path, "onnx", torch.zeros(1, *input_shape))   # (1, C, H, W)
            return path.read_bytes()
    except ExportError as e:
        raise ImportError(f"{e} (needed to time in ONNX Runtime; or use runtime='torch')") from None
    finally:
        model.train(training)


def make_session(model: bytes | str | Path, threads: int):
    """An ``InferenceSession`` on the CPU provider with ``session_options``."""
    ort = import_onnxruntime()
    if isinstance(model, (str, Path)):
        path = Path(model)
        if not path.is_file():
            raise FileNotFoundError(f"no ONNX model at {path}: write one with `entroprune export MODEL --out "
                                    f"{path.name}` or pass an nn.Module")
        model = str(path)
    return ort.InferenceSession(model, sess_options=session_options(threads), providers=["CPUExecutionProvider"])


class _OrtRunner(Runner):
    def __init__(self, session, x: np.ndarray):
        self.session = session
        self.feed = {session.get_inputs()[0].name: x}
        self.outputs = [session.get_outputs()[0].name]

    def __call__(self) -> None:
        self.session.run(self.outputs, self.feed)

    def output(self) -> np.ndarray:
        return np.asarray(self.session.run(self.outputs, self.feed)[0])


class OnnxRuntime(Runtime):
    """ONNX Runtime's CPU provider on ``threads`` intra-op threads."""

    name = "onnxruntime"

    def __init__(self, threads: int = 1):
        super().__init__(threads)
        self._ort = import_onnxruntime()     # fail here, clearly, if it is not installed

    @property
    def version(self) -> str:
        return self._ort.__version__

    def session(self, model: ModelLike, input_shape: tuple[int, ...]):
        """An ORT session of ``model`` (exported first if it is an nn.Module)."""
        if isinstance(model, nn.Module):
            return make_session(onnx_bytes(model, input_shape), self.threads)
        return make_session(model, self.threads)

    def runner(self, model: ModelLike, input_shape: tuple[int, ...], batch_size: int = 1,
               session=None) -> Runner:
        """A runner of ``model``; pass ``session`` (from ``self.session``) to
        reuse one export across batch sizes (the batch axis is dynamic)."""
        session = session or self.session(model, input_shape)
        inp = session.get_inputs()[0]
        x = example_input(input_shape, batch_size).numpy()          # (B, C, H, W) float32
        dtype = _ORT_DTYPES.get(inp.type, np.float32)
        if dtype != np.float32:
            # an integer input (a quantized model without a float front): same seed, rescaled to the type
            info = np.iinfo(dtype) if np.issubdtype(dtype, np.integer) else None
            x = (np.clip(x * 32 + 128, info.min, info.max) if info else x).astype(dtype)
        return _OrtRunner(session, np.ascontiguousarray(x))


RUNTIMES: dict[str, type[Runtime]] = {"torch": TorchRuntime, "onnxruntime": OnnxRuntime}


def get_runtime(name: str | Runtime, threads: int = 1) -> Runtime:
    """The runtime called ``name`` ("torch" or "onnxruntime") on ``threads``
    threads; a ``Runtime`` instance is returned as it is."""
    if isinstance(name, Runtime):
        return name
    if name not in RUNTIMES:
        raise ValueError(f"unknown runtime {name!r}: choose one of {', '.join(RUNTIMES)}")
    return RUNTIMES[name](threads)


# --------------------------------------------------------------------------- timing

def time_models(runners: Sequence[Callable[[], object]], repeats: int = 30, warmup: int = 5,
                inner: int | Sequence[int] = 1, clock: str = "wall") -> list[float]:
    """Median milliseconds of one call of each runner (``time_samples``'s medians)."""
    return [statistics.median(t) for t in time_samples(runners, repeats, warmup, inner, clock)]


def time_samples(runners: Sequence[Callable[[], object]], repeats: int = 30, warmup: int = 5,
                 inner: int | Sequence[int] = 1, clock: str = "wall") -> list[list[float]]:
    """``repeats`` timed samples (milliseconds per call) of each runner.

    Every runner is entered (if it is a context manager), called ``warmup``
    times, then ``repeats`` timed samples are taken, the runners interleaved
    sample by sample. A sample times ``inner`` consecutive calls (one count, or
    one per runner) and is divided by it: several calls per sample steady
    sub-0.1 ms measurements.

    ``clock="wall"`` (default) is elapsed time. ``clock="cpu"`` is the CPU time
    of the calling thread: the same on a quiet machine when the runner computes
    on the calling thread only (ONNX Runtime or torch at one thread), and blind
    to the time other jobs of a busy machine take the core away; meaningless
    when the work runs on other threads.
    """
    inners = [int(inner)] * len(runners) if isinstance(inner, int) else [int(n) for n in inner]
    if repeats < 1 or warmup < 0 or len(inners) != len(runners) or min(inners, default=1) < 1:
        raise ValueError(f"need repeats >= 1, warmup >= 0 and inner >= 1 (one per runner); got {repeats}, "
                         f"{warmup}, {inner}")
    if clock not in ("wall", "cpu"):
        raise ValueError(f"clock must be 'wall' or 'cpu', got {clock!r}")
    now = time.perf_counter if clock == "wall" else time.thread_time
    times: list[list[float]] = [[] for _ in runners]
    with contextlib.ExitStack() as stack:
        for r in runners:
            if hasattr(r, "__enter__"):
                stack.enter_context(r)
        for _ in range(warmup):
            for r in runners:
                r()
        for _ in range(repeats):
            for i, (r, n) in enumerate(zip(runners, inners)):
                t0 = now()
                for _ in range(n):
                    r()
                times[i].append(1000.0 * (now() - t0) / n)
    return times
