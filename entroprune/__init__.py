"""entroprune: entropy-guided pruning of convolutional networks.

Quick start::

    import entroprune
    model = entroprune.create("resnet20", pretrained=True)
    small, report = entroprune.compress(model, "fashion_mnist", target="3x", target_kind="latency")
    entroprune.save(small, "small.safetensors")

The names below are imported on first use (PEP 562), so that ``import
entroprune`` (and the command line starting up) does not load torch before it
is needed.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> (module, attribute)
_LAZY = {
    "CompressConfig": ("entroprune.pipeline", "CompressConfig"),
    "compress": ("entroprune.pipeline", "compress"),
    "load": ("entroprune.io", "load"),
    "save": ("entroprune.io", "save"),
    "create": ("entroprune.models", "create"),
    "list_models": ("entroprune.models", "list_models"),
    "pretrained_path": ("entroprune.models.pretrained", "pretrained_path"),
    "quantize": ("entroprune.deploy", "quantize"),
}
__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'entroprune' has no attribute {name!r}")
    module, attr = _LAZY[name]
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value          # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
