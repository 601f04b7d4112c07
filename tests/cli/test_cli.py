import json

from typer.testing import CliRunner

from entroprune.cli import app

runner = CliRunner()


def test_models_lists_the_zoo():
    res = runner.invoke(app, ["models"])
    assert res.exit_code == 0
    assert "resnet20" in res.output and "mobilenetv2" in res.output


def test_info_prints_per_layer_table():
    res = runner.invoke(app, ["info", "lenet5"])
    assert res.exit_code == 0
    assert "features.0" in res.output and "117,600" in res.output and "416,520 MACs" in res.output


def test_eval_shipped_lenet(fmnist):
    res = runner.invoke(app, ["eval", "pretrained:lenet5"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["accuracy"] >= 89.5


def test_prune_then_eval(tmp_path):
    out = tmp_path / "p.safetensors"
    res = runner.invoke(app, ["prune", "pretrained:lenet5", "--target-macs", "2x", "--out", str(out)])
    assert res.exit_code == 0, res.output
    info = json.loads(res.output.strip().splitlines()[-1])
    assert abs(info["macs_ratio"] - 2.0) <= 0.04
    res = runner.invoke(app, ["info", str(out)])
    assert "history: prune l1" in res.output


def test_bad_inputs_are_clear_errors(tmp_path):
    res = runner.invoke(app, ["prune", "pretrained:lenet5", "--target-macs", "five"])
    assert res.exit_code == 2 and "write '5x'" in res.output
    res = runner.invoke(app, ["prune", "pretrained:lenet5", "--method", "magic"])
    assert res.exit_code == 2 and "unknown --method" in res.output
    res = runner.invoke(app, ["eval", "nosuchmodel"])
    assert res.exit_code == 2 and "neither a model file" in res.output
    res = runner.invoke(app, ["eval", "pretrained:lenet5", "--data-dir", str(tmp_path)])
    assert res.exit_code == 2 and "dataset-fashion-mnist" in res.output
    (tmp_path / "bad.safetensors").write_bytes(b"garbage")
    res = runner.invoke(app, ["info", str(tmp_path / "bad.safetensors")])
    assert res.exit_code == 2 and "not a readable" in res.output
    assert "Traceback" not in res.output
