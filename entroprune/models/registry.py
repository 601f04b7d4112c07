"""Registry of model constructors, built by name (as timm does).

Every constructor takes keyword arguments ``num_classes`` and ``in_channels``
(and may take more) and returns a plain ``nn.Module``. Models are registered
with ``@register_model`` at import time of their module.
"""

from __future__ import annotations

from collections.abc import Callable

import torch.nn as nn

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Decorator: register ``fn`` under its function name."""
    name = fn.__name__
    if name in _REGISTRY:
        raise ValueError(f"model {name!r} is registered twice")
    _REGISTRY[name] = fn
    return fn


def list_models() -> list[str]:
    """Names of all registered models, sorted."""
    return sorted(_REGISTRY)


def create(name: str, num_classes: int = 10, in_channels: int = 1, pretrained: bool = False,
           **kwargs) -> nn.Module:
    """Build the registered model ``name`` (``pretrained=True``: its shipped
    Fashion-MNIST checkpoint, in eval mode).

    >>> create("resnet20", num_classes=10, in_channels=3)
    """
    if pretrained:
        from ..io import load
        from .pretrained import pretrained_path
        if num_classes != 10 or in_channels != 1 or kwargs:
            raise ValueError(f"the shipped {name} checkpoint has 10 classes and 1 input channel; build a new "
                             "model (pretrained=False) for other shapes")
        return load(pretrained_path(name))
    if name not in _REGISTRY:
        raise KeyError(
            f"unknown model {name!r}; registered models: {', '.join(list_models())}"
        )
    model = _REGISTRY[name](num_classes=num_classes, in_channels=in_channels, **kwargs)
    # how to rebuild it: read by entroprune.save (see io/model_file.py)
    model.entroprune_arch = {"factory": f"zoo:{name}",
                             "kwargs": dict(num_classes=num_classes, in_channels=in_channels, **kwargs)}
    return model
