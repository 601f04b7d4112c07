"""Data: raw readers, the fixed train/val/test splits, mini-batches, and the
user's own data (``folder:PATH`` image folders, ``npz:PATH`` archives)."""

from .batches import augment, iterate_batches, num_batches
from .custom import UserDataError
from .datasets import DATASETS, DataBundle, load_data, synthetic_images
from .folder import load_folder, read_image_folder, read_images
from .npz import load_npz, read_npz
from .readers import FASHION_MNIST_DIR, DatasetNotFoundError, read_cifar10, read_mnist_like

__all__ = ["DATASETS", "DataBundle", "DatasetNotFoundError", "FASHION_MNIST_DIR", "UserDataError", "augment",
           "iterate_batches", "load_data", "load_folder", "load_npz", "num_batches", "read_cifar10",
           "read_image_folder", "read_images", "read_mnist_like", "read_npz", "synthetic_images"]
