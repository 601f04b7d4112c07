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
    # the pruned model still runs and keeps its 10 classes
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


def _kept_filters(original: nn.Conv2d, pruned: nn.Conv2d) -> list[int]:
    """Which filters of ``original`` survive in ``pruned`` (matched by their weights)."""
    return [next(i for i, w in enumerate(original.weight) if torch.equal(w, p)) for p in pruned.weight]


def _tiny(width: int) -> nn.Sequential:
    """conv (1 -> width, 3x3) -> ReLU -> global pool -> linear (width -> 2) on 8x8 images."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, width, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(width, 2)).eval()


def test_random_criterion_keeps_the_channels_its_seeded_scores_rank_highest():
    model = _tiny(8)
    cfg = PruneConfig(target_macs=0.5, scope="uniform", tolerance=0.3)
    kept = {}
    for seed in (3, 3, 4):
        pruned, rep = prune_to_macs(model, get_criterion("random", seed=seed), (1, 8, 8), cfg)
        assert rep["criterion"] == "random"
        kept.setdefault(seed, []).append(sorted(_kept_filters(model[0], pruned[0])))
    scores = torch.rand(8, generator=torch.Generator().manual_seed(3))      # what RandomCriterion(3) draws
    assert kept[3][0] == kept[3][1] == sorted(torch.topk(scores, 4).indices.tolist())
    assert kept[4][0] != kept[3][0]                                          # another seed, other channels


def test_taylor_removes_the_channels_with_the_smallest_first_order_score():
    """Filters 0 and 2 have the largest weights but never fire (bias -100):
    their loss gradients, hence their Taylor scores |w * dL/dw|, are 0. Taylor
    drops them; L1 would keep them."""
    model = _tiny(4)
    with torch.no_grad():
        for i, (scale, bias) in enumerate([(3.0, -100.0), (0.4, 0.0), (2.0, -100.0), (0.5, 0.0)]):
            model[0].weight[i].fill_(scale)
            model[0].bias[i] = bias
    gen = torch.Generator().manual_seed(0)
    calib = (torch.randn(32, 1, 8, 8, generator=gen), torch.randint(0, 2, (32,), generator=gen))
    # the scores by hand: sum over the group's parameters of |w * grad| per channel
    model.zero_grad()
    torch.nn.functional.cross_entropy(model(calib[0]), calib[1]).backward()
    conv, lin = model[0], model[4]
    hand = ((conv.weight * conv.weight.grad).abs().sum((1, 2, 3)) + (conv.bias * conv.bias.grad).abs()
            + (lin.weight * lin.weight.grad).abs().sum(0))                  # (4,)
    model.zero_grad(set_to_none=True)
    assert hand[0] == 0 and hand[2] == 0 and hand[1] > 0 and hand[3] > 0
    cfg = PruneConfig(target_macs=0.5, scope="uniform", tolerance=0.3)
    pruned, rep = prune_to_macs(model, get_criterion("taylor"), (1, 8, 8), cfg, calib=calib)
    assert rep["criterion"] == "taylor" and sorted(_kept_filters(conv, pruned[0])) == [1, 3]
    by_l1, _ = prune_to_macs(model, get_criterion("l1"), (1, 8, 8), cfg)
    assert sorted(_kept_filters(conv, by_l1[0])) == [0, 2]                  # the scores, not the weights, decided


def test_uniform_scope_and_plan():
    scores = {"a": torch.tensor([4.0, 1.0, 3.0, 2.0]), "b": torch.tensor([0.5, 9.0])}
    plan = plan_removal(scores, 0.5, PruneConfig(scope="uniform"))
    assert plan == {"a": [1, 3], "b": [0]}
    # global: the three lowest of all channels, but b keeps at least one
    plan = plan_removal(scores, 0.5, PruneConfig(scope="global", min_keep=0.5))
    assert sorted(plan["a"]) == [1, 3] and plan["b"] == [0]
