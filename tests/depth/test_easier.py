"""EASIER (Quetu et al., arXiv 2404.18949): state-entropy ranking, the step
loop on the shipped LeNet-5 with real Fashion-MNIST, the stop rule, resumption,
the run folder's lock, squeeze-and-excitation gates and the random-removal
baseline."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn as nn
import typer

import entroprune
from entroprune.depth import easier as easier_mod
from entroprune.depth.easier import EasierConfig, easier, easier_select
from entroprune.depth.random_baseline import random_choice
from entroprune.depth.runner import RunFolder, state_entropies
from entroprune.entropy import state_entropy
from entroprune.io.lock import LockedError, RunLock
from entroprune.reporting.depth_report import finish_run
from entroprune.training import TrainConfig


def always_on_model() -> nn.Sequential:
    """ReLU "1" sees mixed signs; ReLU "3" sees >= 5 always (non-negative
    inputs, non-negative weights, bias 5)."""
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3))
    with torch.no_grad():
        m[2].weight.abs_()
        m[2].bias.fill_(5.0)
    return m.eval()


def quick_cfg(**kw) -> EasierConfig:
    base = dict(train_limit=256, entropy_batches=4, latency=False,
                finetune=TrainConfig(epochs=1, lr=0.01, batch_size=128, progress=False))
    base.update(kw)
    return EasierConfig(**base)


def lenet():
    return entroprune.load(entroprune.pretrained_path("lenet5"))


def deterministic(rows):
    return [{k: v for k, v in r.items() if k not in ("seconds", "latency_ratio")} for r in rows]


def test_state_entropy_ranks_the_always_on_rectifier_lowest():
    model = always_on_model()
    x = torch.randn(256, 4, generator=torch.Generator().manual_seed(1))        # (256, 4)
    ent = state_entropies(model, x, batch_size=64)
    assert list(ent) == ["1", "3"]
    assert ent["3"] < 1e-6                               # every channel always ON
    with torch.no_grad():
        z = model[0](x)                                  # (256, 8) input of ReLU "1"
    assert ent["1"] == pytest.approx(float(state_entropy(z).mean()), abs=1e-6)
    assert ent["1"] > 0.3
    assert easier_select(ent) == ["3"]
    # the lowest one plus every one at entropy 0, at most `limit`
    assert easier_select({"a": 0.5, "b": 3e-9, "c": 0.0, "d": 0.2}) == ["c", "b"]
    assert easier_select({"a": 0.5, "b": 0.1, "d": 0.2}) == ["b"]
    assert easier_select({"a": 0.0, "b": 0.0}, limit=1) == ["a"]


def test_easier_removes_rectifiers_step_by_step(fmnist_small, tmp_path):
    cfg = quick_cfg(tolerance=100.0, max_removals=2)
    res = easier(lenet(), fmnist_small, cfg, tmp_path)
    assert res.final == {} and not (tmp_path / "report.md").exists()      # finishing is the caller's
    res = finish_run(res, fmnist_small, cfg)
    rows = res.rows
    assert [r["step"] for r in rows] == [0, 1, 2]
    assert res.stop_reason.startswith("max_removals") and res.best_step == 2
    for prev, r in zip(rows, rows[1:]):                  # each step removed the lowest entropy
        assert r["removed"] == [min(prev["entropies"], key=prev["entropies"].get)]
        assert r["removed_entropy"] == [prev["entropies"][r["removed"][0]]]
        assert set(r["entropies"]) == set(prev["entropies"]) - set(r["removed"])
        assert r["nonlinear"] == prev["nonlinear"] - 1
    removed = [n for r in rows[1:] for n in r["removed"]]
    for step in range(3):
        m = entroprune.load(tmp_path / f"step_{step:03d}.safetensors")
        assert sum(isinstance(m.get_submodule(n), nn.Identity) for n in removed) == min(step, 2)
    assert all(isinstance(res.model.get_submodule(n), nn.Identity) for n in removed)
    state = json.loads((tmp_path / "state.json").read_text())
    assert state["best_step"] == 2 and len(state["rows"]) == 3
    report = (tmp_path / "report.md").read_text()
    assert "| step | removed" in report and removed[0] in report and "Best model, folded" in report
    assert (tmp_path / "entropies.png").stat().st_size > 0 and (tmp_path / "accuracy.png").exists()
    final = res.final
    assert final["rectifiers_removed"] == 2 and final["nonlinear_after"] == 2
    assert final["conv_linear_after"] <= final["conv_linear_before"]
    folded = entroprune.load(tmp_path / "folded.safetensors")
    x = fmnist_small.val_x[:32]
    assert torch.allclose(folded(x), res.model.eval()(x), atol=1e-3)


def test_easier_stop_rule_keeps_last_step_within_tolerance(fmnist_small, tmp_path):
    cfg = quick_cfg(tolerance=0.0, max_removals=3)
    res = finish_run(easier(lenet(), fmnist_small, cfg, tmp_path), fmnist_small, cfg)
    rows, start = res.rows, res.rows[0]["val_acc"]
    assert res.stop_reason.startswith("validation accuracy")
    assert rows[-1]["val_acc"] < start                   # stopped right after the first drop
    assert all(r["val_acc"] >= start for r in rows[1:-1])
    assert res.best_step == len(rows) - 2
    best = entroprune.load(tmp_path / f"step_{res.best_step:03d}.safetensors")
    x = fmnist_small.val_x[:16]
    assert torch.equal(best(x), res.model.eval()(x))
    assert res.final["val_acc"] == rows[res.best_step]["val_acc"]


def test_easier_resumes_after_interruption(fmnist_small, tmp_path, monkeypatch):
    cfg = quick_cfg(tolerance=100.0, max_removals=2)
    straight = easier(lenet(), fmnist_small, cfg, tmp_path / "a")

    real = easier_mod.finetune

    def killed_at_step_2(model, data, c, step, ckpt):
        if step == 2:
            raise RuntimeError("killed")
        return real(model, data, c, step, ckpt)

    monkeypatch.setattr(easier_mod, "finetune", killed_at_step_2)
    with pytest.raises(RuntimeError, match="killed"):
        easier(lenet(), fmnist_small, cfg, tmp_path / "b")
    state = json.loads((tmp_path / "b" / "state.json").read_text())
    assert [r["step"] for r in state["rows"]] == [0, 1]
    monkeypatch.setattr(easier_mod, "finetune", real)

    calls = []
    monkeypatch.setattr(easier_mod, "finetune", lambda *a: calls.append(a[3]) or real(*a))
    resumed = easier(lenet(), fmnist_small, cfg, tmp_path / "b")
    assert calls == [2]                                  # the finished step was skipped
    assert deterministic(resumed.rows) == deterministic(straight.rows)
    with pytest.raises(ValueError, match="other settings"):
        easier(lenet(), fmnist_small, quick_cfg(tolerance=100.0, max_removals=2, train_limit=128), tmp_path / "b")


def test_random_choice_is_seeded_by_seed_and_step():
    alive = [f"relu{i}" for i in range(12)]
    a = random_choice(alive, 3, seed=3, step=1)
    assert a == random_choice(list(alive), 3, seed=3, step=1)             # the same draw, whatever came before
    assert len(set(a)) == 3 and a == [n for n in alive if n in a]         # distinct, in forward order
    assert random_choice(alive, 3, seed=4, step=1) != a                   # another seed, another draw
    assert random_choice(alive, 3, seed=3, step=2) != a                   # each step draws anew
    assert random_choice(alive[:2], 5, seed=0, step=1) == alive[:2]       # fewer left than asked: all


def test_run_folder_is_locked_while_a_run_uses_it(tmp_path):
    folder = RunFolder(tmp_path)
    with folder.locked():
        with RunFolder(tmp_path).locked():                                # the same process may re-enter
            pass
        with pytest.raises(LockedError, match="in use"):                  # a second job may not
            RunLock(tmp_path).__enter__()
    with RunLock(tmp_path):                                               # released after the run
        pass


def test_gates_are_never_removed(fmnist_small):
    """A squeeze-and-excitation gate saturated ON has the lowest state entropy
    of the model, yet EASIER never picks it: replacing it would change what
    the block computes."""
    from tests.entropy.test_sites import SEBlock

    model = SEBlock(nn.Sigmoid()).eval()
    with torch.no_grad():
        model.excite.bias.fill_(20.0)                                     # gate input always > 0
    ent = state_entropies(model, fmnist_small.train_x[:64], batch_size=32)
    assert list(ent) == ["act", "relu"]                                   # the gate is not measured
    assert "gate" not in easier_select(ent)


def test_depth_command_with_random_baseline(tmp_path):
    from typer.testing import CliRunner

    from entroprune.cli.depth_cmds import depth_cmd

    app = typer.Typer()
    app.command()(depth_cmd)
    runner = CliRunner()
    bad = runner.invoke(app, ["pretrained:lenet5", "--method", "deeper", "--out", str(tmp_path / "x")])
    assert bad.exit_code == 2
    out = tmp_path / "run"
    args = ["pretrained:lenet5", "--out", str(out), "--max-removals", "1", "--tolerance", "100",
            "--train-limit", "256", "--entropy-batches", "4", "--no-latency", "--random-baseline"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output.strip().splitlines()[-1])
    assert summary["best_step"] == 1 and summary["rectifiers_removed"] == 1
    assert "easier step 0:" in res.output and "easier step 1: removed " in res.output  # progress lines
    report = (out / "report.md").read_text()
    assert "## Comparison" in report and "random (seed 0)" in report
    assert (out / "random" / "step_001.safetensors").exists() and (out / "folded.safetensors").exists()
