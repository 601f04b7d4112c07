import gzip
import pickle
import shutil
import struct

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from entroprune.cli import app
from entroprune.data import FASHION_MNIST_DIR, DatasetNotFoundError, load_data, read_cifar10, read_mnist_like
from entroprune.data.readers import _read_idx


def _write_idx(path, array: np.ndarray, compress=True):
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    (gzip.open if compress else open)(path, "wb").write(data)


def _fake_mnist(folder, n=3):
    images = np.arange(n * 28 * 28, dtype=np.int64).reshape(n, 28, 28) % 256
    labels = np.array([3, 1, 4][:n])
    for img, lab in {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
                              "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}.values():
        _write_idx(folder / img, images)
        _write_idx(folder / lab, labels)
    return images, labels


def test_idx_reader_exact_values(tmp_path):
    images, labels = _fake_mnist(tmp_path)
    x, y = read_mnist_like(tmp_path, "train")
    assert x.shape == (3, 1, 28, 28) and x.dtype == torch.uint8
    assert torch.equal(x[:, 0], torch.from_numpy(images.astype(np.uint8)))
    assert y.tolist() == [3, 1, 4]


def test_idx_reader_accepts_uncompressed(tmp_path):
    _write_idx(tmp_path / "a.idx", np.array([[1, 2], [3, 4]]), compress=False)
    assert _read_idx(tmp_path / "a.idx").tolist() == [[1, 2], [3, 4]]


def test_truncated_idx_is_a_clear_error(tmp_path):
    _fake_mnist(tmp_path)
    raw = gzip.open(tmp_path / "train-images-idx3-ubyte.gz").read()
    gzip.open(tmp_path / "train-images-idx3-ubyte.gz", "wb").write(raw[:-100])
    with pytest.raises(ValueError, match="truncated"):
        read_mnist_like(tmp_path, "train")


def test_foreign_file_is_a_clear_error(tmp_path):
    (tmp_path / "x.idx").write_bytes(b"PK\x03\x04 not an idx file")
    with pytest.raises(ValueError, match="not an unsigned-byte IDX"):
        _read_idx(tmp_path / "x.idx")


def test_missing_dataset_says_how_to_get_it(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="apt-get install -y dataset-fashion-mnist"):
        read_mnist_like(tmp_path, "train")


def test_cifar10_reader(tmp_path):
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8), b"labels": [0, 1, 2, 9]}
        pickle.dump(batch, open(tmp_path / name, "wb"))
    x, y = read_cifar10(tmp_path, "train")
    assert x.shape == (20, 3, 32, 32) and y.tolist() == [0, 1, 2, 9] * 5
    first = pickle.load(open(tmp_path / "data_batch_1", "rb"))[b"data"][0]
    assert torch.equal(x[0].flatten(), torch.from_numpy(first))  # channel-major, as CIFAR stores
    with pytest.raises(DatasetNotFoundError, match="never downloads"):
        read_cifar10(tmp_path / "nowhere", "test")


def _real_fmnist_copy(folder):
    """The four real Fashion-MNIST files, copied so one can be damaged."""
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                 "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        shutil.copy(FASHION_MNIST_DIR / name, folder / name)
    return folder / "train-images-idx3-ubyte.gz"


def test_cut_short_gzip_is_a_clear_error(tmp_path):
    bad = _real_fmnist_copy(tmp_path)
    bad.write_bytes(bad.read_bytes()[:1000])     # `head -c 1000`: an interrupted copy
    with pytest.raises(ValueError, match="train-images-idx3-ubyte.gz is truncated") as e:
        load_data("fashion_mnist", data_dir=tmp_path)
    assert "apt-get install --reinstall dataset-fashion-mnist" in str(e.value)
    assert "--data-dir" in str(e.value)


def test_gz_that_is_not_gzip_is_a_clear_error(tmp_path):
    bad = _real_fmnist_copy(tmp_path)
    bad.write_bytes(gzip.decompress(bad.read_bytes())[:4000])   # IDX bytes under a .gz name
    with pytest.raises(ValueError, match="train-images-idx3-ubyte.gz is damaged or not a gzip IDX"):
        read_mnist_like(tmp_path, "train")
    raw = bytearray((FASHION_MNIST_DIR / "train-labels-idx1-ubyte.gz").read_bytes())
    raw[2000:2100] = bytes(100)                  # corrupt deflate data: a zlib.error
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(bytes(raw))
    bad.write_bytes((FASHION_MNIST_DIR / bad.name).read_bytes())
    with pytest.raises(ValueError, match="train-labels-idx1-ubyte.gz is damaged"):
        read_mnist_like(tmp_path, "train")


def test_idx_cut_inside_header_is_a_clear_error(tmp_path):
    (tmp_path / "a.idx").write_bytes(bytes([0, 0, 8, 3, 0, 0]))
    with pytest.raises(ValueError, match="a.idx is truncated inside its header"):
        _read_idx(tmp_path / "a.idx")


def test_damaged_data_dir_is_a_clean_cli_error(tmp_path):
    bad = _real_fmnist_copy(tmp_path)
    bad.write_bytes(bad.read_bytes()[:1000])
    res = CliRunner().invoke(app, ["eval", "lenet5", "--data-dir", str(tmp_path)])
    assert res.exit_code == 2, res.output                # not typer's bare "Aborted." (1)
    assert "train-images-idx3-ubyte.gz is truncated" in res.output
    assert "Traceback" not in res.output


def _cifar_folder(folder):
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8), b"labels": [0, 1, 2, 9]}
        pickle.dump(batch, open(folder / name, "wb"))
    return folder / "data_batch_1"


@pytest.mark.parametrize("damage, message", [
    (lambda raw: raw[: len(raw) // 2], "truncated or not a pickled CIFAR-10 batch"),
    (lambda raw: b"", "truncated or not a pickled CIFAR-10 batch"),
    (lambda raw: gzip.compress(raw), "truncated or not a pickled CIFAR-10 batch"),   # still packed
    (lambda raw: pickle.dumps([1, 2, 3]), "not a CIFAR-10 batch"),
    (lambda raw: pickle.dumps({b"data": np.zeros(5, np.uint8), b"labels": [1]}), "not 3072 per image"),
], ids=["cut-short", "empty", "still-gzipped", "a-list", "wrong-size"])
def test_damaged_cifar_batch_is_a_clear_error(tmp_path, damage, message):
    bad = _cifar_folder(tmp_path)
    bad.write_bytes(damage(bad.read_bytes()))
    with pytest.raises(ValueError, match=f"data_batch_1 .*{message}") as e:
        load_data("cifar10", data_dir=tmp_path)
    assert "--data-dir" in str(e.value)


class _RunsCode:
    """What a planted pickle does: unpickling it calls os.system."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar_batch_that_would_run_code_is_refused(tmp_path, protocol):
    marker = tmp_path / "code-ran"
    bad = _cifar_folder(tmp_path)
    batch = {b"data": np.zeros((4, 3072), np.uint8), b"labels": [0, 1, 2, 9], b"x": _RunsCode(marker)}
    bad.write_bytes(pickle.dumps(batch, protocol=protocol))
    assert not marker.exists()
    with pytest.raises(ValueError, match=r"data_batch_1 is not a plain CIFAR-10 batch: it asks to load "
                                         r"posix\.system.*could run code"):
        load_data("cifar10", data_dir=tmp_path)
    assert not marker.exists()                                 # refused before anything was called
    res = CliRunner().invoke(app, ["eval", "lenet5", "--dataset", "cifar10", "--data-dir", str(tmp_path)])
    assert res.exit_code == 2 and "refusing to unpickle it" in res.output and "Traceback" not in res.output
    assert not marker.exists()


def test_cifar_batches_of_python_2_and_numpy_1_still_load(tmp_path):
    """The real files were pickled by Python 2 with numpy 1 (``numpy.core``,
    byte strings, protocol 2); numpy 2 names its module ``numpy._core``."""
    _cifar_folder(tmp_path)
    batch = {b"batch_label": b"training batch 1 of 5", b"labels": [3, 1, 4, 1],
             b"data": np.arange(4 * 3072, dtype=np.int64).astype(np.uint8).reshape(4, 3072),
             b"filenames": [b"a.png", b"b.png", b"c.png", b"d.png"]}
    raw = pickle.dumps(batch, protocol=2)
    if b"numpy._core" in raw:
        raw = raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    (tmp_path / "data_batch_1").write_bytes(raw)
    x, y = read_cifar10(tmp_path, "train")
    assert y[:4].tolist() == [3, 1, 4, 1]
    assert torch.equal(x[0].flatten(), torch.from_numpy(batch[b"data"][0]))
