"""Static INT8 quantization (entroprune.deploy) on the shipped LeNet-5 and real
Fashion-MNIST, the errors of models that do not quantize, and the CLI."""

import importlib
import json
import tempfile

import numpy as np
import onnx
import pytest
import torch
import torch.nn as nn
from typer.testing import CliRunner

import entroprune
from entroprune.cli import app
from entroprune.deploy import QuantizeConfig, QuantizeError, onnx_accuracy, onnx_logits, quantize

runner = CliRunner()

REPORT_KEYS = {"out", "format", "config", "calibration_images", "preprocessed", "int8_nodes", "float_nodes",
               "fp32_bytes", "int8_bytes", "size_ratio", "max_abs_logit_deviation", "deviation_images",
               "val_images", "fp32_accuracy", "int8_accuracy", "accuracy_delta", "top1_agreement"}


@pytest.fixture(scope="module")
def lenet():
    return entroprune.load(entroprune.pretrained_path("lenet5"))


def test_lenet5_int8_is_smaller_and_as_accurate(tmp_path, fmnist, lenet):
    out = tmp_path / "lenet5.int8.onnx"
    vx, vy = fmnist.val_x[:1000], fmnist.val_y[:1000]
    lenet.train()                                            # quantize exports in eval mode, then restores
    rep = quantize(lenet, fmnist.calibration(256, seed=0), out, val=(vx, vy))
    assert lenet.training
    assert REPORT_KEYS <= set(rep)
    assert out.is_file() and out.stat().st_size == rep["int8_bytes"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lenet5.int8.onnx"]       # no temp file left
    assert rep["int8_bytes"] * 2.5 < rep["fp32_bytes"]       # 8-bit weights: ~4x smaller, minus the scales
    assert rep["calibration_images"] == 256 and rep["val_images"] == 1000
    assert rep["fp32_accuracy"] > 85 and abs(rep["int8_accuracy"] - rep["fp32_accuracy"]) <= 1.0
    assert 0 < rep["max_abs_logit_deviation"] < 0.1 * rep["max_abs_logit_fp32"]
    # every layer runs on integers but the first convolution, kept in float on purpose (faster in ORT),
    # and its rectifier and pooling, which then follow it in float
    assert rep["int8_nodes"]["Conv"] == 1 and rep["int8_nodes"]["Gemm"] == 3
    assert rep["float_nodes"] == {"Conv": 1, "MaxPool": 1, "Relu": 1} and len(rep["kept_float"]) == 1

    graph = onnx.load(str(out)).graph
    ops = {n.op_type for n in graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops
    int8_weights = [t for t in graph.initializer if t.data_type == onnx.TensorProto.INT8 and len(t.dims) == 4]
    assert len(int8_weights) == 1                            # the second conv's kernel, stored as int8
    # per-channel symmetric weights: one scale per output channel, zero points all 0
    dq_weights = [n for n in graph.node if n.op_type == "DequantizeLinear" and n.input[0] in
                  {t.name for t in int8_weights}]
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in graph.initializer}
    for n in dq_weights:
        w = inits[n.input[0]]
        assert inits[n.input[1]].shape == (w.shape[0],) and not inits[n.input[2]].any()

    # the helpers measure the written file the same way
    assert onnx_accuracy(out, vx, vy, batch_size=300) == pytest.approx(rep["int8_accuracy"])
    logits = onnx_logits(out, vx[:7])
    assert logits.shape == (7, 10) and logits.dtype == np.float32

    every = quantize(lenet, fmnist.calibration(64, seed=1), out, config=QuantizeConfig(float_first_conv=False))
    assert every["int8_nodes"]["Conv"] == 2 and every["float_nodes"] == {} and every["kept_float"] == []
    assert every["fp32_accuracy"] is None and every["calibration_images"] == 64     # no val: no accuracy


class _FancySwish(torch.autograd.Function):
    """x * sigmoid(x), exported as a custom-domain op no runtime knows."""

    @staticmethod
    def forward(ctx, x):
        return x * torch.sigmoid(x)

    @staticmethod
    def symbolic(g, x):
        return g.op("acme::FancySwish", x)


class _CustomOpNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(1, 4, 3), nn.Linear(4 * 26 * 26, 10)

    def forward(self, x):
        return self.fc(_FancySwish.apply(self.conv(x)).flatten(1))


class _Float64ConvNet(nn.Module):
    """A real operator ONNX Runtime's CPU provider refuses: Conv on float64."""

    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(1, 4, 3).double(), nn.Linear(4 * 26 * 26, 10)

    def forward(self, x):
        return self.fc(self.conv(x.double()).float().flatten(1))


def _fractional_pool_net():
    """A real layer the ONNX exporter has no translation of (opset 17)."""
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.FractionalMaxPool2d(2, output_size=(13, 13)),
                         nn.Flatten(), nn.Linear(4 * 13 * 13, 10))


@pytest.mark.parametrize("make, operator, hint", [
    (_CustomOpNet, "acme::FancySwish", "standard PyTorch ops"),
    (_Float64ConvNet, "Conv", "float32"),
    (_fractional_pool_net, "aten::fractional_max_pool2d", "replace that layer"),
], ids=["custom-op", "float64-conv", "fractional-maxpool"])
def test_refused_operator_is_named_and_nothing_is_left(tmp_path, monkeypatch, make, operator, hint):
    sys_tmp = tmp_path / "systmp"                            # where our and ORT's temp folders go
    sys_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(sys_tmp))
    outdir = tmp_path / "out"
    outdir.mkdir()
    (outdir / "old.onnx").write_bytes(b"previous model")     # a failed run must not touch an existing file
    with pytest.raises(QuantizeError) as err:
        quantize(make(), torch.randn(8, 1, 28, 28), outdir / "old.onnx")
    assert err.value.operator == operator
    assert operator in str(err.value) and hint in str(err.value) and "\n" not in str(err.value)
    assert [p.name for p in outdir.iterdir()] == ["old.onnx"]
    assert (outdir / "old.onnx").read_bytes() == b"previous model"
    assert list(sys_tmp.iterdir()) == []


def test_quantizer_failure_midway_leaves_nothing(tmp_path, monkeypatch, lenet):
    q = importlib.import_module("entroprune.deploy.quantize")   # the package's ``quantize`` is the function

    sys_tmp = tmp_path / "systmp"
    sys_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(sys_tmp))

    calls = []

    def broken(self):              # the calibration images run out with an error, inside ORT's calibrator
        calls.append(1)
        if len(calls) > 1:
            raise RuntimeError("simulated crash inside the quantizer")
        return {self.name: self.images[:2]}
    monkeypatch.setattr(q._ImageReader, "get_next", broken)
    with pytest.raises(QuantizeError, match="simulated crash"):
        quantize(lenet, torch.randn(4, 1, 28, 28), tmp_path / "m.onnx")
    assert len(calls) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["systmp"] and list(sys_tmp.iterdir()) == []


def test_bad_arguments_are_clear(tmp_path, lenet):
    with pytest.raises(ValueError, match="should end in .onnx"):
        quantize(lenet, torch.randn(4, 1, 28, 28), tmp_path / "m.pt")
    with pytest.raises(ValueError, match="non-empty"):
        quantize(lenet, torch.randn(0, 1, 28, 28), tmp_path / "m.onnx")
    with pytest.raises(ValueError, match="minmax, entropy, percentile"):
        QuantizeConfig(method="kl")
    with pytest.raises(ValueError, match="quint8 or qint8"):
        QuantizeConfig(activation_type="int4")
    with pytest.raises(ValueError, match="opset >= 17"):
        QuantizeConfig(opset=13)
    assert list(tmp_path.iterdir()) == []


def test_cli_quantize_end_to_end(tmp_path, fmnist):
    out = tmp_path / "l5.int8.onnx"
    res = runner.invoke(app, ["quantize", "pretrained:lenet5", "--out", str(out), "--calib-size", "64"])
    assert res.exit_code == 0, res.output
    assert "validation accuracy (5,000 images): fp32 90.78%" in res.output and "smaller" in res.output
    summary = json.loads(res.output.strip().splitlines()[-1])
    assert summary["calibration_images"] == 64 and summary["method"] == "minmax"
    assert abs(summary["int8_accuracy"] - summary["fp32_accuracy"]) <= 1.0
    assert out.stat().st_size == summary["int8_bytes"] < summary["fp32_bytes"]


def test_cli_errors_are_one_line(tmp_path):
    for args, words in [(["--out", str(tmp_path / "m.int8")], "must name an .onnx file"),
                        (["--out", str(tmp_path / "m.onnx"), "--method", "kl"], "unknown calibration method"),
                        (["--out", str(tmp_path / "m.onnx"), "--calib-size", "0"], "at least 1")]:
        res = runner.invoke(app, ["quantize", "pretrained:lenet5", *args])
        assert res.exit_code == 2 and words in res.output, res.output
        assert len(res.output.strip().splitlines()) == 1 and "Traceback" not in res.output
    assert list(tmp_path.iterdir()) == []


def test_higher_opset_is_converted(tmp_path, lenet):
    out = tmp_path / "m19.onnx"
    rep = quantize(lenet, torch.randn(16, 1, 28, 28), out, config=QuantizeConfig(opset=19, calib_size=16))
    assert {o.version for o in onnx.load(str(out)).opset_import if o.domain in ("", "ai.onnx")} == {19}
    assert rep["max_abs_logit_deviation"] < 0.1 * rep["max_abs_logit_fp32"]
