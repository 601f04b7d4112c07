"""entroprune: entropy-guided pruning of convolutional networks.

Quick start::

    import entroprune
    model = entroprune.create("resnet20", pretrained=True)
    small, report = entroprune.compress(model, "fashion_mnist", target="3x", target_kind="latency")
    entroprune.save(small, "small.safetensors")
"""

from . import depth  # noqa: F401  (registers the folded-model layers with save/load)
from .compress import CompressConfig, compress
from .io import load, save
from .models import create, list_models
from .models.pretrained import pretrained_path


def quantize(*args, **kwargs):
    """Static INT8 quantization for ONNX Runtime (``entroprune.deploy.quantize``)."""
    from .deploy import quantize as _quantize
    return _quantize(*args, **kwargs)


__version__ = "0.1.0"
__all__ = ["CompressConfig", "compress", "create", "list_models", "load", "pretrained_path", "quantize", "save"]
