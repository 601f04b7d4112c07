import pytest
import torch
import torch.nn as nn

from entroprune.measure import count_macs
from entroprune.models import create, list_models
from entroprune.pruning import PruneConfig, PruningError, get_criterion, parse_macs_target, prune_to_macs
from entroprune.pruning.structural import plan_removal


def test_parse_macs_target():
    assert parse_macs_target("5x") == pytest.approx(0.2)
    assert parse_macs_target("0.25") == 0.25
    assert parse_macs_target(0.5) == 0.5
    for bad in ("abc", "0", "1.5", "0x", "-2x"):
        with pytest.raises(PruningError):
            parse_macs_target(bad)


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("target", [0.5, 0.2])
@pytest.mark.parametrize("scope", ["global", "uniform"])
def test_macs_target_met_within_two_percent(name, target, scope):
    model = create(name).eval()
    pruned, rep = prune_to_macs(model, get_criterion("l1"), (1, 28, 28),
                                PruneConfig(target_macs=target, scope=scope))
    base, after = count_macs(model, (1, 28, 28)), count_macs(pruned, (1, 28, 28))
    assert abs(after / base - target) <= 0.02 * target
    assert rep["macs_after"] == after
    # the pruned model still runs, on both input sizes of the zoo, and keeps its classes
    assert pruned(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    # the original is untouched
    assert count_macs(model, (1, 28, 28)) == base


def test_no_layer_is_emptied_and_min_width_holds():
    model = create("vgg_small").eval()
    pruned, _ = prune_to_macs(model, get_criterion("l1"), (1, 28, 28),
                              PruneConfig(target_macs=0.08, min_keep=0.25))
    for (n0, m0), (_, m1) in zip(model.named_modules(), pruned.named_modules()):
        if isinstance(m0, nn.Conv2d):
            assert m1.out_channels >= 0.25 * m0.out_channels, n0


def test_unreachable_target_says_why():
    with pytest.raises(PruningError, match="min_keep"):
        prune_to_macs(create("vgg_small").eval(), get_criterion("l1"), (1, 28, 28),
                      PruneConfig(target_macs=0.01, min_keep=0.5))


def test_residual_groups_stay_coupled():
    pruned, _ = prune_to_macs(create("resnet20").eval(), get_criterion("l1"), (1, 28, 28),
                              PruneConfig(target_macs=0.3))
    for block in pruned.layer2:  # every block's output width equals its shortcut's
        assert block.conv2.out_channels == pruned.layer2[0].shortcut[0].out_channels


def test_l1_removes_the_smallest_filters():
    model = nn.Sequential(nn.Conv2d(1, 4, 3, bias=False), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(4, 2))
    with torch.no_grad():
        for i, scale in enumerate([3.0, 0.1, 2.0, 0.2]):
            model[0].weight[i].fill_(scale)
    pruned, _ = prune_to_macs(model, get_criterion("l1"), (1, 8, 8),
                              PruneConfig(target_macs=0.5, scope="uniform", tolerance=0.3))
    kept = sorted(float(w.abs().mean()) for w in pruned[0].weight)
    assert kept == pytest.approx([2.0, 3.0])


@pytest.mark.parametrize("method", ["random", "taylor"])
def test_other_criteria(method, fmnist_small):
    model = create("resnet20").eval()
    calib = (fmnist_small.train_x[:64], fmnist_small.train_y[:64])
    pruned, rep = prune_to_macs(model, get_criterion(method), (1, 28, 28), PruneConfig(target_macs=0.5),
                                calib=calib)
    assert rep["criterion"] == method
    assert abs(rep["macs_after"] / rep["macs_before"] - 0.5) <= 0.01


def test_uniform_scope_and_plan():
    scores = {"a": torch.tensor([4.0, 1.0, 3.0, 2.0]), "b": torch.tensor([0.5, 9.0])}
    plan = plan_removal(scores, 0.5, PruneConfig(scope="uniform"))
    assert plan == {"a": [1, 3], "b": [0]}
    # global: the three lowest of all channels, but b keeps at least one
    plan = plan_removal(scores, 0.5, PruneConfig(scope="global", min_keep=0.5))
    assert sorted(plan["a"]) == [1, 3] and plan["b"] == [0]
