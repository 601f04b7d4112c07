import pytest
import torch

from entroprune.data import augment, iterate_batches, load_data, num_batches


def test_fashion_mnist_splits(fmnist):
    assert fmnist.train_x.shape == (55000, 1, 28, 28)
    assert fmnist.val_x.shape == (5000, 1, 28, 28)
    assert fmnist.test_x.shape == (10000, 1, 28, 28)
    # normalised with the training statistics
    assert abs(float(fmnist.train_x.mean())) < 0.01 and abs(float(fmnist.train_x.std()) - 1) < 0.01
    assert sorted(fmnist.train_y.unique().tolist()) == list(range(10))


def test_validation_split_is_seeded_and_held_out(fmnist):
    again = load_data("fashion_mnist", seed=0)
    assert torch.equal(again.val_x, fmnist.val_x)
    other = load_data("fashion_mnist", seed=1)
    assert not torch.equal(other.val_x, fmnist.val_x)
    # no validation image is in the training split: compare exact pixel rows by hashing
    train_keys = {hash(r.numpy().tobytes()) for r in fmnist.train_x[:, 0, 14]}
    overlap = sum(hash(r.numpy().tobytes()) in train_keys for r in fmnist.val_x[:500, 0, 14])
    assert overlap < 25  # a middle row can coincide between different images, rarely


def test_calibration_sample_is_seeded_from_train(fmnist):
    a, b = fmnist.calibration(64, seed=3), fmnist.calibration(64, seed=3)
    assert torch.equal(a, b) and a.shape == (64, 1, 28, 28)
    assert not torch.equal(a, fmnist.calibration(64, seed=4))


def test_unknown_dataset_and_missing_dirs():
    with pytest.raises(ValueError, match="unknown data set"):
        load_data("imagenet")
    with pytest.raises(ValueError, match="--data-dir"):
        load_data("cifar10")


def test_augment_keeps_shape_and_content():
    x = torch.arange(2 * 1 * 6 * 6, dtype=torch.float32).view(2, 1, 6, 6)
    out = augment(x, torch.Generator().manual_seed(0), pad=0)  # no padding: only flips
    for i in range(2):
        assert torch.equal(out[i], x[i]) or torch.equal(out[i], x[i].flip(-1))
    out2 = augment(x, torch.Generator().manual_seed(0), pad=2)
    assert out2.shape == x.shape


def test_batches_cover_everything_once_and_shard():
    x, y = torch.arange(10).float().view(10, 1, 1, 1), torch.arange(10)
    seen = torch.cat([yb for _, yb in iterate_batches(x, y, 3, shuffle=True, seed=1)])
    assert sorted(seen.tolist()) == list(range(10))
    r0 = torch.cat([yb for _, yb in iterate_batches(x, y, 2, shuffle=True, seed=1, rank=0, world_size=2)])
    r1 = torch.cat([yb for _, yb in iterate_batches(x, y, 2, shuffle=True, seed=1, rank=1, world_size=2)])
    assert len(r0) == len(r1) == 5 and not set(r0.tolist()) & set(r1.tolist())
    assert num_batches(10, 3) == 4 and num_batches(10, 2, world_size=2) == 3
