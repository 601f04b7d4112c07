import pytest
import torch

from entroprune.models import create, list_models
from entroprune.models.pretrained import manifest, pretrained_path

ALL = list_models()


def test_registry_has_the_required_models():
    assert {"lenet5", "resnet20", "resnet56", "vgg_small", "mobilenetv2"} <= set(ALL)


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_forward_shapes(name, shape):
    model = create(name, num_classes=7, in_channels=shape[0]).eval()
    out = model(torch.randn(2, *shape))
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", ALL)
def test_create_records_how_to_rebuild(name):
    model = create(name, num_classes=5, in_channels=3)
    assert model.entroprune_arch == {"factory": f"zoo:{name}",
                                     "kwargs": {"num_classes": 5, "in_channels": 3}}


def test_unknown_model_lists_the_known_ones():
    with pytest.raises(KeyError, match="resnet20"):
        create("resnet21")


def test_resnet_depth_counts():
    # ResNet-20: 19 convolutions on the main path + 2 downsampling shortcuts, 1 linear
    convs = [m for m in create("resnet20").modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 21
    convs56 = [m for m in create("resnet56").modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs56) == 57


def test_mobilenetv2_uses_depthwise_convolutions():
    convs = [m for m in create("mobilenetv2").modules() if isinstance(m, torch.nn.Conv2d)]
    depthwise = [c for c in convs if c.groups == c.in_channels == c.out_channels > 1]
    assert len(depthwise) == 17  # one per inverted residual block


def test_shipped_checkpoints_match_manifest():
    import hashlib
    entries = manifest()
    assert "lenet5" in entries, "the lenet5 reference checkpoint must be shipped"
    for name, entry in entries.items():
        path = pretrained_path(name)
        assert hashlib.sha256(path.read_bytes()).hexdigest() == entry["sha256"], name
        assert entry["command"].startswith("entroprune train ")
