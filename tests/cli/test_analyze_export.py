import json

import numpy as np
import onnxruntime as ort
import torch
from typer.testing import CliRunner

import entroprune
from entroprune.cli import app

runner = CliRunner()


def test_analyze_command(tmp_path, fmnist):
    res = runner.invoke(app, ["analyze", "pretrained:lenet5", "--out", str(tmp_path), "--calib-size", "64"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["network_aura"] > 0
    assert (tmp_path / "heatmap_aura.png").exists() and (tmp_path / "entropy.json").exists()
    res = runner.invoke(app, ["analyze", "pretrained:lenet5", "--connectivity", "6"])
    assert res.exit_code == 2 and "4 or 8" in res.output


def test_onnx_export_of_a_pruned_model_matches_pytorch(tmp_path):
    pruned = tmp_path / "p.safetensors"
    res = runner.invoke(app, ["prune", "pretrained:resnet20", "--target-macs", "3x", "--method", "aura",
                              "--out", str(pruned)])
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
