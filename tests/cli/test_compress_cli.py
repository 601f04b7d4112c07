"""``compress``, ``prune``, ``search`` and ``demo`` end to end on the shipped
LeNet-5 and real Fashion-MNIST, with tiny settings."""

from __future__ import annotations

import json

from typer.testing import CliRunner

import entroprune
from entroprune.cli import app
from entroprune.measure import count_macs

runner = CliRunner()
TINY = ["--episodes", "4", "--warmup", "2", "--reward-images", "32", "--val-subset", "200", "--checkpoint-every", "2"]


def _last_json(output: str) -> dict:
    return json.loads(output.strip().splitlines()[-1])


def test_search_writes_the_folder_and_a_reconstructed_model(tmp_path):
    folder, model_path = tmp_path / "s", tmp_path / "best.safetensors"
    res = runner.invoke(app, ["search", "pretrained:lenet5", "--target-macs", "2x", *TINY, "--out", str(folder),
                              "--save-model", str(model_path)])
    assert res.exit_code == 0, res.output
    info = _last_json(res.stdout)
    assert info["episodes"] == 4 and abs(info["macs_fraction"] - 0.5) < 0.01
    for name in ("search_log.jsonl", "search.ckpt", "best_policy.json", "search_result.json",
                 "search_rewards.png", "search_policy.png"):
        assert (folder / "search" / name).exists(), name
    small = entroprune.load(model_path)
    base = entroprune.load(entroprune.pretrained_path("lenet5"))
    assert abs(count_macs(small, (1, 28, 28)) / count_macs(base, (1, 28, 28)) - 0.5) < 0.01
    assert [h["op"] for h in small.entroprune_history][-2:] == ["rl_search", "reconstruct"]


def test_bad_search_options_are_clear_errors(tmp_path):
    res = runner.invoke(app, ["search", "pretrained:lenet5", "--reward", "nope", "--out", str(tmp_path)])
    assert res.exit_code == 2 and "unknown --reward" in res.output
    res = runner.invoke(app, ["search", "pretrained:lenet5", "--episodes", "2", "--warmup", "5",
                              "--out", str(tmp_path)])
    assert res.exit_code == 2 and "every episode would be random" in res.output
    res = runner.invoke(app, ["search", "pretrained:lenet5", "--target-macs", "100x", *TINY, "--out", str(tmp_path)])
    assert res.exit_code == 2 and "lbound" in res.output and "Traceback" not in res.output


def test_compress_writes_a_report_and_a_rerun_reuses_it(tmp_path, fmnist_small):
    folder = tmp_path / "c"
    args = ["compress", "pretrained:lenet5", "--target-macs", "2x", "--method", "l1", "--out", str(folder),
            "--finetune-epochs", "1", "--latency-repeats", "3", "--batch", "1"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    report = json.loads((folder / "report.json").read_text())
    assert abs(report["macs_ratio"] - 2.0) < 0.05
    # the pruned model is usable before fine-tuning thanks to the refit, and distillation kept it close
    assert report["after_reconstruct"]["val_acc"] > report["after_prune"]["val_acc"]
    assert report["finetune"]["distill"] and report["after_finetune"]["val_acc"] > 85.0
    assert set(report["latency"]) == {"onnxruntime", "torch"}
    assert len(report["provenance"]["commit"]) == 40 and report["provenance"]["command"]
    model = entroprune.load(folder / "model.safetensors")
    assert [h["op"] for h in model.entroprune_history][-3:] == ["prune", "reconstruct", "finetune"]
    assert not (folder / "finetune.ckpt").exists() and (folder / "widths.png").exists()
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and "reusing the finished compression" in again.output
    other = runner.invoke(app, [*args[:3], "3x", *args[4:]])
    assert other.exit_code == 2 and "target: 2x there, 3x here" in other.output and "--restart" in other.output


def test_prune_to_a_latency_target_reports_the_measured_speedup(tmp_path):
    out = tmp_path / "fast.safetensors"
    res = runner.invoke(app, ["prune", "pretrained:resnet20", "--target-latency", "1.5x", "--threads", "1",
                              "--batch", "1", "--latency-repeats", "10", "--out", str(out)])
    assert res.exit_code == 0, res.output
    info = _last_json(res.stdout)
    assert info["target_speedup"] == 1.5 and info["measured_speedup"] > 1.0
    assert info["val_acc"] > 60.0                               # reconstructed by default (raw: chance)
    assert entroprune.load(out).entroprune_history[-2]["target_kind"] == "latency"


def test_demo_runs_the_documented_job(monkeypatch, tmp_path):
    """The demo's settings (a latency target, greedy_refit, distillation, INT8) reach the pipeline;
    the pipeline itself runs end to end in the compress tests above."""
    from entroprune.cli import compress_cmds

    seen = {}

    def fake_run(model_spec, cfg_kwargs, dataset, data_dir, seed, threads, out, **kw):
        seen.update(model=model_spec, dataset=dataset, out=out, **cfg_kwargs)
        return None, {"table": "| the before/after table |"}

    monkeypatch.setattr(compress_cmds, "run", fake_run)
    res = runner.invoke(app, ["demo", "--out", str(tmp_path / "d"), "--finetune-epochs", "2"])
    assert res.exit_code == 0, res.output
    assert seen == {"model": "pretrained:vgg_small", "dataset": "fashion_mnist", "out": tmp_path / "d",
                    "target": "3x", "target_kind": "latency", "method": "greedy_refit", "finetune_epochs": 2,
                    "quantize": True}
    assert "| the before/after table |" in res.output and "report.md" in res.output
