"""Rewards: -1 for the unpruned model, and exact values on hand-built cases."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

import entroprune
from entroprune.pruning.policy import PolicyPruner
from entroprune.search import RewardConfig, make_reward
from entroprune.search.rewards import AccuracyFlopsReward, AccuracyReward, EntropyReward


def test_entropy_reward_of_the_unpruned_model_is_minus_one(fmnist_small):
    model = entroprune.load(entroprune.pretrained_path("lenet5"))
    for name in ("entropy", "mass_entropy"):
        reward = make_reward(name, model, fmnist_small, RewardConfig(calib_size=64))
        assert reward(model, 0) == -1.0
        assert reward.reference > 0


def _two_filter_model() -> nn.Sequential:
    """conv 1x1: filter 0 copies the image, filter 1 outputs zeros; ReLU; a linear head."""
    model = nn.Sequential(nn.Conv2d(1, 2, 1, bias=False), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 4 * 4, 2))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([1.0, 0.0]).view(2, 1, 1, 1))
        model[3].weight.fill_(0.1)
        model[3].bias.zero_()
    return model


def test_entropy_reward_on_a_hand_built_case():
    # a 4x4 checkerboard of 0/1 -> levels 0 and 7; 8-connected aura matrix:
    # 24 horizontal/vertical neighbour pairs, all unlike, count in both directions
    # (M[0,7] = M[7,0] = 24); 18 diagonal pairs, all alike, 9 on each colour
    # (M[0,0] = M[7,7] = 18); total 84
    board = (torch.arange(4).view(4, 1) + torch.arange(4).view(1, 4)) % 2
    images = board.float().view(1, 1, 4, 4).repeat(3, 1, 1, 1)          # (3, 1, 4, 4)
    p = [24 / 84, 24 / 84, 18 / 84, 18 / 84]
    sae = -sum(q * math.log2(q) for q in p)
    model = _two_filter_model()
    reward = EntropyReward(model, images)
    assert reward.reference == pytest.approx(sae / 2, rel=1e-6)        # mean over the 2 filters
    assert reward(model, 0) == -1.0
    # pruning the zero filter (lowest L1) leaves one filter of entropy `sae`
    pruner = PolicyPruner(model, (1, 4, 4), "l1")
    pruned = pruner.apply([1])
    assert pruned[0].out_channels == 1 and pruned[0].weight.item() == 1.0
    assert reward(pruned, 0) == pytest.approx(-2.0, rel=1e-6)


def test_accuracy_rewards_on_a_hand_built_case():
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    with torch.no_grad():
        model[1].weight.zero_()
        model[1].bias.copy_(torch.tensor([1.0, 0.0]))                  # always predicts class 0
    x = torch.randn(8, 1, 2, 2)
    y = torch.tensor([0, 1, 0, 1, 0, 1, 1, 1])                           # 3 of 8 are class 0
    assert AccuracyReward(x, y)(model, 8) == pytest.approx(-5 / 8)
    assert AccuracyFlopsReward(x, y)(model, 1000) == pytest.approx(-5 / 8 * math.log(1000))


def test_accuracy_reward_uses_a_fixed_validation_subset(fmnist_small):
    model = entroprune.load(entroprune.pretrained_path("lenet5"))
    reward = make_reward("accuracy", model, fmnist_small, RewardConfig(val_subset=500))
    assert reward.val_x.shape[0] == 500 and reward.val_x.equal(fmnist_small.val_x[:500])
    assert -0.2 < reward(model, 1) < 0.0                                # the shipped model is > 80% accurate
    with pytest.raises(ValueError, match="unknown reward"):
        make_reward("nope", model, fmnist_small)
