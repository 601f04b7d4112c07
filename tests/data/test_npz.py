"""NumPy archives as data sets (npz:PATH): layouts, dtypes, splits,
normalisation, and every clear error."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from entroprune.data import UserDataError, load_data, load_npz, read_npz


def _arrays(n=60, h=6, w=7, k=3, seed=0):
    """uint8 grey images (N, H, W) whose brightness depends on the label."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % k
    x = (rng.integers(0, 30, (n, h, w)) + 60 * y[:, None, None]).astype(np.uint8)
    return x, y


def rows(t: torch.Tensor) -> set[bytes]:
    """Each image of ``t`` as bytes, to compare sets of images."""
    return {r.numpy().tobytes() for r in t}


def _save(tmp_path, name="d.npz", **arrays):
    path = tmp_path / name
    np.savez(path, **arrays)
    return path


def test_layouts_dtypes_and_normalisation(tmp_path):
    x, y = _arrays()
    grey = load_npz(_save(tmp_path, x=x, y=y))
    # 60 images: test 6 (fixed seed), val max(1, 10% of 54) = 5, train 49
    assert grey.train_x.shape == (49, 1, 6, 7) and grey.val_x.shape == (5, 1, 6, 7) and grey.test_x.shape[0] == 6
    assert grey.num_classes == 3 and grey.pixel_scale == 255.0 and grey.name == f"npz:{tmp_path / 'd.npz'}"
    assert abs(float(grey.train_x.mean())) < 1e-4 and abs(float(grey.train_x.std(unbiased=False)) - 1) < 1e-4
    # labels travel with their images: brightness grows with the label
    bright = grey.train_x.mean((1, 2, 3))
    assert bright[grey.train_y == 2].min() > bright[grey.train_y == 0].max()

    rgb = np.stack([x, 255 - x, x // 2], axis=-1)                   # (N, H, W, 3)
    nhwc = load_npz(_save(tmp_path, "c.npz", x=rgb, y=y))
    nchw = load_npz(_save(tmp_path, "f.npz", x=(rgb.transpose(0, 3, 1, 2) / 255).astype(np.float32), y=y))
    assert nhwc.train_x.shape[1:] == nchw.train_x.shape[1:] == (3, 6, 7) and nchw.pixel_scale == 1.0
    # the same pixels as uint8 or as float in [0, 1] normalise to the same tensors
    assert torch.allclose(nhwc.train_x, nchw.train_x, atol=1e-4)
    per_channel = nhwc.train_x.transpose(0, 1).reshape(3, -1)
    assert per_channel.mean(1).abs().max() < 1e-4 and (per_channel.std(1, unbiased=False) - 1).abs().max() < 1e-4
    # the stored statistics re-apply the normalisation
    again = nhwc.normalise(torch.from_numpy(rgb.transpose(0, 3, 1, 2).copy()))
    assert {tuple(r.flatten().tolist()) for r in nhwc.val_x} <= {tuple(r.flatten().tolist()) for r in again}
    # ambiguous layouts are settled by the layout option
    tiny = np.zeros((10, 3, 4, 3), np.uint8)
    assert load_npz(_save(tmp_path, "t.npz", x=tiny, y=np.arange(10) % 2), layout="nhwc").train_x.shape[1:] == (3, 3, 4)


def test_test_arrays_seeded_splits_and_calibration(tmp_path):
    x, y = _arrays()
    xt, yt = _arrays(n=9, seed=1)
    path = _save(tmp_path, x=x, y=y, x_test=xt, y_test=yt)
    a, b, c = (load_npz(path, seed=s) for s in (0, 0, 1))
    assert a.test_x.shape == (9, 1, 6, 7) and torch.equal(a.test_y, torch.from_numpy(yt))
    assert a.train_x.shape[0] + a.val_x.shape[0] == 60 and a.val_x.shape[0] == 6
    assert torch.equal(a.val_x, b.val_x) and torch.equal(a.train_x, b.train_x)
    assert not torch.equal(a.val_x, c.val_x)
    # train and val are disjoint: every image is unique here (checked on the raw bytes)
    raw = {x[i].tobytes() for i in range(60)}
    assert len(raw) == 60
    assert not rows(a.train_x) & rows(a.val_x) and len(rows(a.train_x) | rows(a.val_x)) == 60
    cal = a.calibration(8, seed=1)
    assert cal.shape == (8, 1, 6, 7) and torch.equal(cal, a.calibration(8, seed=1)) and rows(cal) <= rows(a.train_x)
    # through load_data, with options after the path
    d = load_data(f"npz:{path}")
    assert d.name == f"npz:{path}" and torch.equal(d.train_x, a.train_x)
    assert load_data(f"npz:{_save(tmp_path, 'n.npz', x=x, y=y)},test_fraction=0.5").test_x.shape[0] == 30


@pytest.mark.parametrize("case,arrays,match", [
    ("missing_x", dict(images=np.zeros((4, 5, 5), np.uint8), y=np.arange(4) % 2), r"no x array .it has: images, y"),
    ("missing_y", dict(x=np.zeros((4, 5, 5), np.uint8)), "no y array"),
    ("lengths", dict(x=np.zeros((4, 5, 5), np.uint8), y=np.arange(5) % 2), "4 images but y 5 labels"),
    ("x_dtype", dict(x=np.zeros((4, 5, 5), np.int32), y=np.arange(4) % 2), "x has dtype int32.*astype"),
    ("y_dtype", dict(x=np.zeros((4, 5, 5), np.uint8), y=np.array([0.0, 1, 0, 1])), "y has dtype float64"),
    ("x_shape", dict(x=np.zeros((4, 25), np.uint8), y=np.arange(4) % 2), r"x has shape \(4, 25\)"),
    ("y_shape", dict(x=np.zeros((4, 5, 5), np.uint8), y=np.zeros((4, 2), np.int64)), r"y has shape \(4, 2\)"),
    ("negative", dict(x=np.zeros((4, 5, 5), np.uint8), y=np.array([0, 1, -1, 1])), "negative labels"),
    ("gap", dict(x=np.zeros((4, 5, 5), np.uint8), y=np.array([0, 1, 3, 1])), r"classes \[2\] have no image"),
    ("one_class", dict(x=np.zeros((4, 5, 5), np.uint8), y=np.zeros(4, np.int64)), "only one class"),
    ("test_label", dict(x=np.zeros((4, 5, 5), np.uint8), y=np.arange(4) % 2,
                        x_test=np.zeros((2, 5, 5), np.uint8), y_test=np.array([0, 2])), "outside y's classes 0..1"),
    ("test_shape", dict(x=np.zeros((4, 5, 5), np.uint8), y=np.arange(4) % 2,
                        x_test=np.zeros((2, 6, 6), np.uint8), y_test=np.array([0, 1])), "x_test images are"),
    ("half_test", dict(x=np.zeros((4, 5, 5), np.uint8), y=np.arange(4) % 2,
                       x_test=np.zeros((2, 5, 5), np.uint8)), "x_test without y_test"),
    ("ambiguous", dict(x=np.zeros((4, 3, 5, 3), np.uint8), y=np.arange(4) % 2), "layout='nhwc'"),
    ("nan", dict(x=np.full((4, 5, 5), np.nan, np.float32), y=np.arange(4) % 2), "NaN"),
])
def test_clear_errors_name_the_file(tmp_path, case, arrays, match):
    path = _save(tmp_path, **arrays)
    with pytest.raises(UserDataError, match=match) as err:
        load_data(f"npz:{path}")
    assert isinstance(err.value, ValueError) and str(path) in str(err.value)


def test_file_errors(tmp_path):
    for path, match in ((tmp_path / "none.npz", "no file"), (tmp_path, "is a folder.*folder:")):
        with pytest.raises(UserDataError, match=match) as err:
            read_npz(path)
        assert str(path) in str(err.value)
    np.save(tmp_path / "one.npy", np.zeros(3))
    (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04 this is not really a zip")
    (tmp_path / "obj.npz").write_bytes(b"")
    np.savez(tmp_path / "pickled.npz", x=np.array([object()]), y=np.arange(1))
    for name, match in (("one.npy", "single array"), ("bad.npz", "damaged or not"), ("obj.npz", "damaged or not"),
                        ("pickled.npz", "damaged or not")):
        with pytest.raises(UserDataError, match=match) as err:
            read_npz(tmp_path / name)
        assert str(tmp_path / name) in str(err.value)
    with pytest.raises(UserDataError, match="layout must be"):
        read_npz(_save(tmp_path, x=np.zeros((4, 3, 5, 3), np.uint8), y=np.arange(4) % 2), layout="hwc")
