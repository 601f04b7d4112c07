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


def get_model(spec: str, data: DataBundle | None = None) -> nn.Module:
    """``spec`` is a model file path, ``pretrained:NAME`` (a shipped
    checkpoint) or a zoo name (a new, untrained model)."""
    try:
        if spec.startswith("pretrained:"):
            return load(pretrained_path(spec.split(":", 1)[1]))
        if Path(spec).suffix == ".safetensors" or Path(spec).exists():
            return load(spec)
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
