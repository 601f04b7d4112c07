import torch
import torch.nn as nn

from entroprune.entropy import (
    ActivationStats,
    RectifierStats,
    conv_sites,
    mass_entropy,
    rectifiers,
    spatial_aura_entropy,
    state_entropy,
)
from entroprune.models import create


def test_sites_follow_bn_residual_and_activation():
    sites = conv_sites(create("resnet20"))
    assert sites["conv1"].module == "relu"
    assert sites["layer1.0.conv1"].module == "layer1.0.relu1"
    assert sites["layer1.0.conv2"].module == "layer1.0.relu2"          # through bn2 and the addition
    assert sites["layer2.0.shortcut.0"].module == "layer2.0.relu2"
    mb = conv_sites(create("mobilenetv2"))
    assert mb["features.2.conv.2"].module == "features.2.conv.3"       # linear projection: its BN


def test_shared_activation_is_applied_in_the_hook():
    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1, self.c2, self.act = nn.Conv2d(1, 2, 3), nn.Conv2d(2, 2, 3), nn.ReLU()

        def forward(self, x):
            return self.act(self.c2(self.act(self.c1(x))))

    model = Shared().eval()
    sites = conv_sites(model)
    assert sites["c1"].module == "c1" and sites["c1"].activation is model.act
    x = torch.randn(4, 1, 9, 9)
    with ActivationStats(model, sites, ("aura",)) as st, torch.no_grad():
        model(x)
    expected = spatial_aura_entropy(torch.relu(model.c1(x))).mean(0)
    assert torch.allclose(st.per_filter()["c1"]["aura"], expected)


def test_streaming_equals_whole_batch():
    model = create("lenet5").eval()
    sites = conv_sites(model)
    x = torch.randn(10, 1, 28, 28)
    with ActivationStats(model, sites, ("aura", "mass")) as st, torch.no_grad():
        for chunk in x.split(3):            # 3 + 3 + 3 + 1 images
            model(chunk)
    with torch.no_grad():
        post = model.features[1](model.features[0](x).clone())
    got = st.per_filter()["features.0"]
    assert torch.allclose(got["aura"], spatial_aura_entropy(post).mean(0), atol=1e-6)
    assert torch.allclose(got["mass"], mass_entropy(post).mean(0), atol=1e-6)
    assert set(st.per_layer()) == {"features.0", "features.3"}
    assert st.handles == []                 # hooks removed on exit
    # nothing but per-channel sums is kept
    assert all(v.shape == (6,) for v in st.sums[("features.1", None)].values())


def test_rectifier_inputs_are_read_before_inplace_relu():
    model = create("vgg_small").eval()
    names = list(rectifiers(model))
    x = torch.randn(6, 1, 28, 28)
    with RectifierStats(model, names) as rs, torch.no_grad():
        model(x)
    with torch.no_grad():
        z = model.features[1](model.features[0](x))     # BN output = first ReLU's input
    assert torch.allclose(rs.per_channel()[names[0]], state_entropy(z))
    assert 0.0 < rs.per_layer()[names[0]] <= 1.0


def test_modules_chosen_by_type_or_by_name():
    import pytest

    model = create("lenet5").eval()
    x = torch.randn(6, 1, 28, 28)
    with ActivationStats(model, [nn.Conv2d], ("aura", "mass")) as by_type, torch.no_grad():
        model(x)
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    got = by_type.per_filter()
    assert sorted(got) == sorted(convs)
    # a module chosen by name is read at its own output: here the raw conv output
    first = convs[0]
    with ActivationStats(model, [first], ("aura",)) as by_name, torch.no_grad():
        model(x)
    raw = model.get_submodule(first)(x)
    expected = spatial_aura_entropy(raw).mean(0)
    assert torch.allclose(by_name.per_filter()[first]["aura"], expected, atol=1e-5)
    assert torch.allclose(got[first]["aura"], expected, atol=1e-5)
    # None means every convolution, read after its activation
    with ActivationStats(model, None, ("aura",)) as default, torch.no_grad():
        model(x)
    assert sorted(default.per_filter()) == sorted(convs)

    with pytest.raises(ValueError, match="no module named 'features.99'"):
        ActivationStats(model, ["features.99"])
    with pytest.raises(ValueError, match="no module of type BatchNorm1d"):
        ActivationStats(model, [nn.BatchNorm1d])
    linear = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)][0]
    with pytest.raises(ValueError, match=f"module '{linear}' outputs"), torch.no_grad():
        with ActivationStats(model, [linear]):
            model(x)


def test_non_finite_activations_are_a_clear_error():
    import pytest

    from entroprune.reconstruct import NonFiniteError

    model = create("lenet5").eval()
    with torch.no_grad():
        model.features[3].weight[0, 0, 0, 0] = float("nan")
    x = torch.randn(2, 1, 28, 28)
    with pytest.raises(NonFiniteError, match=r"output of module 'features\.4' holds 200 NaN"):
        with ActivationStats(model, None, ("aura",)), torch.no_grad():
            model(x)
    with pytest.raises(NonFiniteError, match=r"input of rectifier 'features\.4' holds 200 NaN"):
        with RectifierStats(model, ["features.1", "features.4"]), torch.no_grad():
            model(x)
