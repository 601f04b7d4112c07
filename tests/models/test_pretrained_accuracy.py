"""The shipped checkpoints reach the accuracies promised in the README
(section Shipped checkpoints), measured here on the real Fashion-MNIST test set."""

import hashlib

import pytest

from entroprune.io import load
from entroprune.models.pretrained import manifest, pretrained_path
from entroprune.training import evaluate

TARGETS = {"lenet5": 89.5, "resnet20": 93.0, "vgg_small": 93.0, "mobilenetv2": 92.0}


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_shipped_checkpoint_accuracy(name, fmnist):
    entry = manifest()[name]  # every model with a target ships a checkpoint
    path = pretrained_path(name)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == entry["sha256"]
    model = load(path)
    acc = evaluate(model, fmnist.test_x, fmnist.test_y)
    assert acc >= TARGETS[name]
    assert abs(acc - entry["test_acc"]) < 0.01  # the manifest tells the truth
