"""Helpers shared by the CLI commands: resolving models and data, errors."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn
import typer

from ..data import DataBundle, DatasetNotFoundError, load_data
from ..io import ModelFileError, load
from ..models import create, list_models
from ..models.pretrained import pretrained_path


def fail(message: str) -> None:
    """Print a clear error (no traceback) and exit with status 2."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


def set_threads(threads: int | None) -> None:
    if threads:
        torch.set_num_threads(threads)


def get_data(dataset: str, data_dir: str | None, seed: int = 0, limit_train: int | None = None) -> DataBundle:
    try:
        return load_data(dataset, data_dir=data_dir, seed=seed, limit_train=limit_train)
    except (DatasetNotFoundError, ValueError) as e:
        fail(str(e))
        raise  # unreachable, for type checkers


def input_shape_of(model: nn.Module, text: str) -> tuple[int, ...]:
    """``--input-shape`` ("C,H,W") parsed and checked by one forward pass."""
    try:
        shape = tuple(int(v) for v in text.split(","))
    except ValueError:
        fail(f"--input-shape must be C,H,W such as 1,28,28, got {text!r}")
        raise
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, *shape))
    except RuntimeError as e:
        fail(f"a forward pass on input {shape} failed ({str(e).splitlines()[0]}); pass the right --input-shape")
    return shape


def check_fits_data(model: nn.Module, data: DataBundle, spec: str) -> nn.Module:
    """Refuse a model whose input channels or classes differ from the data's."""
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    if not layers:
        return model
    first, last = layers[0], layers[-1]
    channels = first.in_channels if isinstance(first, nn.Conv2d) else None
    if channels is not None and channels != data.in_channels:
        fail(f"{spec} takes {channels}-channel images but {data.name} has {data.in_channels}-channel "
             f"images; pick the matching --dataset, or a model built for it "
             f"(a zoo name builds one: entroprune train NAME --dataset {data.name})")
    classes = last.out_features if isinstance(last, nn.Linear) else None
    if classes is not None and classes != data.num_classes:
        fail(f"{spec} predicts {classes} classes but {data.name} has {data.num_classes}; "
             "pick the matching --dataset")
    return model


def get_model(spec: str, data: DataBundle | None = None) -> nn.Module:
    """``spec`` is a model file path, ``pretrained:NAME`` (a shipped
    checkpoint) or a zoo name (a new, untrained model). With ``data``, the
    model must fit it (input channels and classes)."""
    try:
        model = None
        if spec.startswith("pretrained:"):
            model = load(pretrained_path(spec.split(":", 1)[1]))
        elif Path(spec).suffix == ".safetensors" or Path(spec).exists():
            model = load(spec)
        if model is not None:
            return check_fits_data(model, data, spec) if data is not None else model
        if spec in list_models():
            kwargs = {}
            if data is not None:
                kwargs = dict(num_classes=data.num_classes, in_channels=data.in_channels)
            return create(spec, **kwargs)
    except (ModelFileError, KeyError, FileNotFoundError) as e:
        fail(str(e))
    fail(f"{spec!r} is neither a model file nor a zoo model ({', '.join(list_models())}) "
         "nor pretrained:NAME")
    raise AssertionError
