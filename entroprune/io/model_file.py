"""The entroprune model file: one ``.safetensors`` file that rebuilds a
(pruned, folded) model in a fresh process without pickling code.

Layout: the tensors are the model's ``state_dict`` (parameters and buffers);
the safetensors header metadata holds one JSON document under the key
``entroprune``::

    {"format": 1,
     "arch": {"factory": "zoo:resnet20" | "package.module:function",
              "kwargs": {"num_classes": 10, "in_channels": 1}},
     "layers": {"layer1.0.conv1": {"type": "Conv2d", "args": {...}}, ...},
     "history": [...],          # what was done to the model (pruning steps)
     "info": {...}}             # free-form: data set, accuracies, command

Loading calls the factory, replaces every leaf whose spec differs, and loads
the weights strictly, so outputs are bit-identical to the saved model's.

Weights must be finite: ``save`` and ``load`` refuse NaN or infinity with a
``ModelFileError`` naming the first bad tensor, unless ``allow_nonfinite=True``
(for tools that inspect or repair a broken model).
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

import torch.nn as nn
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from .atomic import atomic_write
from .finite import NONFINITE_ADVICE, first_nonfinite
from .module_specs import build_module, leaf_specs, set_submodule

FORMAT_VERSION = 1
META_KEY = "entroprune"


class ModelFileError(ValueError):
    """A model file is missing, truncated, foreign, or does not match."""


def arch_of(model: nn.Module) -> dict[str, Any]:
    arch = getattr(model, "entroprune_arch", None)
    if arch is None:
        raise ModelFileError(
            f"cannot save a {type(model).__name__}: entroprune does not know how to rebuild it. "
            "Build it with entroprune.models.create(...), or pass "
            "factory='package.module:function' (and factory_kwargs) to save()."
        )
    return arch


def save(model: nn.Module, path: str | Path, *, factory: str | None = None,
         factory_kwargs: dict[str, Any] | None = None, info: dict[str, Any] | None = None,
         history: list[dict[str, Any]] | None = None, allow_nonfinite: bool = False) -> Path:
    """Write ``model`` (pruned or not) to ``path`` atomically; weights holding
    NaN or infinity are refused unless ``allow_nonfinite``."""
    if factory is not None:
        arch = {"factory": factory, "kwargs": dict(factory_kwargs or {})}
    else:
        arch = arch_of(model)
    doc = {
        "format": FORMAT_VERSION,
        "arch": arch,
        "layers": leaf_specs(model),
        "history": list(history if history is not None else getattr(model, "entroprune_history", [])),
        "info": dict(info or {}),
    }
    # safetensors refuses shared or non-contiguous storage: clone each tensor
    tensors = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    bad = None if allow_nonfinite else first_nonfinite(tensors)
    if bad is not None:
        raise ModelFileError(f"refusing to save {path}: the weights are not finite, first {bad}; "
                             f"{NONFINITE_ADVICE}")
    meta = {META_KEY: json.dumps(doc)}
    return atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The JSON document of a model file, checked for format."""
    path = Path(path)
    if not path.exists():
        raise ModelFileError(f"model file {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise ModelFileError(
            f"{path} is not a readable entroprune model file (truncated or not safetensors): {e}"
        ) from None
    if META_KEY not in meta:
        raise ModelFileError(f"{path} is a safetensors file but not an entroprune model file "
                             "(no 'entroprune' metadata); was it written by entroprune.save()?")
    try:
        doc = json.loads(meta[META_KEY])
    except json.JSONDecodeError as e:
        raise ModelFileError(f"{path}: its entroprune metadata is not JSON ({e.msg}); the file is damaged") from None
    version = doc.get("format") if isinstance(doc, dict) else None
    if version != FORMAT_VERSION:
        raise ModelFileError(f"{path} has model-file format {version}; "
                             f"this entroprune reads format {FORMAT_VERSION}")
    return doc


def build_architecture(arch: dict[str, Any]) -> nn.Module:
    factory, kwargs = arch["factory"], arch.get("kwargs", {})
    if factory.startswith("zoo:"):
        from ..models import create
        return create(factory[4:], **kwargs)
    module_name, _, fn_name = factory.partition(":")
    try:
        fn = getattr(importlib.import_module(module_name), fn_name)
    except (ImportError, AttributeError) as e:
        raise ModelFileError(f"cannot import model factory {factory!r}: {e}") from None
    model = fn(**kwargs)
    model.entroprune_arch = dict(arch)
    return model


def load(path: str | Path, *, allow_nonfinite: bool = False) -> nn.Module:
    """Rebuild the model saved at ``path``, in eval mode. Weights holding NaN
    or infinity are a ``ModelFileError`` unless ``allow_nonfinite``."""
    doc = read_metadata(path)
    from .. import depth  # noqa: F401  (registers the folded-model leaves, Zero and Constant, with the specs)
    model = build_architecture(doc["arch"])
    current = leaf_specs(model)
    for name, spec in doc["layers"].items():
        if name not in current:
            raise ModelFileError(f"{path}: layer {name!r} does not exist in {doc['arch']['factory']}")
        if spec is not None and spec != current[name]:
            set_submodule(model, name, build_module(spec))
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise ModelFileError(f"{path}: cannot read weights (truncated?): {e}") from None
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as e:
        raise ModelFileError(f"{path}: weights do not fit the rebuilt model: {e}") from None
    bad = None if allow_nonfinite else first_nonfinite(model)       # in the model's order of layers
    if bad is not None:
        raise ModelFileError(f"{path} holds non-finite weights, first {bad}; {NONFINITE_ADVICE} "
                             "(entroprune.load(path, allow_nonfinite=True) reads it anyway)")
    model.entroprune_history = list(doc.get("history", []))
    model.entroprune_info = dict(doc.get("info", {}))
    return model.eval()


def record_step(model: nn.Module, source: nn.Module, step: dict[str, Any]) -> nn.Module:
    """``model`` (made from ``source``) inherits ``source``'s history plus ``step``
    (what was done), and its architecture record; returns ``model``."""
    model.entroprune_history = list(getattr(source, "entroprune_history", [])) + [step]
    if getattr(model, "entroprune_arch", None) is None and hasattr(source, "entroprune_arch"):
        model.entroprune_arch = source.entroprune_arch
    return model
