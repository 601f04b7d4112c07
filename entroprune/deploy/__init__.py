"""Deployment: static INT8 quantization of a (pruned) model for ONNX Runtime.

``quantize(model, calib_images, "model.int8.onnx", val=(x, y))`` writes an
INT8 QDQ ONNX file and returns a report (accuracy fp32 vs INT8 on the
validation split, file sizes, logit deviation); see ``quantize.py``.
onnx and onnxruntime are needed only when it is called.
"""

from .onnx_eval import onnx_accuracy, onnx_logits
from .quantize import QuantizeConfig, QuantizeError, quantize

__all__ = ["QuantizeConfig", "QuantizeError", "onnx_accuracy", "onnx_logits", "quantize"]
