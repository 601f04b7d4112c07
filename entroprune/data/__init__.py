"""Data: raw readers, the fixed train/val/test splits, and mini-batches."""

from .batches import augment, iterate_batches, num_batches
from .datasets import DATASETS, DataBundle, load_data, synthetic_images
from .readers import FASHION_MNIST_DIR, DatasetNotFoundError, read_cifar10, read_mnist_like

__all__ = ["DATASETS", "DataBundle", "DatasetNotFoundError", "FASHION_MNIST_DIR", "augment",
           "iterate_batches", "load_data", "num_batches", "read_cifar10", "read_mnist_like",
           "synthetic_images"]
