import json
import math
import statistics

import numpy as np
import onnxruntime as ort
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import entroprune
from entroprune.cli import app
from entroprune.measure import layer_costs

runner = CliRunner()


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_png(path):
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE), f"{path.name} is not a PNG"
    assert data[12:16] == b"IHDR" and data.endswith(b"IEND\xaeB`\x82"), f"{path.name} is truncated"
    with Image.open(path) as im:
        im.verify()                                      # chunk CRCs and structure
    with Image.open(path) as im:
        assert im.width > 50 and im.height > 50


def test_analyze_command(tmp_path, fmnist):
    res = runner.invoke(app, ["analyze", "pretrained:lenet5", "--out", str(tmp_path), "--calib-size", "64"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["network_aura"] > 0
    assert (tmp_path / "heatmap_aura.png").exists() and (tmp_path / "entropy.json").exists()
    res = runner.invoke(app, ["analyze", "pretrained:lenet5", "--connectivity", "6"])
    assert res.exit_code == 2 and "4 or 8" in res.output


def test_analyze_writes_per_filter_entropies_and_figures(tmp_path, fmnist):
    levels, calib = 4, 48                                # aura entropy <= 2 log2 4 = 4 bits
    res = runner.invoke(app, ["analyze", "pretrained:lenet5", "--out", str(tmp_path), "--calib-size",
                              str(calib), "--levels", str(levels), "--connectivity", "4"])
    assert res.exit_code == 0, res.output
    printed = json.loads(res.output)
    assert sorted(printed["files"]) == ["entropy.json", "heatmap_aura.png", "layers.png"]
    for name in ("heatmap_aura.png", "layers.png"):
        assert_png(tmp_path / name)
    assert (tmp_path / "entropy.json").stat().st_size > 0
    result = json.loads((tmp_path / "entropy.json").read_text())

    assert result["calibration_images"] == calib
    assert (result["config"]["levels"], result["config"]["connectivity"]) == (levels, 4)
    model = entroprune.load(entroprune.pretrained_path("lenet5"))
    convs = {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)}
    out_hw = {r.name: r.out_shape[1] * r.out_shape[2] for r in layer_costs(model, (1, 28, 28)) if r.name in convs}
    assert set(result["conv_layers"]) == set(convs) and len(convs) == 2
    top = 2 * math.log2(levels)
    for name, conv in convs.items():
        layer = result["conv_layers"][name]
        aura, mass = layer["aura_per_filter"], layer["mass_per_filter"]
        assert layer["filters"] == len(aura) == len(mass) == conv.out_channels
        assert all(0.0 <= v <= top + 1e-5 for v in aura), (name, aura)
        assert all(0.0 <= v <= math.log2(out_hw[name]) + 1e-5 for v in mass), (name, mass)
        assert max(aura) > 0                             # real images: not every map is constant
        assert layer["aura"] == pytest.approx(statistics.fmean(aura), rel=1e-6, abs=1e-9)
        assert layer["mass"] == pytest.approx(statistics.fmean(mass), rel=1e-6, abs=1e-9)
    layers = result["conv_layers"].values()
    assert result["network"]["aura"] == pytest.approx(statistics.fmean(v["aura"] for v in layers), rel=1e-6)
    assert result["network"]["mass"] == pytest.approx(statistics.fmean(v["mass"] for v in layers), rel=1e-6)
    assert printed["network_aura"] == pytest.approx(result["network"]["aura"], abs=1e-4)


def test_onnx_export_of_a_pruned_model_matches_pytorch(tmp_path):
    pruned = tmp_path / "p.safetensors"
    res = runner.invoke(app, ["prune", "pretrained:resnet20", "--target-macs", "3x", "--method", "aura",
                              "--calib-size", "128", "--out", str(pruned)])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["export", str(pruned), "--out", str(tmp_path / "p.onnx")])
    assert res.exit_code == 0, res.output
    model = entroprune.load(pruned)
    x = torch.randn(5, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model(x).numpy()
    session = ort.InferenceSession(str(tmp_path / "p.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {"images": x.numpy()})[0]
    assert got.shape == (5, 10)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_torchscript_export(tmp_path):
    res = runner.invoke(app, ["export", "pretrained:lenet5", "--format", "torchscript",
                              "--out", str(tmp_path / "m.pt")])
    assert res.exit_code == 0, res.output
    scripted = torch.jit.load(str(tmp_path / "m.pt"))
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(scripted(x), entroprune.load(entroprune.pretrained_path("lenet5"))(x))
    res = runner.invoke(app, ["export", "pretrained:lenet5", "--format", "tflite", "--out", str(tmp_path / "x")])
    assert res.exit_code == 2 and "onnx or torchscript" in res.output
