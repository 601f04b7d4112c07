"""Folding emptied layers (fold_dead.py): an all-zero convolution or linear
layer becomes a ``Constant`` (its bias), and what only it consumed becomes
``Zero``, so the emptied layers stop costing MACs. Exact."""

import torch
import torch.nn as nn

import entroprune
from entroprune.depth import Constant, FoldConfig, Zero, fold
from entroprune.models import create
from entroprune.training import evaluate

from .util import images, max_diff, randomize_batchnorm

# one inner 3x3 convolution of resnet20 stage 2 or 3 on 28x28 inputs: 32->32 on 14x14 or 64->64 on 7x7
BRANCH_CONV_MACS = 32 * 32 * 9 * 14 * 14
assert BRANCH_CONV_MACS == 64 * 64 * 9 * 7 * 7


def test_constant_outputs_its_value_at_every_position_for_any_batch():
    const = Constant(3, (2, 2))
    const.value.copy_(torch.tensor([1.0, -2.0, 0.5]))
    out = const(torch.randn(4, 7, 5, 5))                              # input ignored but for N
    assert out.shape == (4, 3, 2, 2)
    assert torch.equal(out[2, :, 1, 0], torch.tensor([1.0, -2.0, 0.5]))
    out += 1.0                                                        # writable (in-place users)
    assert torch.equal(const(torch.zeros(4, 1, 1, 1))[0, 0], torch.ones(2, 2))
    assert Constant(5)(torch.zeros(3, 1)).shape == (3, 5)             # after a Linear: (N, F)


def test_zero_keeps_the_batch_size_and_broadcasts_away():
    x = torch.randn(6, 4, 3, 3)
    z = Zero()(x)
    assert z.shape == (6, 1, 1, 1) and not z.any()
    assert torch.equal(x + z, x)


def _resnet20_with_emptied_branch():
    torch.manual_seed(0)
    model = randomize_batchnorm(create("resnet20"), images(32, seed=1))
    with torch.no_grad():
        model.layer3[2].conv2.weight.zero_()                          # as NEPENTHE leaves a layer
    return model


def test_emptied_residual_branch_costs_nothing_and_is_exact(tmp_path):
    model, x = _resnet20_with_emptied_branch(), images(8)
    kept, rep_off = fold(model, x, FoldConfig(fold_dead=False))
    folded, rep = fold(model, x)
    block = folded.layer3[2]
    assert isinstance(block.conv2, Constant)
    assert all(isinstance(m, Zero) for m in (block.conv1, block.bn1, block.relu1))
    (dead,) = [m for m in rep["merges"] if m["kind"] == "dead"]
    assert dead["layers"] == ["layer3.2.conv1", "layer3.2.bn1", "layer3.2.relu1", "layer3.2.conv2"]
    assert dead["macs_before"] == 2 * BRANCH_CONV_MACS and dead["macs_after"] == 0
    assert rep_off["macs_after"] - rep["macs_after"] == 2 * BRANCH_CONV_MACS
    assert rep["conv_linear_after"] == rep_off["conv_linear_after"] - 2 == 20
    # the block now outputs relu(bias2 + skip(x)): the same function
    assert max_diff(model, folded, x) < 1e-5 and max_diff(model, folded, images(3, seed=7)) < 1e-5
    again = entroprune.load(entroprune.save(folded, tmp_path / "dead.safetensors"))
    assert isinstance(again.layer3[2].conv2, Constant) and isinstance(again.layer3[2].conv1, Zero)
    with torch.no_grad():
        assert torch.equal(again(x), folded(x))


def test_emptied_linear_leaves_only_the_layers_after_it():
    """LeNet-5 with its middle classifier layer emptied is a constant function:
    everything before that layer is dead; only the last Linear still computes."""
    torch.manual_seed(0)
    model = create("lenet5").eval()
    with torch.no_grad():
        model.classifier[3].weight.zero_()                            # Linear(120, 84)
    folded, rep = fold(model, images(4))
    assert isinstance(folded.classifier[3], Constant)
    assert all(isinstance(m, Zero) for m in (*folded.features, *folded.classifier[:3]))
    assert rep["macs_after"] == 84 * 10 and rep["conv_linear_after"] == 1
    x = images(5, seed=3)
    with torch.no_grad():
        expected = model.classifier[5](torch.relu(model.classifier[3].bias)).expand(5, 10)
        assert torch.allclose(folded(x), expected, atol=1e-6)
    assert max_diff(model, folded, x) < 1e-6


def test_shipped_resnet20_with_an_emptied_branch_keeps_its_predictions(fmnist_small):
    """Real Fashion-MNIST: the shipped checkpoint, one branch emptied; the
    fold removes two convolutions and changes no prediction."""
    model = entroprune.load(entroprune.pretrained_path("resnet20"))
    with torch.no_grad():
        model.layer2[1].conv2.weight.zero_()
    folded, rep = fold(model, fmnist_small.val_x[:32])
    x, y = fmnist_small.test_x[:2000], fmnist_small.test_y[:2000]
    with torch.no_grad():
        same = (model.eval()(x).argmax(1) == folded(x).argmax(1)).float().mean().item()
    print(f"\nresnet20, layer2.1 emptied: MACs {rep['macs_before']:,} -> {rep['macs_after']:,}, "
          f"test acc {evaluate(model, x, y):.2f} -> {evaluate(folded, x, y):.2f}, same predictions {same:.4f}")
    assert same == 1.0
    assert rep["macs_before"] - rep["macs_after"] == 2 * BRANCH_CONV_MACS
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())


def test_emptied_linear_on_a_sequence_is_left_alone():
    """A Linear applied over the last axis of (N, C, L) is not a per-channel
    constant of the Constant's layout: the pass skips it rather than fail."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(2), nn.Linear(26 * 26, 5)).eval()
    with torch.no_grad():
        model[2].weight.zero_()
    folded, rep = fold(model, images(2))
    assert not any(m["kind"] == "dead" for m in rep["merges"]) and type(folded[2]) is nn.Linear
    assert max_diff(model, folded, images(3, seed=2)) == 0.0
