"""Whatever data a user has, as a ``DataBundle`` (``as_data``): the bundle
itself, a data set name or ``folder:``/``npz:`` spec, a folder path, tensors,
or a ``torch.utils.data.DataLoader``. Tensors and loaders get the same seeded
validation split as the built-in data sets (5,000 images, or 10% of a
smaller training set), which every decision then uses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .custom import UserDataError
from .datasets import DataBundle, load_data


def _split(x: torch.Tensor, y: torch.Tensor, seed: int) -> tuple[torch.Tensor, ...]:
    n = x.shape[0]
    val = min(5000, max(1, n // 10))
    if n - val < 1:
        raise UserDataError(f"{n} training images leave none after the validation split; give more images")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return x[perm[val:]], y[perm[val:]], x[perm[:val]], y[perm[:val]]


def _check(x: torch.Tensor, y: torch.Tensor, what: str) -> None:
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise UserDataError(f"{what}: images and labels must be torch tensors, got {type(x).__name__} and "
                            f"{type(y).__name__}")
    if x.ndim != 4:
        raise UserDataError(f"{what}: images must be (N, C, H, W), got shape {tuple(x.shape)}")
    if y.ndim != 1 or y.shape[0] != x.shape[0]:
        raise UserDataError(f"{what}: labels must be (N,) with N = {x.shape[0]}, got shape {tuple(y.shape)}")
    if y.dtype.is_floating_point or y.dtype == torch.bool:
        raise UserDataError(f"{what}: labels must be integers, got {y.dtype}")
    if not bool(torch.isfinite(x.float()).all()):
        raise UserDataError(f"{what}: the images hold NaN or infinite values")


def from_tensors(train_x: torch.Tensor, train_y: torch.Tensor, val_x: torch.Tensor | None = None,
                 val_y: torch.Tensor | None = None, test_x: torch.Tensor | None = None,
                 test_y: torch.Tensor | None = None, name: str = "tensors", seed: int = 0) -> DataBundle:
    """A bundle of already normalised float images (N, C, H, W) and integer labels (N,).
    Without a validation split one is held out of the training images (seeded);
    without a test set the validation split stands in for it (reports say so by the name)."""
    _check(train_x, train_y, "training data")
    if val_x is None:
        train_x, train_y, val_x, val_y = _split(train_x, train_y, seed)
    _check(val_x, val_y, "validation data")
    if test_x is None:
        test_x, test_y, name = val_x, val_y, f"{name} (no test set: test = validation)"
    _check(test_x, test_y, "test data")
    classes = int(max(train_y.max(), val_y.max(), test_y.max())) + 1
    return DataBundle(name=name, train_x=train_x.float(), train_y=train_y.long(), val_x=val_x.float(),
                      val_y=val_y.long(), test_x=test_x.float(), test_y=test_y.long(), num_classes=classes)


def _from_loader(loader: Any, seed: int) -> DataBundle:
    xs, ys = [], []
    for batch in loader:
        if not isinstance(batch, (list, tuple)) or len(batch) < 2:
            raise UserDataError("a DataLoader must yield (images, labels) batches")
        xs.append(torch.as_tensor(batch[0]))
        ys.append(torch.as_tensor(batch[1]))
    if not xs:
        raise UserDataError("the DataLoader yielded no batch")
    return from_tensors(torch.cat(xs), torch.cat(ys), name="dataloader", seed=seed)


def as_data(data: Any, seed: int = 0) -> DataBundle:
    """``data`` as a ``DataBundle``: a bundle, a data set name or spec
    (``"fashion_mnist"``, ``"folder:PATH"``, ``"npz:PATH"``), a folder of class
    subfolders (a path), a tuple ``(train_x, train_y[, val_x, val_y[, test_x, test_y]])``
    or a DataLoader of ``(images, labels)``."""
    if isinstance(data, DataBundle):
        return data
    if isinstance(data, (str, Path)):
        text = str(data)
        if Path(text).is_dir():
            return load_data(f"folder:{text}")
        if text.endswith(".npz") and Path(text).is_file():
            return load_data(f"npz:{text}")
        return load_data(text)
    if isinstance(data, (tuple, list)) and len(data) in (2, 4, 6):
        return from_tensors(*data, seed=seed)
    if isinstance(data, torch.utils.data.DataLoader) or hasattr(data, "__iter__") and hasattr(data, "dataset"):
        return _from_loader(data, seed)
    raise UserDataError(f"cannot use a {type(data).__name__} as data: pass a DataBundle, a data set name, "
                        "'folder:PATH' or 'npz:PATH', a folder of class subfolders, a tuple of tensors "
                        "(train_x, train_y[, val_x, val_y[, test_x, test_y]]) or a DataLoader")
