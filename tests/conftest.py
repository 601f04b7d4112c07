"""Shared fixtures. The real Fashion-MNIST files are required (Debian's
dataset-fashion-mnist; `make setup` installs it)."""

from __future__ import annotations

import os

import pytest
import torch

from entroprune.data import load_data

# ENTROPRUNE_TEST_THREADS=1 keeps test runs from starving a background job
torch.set_num_threads(int(os.environ.get("ENTROPRUNE_TEST_THREADS", "2")))


@pytest.fixture(scope="session")
def fmnist():
    """The real Fashion-MNIST, with the project's seeded 5,000-image validation split."""
    return load_data("fashion_mnist")


@pytest.fixture(scope="session")
def fmnist_small():
    """Real Fashion-MNIST with only 3,000 training images, for quick end-to-end runs."""
    return load_data("fashion_mnist", limit_train=3000)


@pytest.fixture
def free_port() -> str:
    """A TCP port nobody listens on now, for a torchrun rendezvous (a fixed
    port can still be held by an earlier run's socket)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])
