"""Readers for the raw data set files; no downloads, ever.

- MNIST / Fashion-MNIST: the four gzip IDX files
  (``train-images-idx3-ubyte.gz`` ...); default folder is where Debian's
  ``dataset-fashion-mnist`` puts them.
- CIFAR-10: the standard ``cifar-10-batches-py`` folder of pickled batches.

Each reader returns uint8 images ``(N, C, H, W)`` and int64 labels ``(N,)``.
"""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import torch

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
IDX_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


class DatasetNotFoundError(FileNotFoundError):
    """A data set's files are missing; the message says how to get them."""


def _read_idx(path: Path) -> np.ndarray:
    """Parse one IDX file (optionally gzip-compressed) into a numpy array."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4:
        raise ValueError(f"{path} is not an IDX file (too short)")
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte IDX file (magic {data[:4].hex()})")
    dims = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise ValueError(f"{path} is truncated: expected {int(np.prod(dims))} bytes, found {body.size}")
    return body.reshape(dims)


def _find(folder: Path, name: str) -> Path:
    for candidate in (folder / name, folder / name.removesuffix(".gz")):
        if candidate.exists():
            return candidate
    raise DatasetNotFoundError(
        f"missing {name} in {folder}. For Fashion-MNIST on Debian/Ubuntu run "
        "`apt-get update && apt-get install -y dataset-fashion-mnist` (files land in "
        f"{FASHION_MNIST_DIR}), or pass --data-dir to a folder holding the four IDX files."
    )


def read_mnist_like(folder: str | Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Read the MNIST-format ``split`` ("train" or "test") from ``folder``."""
    folder = Path(folder)
    if split not in IDX_FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    images = _read_idx(_find(folder, IDX_FILES[split][0]))   # (N, 28, 28)
    labels = _read_idx(_find(folder, IDX_FILES[split][1]))   # (N,)
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"{folder}: {images.shape[0]} images but {labels.shape[0]} labels")
    x = torch.from_numpy(images.copy()).unsqueeze(1)          # (N, 1, 28, 28) uint8
    return x, torch.from_numpy(labels.astype(np.int64))


def read_cifar10(folder: str | Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Read CIFAR-10 from the standard python folder ``cifar-10-batches-py``."""
    folder = Path(folder)
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    xs, ys = [], []
    for name in names:
        path = folder / name
        if not path.exists():
            raise DatasetNotFoundError(
                f"missing {path}. Download and unpack the CIFAR-10 python version "
                "(cifar-10-python.tar.gz) yourself and pass --data-dir to the "
                "cifar-10-batches-py folder; entroprune never downloads data."
            )
        with open(path, "rb") as f:
            batch = pickle.load(f, encoding="bytes")
        xs.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        ys.append(np.asarray(batch[b"labels"], dtype=np.int64))
    return torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys))
