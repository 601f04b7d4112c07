"""Feature-map reconstruction: exact recovery on hand-made layers, residual and
concatenation consumers, the held-out guard, and the shipped resnet20 on real
Fashion-MNIST."""

import copy

import pytest
import torch
import torch.nn as nn

import entroprune
from entroprune.pruning import PruneConfig, get_criterion, prune_to_macs
from entroprune.pruning.structural import channel_map
from entroprune.reconstruct import ReconstructConfig, ReconstructError, Reconstructor, reconstruct
from entroprune.training import evaluate


def _chain_with_a_dead_channel() -> nn.Sequential:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 3, 3, padding=1))
    with torch.no_grad():
        model[0].weight.abs_()              # on non-negative images the other channels are linear (ReLU of > 0)
        model[0].bias.fill_(0.1)
        model[0].weight[2].zero_()
        model[0].bias[2] = -1.0          # ReLU(-1) = 0: channel 2 carries nothing
    return model.eval()


def test_removed_channel_that_carried_nothing_gives_back_the_exact_weights():
    model = _chain_with_a_dead_channel()
    images = torch.rand(16, 1, 12, 12) * 0.5          # inputs keep channel 2 at ReLU(<0) = 0
    pruned, _ = prune_to_macs(model, get_criterion("l1"), (1, 12, 12), PruneConfig(target_macs=0.75))
    assert channel_map(pruned)["2"]["in"] == [0, 1, 3]
    with torch.no_grad():                              # spoil the consumer: the refit must find it again
        pruned[2].weight.normal_()
        pruned[2].bias.zero_()
    report = reconstruct(pruned, model, images, ReconstructConfig(ridge=0.0, positions=2000))
    assert report["layers"]["2"]["refitted"]
    assert torch.allclose(pruned[2].weight, model[2].weight[:, [0, 1, 3]], atol=1e-4)
    assert torch.allclose(pruned[2].bias, model[2].bias, atol=1e-4)
    assert torch.allclose(pruned(images), model(images), atol=1e-4)


class _Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU())
        self.a = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU())
        self.b = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8))
        self.c = nn.Conv2d(8, 6, 3, padding=1)        # consumes the residual stream
        self.fc = nn.Linear(6, 10)

    def forward(self, x):
        x = self.stem(x)
        x = torch.relu(x + self.b(self.a(x)))
        return self.fc(torch.relu(self.c(x)).mean((2, 3)))


class _Concat(nn.Module):
    def __init__(self):
        super().__init__()
        self.left, self.right = nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(1, 6, 3, padding=1)
        self.mix = nn.Conv2d(10, 5, 3, padding=1)     # consumes the concatenation
        self.fc = nn.Linear(5, 10)

    def forward(self, x):
        x = torch.cat([torch.relu(self.left(x)), torch.relu(self.right(x))], 1)
        return self.fc(torch.relu(self.mix(x)).mean((2, 3)))


def _prime_batchnorm(model: nn.Module, images: torch.Tensor) -> nn.Module:
    model.train()
    with torch.no_grad():
        model(images)
    return model.eval()


@pytest.mark.parametrize("build, consumers", [(_Residual, ["a.0", "c", "fc"]), (_Concat, ["mix", "fc"])])
def test_consumers_of_residual_and_concatenated_channels_are_refitted(build, consumers, fmnist_small):
    torch.manual_seed(0)
    images = fmnist_small.calibration(128, 0)
    model = _prime_batchnorm(build(), images)
    pruned, _ = prune_to_macs(model, get_criterion("l1"), (1, 28, 28), PruneConfig(target_macs=0.5))
    raw = copy.deepcopy(pruned)
    report = reconstruct(pruned, model, images, ReconstructConfig(positions=4000))
    for name in consumers:
        layer = report["layers"][name]
        assert layer["inputs_lost"] and layer["refitted"], (name, layer)
        assert layer["error_after"] < layer["error_before"]
    with torch.no_grad():
        ref = model(images)
        assert (pruned(images) - ref).pow(2).mean() < (raw(images) - ref).pow(2).mean()


def test_a_refit_that_does_not_lower_the_held_out_error_keeps_its_weights():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 40)).eval()
    with torch.no_grad():
        model[0].weight[5] *= 1e-3                     # the channel L1 removes carries almost nothing
        model[0].bias[5] = 0.0
    pruned, _ = prune_to_macs(model, get_criterion("l1"), (16,), PruneConfig(target_macs=63 / 64, tolerance=0.01))
    before = pruned[2].weight.clone()
    images = torch.randn(10, 16)                      # 8 fitting rows for 63 inputs: a refit over-fits
    report = reconstruct(pruned, model, images, ReconstructConfig(images=10, holdout=5))
    layer = report["layers"]["2"]
    assert not layer["refitted"] and "held-out" in layer["reason"]
    assert layer["error_after"] >= layer["error_before"]
    assert torch.equal(pruned[2].weight, before)
    assert "2" in report["kept_weights"]


def test_every_refit_lowers_the_held_out_error_and_a_model_without_map_is_refused(fmnist_small):
    images = fmnist_small.calibration(64, 1)
    model = entroprune.create("vgg_small").eval()
    model = _prime_batchnorm(model, images)
    pruned, _ = prune_to_macs(model, get_criterion("random"), (1, 28, 28), PruneConfig(target_macs=0.3))
    report = Reconstructor(model, images, ReconstructConfig(positions=2000))(pruned)
    assert report["refitted"]
    for rec in report["layers"].values():
        if rec.get("refitted"):
            assert rec["error_after"] < rec["error_before"]
    narrower = entroprune.create("vgg_small")
    narrower.features[0] = nn.Conv2d(1, 16, 3, padding=1, bias=False)   # other widths, no record of which
    with pytest.raises(ReconstructError, match="which channels it kept"):
        Reconstructor(model, images)(narrower)


def test_shipped_resnet20_at_5x_works_before_any_fine_tuning(fmnist):
    model = entroprune.load(entroprune.pretrained_path("resnet20"))
    pruned, _ = prune_to_macs(model, get_criterion("l1"), (1, 28, 28), PruneConfig(target_macs=0.2))
    x, y = fmnist.val_x[:2000], fmnist.val_y[:2000]
    raw = evaluate(pruned, x, y)
    report = reconstruct(pruned, model, fmnist.calibration(512, 0))
    rebuilt = evaluate(pruned, x, y)
    assert raw < 20.0                                  # removing 80% of the MACs: chance level
    assert rebuilt > 80.0, report["kept_weights"]      # measured: 86.4% on the whole split
