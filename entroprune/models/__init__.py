"""Model zoo: ``create(name, num_classes=10, in_channels=1)`` builds by name."""

from . import lenet, mobilenetv2, resnet, vgg  # noqa: F401  (registers the models)
from .registry import create, list_models, register_model

__all__ = ["create", "list_models", "register_model"]
