"""entroprune: entropy-guided pruning of convolutional networks.

Quick start::

    import entroprune
    model = entroprune.load(entroprune.pretrained_path("resnet20"))
    entroprune.save(model, "copy.safetensors")
"""

from . import depth  # noqa: F401  (registers the folded-model layers with save/load)
from .io import load, save
from .models import create, list_models
from .models.pretrained import pretrained_path

__version__ = "0.1.0"
__all__ = ["create", "list_models", "load", "pretrained_path", "save"]
