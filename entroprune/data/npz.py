"""A NumPy ``.npz`` archive as a data set: ``load_data("npz:PATH")``.

Arrays (as saved by ``np.savez(path, x=images, y=labels)``):

- ``x``: images ``(N, H, W)`` (grey), ``(N, H, W, C)`` or ``(N, C, H, W)``;
  uint8 (0..255 pixels) or float (any units; the normalisation adapts). The
  4-d layout is told by which axis is small (<= 4 channels); when both or
  neither are, pass ``layout="nhwc"`` or ``"nchw"`` (``npz:PATH,layout=nhwc``).
- ``y``: integer labels ``(N,)`` in 0..K-1, every class with a training image.
- optional ``x_test`` / ``y_test`` (both or neither): the test set, same image
  shape and dtype kind as ``x``, labels among ``y``'s classes.

Other keys are ignored. Without a test set, splits follow ``custom.py`` (a
fixed-seed held-out test fraction, a seeded validation split capped at 10%).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .custom import TEST_FRACTION, UserDataError, make_bundle
from .datasets import DataBundle

_SAVE_HINT = "save it with np.savez(path, x=images, y=labels) (optionally x_test=..., y_test=...)"


@dataclass
class NpzData:
    """The checked arrays of an archive, images as ``(N, C, H, W)``."""
    x: torch.Tensor                 # (N, C, H, W) uint8 or float32
    y: torch.Tensor                 # (N,) int64
    x_test: torch.Tensor | None
    y_test: torch.Tensor | None
    num_classes: int
    pixel_scale: float              # 255 for uint8 images, 1 for float ones


def _to_nchw(a: np.ndarray, layout: str, where: str, key: str) -> tuple[np.ndarray, str]:
    """``a`` as (N, C, H, W) and the layout used ("nchw" / "nhwc")."""
    if a.ndim == 3:                                   # (N, H, W): one grey channel
        return a[:, None], layout
    if a.ndim != 4:
        raise UserDataError(f"{where}: {key} has shape {a.shape}; images must be (N, H, W), "
                            f"(N, H, W, C) or (N, C, H, W). {_SAVE_HINT}")
    if layout == "auto":
        first, last = a.shape[1], a.shape[3]
        if last <= 4 < first:
            layout = "nhwc"
        elif first <= 4 < last:
            layout = "nchw"
        else:
            raise UserDataError(f"{where}: cannot tell whether {key} of shape {a.shape} is (N, H, W, C) "
                                "or (N, C, H, W); pass layout='nhwc' or 'nchw' to load_npz "
                                "(--dataset npz:PATH,layout=nhwc)")
    if layout == "nhwc":
        a = a.transpose(0, 3, 1, 2)
    elif layout != "nchw":
        raise UserDataError(f"{where}: layout must be 'auto', 'nhwc' or 'nchw', got {layout!r}")
    return np.ascontiguousarray(a), layout


def _images(a: np.ndarray, where: str, key: str) -> np.ndarray:
    """Check the dtype (uint8 or float, finite); floats become float32."""
    if a.dtype == np.uint8:
        return a
    if not np.issubdtype(a.dtype, np.floating):
        raise UserDataError(f"{where}: {key} has dtype {a.dtype}; images must be uint8 (0..255) or float: "
                            f"use {key}.astype(np.uint8) for 0..255 pixels, else {key}.astype(np.float32)")
    if not np.isfinite(a).all():
        raise UserDataError(f"{where}: {key} holds NaN or infinite values; fix or drop those images")
    return a.astype(np.float32, copy=False)


def _labels(a: np.ndarray, n: int, where: str, key: str, xkey: str) -> np.ndarray:
    if a.ndim != 1:
        raise UserDataError(f"{where}: {key} has shape {a.shape}; labels must be (N,) class indices "
                            f"({key}.ravel() for (N, 1), {key}.argmax(1) for one-hot)")
    if not np.issubdtype(a.dtype, np.integer):
        raise UserDataError(f"{where}: {key} has dtype {a.dtype}; labels must be integers 0..K-1 "
                            f"({key}.astype(np.int64) if they are whole numbers)")
    if a.shape[0] != n:
        raise UserDataError(f"{where}: {xkey} holds {n} images but {key} {a.shape[0]} labels; "
                            "they must be equally long, one label per image")
    return a.astype(np.int64)


def read_npz(path: str | Path, layout: str = "auto") -> NpzData:
    """Read and check the arrays of the archive ``path`` (rules in the module docstring)."""
    path = Path(path)
    where = str(path)
    if not path.exists():
        raise UserDataError(f"no file {path}; check the path to the .npz archive")
    if path.is_dir():
        raise UserDataError(f"{path} is a folder, not an .npz file; for a folder of images use folder:{path}")
    try:
        archive = np.load(path, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):   # a bare .npy holds one array
            raise UserDataError(f"{path} holds a single array, not an .npz archive; {_SAVE_HINT}")
        with archive:
            keys = set(archive.files)
            missing = [k for k in ("x", "y") if k not in keys]
            if missing:
                raise UserDataError(f"{path} has no {' or '.join(missing)} array (it has: "
                                    f"{', '.join(sorted(keys)) or 'nothing'}); {_SAVE_HINT}")
            if ("x_test" in keys) != ("y_test" in keys):
                raise UserDataError(f"{path} has {'x_test' if 'x_test' in keys else 'y_test'} without "
                                    f"{'y_test' if 'x_test' in keys else 'x_test'}; save both or neither")
            arrays = {k: archive[k] for k in ("x", "y", "x_test", "y_test") if k in keys}
    except UserDataError:
        raise
    except Exception as e:   # a damaged zip, pickled object arrays, foreign bytes: many types
        raise UserDataError(f"{path} is damaged or not a NumPy .npz archive ({type(e).__name__}: {e}); "
                            f"{_SAVE_HINT}") from e

    x, layout = _to_nchw(_images(arrays["x"], where, "x"), layout, where, "x")   # (N, C, H, W)
    if x.shape[0] == 0:
        raise UserDataError(f"{path}: x holds no images")
    y = _labels(arrays["y"], x.shape[0], where, "y", "x")
    if y.min() < 0:
        raise UserDataError(f"{path}: y holds negative labels (e.g. {int(y.min())}); labels must be 0..K-1")
    k = int(y.max()) + 1
    absent = sorted(set(range(k)) - set(np.unique(y).tolist()))
    if absent:
        raise UserDataError(f"{path}: y's labels run to {k - 1} but classes {absent[:10]} have no image; "
                            "labels must be 0..K-1 with every class present "
                            "(np.unique(y, return_inverse=True)[1] renumbers them)")
    if k < 2:
        raise UserDataError(f"{path}: y holds only one class; a classifier needs at least 2")

    x_test = y_test = None
    if "x_test" in arrays:
        x_test, _ = _to_nchw(_images(arrays["x_test"], where, "x_test"), layout, where, "x_test")
        if x_test.shape[1:] != x.shape[1:] or x_test.dtype != x.dtype:
            raise UserDataError(f"{path}: x_test images are {x_test.shape[1:]} {x_test.dtype} but x images "
                                f"{x.shape[1:]} {x.dtype} (as (C, H, W)); save both alike")
        y_test = _labels(arrays["y_test"], x_test.shape[0], where, "y_test", "x_test")
        if y_test.size and (y_test.min() < 0 or y_test.max() >= k):
            raise UserDataError(f"{path}: y_test holds labels outside y's classes 0..{k - 1} "
                                f"(from {int(y_test.min())} to {int(y_test.max())})")
    return NpzData(x=torch.from_numpy(x), y=torch.from_numpy(y),
                   x_test=None if x_test is None else torch.from_numpy(x_test),
                   y_test=None if y_test is None else torch.from_numpy(y_test), num_classes=k,
                   pixel_scale=255.0 if x.dtype == np.uint8 else 1.0)


def load_npz(path: str | Path, *, layout: str = "auto", test_fraction: float = TEST_FRACTION,
             val_size: int = 5000, seed: int = 0, limit_train: int | None = None,
             name: str | None = None) -> DataBundle:
    """An ``.npz`` archive as a ``DataBundle``: read as in ``read_npz``, split
    and normalised by the rules of ``custom.py``. ``name`` defaults to ``"npz:PATH"``."""
    data = read_npz(path, layout=layout)
    return make_bundle(name or f"npz:{path}", data.x, data.y, data.num_classes,
                       x_test=data.x_test, y_test=data.y_test, pixel_scale=data.pixel_scale,
                       test_fraction=test_fraction, val_size=val_size, seed=seed,
                       limit_train=limit_train, where=str(path))
