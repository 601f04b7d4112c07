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
import zlib
from pathlib import Path

import numpy as np
import torch

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
IDX_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


# ValueError, not a raw EOFError/BadGzipFile: the CLI turns ValueError into a
# clean "error: ..." exit, and the message says how to get a good copy.
IDX_FIX = ("reinstall Debian's dataset-fashion-mnist (`apt-get install --reinstall "
           "dataset-fashion-mnist`) or point --data-dir at a good copy of the files")
CIFAR_FIX = ("unpack cifar-10-python.tar.gz again or point --data-dir at a good copy "
             "of cifar-10-batches-py")

# What unpickling garbage or a cut-short file can raise (see the pickle docs;
# Overflow/MemoryError come from garbage length fields, found by fuzzing).
_PICKLE_ERRORS = (pickle.UnpicklingError, EOFError, AttributeError, ImportError, IndexError,
                  KeyError, ValueError, TypeError, OverflowError, MemoryError)


class DatasetNotFoundError(FileNotFoundError):
    """A data set's files are missing; the message says how to get them."""


def _read_bytes(path: Path) -> bytes:
    """The (decompressed) contents of ``path``; a damaged gzip file is a ValueError."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:      # a missing/unreadable file raises as usual
        try:
            return f.read()
        except EOFError as e:          # the gzip stream ends early: a partial copy
            raise ValueError(f"{path} is truncated ({e}); {IDX_FIX}") from e
        except (OSError, zlib.error) as e:   # BadGzipFile (an OSError), bad CRC, bad deflate data
            raise ValueError(f"{path} is damaged or not a gzip IDX file ({e}); {IDX_FIX}") from e


def _read_idx(path: Path) -> np.ndarray:
    """Parse one IDX file (optionally gzip-compressed) into a numpy array."""
    data = _read_bytes(path)
    if len(data) < 4:
        raise ValueError(f"{path} is not an IDX file (too short); {IDX_FIX}")
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte IDX file (magic {data[:4].hex()}); {IDX_FIX}")
    if len(data) < 4 + 4 * ndim:       # cut inside the header: struct would fail obscurely
        raise ValueError(f"{path} is truncated inside its header; {IDX_FIX}")
    dims = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise ValueError(f"{path} is truncated: expected {int(np.prod(dims))} bytes, "
                         f"found {body.size}; {IDX_FIX}")
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
        x, y = _read_cifar_batch(path)
        xs.append(x)
        ys.append(y)
    return torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys))


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One pickled CIFAR-10 batch; a damaged or foreign file is a ValueError."""
    with open(path, "rb") as f:
        try:
            batch = pickle.load(f, encoding="bytes")
        except _PICKLE_ERRORS as e:
            raise ValueError(f"{path} is truncated or not a pickled CIFAR-10 batch "
                             f"({type(e).__name__}: {e}); {CIFAR_FIX}") from e
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise ValueError(f"{path} is not a CIFAR-10 batch (no data/labels); {CIFAR_FIX}")
    data = np.asarray(batch[b"data"], dtype=np.uint8)
    labels = np.asarray(batch[b"labels"], dtype=np.int64)
    if data.size % 3072 or data.size // 3072 != labels.size:
        raise ValueError(f"{path} holds {data.size} pixel bytes for {labels.size} labels, "
                         f"not 3072 per image; {CIFAR_FIX}")
    return data.reshape(-1, 3, 32, 32), labels
