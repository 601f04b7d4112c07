import json

import typer
from typer.testing import CliRunner

import entroprune
from entroprune.cli.sparsify_cmds import sparsify_cmd

runner = CliRunner()
app = typer.Typer()
app.command("sparsify")(sparsify_cmd)
app.command("noop")(lambda: None)   # a second command keeps "sparsify" a subcommand


def test_single_run_writes_a_loadable_model(tmp_path):
    out = tmp_path / "s.safetensors"
    res = runner.invoke(app, ["sparsify", "pretrained:lenet5", "--target", "0.3", "--out", str(out),
                              "--calib-images", "256", "--patches", "1024", "--report", str(tmp_path / "r")])
    assert res.exit_code == 0, res.output
    info = json.loads(res.output.strip().splitlines()[-1])
    assert info["channel_sparsity"] > 0.25 and info["val_acc"] > 80.0
    model = entroprune.load(out)
    assert model.entroprune_history[-1]["op"] == "sparsify"
    assert round(model.entroprune_info["val_acc_after_sparsify"], 2) == info["val_acc"]
    rep = json.loads((tmp_path / "r" / "report.json").read_text())
    assert rep["target"] == 0.3 and "features.3" in rep["layers"]


def test_sweep_writes_json_and_plot(tmp_path):
    folder = tmp_path / "sweep"
    res = runner.invoke(app, ["sparsify", "pretrained:lenet5", "--sweep", "0.1,0.3,0.5", "--sweep-over", "target",
                              "--calib-images", "256", "--patches", "1024", "--max-iter", "10",
                              "--report", str(folder)])
    assert res.exit_code == 0, res.output
    doc = json.loads((folder / "sweep.json").read_text())
    rows = doc["rows"]
    assert [r["target"] for r in rows] == [0.1, 0.3, 0.5]
    assert [r["channel_sparsity"] for r in rows] == sorted(r["channel_sparsity"] for r in rows)
    assert rows[0]["val_acc"] > rows[-1]["val_acc"] - 1.0 and doc["val_acc_before"] > 90.0
    assert (folder / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_clear_errors(tmp_path):
    res = runner.invoke(app, ["sparsify", "pretrained:lenet5", "--sweep", "0.1,abc"])
    assert res.exit_code == 2 and "comma-separated" in res.output
    res = runner.invoke(app, ["sparsify", "pretrained:lenet5", "--sweep", "0.1", "--sweep-over", "ridge"])
    assert res.exit_code == 2 and "--sweep-over" in res.output
    res = runner.invoke(app, ["sparsify", "pretrained:lenet5", "--sweep", "0.1", "--out", str(tmp_path / "x")])
    assert res.exit_code == 2 and "--report" in res.output
    res = runner.invoke(app, ["sparsify", "pretrained:lenet5", "--target", "1.5"])
    assert res.exit_code == 2 and "--target" in res.output
    res = runner.invoke(app, ["sparsify", "pretrained:lenet5", "--eps-e", "0"])
    assert res.exit_code == 2 and "eps_E" in res.output
    res = runner.invoke(app, ["sparsify", "pretrained:lenet5", "--sweep", "0.5,1.2", "--sweep-over", "target",
                              "--calib-images", "16", "--patches", "64", "--max-iter", "2",
                              "--report", str(tmp_path / "s")])
    assert res.exit_code == 2 and "--sweep target must be in [0, 1), got 1.2" in res.output
    assert "Traceback" not in res.output


def test_a_model_ges_cannot_change_is_an_error_naming_the_skipped_layers(tmp_path):
    import entroprune
    from tests.architectures import build

    path = tmp_path / "grouped.safetensors"
    entroprune.save(build("grouped"), path)
    res = runner.invoke(app, ["sparsify", str(path), "--target", "0.5", "--calib-images", "32", "--patches", "256",
                              "--max-iter", "3", "--out", str(tmp_path / "out.safetensors")])
    assert res.exit_code == 2 and "removed no channel" in res.output
    assert "skipped grouped.0: grouped or depthwise convolution" in res.output
    assert not (tmp_path / "out.safetensors").exists()
