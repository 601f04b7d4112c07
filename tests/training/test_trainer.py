import dataclasses

import pytest
import torch

import entroprune.training.trainer as trainer_mod
from entroprune.models import create
from entroprune.pruning import PruneConfig, get_criterion, prune_to_macs
from entroprune.training import TrainConfig, evaluate, lr_at, train
from entroprune.training.trainer import architecture_signature


def test_cosine_schedule():
    cfg = TrainConfig(lr=0.1, warmup_epochs=1)
    assert lr_at(0, 100, cfg, 10) == pytest.approx(0.01)       # warm-up starts low
    assert lr_at(9, 100, cfg, 10) == pytest.approx(0.1)        # reaches lr
    assert lr_at(55, 100, cfg, 10) == pytest.approx(0.05)      # half way through the cosine
    assert lr_at(100, 100, cfg, 10) == pytest.approx(0.0, abs=1e-12)


def test_training_learns_real_fashion_mnist(fmnist_small):
    torch.manual_seed(0)
    model = create("lenet5")
    before = evaluate(model, fmnist_small.val_x, fmnist_small.val_y)
    history = train(model, fmnist_small, TrainConfig(epochs=2, lr=0.05, progress=False))
    after = evaluate(model, fmnist_small.val_x, fmnist_small.val_y)
    assert len(history) == 2 and history[-1]["val_acc"] == pytest.approx(after)
    assert before < 20 and after > 50  # 3,000 images, 2 epochs (59.2% here): far above the 10% of chance


def test_interrupted_training_resumes_to_the_same_weights(fmnist_small, tmp_path, monkeypatch):
    cfg = TrainConfig(epochs=3, lr=0.05, progress=False)
    torch.manual_seed(0)
    reference = create("lenet5")
    train(reference, fmnist_small, cfg)

    torch.manual_seed(0)
    model = create("lenet5")
    real = trainer_mod.iterate_batches
    calls = {"n": 0}

    def dying(*args, **kwargs):
        if kwargs.get("shuffle"):                        # training batches, not evaluation
            calls["n"] += 1
            if calls["n"] == 3:                          # the third epoch's
                raise KeyboardInterrupt("killed")
        return real(*args, **kwargs)

    monkeypatch.setattr(trainer_mod, "iterate_batches", dying)
    ckpt = tmp_path / "run.ckpt"
    with pytest.raises(KeyboardInterrupt):
        train(model, fmnist_small, cfg, checkpoint=ckpt)
    assert torch.load(ckpt, weights_only=True)["epoch"] == 2   # two finished epochs kept
    monkeypatch.setattr(trainer_mod, "iterate_batches", real)

    resumed = create("lenet5")   # a fresh process would start from a new model
    history = train(resumed, fmnist_small, cfg, checkpoint=ckpt)
    assert [h["epoch"] for h in history] == [1, 2, 3]
    for a, b in zip(reference.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)


def test_checkpoint_for_other_epochs_is_refused(fmnist_small, tmp_path):
    ckpt = tmp_path / "c.ckpt"
    train(create("lenet5"), fmnist_small, TrainConfig(epochs=1, progress=False), checkpoint=ckpt)
    with pytest.raises(ValueError, match=r"config\.epochs: 1 there, 2 here.*--restart"):
        train(create("lenet5"), fmnist_small, TrainConfig(epochs=2, progress=False), checkpoint=ckpt)


def _pruned_lenet(target: float):
    torch.manual_seed(0)
    pruned, _ = prune_to_macs(create("lenet5"), get_criterion("l1"), (1, 28, 28),
                              PruneConfig(target_macs=target))
    return pruned


def test_checkpoint_of_another_architecture_is_refused(fmnist_small, tmp_path):
    # a stale finetune.ckpt left by another pruning into the same report folder
    ckpt = tmp_path / "finetune.ckpt"
    cfg = TrainConfig(epochs=2, progress=False)
    small = dataclasses.replace(fmnist_small, train_x=fmnist_small.train_x[:256],
                                train_y=fmnist_small.train_y[:256])
    interrupted = _pruned_lenet(0.5)
    train(interrupted, small, dataclasses.replace(cfg, epochs=1), checkpoint=ckpt)
    state = torch.load(ckpt, weights_only=True)
    assert state["architecture"] == architecture_signature(interrupted.state_dict())
    state["config"]["epochs"] = 2                 # as if the 2-epoch run had been interrupted
    state["fingerprint"]["config"]["epochs"] = 2
    torch.save(state, ckpt)

    other = _pruned_lenet(0.7)
    with pytest.raises(ValueError, match=r"(?s)was written for a different model.*shape.*delete it"):
        train(other, small, cfg, checkpoint=ckpt)

    del state["architecture"]                     # a checkpoint from before the signature
    torch.save(state, ckpt)
    with pytest.raises(ValueError, match=f"checkpoint {ckpt} was written for a different model"):
        train(other, small, cfg, checkpoint=ckpt)
    history = train(_pruned_lenet(0.5), small, cfg, checkpoint=ckpt)   # the right model resumes
    assert [h["epoch"] for h in history] == [1, 2]
