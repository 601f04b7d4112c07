"""Export to deployment formats: ONNX (dynamic batch) and TorchScript."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from .io import atomic_write


class ExportError(ValueError):
    pass


def export_model(model: nn.Module, path: str | Path, fmt: str, example: torch.Tensor) -> Path:
    """Write ``model`` (eval mode) as ``fmt`` ("onnx" or "torchscript")."""
    model = model.eval()
    if fmt == "onnx":
        try:
            import onnx  # noqa: F401
        except ImportError:
            raise ExportError("ONNX export needs the onnx package: pip install 'entroprune[export]'") from None

        def write(tmp: str) -> None:
            torch.onnx.export(model, (example,), tmp, input_names=["images"], output_names=["logits"],
                              dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}},
                              opset_version=17, dynamo=False)
        return atomic_write(path, write)
    if fmt == "torchscript":
        traced = torch.jit.trace(model, example)
        return atomic_write(path, lambda tmp: torch.jit.save(traced, tmp))
    raise ExportError(f"unknown export format {fmt!r}: use onnx or torchscript")
