"""``fold_cmd`` (the ``entroprune fold`` command), run through typer."""

import json

import torch
import torch.nn as nn
import typer
from typer.testing import CliRunner

import entroprune
from entroprune.cli.fold_cmds import fold_cmd
from entroprune.models import create

from .util import images, randomize_batchnorm

app = typer.Typer()
app.command()(fold_cmd)
runner = CliRunner()


def test_fold_cmd_writes_a_folded_model_and_report(tmp_path):
    torch.manual_seed(0)
    model = randomize_batchnorm(create("resnet20"), images(16, seed=1))
    model.layer1[0].relu1, model.layer1[0].relu2 = nn.Identity(), nn.Identity()
    src, out, rep = tmp_path / "m.safetensors", tmp_path / "f.safetensors", tmp_path / "fold.json"
    entroprune.save(model, src)
    res = runner.invoke(app, [str(src), "--out", str(out), "--force", "--report", str(rep), "--examples", "8"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output.strip().splitlines()[-1])
    assert summary["conv_linear"] == [22, 21]
    assert "merged skip: layer1.0.conv1 + layer1.0.shortcut" in res.output
    report = json.loads(rep.read_text())
    assert report["op"] == "fold" and report["conv_linear_after"] == 21
    folded = entroprune.load(out)
    assert folded.entroprune_history[-1]["merges"] == report["merges"]
    assert folded.layer1[0].conv1.kernel_size == (5, 5)


def test_fold_cmd_bn_only_keeps_every_conv(tmp_path):
    torch.manual_seed(0)
    model = randomize_batchnorm(create("resnet20"), images(16, seed=1))
    model.layer1[0].relu1 = nn.Identity()
    src, out = tmp_path / "m.safetensors", tmp_path / "f.safetensors"
    entroprune.save(model, src)
    res = runner.invoke(app, [str(src), "--out", str(out), "--bn-only", "--force", "--examples", "4"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output.strip().splitlines()[-1])["conv_linear"] == [22, 22]
    folded = entroprune.load(out)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())


def test_fold_cmd_removes_an_emptied_branch_unless_told_not_to(tmp_path):
    torch.manual_seed(0)
    model = randomize_batchnorm(create("resnet20"), images(16, seed=1))
    with torch.no_grad():
        model.layer2[1].conv2.weight.zero_()
    src = entroprune.save(model, tmp_path / "m.safetensors")
    layers, printed = {}, {}
    for flag in ("--dead", "--no-dead"):
        out = tmp_path / f"f{flag}.safetensors"
        res = runner.invoke(app, [str(src), "--out", str(out), flag, "--examples", "4"])
        assert res.exit_code == 0, res.output
        layers[flag], printed[flag] = json.loads(res.output.strip().splitlines()[-1])["conv_linear"], res.output
    assert layers == {"--dead": [22, 20], "--no-dead": [22, 22]}
    assert "removed dead: layer2.1.conv1 + layer2.1.bn1 + layer2.1.relu1 + layer2.1.conv2" in printed["--dead"]
    assert "removed dead" not in printed["--no-dead"]


def test_fold_cmd_evaluates_accuracy(tmp_path):
    out = tmp_path / "l5.safetensors"
    res = runner.invoke(app, ["pretrained:lenet5", "--out", str(out), "--evaluate"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output.strip().splitlines()[-1])
    assert summary["test_acc"] == summary["test_acc_before"] and summary["merged"] == 0


def test_fold_cmd_bad_input_shape_is_a_clear_error(tmp_path):
    res = runner.invoke(app, ["lenet5", "--out", str(tmp_path / "x.safetensors"), "--input-shape", "28x28"])
    assert res.exit_code == 2 and "--input-shape" in res.output
