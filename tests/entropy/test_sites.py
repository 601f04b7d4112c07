"""Where entropy is read and which activations are rectifiers, on the one fx
view (``entroprune.graph``): activations called as functions, squeeze-and-
excitation gates, shared activations after an addition, untraceable models."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from entroprune.entropy import ActivationStats, conv_sites, rectifiers, spatial_aura_entropy
from entroprune.graph import ModelGraph, warn_functional
from entroprune.measure import count_depth


class SEBlock(nn.Module):
    """conv -> BN -> ReLU, then squeeze-and-excitation: pooled -> 1x1 conv ->
    ReLU -> 1x1 conv -> ``gate`` (a sigmoid-like module), multiplied into the features."""

    def __init__(self, gate: nn.Module):
        super().__init__()
        self.conv, self.bn, self.act = nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU()
        self.squeeze, self.relu = nn.Conv2d(4, 2, 1), nn.ReLU()
        self.excite, self.gate = nn.Conv2d(2, 4, 1), gate
        self.head = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.bn(self.conv(x)))                          # (N, 4, H, W)
        s = x.mean((2, 3), keepdim=True)                             # (N, 4, 1, 1)
        x = x * self.gate(self.excite(self.relu(self.squeeze(s))))   # gate (N, 4, 1, 1) scales the channels
        return self.head(x.mean((2, 3)))                             # (N, 3)


class HardGateSE(SEBlock):
    """The gate written as ``relu6(z + 3) / 6`` with an ``nn.ReLU6`` module (a
    hard sigmoid): a ReLU-like type used as a gate."""

    def __init__(self):
        super().__init__(nn.ReLU6())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.bn(self.conv(x)))
        s = x.mean((2, 3), keepdim=True)
        g = self.gate(self.excite(self.relu(self.squeeze(s))) + 3.0) / 6.0  # (N, 4, 1, 1) in [0, 1]
        return self.head((x * g).mean((2, 3)))


@pytest.mark.parametrize("model", [SEBlock(nn.Sigmoid()), SEBlock(nn.Hardsigmoid()), HardGateSE()],
                         ids=["sigmoid", "hardsigmoid", "relu6-hard-sigmoid"])
def test_gates_are_not_rectifiers(model):
    assert list(rectifiers(model)) == ["act", "relu"]                 # the gate is never a candidate
    gates = [a for a in ModelGraph(model).activations() if a.gate]
    assert [(a.module, a.after) for a in gates] == [("gate", "excite")]
    assert count_depth(model).nonlinear == 3                         # still a nonlinearity of the model
    # the excitation conv is read after its gate; the gate replaced by the identity would change the output
    assert conv_sites(model)["excite"].module == "gate"


class Functional(nn.Module):
    """Convolutions activated in the forward code, three ways."""

    def __init__(self, how: str):
        super().__init__()
        self.how = how
        self.c1, self.bn = nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3)
        self.c2 = nn.Conv2d(3, 2, 3)

    def act(self, x: torch.Tensor) -> torch.Tensor:
        if self.how == "F.relu":
            return F.relu(x, inplace=True)
        return torch.relu(x) if self.how == "torch.relu" else x.relu_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.bn(self.c1(x)))                            # (N, 3, H-2, W-2)
        return F.leaky_relu(self.c2(x), 0.3)                         # (N, 2, H-4, W-4)


@pytest.mark.parametrize("how", ["F.relu", "torch.relu", "x.relu_()"])
def test_functional_activations_are_the_entropy_site(how):
    model = Functional(how).eval()
    sites = conv_sites(model)
    assert sites["c1"].module == "bn" and sites["c2"].module == "c2"
    x = torch.randn(5, 1, 10, 10, generator=torch.Generator().manual_seed(0))
    with ActivationStats(model, sites, ("aura",)) as st, torch.no_grad():
        out = model(x)
    with torch.no_grad():
        z1 = model.bn(model.c1(x))                                   # (5, 3, 8, 8) before the activation
        post1, post2 = torch.relu(z1), F.leaky_relu(model.c2(torch.relu(z1)), 0.3)
    assert torch.equal(out, post2)                                   # the replay did not touch the forward pass
    got = st.per_filter()
    assert torch.allclose(got["c1"]["aura"], spatial_aura_entropy(post1).mean(0))
    assert torch.allclose(got["c2"]["aura"], spatial_aura_entropy(post2).mean(0))
    assert not torch.allclose(got["c1"]["aura"], spatial_aura_entropy(z1).mean(0))  # not the raw output


def test_functional_activations_are_announced_to_depth_reduction():
    model = Functional("F.relu")
    assert rectifiers(model) == {}
    with pytest.warns(UserWarning, match=r"cannot remove the relu .* after bn") as rec:
        found = warn_functional(model, "EASIER")
    assert [a.kind for a in found] == ["relu", "leaky_relu"] and all(a.rectifier for a in found)
    assert any("leaky_relu" in str(w.message) and "after c2" in str(w.message) for w in rec)


class SharedAfterAdd(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1, self.c2, self.act = nn.Conv2d(2, 2, 3, padding=1), nn.Conv2d(2, 2, 3, padding=1), nn.ReLU()

    def forward(self, x):
        return self.act(self.c2(self.act(self.c1(x))) + x)


def test_shared_activation_after_an_addition_is_replayed_with_a_warning():
    with pytest.warns(UserWarning, match="c2.*without the other branch"):
        sites = conv_sites(SharedAfterAdd())
    assert sites["c2"].module == "c2" and isinstance(sites["c2"].activation, nn.ReLU)
    with warnings.catch_warnings():
        warnings.simplefilter("error")                               # c1 alone: exact, no warning
        assert conv_sites(nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU()))["0"].module == "1"


class Untraceable(nn.Module):
    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(1, 2, 3)

    def forward(self, x):
        return self.c(x).relu() if x.sum() > 0 else self.c(x)        # data-dependent: fx cannot trace


def test_untraceable_model_is_read_raw_with_a_warning():
    with pytest.warns(UserWarning, match=r"cannot trace Untraceable.*raw outputs of its convolutions \(c\)"):
        sites = conv_sites(Untraceable())
    assert sites["c"].module == "c" and not sites["c"].traced
