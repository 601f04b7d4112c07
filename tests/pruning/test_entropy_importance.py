import pytest
import torch
import torch.nn as nn

from entroprune.models import create, list_models
from entroprune.pruning import EntropyImportance, PruneConfig, PruningError, get_criterion, prune_to_macs
from entroprune.pruning.entropy_importance import filter_entropies
from entroprune.pruning.structural import _groups, apply_plan


class ConcatGroupedNet(nn.Module):
    """Parts the zoo does not use: an Inception-like concatenation of two
    branches and a grouped (not depthwise) convolution."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.branch_a = nn.Sequential(nn.Conv2d(8, 8, 1), nn.BatchNorm2d(8), nn.ReLU())
        self.branch_b = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.grouped = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1, groups=2), nn.BatchNorm2d(16), nn.ReLU())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))

    def forward(self, x):
        x = self.stem(x)
        x = torch.cat([self.branch_a(x), self.branch_b(x)], dim=1)   # (N, 16, H, W)
        return self.head(self.grouped(x))


def test_filter_entropy_of_a_dead_filter_is_zero():
    model = create("vgg_small").eval()
    with torch.no_grad():
        model.features[0].weight[3].zero_()                 # filter 3 outputs a constant map
    ent = filter_entropies(model, torch.randn(8, 1, 28, 28))
    assert ent["features.0"][3].item() == 0.0
    assert (ent["features.0"][torch.arange(32) != 3] > 0).all()


def test_aura_removes_the_lowest_entropy_filters():
    model = create("vgg_small").eval()
    with torch.no_grad():
        for i in (1, 5, 9):
            model.features[0].weight[i].zero_()
            model.features[1].bias[i] = 0.5              # constant after BN and ReLU
    calib = (torch.randn(16, 1, 28, 28), torch.zeros(16, dtype=torch.long))
    _, groups = _groups(model, torch.zeros(1, 1, 28, 28), [model.classifier])
    key = ("features.0", "prune_out_channels")
    scores = get_criterion("aura").scores(model, [groups[key]], calib)[0]     # (32,)
    assert set(torch.argsort(scores)[:3].tolist()) == {1, 5, 9}
    # and the pruner removes exactly them when asked for 3 of the 32 filters of that layer
    plan = {key: torch.argsort(scores)[:3].tolist()}
    pruned = apply_plan(model, torch.zeros(1, 1, 28, 28), plan, ["classifier"])
    assert pruned.features[0].out_channels == 29
    assert (pruned.features[0].weight.flatten(1).abs().sum(1) > 0).all()


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("method", ["aura", "mass"])
def test_entropy_pruning_on_every_zoo_model(name, method):
    torch.manual_seed(0)
    model = create(name).eval()
    calib = (torch.randn(16, 1, 28, 28), torch.zeros(16, dtype=torch.long))
    pruned, rep = prune_to_macs(model, get_criterion(method), (1, 28, 28), PruneConfig(target_macs=0.5),
                                calib=calib)
    assert abs(rep["macs_after"] / rep["macs_before"] - 0.5) <= 0.01
    assert pruned(torch.randn(2, 1, 28, 28)).shape == (2, 10)


@pytest.mark.parametrize("method", ["aura", "l1", "taylor"])
def test_concatenation_and_grouped_convolution(method):
    model = ConcatGroupedNet().eval()
    calib = (torch.randn(16, 1, 16, 16), torch.randint(0, 10, (16,)))
    pruned, rep = prune_to_macs(model, get_criterion(method), (1, 16, 16),
                                PruneConfig(target_macs=0.7, tolerance=0.05), calib=calib)
    assert abs(rep["macs_after"] / rep["macs_before"] - 0.7) <= 0.035
    g = pruned.grouped[0]
    assert g.groups == 2 and g.in_channels % 2 == 0 and g.out_channels % 2 == 0
    # each half of the concatenation feeds one group of the grouped conv: removing channels from one
    # branch alone would unbalance the groups, so those channel groups are left unpruned and reported
    assert pruned.branch_a[0].out_channels == pruned.branch_b[0].out_channels == 8
    assert sorted(rep["unprunable_groups"]) == ["branch_a.0", "branch_b.0"]
    assert g.in_channels == 16 and g.out_channels < 16
    assert pruned(torch.randn(2, 1, 16, 16)).shape == (2, 10)


def test_entropy_criteria_need_data_and_fall_back_on_linear_groups():
    with pytest.raises(PruningError, match="calibration"):
        prune_to_macs(create("lenet5"), get_criterion("aura"), (1, 28, 28), PruneConfig(target_macs=0.5))
    crit = get_criterion("aura")
    prune_to_macs(create("lenet5").eval(), crit, (1, 28, 28), PruneConfig(target_macs=0.5),
                  calib=(torch.randn(8, 1, 28, 28), torch.zeros(8, dtype=torch.long)))
    assert sorted(crit.fallback_groups) == ["classifier.1", "classifier.3"]


def test_unsupported_layer_is_named():
    class Scale(nn.Module):
        def __init__(self):
            super().__init__()
            self.gain = nn.Parameter(torch.ones(1, 4, 1, 1))

        def forward(self, x):
            return x * self.gain

    model = nn.Sequential(nn.Conv2d(1, 4, 3), Scale(), nn.Flatten(), nn.LazyLinear(2))
    model(torch.zeros(1, 1, 8, 8))
    with pytest.raises(PruningError, match=r"layer '1' \(Scale\)"):
        prune_to_macs(model, get_criterion("l1"), (1, 8, 8), PruneConfig(target_macs=0.5))


class ConcatIntoConvNet(nn.Module):
    """A concatenation that feeds an ordinary convolution: its two branches are
    separate channel groups that the pruner may thin independently."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU())
        self.branch_a = nn.Sequential(nn.Conv2d(8, 8, 1), nn.ReLU())
        self.branch_b = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
        self.mix = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.ReLU())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))

    def forward(self, x):
        x = self.stem(x)
        return self.head(self.mix(torch.cat([self.branch_a(x), self.branch_b(x)], dim=1)))


def test_concatenated_branches_are_pruned_and_the_consumer_follows():
    torch.manual_seed(0)
    model = ConcatIntoConvNet().eval()
    with torch.no_grad():  # two dead filters in branch_b: constant maps, aura entropy 0
        model.branch_b[0].weight[[2, 6]] = 0.0
        model.branch_b[0].bias[[2, 6]] = 0.3
    calib = (torch.randn(16, 1, 16, 16), torch.zeros(16, dtype=torch.long))
    pruned, rep = prune_to_macs(model, get_criterion("aura"), (1, 16, 16),
                                PruneConfig(target_macs=0.6, tolerance=0.05), calib=calib)
    a, b, mix = pruned.branch_a[0].out_channels, pruned.branch_b[0].out_channels, pruned.mix[0]
    assert a + b < 16 and mix.in_channels == a + b           # the concatenation lost channels
    # the two dead filters were among the first to go
    kept_b = pruned.branch_b[0].weight.flatten(1).abs().sum(1)
    assert (kept_b > 0).all()
    assert pruned(torch.randn(2, 1, 16, 16)).shape == (2, 10)


def test_coupled_group_score_is_the_mean_of_its_member_convolutions():
    """resnet20's first stage: conv1 and every block's conv2 add into one
    residual stream, so they form one group scored by the mean of their
    per-filter entropies (then divided by the group mean)."""
    torch.manual_seed(0)
    model = create("resnet20").eval()
    images = torch.randn(12, 1, 28, 28)
    imp = EntropyImportance("aura").calibrate(model, images)
    ent = filter_entropies(model, images, "aura")
    _, groups = _groups(model, torch.zeros(1, 1, 28, 28), [model.fc])
    group = groups[("conv1", "prune_out_channels")]
    members = ["conv1", "layer1.0.conv2", "layer1.1.conv2", "layer1.2.conv2"]
    expected = torch.stack([ent[m] for m in members]).mean(0)
    expected = expected / expected.mean()
    assert torch.allclose(imp(group), expected, atol=1e-5)
    imp_max = EntropyImportance("aura", reduction="max", normalizer=None).calibrate(model, images)
    assert torch.allclose(imp_max(group), torch.stack([ent[m] for m in members]).amax(0), atol=1e-5)


def test_entropy_importance_plugs_into_torch_pruning():
    import torch_pruning as tp

    torch.manual_seed(0)
    model = create("vgg_small").eval()
    with torch.no_grad():  # four dead filters in the first layer
        model.features[0].weight[[0, 7, 11, 20]] = 0.0
        model.features[1].bias[[0, 7, 11, 20]] = 0.5
    images = torch.randn(16, 1, 28, 28)
    imp = EntropyImportance("aura").calibrate(model, images)
    assert isinstance(imp, tp.importance.Importance)
    pruner = tp.pruner.MetaPruner(model, torch.zeros(1, 1, 28, 28), importance=imp, pruning_ratio=0.25,
                                  iterative_steps=2, ignored_layers=[model.classifier])
    for _ in range(2):       # the second step sees pruned widths: the importance measures again
        pruner.step()
    assert model.features[0].out_channels == 32 - 8
    assert (model.features[0].weight.flatten(1).abs().sum(1) > 0).all()   # the dead ones went
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_uncalibrated_importance_is_a_clear_error():
    model = create("lenet5")
    _, groups = _groups(model, torch.zeros(1, 1, 28, 28), [])
    with pytest.raises(RuntimeError, match="calibrate"):
        EntropyImportance("aura")(next(iter(groups.values())))
    with pytest.raises(ValueError, match="calibration images"):
        EntropyImportance("mass").calibrate(model, torch.randn(28, 28))
