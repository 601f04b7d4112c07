"""Folding zoo models whose rectifiers were replaced by the identity (as
EASIER / NEPENTHE leave them): fewer layers, close outputs, save/load."""

import subprocess
import sys

import pytest
import torch
import torch.nn as nn

import entroprune
from entroprune.depth import FoldConfig, Zero, fold
from entroprune.models import create

from .util import images, max_diff, randomize_batchnorm


def _resnet20_with_linear_block():
    torch.manual_seed(0)
    model = randomize_batchnorm(create("resnet20"), images(32, seed=1))
    block = model.layer2[0]                  # the downsampling block (1x1-conv shortcut)
    block.relu1, block.relu2 = nn.Identity(), nn.Identity()
    return model


@pytest.fixture(scope="module")
def resnet_folded():
    model = _resnet20_with_linear_block()
    x = images(8)
    folded, rep = fold(model, x, FoldConfig(force=True))
    return model, folded, rep, x


def test_resnet_block_without_force_only_folds_batchnorm():
    model, x = _resnet20_with_linear_block(), images(8)
    folded, rep = fold(model, x)
    assert rep["conv_linear_after"] == rep["conv_linear_before"] == 22
    assert sum(m["kind"] == "bn" for m in rep["merges"]) == 21
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    (skip,) = [s for s in rep["skipped"] if s["kind"] == "chain"]
    assert skip["layers"] == ["layer2.0.conv1", "layer2.0.conv2"] and "raise MACs" in skip["reason"]
    assert rep["max_abs_deviation"] < 1e-4 and max_diff(model, folded, x) < 1e-4


def test_linear_resnet_block_folds_to_one_conv(resnet_folded):
    model, folded, rep, x = resnet_folded
    print(f"\nresnet20, block layer2.0 linear, forced fold: max dev {rep['max_abs_deviation']:.4g}, "
          f"mean dev {rep['mean_abs_deviation']:.4g}, output max {rep['output_max_abs']:.4g}")
    assert rep["conv_linear_before"] == 22 and rep["conv_linear_after"] == 20
    block = folded.layer2[0]
    assert block.conv1.kernel_size == (7, 7) and block.conv1.stride == (2, 2)
    assert isinstance(block.conv2, nn.Identity) and isinstance(block.shortcut[0], Zero)
    kinds = [(m["kind"], m["layers"]) for m in rep["merges"] if m["kind"] != "bn"]
    assert kinds == [("chain", ["layer2.0.conv1", "layer2.0.conv2"]),
                     ("skip", ["layer2.0.conv1", "layer2.0.shortcut.0"])]
    chain = rep["merges"][-2]
    assert chain["interior_max_dev"] < 1e-4 < chain["border_max_dev"]
    with torch.no_grad():
        stem = lambda m: m.layer1(m.relu(m.bn1(m.conv1(x))))  # noqa: E731
        h_ref, h = stem(model), stem(folded)                     # (N, 16, 28, 28): before the block
        assert float((h_ref - h).abs().max()) < 1e-4
        b_ref, b = model.layer2[0](h_ref), folded.layer2[0](h)   # (N, 32, 14, 14)
        ring = torch.ones(14, 14, dtype=torch.bool)
        ring[1:-1, 1:-1] = False                                 # the merge's border ring
        assert float((b_ref - b).abs()[..., ~ring].max()) < 1e-4  # interior of the block output
    # the ring error propagates but the logits stay close
    assert rep["max_abs_deviation"] < 0.2 * rep["output_max_abs"]
    assert rep["max_abs_deviation"] == pytest.approx(max_diff(model, folded, x), rel=1e-6)


def test_fold_records_history(resnet_folded):
    model, folded, rep, _ = resnet_folded
    assert folded.entroprune_history[-1] is rep and rep["op"] == "fold"
    assert not hasattr(model, "entroprune_history") or model.entroprune_history == []
    assert rep["macs_after"] > rep["macs_before"]   # forced: the 7x7 kernel costs more


def test_folded_model_save_load_is_bit_exact(resnet_folded, tmp_path):
    _, folded, rep, x = resnet_folded
    path = entroprune.save(folded, tmp_path / "folded.safetensors")
    again = entroprune.load(path)
    assert isinstance(again.layer2[0].shortcut[0], Zero) and again.layer2[0].conv1.kernel_size == (7, 7)
    with torch.no_grad():
        assert torch.equal(folded(x), again(x))
    assert again.entroprune_history[-1]["merges"] == rep["merges"]


def test_folded_model_reloads_in_a_fresh_process(resnet_folded, tmp_path):
    """``Zero`` is registered with save/load when ``entroprune.depth`` is imported."""
    _, folded, _, x = resnet_folded
    entroprune.save(folded, tmp_path / "f.safetensors")
    with torch.no_grad():
        torch.save({"x": x, "y": folded(x)}, tmp_path / "io.pt")
    code = ("import torch, entroprune, entroprune.depth\n"
            f"m = entroprune.load({str(tmp_path / 'f.safetensors')!r})\n"
            f"io = torch.load({str(tmp_path / 'io.pt')!r})\n"
            "with torch.no_grad(): assert torch.equal(m(io['x']), io['y'])\n"
            "print('identical')\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0 and "identical" in res.stdout, res.stderr


def test_model_with_nothing_to_fold_is_unchanged():
    torch.manual_seed(0)
    model = create("lenet5").eval()
    x = images(4)
    folded, rep = fold(model, x)
    assert rep["merges"] == [] and rep["skipped"] == []
    assert rep["conv_linear_after"] == rep["conv_linear_before"] == 5
    assert rep["macs_after"] == rep["macs_before"] and rep["max_abs_deviation"] == 0.0
    assert [type(m) for m in folded.modules()] == [type(m) for m in model.modules()]
    ref, new = model.state_dict(), folded.state_dict()
    assert ref.keys() == new.keys() and all(torch.equal(ref[k], new[k]) for k in ref)


def test_vgg_chain_merge_that_saves_macs_needs_no_force():
    torch.manual_seed(0)
    model = randomize_batchnorm(create("vgg_small"), images(16, seed=1))
    model.features[9] = nn.Identity()        # between the 32->64 and 64->64 convolutions
    x = images(4)
    folded, rep = fold(model, x)
    chain = next(m for m in rep["merges"] if m["kind"] == "chain")
    assert chain["layers"] == ["features.7", "features.10"] and chain["macs_after"] < chain["macs_before"]
    assert folded.features[7].kernel_size == (5, 5) and rep["conv_linear_after"] == 8
    assert chain["interior_max_dev"] < 1e-4 and rep["macs_after"] < rep["macs_before"]


def test_mobilenetv2_linear_inverted_residuals():
    """Inverted residuals without inner nonlinearity: expand 1x1 + depthwise 3x3 +
    project 1x1 merge into one dense 3x3 when that saves MACs; the identity skip
    of MobileNetV2 is an addition in forward code and stays."""
    torch.manual_seed(0)
    model = randomize_batchnorm(create("mobilenetv2"), images(16, seed=1))
    for i in (2, 3):                          # 3: has an identity skip
        model.features[i].conv[0][2] = nn.Identity()
        model.features[i].conv[1][2] = nn.Identity()
    x = images(4)
    folded, rep = fold(model, x)
    chains = [m for m in rep["merges"] if m["kind"] == "chain"]
    assert [c["layers"][0] for c in chains] == ["features.2.conv.0.0", "features.3.conv.0.0"]
    assert all(c["what"].endswith("-> dense 3x3") and c["macs_after"] < c["macs_before"] for c in chains)
    assert rep["conv_linear_after"] == rep["conv_linear_before"] - 4
    assert any(s["kind"] == "skip" and s["layers"][0] == "features.3.conv.0.0" and "forward code" in s["reason"]
               for s in rep["skipped"])
    assert rep["macs_after"] < rep["macs_before"]
    assert rep["max_abs_deviation"] < 0.2 * rep["output_max_abs"]
