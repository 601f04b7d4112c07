"""NEPENTHE (Liao et al., arXiv 2404.16890): budget allocation, magnitude
masks that survive fine-tuning and save/load, a real round on the shipped
LeNet-5, resumption inside a masked fine-tune, and degenerate rectifiers
replaced without changing outputs."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn as nn
from safetensors.torch import load_file

import entroprune
from entroprune.depth.nepenthe import (
    NepentheConfig,
    allocate_budget,
    apply_masks,
    magnitude_mask,
    nepenthe,
    producer_chains,
    prunable_layers,
    remove_masks,
    replace_degenerate,
)
from entroprune.depth.runner import best_step, measure_rectifiers
from entroprune.reporting.depth_report import finish_run
from entroprune.training import TrainConfig, train
from entroprune.training import trainer as trainer_mod

IRR = {"a": 1.0, "b": 2.0, "c": 4.0}                    # sum 7: scores 7, 3.5, 1.75


def softmax_shares(scores: list[float]) -> list[float]:
    e = [math.exp(s - max(scores)) for s in scores]
    return [v / sum(e) for v in e]


def quick_cfg(**kw) -> NepentheConfig:
    base = dict(train_limit=256, entropy_batches=4, latency=False, tolerance=100.0,
                finetune=TrainConfig(epochs=1, lr=0.01, batch_size=128, progress=False))
    base.update(kw)
    return NepentheConfig(**base)


def lenet():
    return entroprune.load(entroprune.pretrained_path("lenet5"))


def test_budget_follows_the_softmax_shares():
    big = dict.fromkeys(IRR, 10**6)
    for temp in (1.0, 2.0, 8.0):
        alloc = allocate_budget(IRR, big, 1000, temperature=temp)
        assert sum(alloc.values()) == 1000
        expected = softmax_shares([7 / temp, 3.5 / temp, 1.75 / temp])
        for n, share in zip(IRR, expected):
            assert abs(alloc[n] - 1000 * share) < 1.0
    # lowest irrelevance (low entropy, small weights) is pruned most
    alloc = allocate_budget(IRR, big, 1000, temperature=2.0)
    assert alloc["a"] > alloc["b"] > alloc["c"]


def test_budget_caps_and_redistributes_exactly():
    cap = {"a": 100, "b": 10**6, "c": 10**6}
    alloc = allocate_budget(IRR, cap, 1000, temperature=2.0)
    assert alloc["a"] == 100 and sum(alloc.values()) == 1000
    rest = softmax_shares([6 / 2 / 2, 6 / 4 / 2])        # the surplus: softmax over b, c, sum(I) = I_b + I_c
    assert abs(alloc["b"] - 900 * rest[0]) < 1.0 and abs(alloc["c"] - 900 * rest[1]) < 1.0
    # a cascade: b's share of the surplus overflows too
    alloc = allocate_budget(IRR, {"a": 100, "b": 50, "c": 10**6}, 1000)
    assert alloc == {"a": 100, "b": 50, "c": 850}
    # not enough room: everything that fits, no more
    alloc = allocate_budget(IRR, {"a": 10, "b": 20, "c": 30}, 1000)
    assert alloc == {"a": 10, "b": 20, "c": 30}
    # layers with no room or zero irrelevance take nothing
    alloc = allocate_budget({"a": 1.0, "b": 0.0, "c": 4.0}, {"a": 0, "b": 99, "c": 99}, 50)
    assert alloc == {"c": 50}
    # odd budgets and many layers still sum exactly
    irr = {f"l{i}": 0.1 + 0.07 * i for i in range(9)}
    capacity = {n: 37 + 11 * i for i, n in enumerate(irr)}
    for budget in (1, 17, 333, 500):
        alloc = allocate_budget(irr, capacity, budget, temperature=3.0)
        assert sum(alloc.values()) == budget and all(alloc[n] <= capacity[n] for n in irr)


def test_magnitude_mask_drops_the_smallest_nonzero():
    w = torch.tensor([[0.0, -0.1, 0.5], [2.0, 0.05, -0.3]])
    m = magnitude_mask(w, 2)
    assert torch.equal(m, torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 1.0]]))
    assert torch.equal(magnitude_mask(w, 0), (w != 0).float())
    assert magnitude_mask(w, 99).sum() == 0


def test_masks_survive_finetuning_and_save_load(fmnist_small, tmp_path):
    model = lenet()
    masks = {n: magnitude_mask(model.get_submodule(n).weight, model.get_submodule(n).weight.numel() // 2)
             for n in ("features.3", "classifier.1")}
    apply_masks(model, masks)
    before = model.classifier[1].weight.detach().clone()
    small = copy.copy(fmnist_small)
    small.train_x, small.train_y = fmnist_small.train_x[:256], fmnist_small.train_y[:256]
    train(model, small, TrainConfig(epochs=1, lr=0.05, progress=False))
    remove_masks(model)
    w = model.classifier[1].weight.detach()
    assert torch.equal(w == 0, masks["classifier.1"] == 0)   # zeros stayed zero
    assert not torch.equal(w, before)                          # the rest trained
    path = entroprune.save(model, tmp_path / "masked.safetensors")
    assert not any(k.endswith(("_orig", "_mask")) for k in load_file(str(path)))
    back = entroprune.load(path)
    for n, mask in masks.items():
        assert torch.equal(back.get_submodule(n).weight == 0, mask == 0)
    x = fmnist_small.val_x[:16]
    assert torch.equal(back(x), model.eval()(x))


def test_gates_are_never_pruned():
    """The excitation convolution of a squeeze-and-excitation block feeds a
    gate, not a rectifier: NEPENTHE leaves it (and the gate) alone."""
    from tests.entropy.test_sites import SEBlock

    for gate in (nn.Sigmoid(), nn.Hardsigmoid()):
        model = SEBlock(gate)
        assert prunable_layers(model) == {"conv": "act", "squeeze": "relu"}
        assert set(producer_chains(model)) == {"act", "relu"}              # bn -> act, squeeze -> relu


def test_nepenthe_round_on_lenet_reaches_the_expected_sparsity(fmnist_small, tmp_path):
    model = lenet()
    layers = prunable_layers(model)
    assert layers == {"features.0": "features.1", "features.3": "features.4",
                      "classifier.1": "classifier.2", "classifier.3": "classifier.4"}
    total = sum(model.get_submodule(n).weight.numel() for n in layers)
    assert all(int((model.get_submodule(n).weight == 0).sum()) == 0 for n in layers)
    cfg = quick_cfg(max_rounds=1)
    res = finish_run(nepenthe(model, fmnist_small, cfg, tmp_path), fmnist_small, cfg)
    row = res.rows[1]
    assert all(h > 0 for h in res.rows[0]["entropies"].values())   # every layer eligible
    assert row["budget"] == round(0.5 * total) and sum(row["allocation"].values()) == row["budget"]
    pruned = entroprune.load(tmp_path / "step_001.safetensors")       # after fine-tuning, from disk
    zeros = {n: int((pruned.get_submodule(n).weight == 0).sum()) for n in layers}
    assert zeros == {n: row["allocation"][n] for n in layers}
    assert sum(zeros.values()) / total == pytest.approx(0.5, abs=1e-4)
    everything = sum(m.weight.numel() for m in pruned.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
    assert row["sparsity"] == pytest.approx(row["budget"] / everything)
    assert res.stop_reason.startswith("max_rounds") and (tmp_path / "report.md").exists()
    assert "sparsity" in (tmp_path / "report.md").read_text()


def test_nepenthe_resumes_inside_a_masked_finetune(fmnist_small, tmp_path, monkeypatch):
    cfg = quick_cfg(max_rounds=2, fold_steps=False, finetune=TrainConfig(epochs=2, lr=0.01, progress=False))
    straight = nepenthe(lenet(), fmnist_small, cfg, tmp_path / "a")
    real_save = trainer_mod.atomic_torch_save

    def killed_after_epoch_1_of_step_2(obj, path):
        real_save(obj, path)
        if str(path).endswith("step_002.ckpt") and obj["epoch"] == 1:
            raise RuntimeError("killed")

    monkeypatch.setattr(trainer_mod, "atomic_torch_save", killed_after_epoch_1_of_step_2)
    with pytest.raises(RuntimeError, match="killed"):
        nepenthe(lenet(), fmnist_small, cfg, tmp_path / "b")
    assert (tmp_path / "b" / "step_002.ckpt").exists()
    monkeypatch.setattr(trainer_mod, "atomic_torch_save", real_save)
    resumed = nepenthe(lenet(), fmnist_small, cfg, tmp_path / "b")
    assert not (tmp_path / "b" / "step_002.ckpt").exists()
    assert best_step(resumed.rows, None) == 2
    drop = ("seconds", "latency_ratio")
    assert [{k: v for k, v in r.items() if k not in drop} for r in resumed.rows] == \
           [{k: v for k, v in r.items() if k not in drop} for r in straight.rows]


def test_always_on_rectifier_becomes_identity_with_identical_outputs():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
    with torch.no_grad():
        m[2].weight.abs_()
        m[2].bias.fill_(5.0)                              # input of ReLU "3" >= 5: always ON
    x = torch.randn(512, 4, generator=torch.Generator().manual_seed(1))        # (512, 4)
    ref = m(x)
    done = replace_degenerate(m, measure_rectifiers(m, x, batch_size=128))
    assert done == {"3": "identity"}
    assert isinstance(m[3], nn.Identity) and isinstance(m[1], nn.ReLU)
    assert torch.equal(m(x), ref)
    x2 = torch.randn(64, 4, generator=torch.Generator().manual_seed(2))
    assert torch.equal(m(x2), nn.Sequential(m[0], nn.ReLU(), m[2], nn.ReLU(), m[4])(x2))


def test_always_off_rectifier_becomes_a_zeroed_identity():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                      nn.Conv2d(4, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 6 * 6, 3)).eval()
    with torch.no_grad():
        m[1].bias.copy_(torch.tensor([-50.0, 0.0, -50.0, 0.0]))   # channels 0, 2 always OFF
        m[1].weight.fill_(0.01)
        m[3].bias.fill_(-100.0)                                   # ReLU "4" always OFF
    x = torch.randn(64, 1, 8, 8, generator=torch.Generator().manual_seed(1))  # (64, 1, 8, 8)
    ref = m(x)
    done = replace_degenerate(m, measure_rectifiers(m, x))
    assert done == {"4": "constant"}                      # ReLU "2" has live channels: kept
    assert isinstance(m[4], nn.Identity) and isinstance(m[2], nn.ReLU)
    assert torch.count_nonzero(m[3].weight) == 0 and torch.count_nonzero(m[3].bias) == 0
    assert torch.allclose(m(x), ref, atol=1e-6)
