"""``search`` and ``compress`` end to end on the shipped LeNet-5 with tiny settings."""

from __future__ import annotations

import json

import typer
from typer.testing import CliRunner

import entroprune
from entroprune.cli.search_cmds import compress_cmd, search_cmd
from entroprune.measure import count_macs

runner = CliRunner()
app = typer.Typer()
app.command("search")(search_cmd)
app.command("compress")(compress_cmd)

TINY = ["--episodes", "4", "--warmup", "2", "--calib-size", "32", "--val-subset", "200", "--checkpoint-every", "2"]


def test_search_writes_the_folder_and_a_model(tmp_path):
    folder, model_path = tmp_path / "s", tmp_path / "best.safetensors"
    res = runner.invoke(app, ["search", "pretrained:lenet5", "--target-macs", "2x", *TINY, "--out", str(folder),
                              "--save-model", str(model_path)])
    assert res.exit_code == 0, res.output
    info = json.loads(res.stdout.strip().splitlines()[-1])
    assert info["episodes"] == 4 and abs(info["macs_fraction"] - 0.5) < 0.01
    for name in ("search_log.jsonl", "search.ckpt", "best_policy.json", "search_result.json",
                 "search_rewards.png", "search_policy.png"):
        assert (folder / name).exists(), name
    small = entroprune.load(model_path)
    base = entroprune.load(entroprune.pretrained_path("lenet5"))
    assert abs(count_macs(small, (1, 28, 28)) / count_macs(base, (1, 28, 28)) - 0.5) < 0.01


def test_bad_options_are_clear_errors(tmp_path):
    res = runner.invoke(app, ["search", "pretrained:lenet5", "--reward", "nope", "--out", str(tmp_path)])
    assert res.exit_code == 2 and "unknown --reward" in res.output
    res = runner.invoke(app, ["search", "pretrained:lenet5", "--target-macs", "100x", *TINY, "--out", str(tmp_path)])
    assert res.exit_code == 2 and "lbound" in res.output


def test_compress_writes_a_report(tmp_path):
    folder = tmp_path / "c"
    res = runner.invoke(app, ["compress", "pretrained:lenet5", "--target-macs", "2x", *TINY, "--out", str(folder),
                              "--finetune-epochs", "1", "--latency-repeats", "3"])
    assert res.exit_code == 0, res.output
    report = json.loads((folder / "report.json").read_text())
    assert abs(report["macs_ratio"] - 2.0) < 0.05
    assert report["after_finetune"]["val_acc"] > 80.0
    assert report["search"]["best"]["channels"] == json.loads(
        (folder / "search" / "best_policy.json").read_text())["channels"]
    assert "search/search_policy.png" in (folder / "report.md").read_text()
    model = entroprune.load(folder / "model.safetensors")
    assert model.entroprune_history[-1]["op"] == "rl_search"
    assert not (folder / "finetune.ckpt").exists() and (folder / "widths.png").exists()
