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


def test_model_that_does_not_fit_the_data_is_a_clear_error(tmp_path):
    import entroprune

    rgb = tmp_path / "rgb.safetensors"
    entroprune.save(entroprune.create("lenet5", in_channels=3), rgb)
    res = runner.invoke(app, ["eval", str(rgb)])
    assert res.exit_code == 2
    assert "takes 3-channel images but fashion_mnist has 1-channel" in res.output
    many = tmp_path / "100.safetensors"
    entroprune.save(entroprune.create("lenet5", num_classes=100), many)
    res = runner.invoke(app, ["prune", str(many), "--target-macs", "2x"])
    assert res.exit_code == 2 and "predicts 100 classes" in res.output


def test_prune_options_and_their_errors(tmp_path):
    out = tmp_path / "u.safetensors"
    res = runner.invoke(app, ["prune", "pretrained:resnet20", "--scope", "uniform", "--target-macs", "2x",
                              "--min-keep", "0.25", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert abs(json.loads(res.output.strip().splitlines()[-1])["macs_ratio"] - 2.0) <= 0.04
    res = runner.invoke(app, ["prune", "pretrained:resnet20", "--scope", "layerwise"])
    assert res.exit_code == 2 and "scope='layerwise' must be global or uniform" in res.output
    res = runner.invoke(app, ["prune", "pretrained:lenet5", "--tolerance", "0"])
    assert res.exit_code == 2 and "tolerance=0.0 must be in (0, 0.5)" in res.output
    # a tight tolerance LeNet-5's coarse channels cannot meet: the message says what to loosen
    res = runner.invoke(app, ["prune", "pretrained:lenet5", "--target-macs", "0.37", "--tolerance", "0.0001"])
    assert res.exit_code == 2 and "looser tolerance" in res.output


def test_export_and_analyze_bad_inputs(tmp_path):
    res = runner.invoke(app, ["export", "pretrained:lenet5", "--out", str(tmp_path / "m.onnx"),
                              "--input-shape", "3,32,32"])
    assert res.exit_code == 2 and "pass the right --input-shape" in res.output
    res = runner.invoke(app, ["analyze", "pretrained:lenet5", "--calib-size", "0", "--out", str(tmp_path)])
    assert res.exit_code == 2 and "--calib-size must be at least 1" in res.output
