"""Run fingerprints of training checkpoints, the stop on a non-finite loss,
and knowledge distillation (exact loss values, a real distilled epoch)."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F

import entroprune
from entroprune.models import create
from entroprune.pruning import PruneConfig, get_criterion, prune_to_macs
from entroprune.training import TrainConfig, evaluate, train
from entroprune.training.trainer import TrainingDiverged, distillation_loss


def _small(data, n=512):
    return dataclasses.replace(data, train_x=data.train_x[:n], train_y=data.train_y[:n])


@pytest.mark.parametrize("change, named", [
    ({"lr": 0.01}, "config.lr: 0.05 there, 0.01 here"),
    ({"seed": 3}, "config.seed: 0 there, 3 here"),
    ({"batch_size": 64}, "config.batch_size"),
])
def test_a_finished_checkpoint_is_not_reused_after_the_settings_change(fmnist_small, tmp_path, change, named):
    data, ckpt = _small(fmnist_small), tmp_path / "m.ckpt"
    cfg = TrainConfig(epochs=1, lr=0.05, progress=False)
    torch.manual_seed(0)
    train(create("lenet5"), data, cfg, checkpoint=ckpt)
    torch.manual_seed(0)
    with pytest.raises(ValueError, match=named.replace(".", r"\.")):
        train(create("lenet5"), data, dataclasses.replace(cfg, **change), checkpoint=ckpt)


def test_other_data_or_starting_weights_are_named_and_restart_discards(fmnist_small, tmp_path, capsys):
    data, ckpt = _small(fmnist_small), tmp_path / "m.ckpt"
    cfg = TrainConfig(epochs=1, lr=0.05, progress=False)
    torch.manual_seed(0)
    first = create("lenet5")
    train(first, data, cfg, checkpoint=ckpt)
    other_data = _small(fmnist_small, 256)
    torch.manual_seed(0)
    with pytest.raises(ValueError, match=r"data\.train: 512 there, 256 here"):
        train(create("lenet5"), other_data, cfg, checkpoint=ckpt)
    torch.manual_seed(1)                              # same architecture, other starting weights
    with pytest.raises(ValueError, match="start_weights"):
        train(create("lenet5"), data, cfg, checkpoint=ckpt)
    torch.manual_seed(0)
    again = create("lenet5")
    assert train(again, data, cfg, checkpoint=ckpt)[-1]["epoch"] == 1
    assert "reusing the finished run" in capsys.readouterr().out
    for a, b in zip(first.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)
    torch.manual_seed(1)
    history = train(create("lenet5"), data, cfg, checkpoint=ckpt, restart=True)   # --restart
    assert len(history) == 1


def test_a_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(fmnist_small, tmp_path):
    data, ckpt = _small(fmnist_small), tmp_path / "m.ckpt"
    torch.manual_seed(0)
    model = create("lenet5")
    train(model, data, TrainConfig(epochs=1, lr=0.05, progress=False), checkpoint=ckpt)
    saved = torch.load(ckpt, weights_only=True)
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))
    with pytest.raises(TrainingDiverged, match=r"became nan at epoch 1, step 1.*lower learning rate"):
        train(model, data, TrainConfig(epochs=1, lr=0.05, progress=False), checkpoint=tmp_path / "other.ckpt")
    assert not (tmp_path / "other.ckpt").exists()
    assert torch.load(ckpt, weights_only=True)["epoch"] == saved["epoch"]


def test_bad_settings_are_refused_where_they_are_built():
    for bad in ({"epochs": 0}, {"lr": float("nan")}, {"lr": -1.0}, {"batch_size": 0}, {"distill_weight": 1.5}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            TrainConfig(**bad)


def test_distillation_loss_exact_values():
    student = torch.tensor([[2.0, 0.0, -1.0]])
    teacher = torch.tensor([[1.0, 1.0, 0.0]])
    labels = torch.tensor([0])
    cfg = TrainConfig(distill_weight=0.0)
    assert distillation_loss(student, teacher, labels, cfg) == pytest.approx(float(F.cross_entropy(student, labels)))
    cfg = TrainConfig(distill_weight=1.0, distill_temperature=2.0)
    assert float(distillation_loss(teacher, teacher, labels, cfg)) == pytest.approx(0.0, abs=1e-7)
    p = torch.softmax(teacher / 2, 1)
    q = torch.softmax(student / 2, 1)
    kl = float((p * (p.log() - q.log())).sum())
    assert float(distillation_loss(student, teacher, labels, cfg)) == pytest.approx(4 * kl, rel=1e-5)


def test_a_distilled_epoch_repairs_a_pruned_student(fmnist_small):
    teacher = entroprune.load(entroprune.pretrained_path("lenet5"))
    student, _ = prune_to_macs(teacher, get_criterion("l1"), (1, 28, 28), PruneConfig(target_macs=0.3))
    data = _small(fmnist_small, 2000)
    x, y = data.val_x[:1000], data.val_y[:1000]
    before = evaluate(student, x, y)
    train(student, data, TrainConfig(epochs=1, lr=0.01, progress=False), teacher=teacher)
    after = evaluate(student, x, y)
    assert after > max(70.0, before + 10.0), (before, after)
    assert not teacher.training                       # the teacher stays in eval mode
