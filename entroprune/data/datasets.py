"""Data sets as in-memory tensors, with the project's fixed splits.

A ``DataBundle`` holds normalised float images for the three splits:
- ``train``: the training set minus a seeded held-out validation split;
- ``val``: 5,000 training images, used for every decision (early stopping,
  RL rewards, tolerances);
- ``test``: the official test set, used only to report.
and draws a seeded calibration sample from ``train`` for the entropy
statistics. Everything fits in memory (Fashion-MNIST is 47 MB as uint8), so
batches are sliced from tensors with no worker processes.

Besides the named sets, ``load_data("folder:PATH")`` reads a folder of images
(one subfolder per class, see ``folder.py``) and ``load_data("npz:PATH")`` a
NumPy ``.npz`` archive (see ``npz.py``); their splits and training statistics
are made in ``custom.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from .readers import FASHION_MNIST_DIR, read_cifar10, read_mnist_like

# per-channel mean/std of the training images, in [0, 1] units
STATS = {
    "fashion_mnist": ((0.2860,), (0.3530,)),
    "mnist": ((0.1307,), (0.3081,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "synthetic": ((0.5,), (0.25,)),
}
DATASETS = tuple(STATS)


@dataclass
class DataBundle:
    name: str
    train_x: torch.Tensor  # (N_train, C, H, W) float32, normalised
    train_y: torch.Tensor  # (N_train,) int64
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int = 10
    # how raw images become train_x: (x / pixel_scale - mean) / std per channel,
    # so new images can be normalised the same way (see ``normalise``)
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    pixel_scale: float = 255.0
    classes: tuple[str, ...] = ()   # class names by label, when the data has them

    @property
    def in_channels(self) -> int:
        return int(self.train_x.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.train_x.shape[-1])

    def calibration(self, n: int = 512, seed: int = 0) -> torch.Tensor:
        """A seeded sample of ``n`` training images ``(n, C, H, W)``."""
        g = torch.Generator().manual_seed(seed)
        idx = torch.randperm(self.train_x.shape[0], generator=g)[:n]
        return self.train_x[idx]

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """Raw images ``(N, C, H, W)`` (uint8, or float in the data's own units)
        normalised exactly as this bundle's splits were."""
        return normalise(x, self.mean, self.std, self.pixel_scale)


def normalise(x: torch.Tensor, mean, std, pixel_scale: float = 255.0) -> torch.Tensor:
    """``(x / pixel_scale - mean) / std`` per channel, as float32 ``(N, C, H, W)``."""
    if len(mean) != x.shape[1]:
        raise ValueError(f"images have {x.shape[1]} channels but the statistics {len(mean)}")
    mean_t = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    out = x.to(torch.float32, copy=True)   # a copy even of float32 input: the ops below are in place
    return out.div_(pixel_scale).sub_(mean_t).div_(std_t)


def _normalise(x: torch.Tensor, name: str) -> torch.Tensor:
    return normalise(x, *STATS[name])


def synthetic_images(n: int, seed: int = 0, size: int = 28, num_classes: int = 10):
    """A tiny learnable data set for unit tests only: class k is a bright
    square at one of ``num_classes`` positions plus noise. uint8 images."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, num_classes, (n,), generator=g)
    x = torch.rand(n, 1, size, size, generator=g) * 60
    s = size // 4
    for k in range(num_classes):
        r, c = divmod(k, 4)
        x[y == k, :, r * s:(r + 1) * s, c * s:(c + 1) * s] += 180
    return x.clamp(0, 255).to(torch.uint8), y


def load_data(name: str = "fashion_mnist", data_dir: str | Path | None = None,
              val_size: int = 5000, seed: int = 0, limit_train: int | None = None) -> DataBundle:
    """Load a data set by name and split off a seeded validation set.

    ``name`` is one of ``DATASETS``, ``"folder:PATH"`` (a folder of images, one
    subfolder per class) or ``"npz:PATH"`` (arrays ``x``, ``y``); for the last
    two, options may follow the path (``folder:PATH,size=32,channels=3``), the
    validation split is capped at 10% of the training images, and the
    normalisation uses the training split's statistics (see ``custom.py``).
    ``limit_train`` keeps only the first images of the (shuffled) training
    split, for quick runs.
    """
    if name.startswith(("folder:", "npz:")):
        from .custom import load_spec  # not at the top: custom.py imports DataBundle from here
        if data_dir:
            raise ValueError(f"--data-dir is not used with {name.split(':')[0]}:PATH (the path follows "
                             "the colon); drop --data-dir")
        return load_spec(name, val_size=val_size, seed=seed, limit_train=limit_train)
    if name not in STATS:
        raise ValueError(f"unknown data set {name!r}; choose one of {', '.join(DATASETS)}, "
                         "or folder:PATH (one subfolder of images per class) or npz:PATH "
                         "(arrays x and y)")
    if name in ("fashion_mnist", "mnist"):
        folder = Path(data_dir) if data_dir else FASHION_MNIST_DIR
        if name == "mnist" and not data_dir:
            raise ValueError("MNIST has no default folder: pass --data-dir to its IDX files")
        tr_x, tr_y = read_mnist_like(folder, "train")
        te_x, te_y = read_mnist_like(folder, "test")
    elif name == "cifar10":
        if not data_dir:
            raise ValueError("CIFAR-10 has no default folder: pass --data-dir to cifar-10-batches-py")
        tr_x, tr_y = read_cifar10(data_dir, "train")
        te_x, te_y = read_cifar10(data_dir, "test")
    else:
        tr_x, tr_y = synthetic_images(1200, seed=1234)
        te_x, te_y = synthetic_images(300, seed=4321)
        val_size = min(val_size, 200)
    if val_size >= tr_x.shape[0]:
        raise ValueError(f"val_size={val_size} leaves no training images (only {tr_x.shape[0]})")
    perm = torch.randperm(tr_x.shape[0], generator=torch.Generator().manual_seed(seed))
    val_idx, train_idx = perm[:val_size], perm[val_size:]
    if limit_train is not None:
        train_idx = train_idx[:limit_train]
    mean, std = STATS[name]
    return DataBundle(
        name=name, mean=mean, std=std,
        train_x=_normalise(tr_x[train_idx], name), train_y=tr_y[train_idx],
        val_x=_normalise(tr_x[val_idx], name), val_y=tr_y[val_idx],
        test_x=_normalise(te_x, name), test_y=te_y,
    )
