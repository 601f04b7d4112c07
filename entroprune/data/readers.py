"""Readers for the raw data set files; no downloads, ever.

- MNIST / Fashion-MNIST: the four gzip IDX files
  (``train-images-idx3-ubyte.gz`` ...); default folder is where Debian's
  ``dataset-fashion-mnist`` puts them.
- CIFAR-10: the standard ``cifar-10-batches-py`` folder of pickled batches,
  read by a restricted unpickler that builds only what a batch holds (dicts,
  lists, bytes, str, numbers and numpy arrays) and refuses any other global,
  so a planted file in ``--data-dir`` cannot run code.

Each reader returns uint8 images ``(N, C, H, W)`` and int64 labels ``(N,)``.
"""

from __future__ import annotations

import codecs
import gzip
import importlib
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


class UnsafePickleError(ValueError):
    """A pickled data file asks for something a data batch never holds."""


def _numpy_core(module: str):
    """``numpy.core.multiarray`` (numpy 1) and ``numpy._core.multiarray``
    (numpy 2) are the same module under two names; import the one that exists."""
    sub = module.rsplit(".", 1)[1]
    try:
        return importlib.import_module(f"numpy._core.{sub}")
    except ImportError:
        return importlib.import_module(f"numpy.core.{sub}")


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """``_codecs.encode`` as Python 3 pickles of bytes use it (protocol 2), latin-1 only."""
    if codecs.lookup(encoding).name != "iso8859-1":
        raise UnsafePickleError(f"asks to encode text as {encoding!r}")
    return codecs.encode(text, "latin1")


# the only globals a CIFAR-10 batch (Python 2 or 3, numpy 1 or 2) refers to
_CIFAR_GLOBALS = {("numpy", "ndarray"): lambda: np.ndarray, ("numpy", "dtype"): lambda: np.dtype,
                  ("_codecs", "encode"): lambda: _latin1_encode}
for _core in ("numpy.core", "numpy._core"):
    for _module, _name in (("multiarray", "_reconstruct"), ("multiarray", "scalar"), ("numeric", "_frombuffer")):
        _CIFAR_GLOBALS[(f"{_core}.{_module}", _name)] = \
            lambda m=f"{_core}.{_module}", n=_name: getattr(_numpy_core(m), n)


class _CifarUnpickler(pickle.Unpickler):
    """Builds dicts, lists, bytes, str, numbers and numpy arrays, nothing else."""

    def __init__(self, file, path: Path):
        super().__init__(file, encoding="bytes")
        self.path = path

    def find_class(self, module: str, name: str):
        make = _CIFAR_GLOBALS.get((module, name))
        if make is None:
            raise UnsafePickleError(
                f"{self.path} is not a plain CIFAR-10 batch: it asks to load {module}.{name}, which a batch never "
                f"holds and which could run code; refusing to unpickle it. {CIFAR_FIX}")
        return make()


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
            batch = _CifarUnpickler(f, path).load()
        except UnsafePickleError as e:
            if str(path) in str(e):
                raise
            raise UnsafePickleError(f"{path} is not a plain CIFAR-10 batch: it {e}; refusing it. {CIFAR_FIX}") from None
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
