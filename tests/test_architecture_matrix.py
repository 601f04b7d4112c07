"""Every method on every architecture of tests/architectures.py (models from
outside the zoo), timm-style: each (method, architecture) either works (the
target met, the outputs of the right shape, the saved file reloading
bit-exactly) or is refused with a clear error that says why. The expected
outcome of each pair is written down here, so a change of behaviour fails."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn as nn

import entroprune
from entroprune import CompressConfig, compress
from entroprune.pipeline import CompressError
from entroprune.pruning import PruningError
from entroprune.search import DDPGConfig, RewardConfig, SearchConfig

from .architectures import ARCHITECTURES, build

METHODS = ("l1", "greedy_refit", "aura", "search", "ges", "easier")
# pairs that are refused, with a piece of the message; every other pair must work
REFUSED = {
    ("grouped", "ges"): "removed no channel",          # every grouped layer or its producer is skipped by GES
    ("split_shuffle", "ges"): "removed no channel",
}
TOLERANCE = 0.06     # these models have few, coarse channel groups (one channel of a head is 1-3% of the MACs)


@pytest.fixture(scope="module")
def tiny(fmnist_small):
    d = fmnist_small
    return dataclasses.replace(d, train_x=d.train_x[:600], train_y=d.train_y[:600], val_x=d.val_x[:200],
                               val_y=d.val_y[:200], test_x=d.test_x[:200], test_y=d.test_y[:200])


def _config(method: str) -> CompressConfig:
    common = dict(finetune_epochs=0, measure_latency=False, calib_size=64, tolerance=TOLERANCE, progress=False,
                  target="2x")
    if method == "search":
        return CompressConfig(method="search", search=SearchConfig(
            episodes=4, agent=DDPGConfig(warmup=2, batch_size=8), rewards=RewardConfig(calib_size=32,
                                                                                         val_subset=100)), **common)
    if method == "ges":
        return CompressConfig(method="ges", ges_target=0.5, **common)
    if method == "easier":
        return CompressConfig(method="none", depth="easier", depth_tolerance=100.0, depth_max_steps=1, **common)
    return CompressConfig(method=method, **common)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_every_method_on_every_architecture(arch, method, tiny, tmp_path):
    model = build(arch)
    x = tiny.val_x[:8]
    with torch.no_grad():
        before = model(x)
    cfg = _config(method)
    if (arch, method) in REFUSED:
        with pytest.raises((CompressError, PruningError), match=REFUSED[arch, method]):
            compress(model, tiny, cfg, out=tmp_path)
        assert not (tmp_path / "model.safetensors").exists()
        return
    small, report = compress(model, tiny, cfg, out=tmp_path)
    with torch.no_grad():
        assert torch.equal(model(x), before)                          # the user's model is left untouched
        out = small(x)
    assert out.shape == (8, 10) and bool(torch.isfinite(out).all())
    if method not in ("ges", "easier"):                               # the methods that take a MACs target
        assert abs(report["macs_ratio"] / 2.0 - 1.0) <= TOLERANCE + 0.01, report["macs_ratio"]
    if method == "ges":      # no MACs target, but it must have removed channels (else it is refused above)
        assert report["remove"]["channels_after"] < report["remove"]["channels_before"], report["remove"]
    if method == "easier":   # gates (a sigmoid multiplied into a tensor) are never removed as rectifiers
        gates = [n for n, m in model.named_modules() if isinstance(m, (nn.Sigmoid, nn.Hardsigmoid))]
        kept = dict(small.named_modules())
        assert all(type(kept[n]) is type(model.get_submodule(n)) for n in gates)
    reloaded = entroprune.load(tmp_path / "model.safetensors")
    with torch.no_grad():
        assert torch.equal(reloaded(x), out)                          # save/load is bit-exact


def test_split_and_shuffle_groups_are_left_whole_and_named(tiny):
    small, report = compress(build("split_shuffle"), tiny, _config("l1"))
    reasons = report["remove"]["unprunable_reasons"]
    assert "branch.5" in reasons and "branch.5" in report["remove"]["unprunable_groups"]
    assert small.branch[5].out_channels == 16                          # that group kept every channel
