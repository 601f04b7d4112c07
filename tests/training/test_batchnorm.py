"""BatchNorm recalibration: exact statistics on a hand-made case, and on a
pruned shipped ResNet-20 it turns a chance-level accuracy into a useful one."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import entroprune
from entroprune.pruning import PruneConfig, get_criterion, prune_to_macs
from entroprune.search import RewardConfig, make_reward
from entroprune.training import evaluate, recalibrate_batchnorm


def _conv_bn() -> nn.Sequential:
    model = nn.Sequential(nn.Conv2d(1, 2, 1, bias=False), nn.BatchNorm2d(2, momentum=0.3))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([2.0, -1.0]).view(2, 1, 1, 1))
    return model


@pytest.mark.parametrize("batch_size", [12, 4, 3])
def test_statistics_are_the_exact_mean_and_unbiased_variance(batch_size):
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(12, 1, 3, 3, generator=gen) * 3 + 1
    model = _conv_bn().eval()
    model[1].running_mean.fill_(7.0)
    assert recalibrate_batchnorm(model, images, batch_size=batch_size) == 1
    z = torch.cat([2 * images, -images], dim=1)                        # the conv outputs, (12, 2, 3, 3)
    # equal-size batches: the cumulative average of batch means is the overall mean
    assert torch.allclose(model[1].running_mean, z.mean(dim=(0, 2, 3)), atol=1e-5)
    batches = z.split(batch_size)
    var = torch.stack([b.transpose(0, 1).reshape(2, -1).var(dim=1, unbiased=True) for b in batches]).mean(0)
    assert torch.allclose(model[1].running_var, var, atol=1e-4)
    assert model[1].momentum == 0.3 and not model.training            # restored
    assert model[1].num_batches_tracked.item() == len(batches)


def test_model_without_batchnorm_is_untouched_and_bad_input_is_clear():
    model = nn.Sequential(nn.Conv2d(1, 2, 1))
    before = [p.clone() for p in model.parameters()]
    assert recalibrate_batchnorm(model, torch.randn(4, 1, 3, 3)) == 0
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    with pytest.raises(ValueError, match="at least 2 images"):
        recalibrate_batchnorm(_conv_bn(), torch.randn(1, 1, 3, 3))


def test_recalibration_restores_accuracy_of_a_pruned_resnet20(fmnist_small):
    model = entroprune.load(entroprune.pretrained_path("resnet20"))
    pruned, _ = prune_to_macs(model, get_criterion("l1"), (1, 28, 28), PruneConfig(target_macs=0.5))
    val_x, val_y = fmnist_small.val_x[:1000], fmnist_small.val_y[:1000]
    before = evaluate(pruned, val_x, val_y)
    recalibrate_batchnorm(pruned, fmnist_small.calibration(512, seed=0))
    after = evaluate(pruned, val_x, val_y)
    assert before < 30 and after > before + 30      # measured: 14.2% -> 78.4% with 1,024 images
    # the accuracy reward with adapt_bn does the same on its own copy
    plain = make_reward("accuracy", model, fmnist_small, RewardConfig(val_subset=1000))
    adapted = make_reward("accuracy", model, fmnist_small, RewardConfig(val_subset=1000, adapt_bn=512))
    fresh, _ = prune_to_macs(model, get_criterion("l1"), (1, 28, 28), PruneConfig(target_macs=0.5))
    assert plain(fresh, 0) == pytest.approx(-(1 - before / 100))
    assert adapted(fresh, 0) == pytest.approx(-(1 - after / 100), abs=1e-6)
