"""End to end on real Fashion-MNIST: folding BatchNorm into the convolutions
of a shipped checkpoint keeps its accuracy."""

import time

import torch
import torch.nn as nn

import entroprune
from entroprune.depth import FoldConfig, fold
from entroprune.models.pretrained import CHECKPOINT_DIR
from entroprune.training import evaluate


def test_batchnorm_folding_keeps_shipped_accuracy(fmnist_small):
    name = "vgg_small" if (CHECKPOINT_DIR / "vgg_small_fashion_mnist.safetensors").exists() else "lenet5"
    model = entroprune.load(entroprune.pretrained_path(name))
    x, y = fmnist_small.test_x, fmnist_small.test_y
    if name == "vgg_small":       # 37 MMACs per image: 4,000 test images keep the test under 20 s
        x, y = x[:4000], y[:4000]
    t0 = time.time()
    folded, rep = fold(model, fmnist_small.val_x[:32], FoldConfig(merge_chains=False, merge_skips=False))
    before, after = evaluate(model, x, y), evaluate(folded, x, y)
    print(f"\n{name}: test accuracy {before:.2f} -> {after:.2f} after BatchNorm folding "
          f"({len(rep['merges'])} folds, max output deviation {rep['max_abs_deviation']:.3g}, "
          f"{time.time() - t0:.1f} s)")
    assert abs(before - after) <= 0.05
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert rep["conv_linear_after"] == rep["conv_linear_before"]
    assert rep["max_abs_deviation"] < 1e-3


def test_folding_a_rectifier_free_classifier_keeps_accuracy(fmnist_small):
    """The shipped LeNet-5 with its classifier rectifiers replaced by the
    identity (as EASIER would): its three Linear layers fold into one, exactly."""
    model = entroprune.load(entroprune.pretrained_path("lenet5"))
    model.classifier[2], model.classifier[4] = nn.Identity(), nn.Identity()
    folded, rep = fold(model, fmnist_small.val_x[:32])
    x, y = fmnist_small.test_x, fmnist_small.test_y
    before, after = evaluate(model, x, y), evaluate(folded, x, y)
    print(f"\nlenet5 without classifier rectifiers: test accuracy {before:.2f} -> {after:.2f} after folding "
          f"{rep['conv_linear_before']} -> {rep['conv_linear_after']} layers, "
          f"MACs {rep['macs_before']:,} -> {rep['macs_after']:,}")
    assert rep["conv_linear_after"] == 3 and rep["macs_after"] < rep["macs_before"]
    assert abs(before - after) <= 0.05
