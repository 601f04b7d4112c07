"""Helpers shared by the CLI commands: resolving models and data, errors."""

from __future__ import annotations

import importlib
import json
import math
import os
from pathlib import Path
from typing import NoReturn

import torch
import torch.nn as nn
import typer

from ..data import DataBundle, DatasetNotFoundError, load_data
from ..errors import first_line
from ..io import ModelFileError, load
from ..io.finite import NONFINITE_ADVICE, first_nonfinite
from ..models import create, list_models
from ..models.pretrained import pretrained_path
from .errors import show_error


def fail(message: str) -> NoReturn:
    """Print a clear error (no traceback) and exit with status 2."""
    show_error(message)
    raise typer.Exit(2)


def check_output(path: Path, folder: bool) -> None:
    """Refuse, before any compute, an output that cannot be written: a folder
    where a file is wanted (or the reverse), a parent that is a file, or a
    place that is not writable."""
    path = Path(path)
    if folder and path.exists() and not path.is_dir():
        fail(f"output folder {path} is a file; choose a folder")
    if not folder and path.is_dir():
        fail(f"output {path} is a folder; give a file name such as {path / 'model.safetensors'}")
    parent = path if folder else path.parent
    probe = parent
    while not probe.exists():               # the nearest existing ancestor must be a writable folder
        probe = probe.parent
    if not probe.is_dir():
        fail(f"cannot write {path}: {probe} is a file, not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        fail(f"cannot write {path}: {probe} is not writable")


def check_number(option: str, value: float | None, low: float | None = None, high: float | None = None, *,
                 low_open: bool = False, high_open: bool = False) -> None:
    """Refuse a numeric option outside its range (NaN and infinity included),
    naming the range: ``--zeta must be in (0, 1), got 1.5``."""
    if value is None:
        return
    ok = math.isfinite(value) and (low is None or (value > low if low_open else value >= low)) \
        and (high is None or (value < high if high_open else value <= high))
    if ok:
        return
    if low is not None and high is not None:
        rule = f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    elif low is not None:
        rule = f"{'>' if low_open else '>='} {low:g}"
    elif high is not None:
        rule = f"{'<' if high_open else '<='} {high:g}"
    else:
        rule = "a finite number"
    fail(f"{option} must be {rule}, got {value:g}")


def set_threads(threads: int | None) -> None:
    if threads:
        torch.set_num_threads(threads)


def get_data(dataset: str, data_dir: str | None, seed: int = 0, limit_train: int | None = None) -> DataBundle:
    try:
        return load_data(dataset, data_dir=data_dir, seed=seed, limit_train=limit_train)
    except (DatasetNotFoundError, ValueError) as e:
        fail(str(e))


def parse_shape(text: str) -> tuple[int, int, int]:
    """``--input-shape`` "C,H,W": three positive integers."""
    try:
        shape = tuple(int(v) for v in text.split(","))
    except ValueError:
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        fail(f"--input-shape must be three positive numbers C,H,W (channels, height, width) such as 1,28,28, "
             f"got {text!r}")
    return shape


def input_shape_of(model: nn.Module, text: str) -> tuple[int, ...]:
    """``--input-shape`` ("C,H,W") parsed and checked by one forward pass."""
    shape = parse_shape(text)
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, *shape))
    except RuntimeError as e:
        fail(f"a forward pass on input {shape} failed ({first_line(e)}); pass the right --input-shape")
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


def factory_model(factory: str, kwargs_text: str | None, weights: str | None) -> nn.Module:
    """The user's own model: ``package.module:function`` called with the JSON
    ``kwargs_text``, then (unless ``weights`` is "new") its state dict loaded from
    ``weights`` (a .pt/.pth state dict, or an entroprune model file)."""
    try:
        kwargs = json.loads(kwargs_text) if kwargs_text else {}
    except json.JSONDecodeError as e:
        fail(f"--factory-kwargs is not JSON ({e.msg}); write it like '{{\"num_classes\": 10}}'")
    if not isinstance(kwargs, dict):
        fail("--factory-kwargs must be a JSON object of keyword arguments")
    module_name, _, fn_name = factory.partition(":")
    try:
        fn = getattr(importlib.import_module(module_name), fn_name)
    except (ImportError, AttributeError, ValueError) as e:
        fail(f"cannot import --factory {factory!r} ({e}); write package.module:function, importable from here")
    try:
        model = fn(**kwargs)
    except TypeError as e:
        fail(f"--factory {factory} does not take these arguments: {e}")
    if not isinstance(model, nn.Module):
        fail(f"--factory {factory} returned a {type(model).__name__}, not a torch.nn.Module")
    model.entroprune_arch = {"factory": factory, "kwargs": kwargs}
    if weights and weights != "new":
        try:
            state = load(weights).state_dict() if weights.endswith(".safetensors") else \
                torch.load(weights, map_location="cpu", weights_only=True)
            model.load_state_dict(state.get("state_dict", state) if isinstance(state, dict) else state)
        except (ModelFileError, OSError, RuntimeError, KeyError, ValueError) as e:
            fail(f"cannot load the weights {weights} into {factory}: {first_line(e)}")
    bad = first_nonfinite(model)
    if bad is not None:
        fail(f"the model of --factory {factory} (weights {weights}) has non-finite weights, first {bad}; "
             f"{NONFINITE_ADVICE}")
    return model.eval()


def get_model(spec: str, data: DataBundle | None = None, factory: str | None = None,
              factory_kwargs: str | None = None) -> nn.Module:
    """``spec`` is a model file path, ``pretrained:NAME`` (a shipped
    checkpoint) or a zoo name (a new, untrained model); with ``factory``, the
    weights file (or "new") of the user's own constructor. With ``data``, the
    model must fit it (input channels and classes)."""
    if factory is not None:
        model = factory_model(factory, factory_kwargs, spec)
        return check_fits_data(model, data, factory) if data is not None else model
    try:
        model = None
        if spec.startswith("pretrained:"):
            model = load(pretrained_path(spec.split(":", 1)[1]))
        elif Path(spec).is_dir():
            fail(f"{spec} is a folder, not a model file")
        elif Path(spec).suffix == ".safetensors" or Path(spec).exists():
            model = load(spec)
        if model is not None:
            return check_fits_data(model, data, spec) if data is not None else model
        if spec in list_models():
            kwargs = {}
            if data is not None:
                kwargs = dict(num_classes=data.num_classes, in_channels=data.in_channels)
            typer.secho(f"warning: {spec} is a new, untrained model (use pretrained:{spec} for a shipped "
                        "checkpoint, if there is one)", fg=typer.colors.YELLOW, err=True)
            return create(spec, **kwargs)
    except (ModelFileError, KeyError, FileNotFoundError) as e:
        fail(str(e))
    fail(f"{spec!r} is neither a model file nor a zoo model ({', '.join(list_models())}) "
         "nor pretrained:NAME")


def output_lock(out: Path):
    """One job per output file: the OS lock of ``out`` (``io.lock.RunLock``),
    held by the launching process only (torchrun's other ranks share its job)."""
    import contextlib
    import os

    from ..io.lock import RunLock

    return RunLock(out) if os.environ.get("RANK", "0") == "0" else contextlib.nullcontext()
