"""Running an exported ONNX model in ONNX Runtime for accuracy: logits and
top-1 accuracy of a file (or a session) on a batch of images, in batches.
Used by the INT8 check (``quantize.py``) and the compression pipeline; timing
lives in ``measure/runtime.py``."""

from __future__ import annotations

import numpy as np
import torch


def session(model, threads: int | None = None):
    """A CPU InferenceSession on a path (or an existing session, returned as is)."""
    from ..measure.runtime import make_session

    if hasattr(model, "run") and hasattr(model, "get_inputs"):
        return model
    return make_session(model, int(threads or torch.get_num_threads()))


def as_float32(x) -> np.ndarray:
    """A tensor or array as a contiguous float32 numpy array (what ORT takes)."""
    x = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    return np.ascontiguousarray(x, dtype=np.float32)


def onnx_logits(path, x, batch_size: int = 500, threads: int | None = None) -> np.ndarray:
    """Logits ``(N, classes)`` of the ONNX model at ``path`` (or an ORT
    session) on images ``x`` ``(N, C, H, W)``, in batches of ``batch_size``."""
    sess = session(path, threads)
    name, x = sess.get_inputs()[0].name, as_float32(x)
    out = [sess.run(None, {name: x[i:i + batch_size]})[0] for i in range(0, len(x), batch_size)]
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def onnx_accuracy(path, x, y, batch_size: int = 500, threads: int | None = None) -> float:
    """Top-1 accuracy (%) of the ONNX model at ``path`` on ``(x, y)``."""
    y = y.cpu().numpy() if isinstance(y, torch.Tensor) else np.asarray(y)
    if len(y) == 0:
        raise ValueError("onnx_accuracy needs at least one image")
    return float(100.0 * (onnx_logits(path, x, batch_size, threads).argmax(1) == y).mean())
