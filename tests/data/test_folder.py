"""Image folders as data sets (folder:PATH): layout, splits, normalisation,
every clear error, and one end-to-end training run on real Fashion-MNIST PNGs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import entroprune
from entroprune.data import (
    FASHION_MNIST_DIR,
    UserDataError,
    load_data,
    load_folder,
    read_image_folder,
    read_images,
    read_mnist_like,
)
from entroprune.training import TrainConfig, evaluate, train


def _grey(value: int, idx: int, size=(20, 20)) -> Image.Image:
    """A grey image of brightness ``value`` whose first two pixels encode ``idx``."""
    a = np.full(size, value, dtype=np.uint8)                        # (H, W)
    a[0, 0], a[0, 1] = divmod(idx, 256)
    return Image.fromarray(a)


def make_folder(root, classes=("ant", "bee", "cat"), per_class=12, size=(20, 20)):
    """Class k's images have brightness 40 + 80k; each image is unique (PNG)."""
    idx = 0
    for k, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            _grey(40 + 80 * k, idx, size).save(root / name / f"{i:03d}.png")
            idx += 1
    return root


def _ids(x: torch.Tensor, bundle) -> set[int]:
    """The unique ids written into the first two pixels, from normalised images."""
    raw = (x[:, 0, 0, :2] * bundle.std[0] + bundle.mean[0]) * 255                 # (N, 2)
    raw = raw.round().long()
    return set((raw[:, 0] * 256 + raw[:, 1]).tolist())


def test_grey_png_folder_shapes_labels_and_normalisation(tmp_path):
    data = load_folder(make_folder(tmp_path / "d"))
    assert data.classes == ("ant", "bee", "cat") and data.num_classes == 3
    # 36 images: test round(3.6) = 4, then val = max(1, 10% of 32) = 3, train 29
    assert data.train_x.shape == (29, 1, 20, 20) and data.val_x.shape == (3, 1, 20, 20)
    assert data.test_x.shape == (4, 1, 20, 20) and data.in_channels == 1 and data.image_size == 20
    assert data.name == f"folder:{tmp_path / 'd'}"
    # training statistics: mean ~0, std ~1 per channel on train only
    assert abs(float(data.train_x.mean())) < 1e-4 and abs(float(data.train_x.std(unbiased=False)) - 1) < 1e-4
    # labels follow the sorted class folders: brightness 40 + 80 * label
    for x, y in ((data.train_x, data.train_y), (data.test_x, data.test_y)):
        bright = (x[:, 0, 5, 5] * data.std[0] + data.mean[0]) * 255
        assert torch.allclose(bright, 40 + 80 * y.float(), atol=0.01)
    # the stored statistics re-apply the same normalisation to new raw images
    files = sorted((tmp_path / "d" / "bee").glob("*.png"))[:2]
    again = data.normalise(read_images(files, 20, 1))
    assert torch.allclose(again[:, 0, 5, 5], (120 / 255 - data.mean[0]) / data.std[0] * torch.ones(2))


def test_rgb_jpeg_and_mixed_modes_pick_three_channels(tmp_path):
    root = tmp_path / "rgb"
    colours = {"blue": (0, 0, 255), "green": (0, 255, 0), "red": (255, 0, 0)}
    for name, rgb in colours.items():
        (root / name).mkdir(parents=True)
        for i in range(8):
            Image.new("RGB", (12, 10), rgb).save(root / name / f"{i}.jpg", quality=95)
    _grey(128, 0, (10, 12)).save(root / "red" / "grey.png")      # one grey PNG among RGB JPEGs
    data = load_folder(root)
    assert data.train_x.shape[1:] == (3, 10, 12) and data.classes == tuple(sorted(colours))
    assert len(data.mean) == len(data.std) == 3
    per_channel = data.train_x.transpose(0, 1).reshape(3, -1)
    assert per_channel.mean(1).abs().max() < 1e-4 and (per_channel.std(1, unbiased=False) - 1).abs().max() < 1e-4
    # the dominant channel of each coloured image matches its class (blue: 2, green: 1, red: 0)
    x, y = torch.cat([data.train_x, data.val_x, data.test_x]), torch.cat([data.train_y, data.val_y, data.test_y])
    pixel = x[:, :, 5, 5] * torch.tensor(data.std) + torch.tensor(data.mean)     # (N, 3) in [0, 1]
    coloured = pixel.max(1).values - pixel.min(1).values > 0.5                     # not the grey one
    assert int(coloured.sum()) == 24
    assert pixel[coloured].argmax(1).tolist() == [{0: 2, 1: 1, 2: 0}[int(v)] for v in y[coloured]]
    grey = load_folder(root, channels=1, size=(5, 6))              # forced grey and resized
    assert grey.train_x.shape[1:] == (1, 5, 6)


def test_train_test_subfolders_and_16_bit_images(tmp_path):
    root = tmp_path / "split"
    make_folder(root / "train", per_class=10)
    make_folder(root / "test", classes=("ant", "cat"), per_class=3)   # a class may lack test images
    data = load_folder(root)
    assert data.test_x.shape == (6, 1, 20, 20) and data.test_y.tolist() == [0] * 3 + [2] * 3
    assert data.train_x.shape[0] + data.val_x.shape[0] == 30 and data.val_x.shape[0] == 3
    # 16-bit grey PNGs are scaled to 8 bits, not clipped at 255
    deep = tmp_path / "deep"
    for k, name in enumerate(("a", "b")):
        (deep / name).mkdir(parents=True)
        Image.fromarray(np.full((4, 4), 20000 * (k + 1), np.uint16)).save(deep / name / "0.png")
    x = read_image_folder(deep).x
    assert x.dtype == torch.uint8 and x[:, 0, 0, 0].tolist() == [round(20000 / 257), round(40000 / 257)]


def test_splits_are_seeded_disjoint_and_test_is_fixed(tmp_path):
    root = make_folder(tmp_path / "d", per_class=20)            # 60 unique images
    a, b, c = (load_folder(root, seed=s) for s in (0, 0, 1))
    assert torch.equal(a.val_x, b.val_x) and torch.equal(a.train_x, b.train_x)
    assert _ids(a.val_x, a) != _ids(c.val_x, c)
    ids = [_ids(x, a) for x in (a.train_x, a.val_x, a.test_x)]
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])
    assert len(ids[0] | ids[1] | ids[2]) == 60
    # the held-out test set does not move with the seed (no test image is ever trained on)
    assert _ids(c.test_x, c) == ids[2]
    # val_size: capped at 10% of the training images, or smaller if asked, or none
    n_pool = 60 - a.test_x.shape[0]
    assert a.val_x.shape[0] == n_pool // 10
    assert load_folder(root, val_size=2).val_x.shape[0] == 2
    assert load_folder(root, val_size=0).val_x.shape[0] == 0
    assert load_folder(root, limit_train=7).train_x.shape[0] == 7
    assert load_folder(root, test_fraction=0.5).test_x.shape[0] == 30


def test_calibration_sampler(tmp_path):
    data = load_folder(make_folder(tmp_path / "d"))
    cal = data.calibration(16, seed=3)
    assert cal.shape == (16, 1, 20, 20) and torch.equal(cal, data.calibration(16, seed=3))
    assert not torch.equal(cal, data.calibration(16, seed=4))
    train_ids = _ids(data.train_x, data)
    assert _ids(cal, data) <= train_ids


def test_folder_names_through_load_data(tmp_path):
    root = make_folder(tmp_path / "imgs", size=(16, 16))
    data = load_data(f"folder:{root},size=8,channels=3", seed=2)
    assert data.train_x.shape[1:] == (3, 8, 8) and data.name == f"folder:{root},size=8,channels=3"
    assert load_data(f"folder:{root},size=8x12").train_x.shape[1:] == (1, 8, 12)
    with pytest.raises(UserDataError, match="unknown option sise"):
        load_data(f"folder:{root},sise=8")
    with pytest.raises(ValueError, match="--data-dir"):
        load_data(f"folder:{root}", data_dir=str(tmp_path))


def _corrupt(root, name="bee/bad.png", data=b"not an image at all"):
    (root / name).write_bytes(data)
    return root / name


@pytest.mark.parametrize("case", ["missing", "file", "empty", "loose", "no_images", "corrupt", "truncated",
                                  "mixed", "one_class", "train_only", "extra", "test_class", "channels"])
def test_clear_errors_name_the_file_or_folder(tmp_path, case):
    root = tmp_path / "d"
    named, match = root, ""
    if case == "missing":
        match = "no folder"
    elif case == "file":
        root.write_bytes(b"x")
        match = "is a file"
    elif case == "empty":
        root.mkdir()
        match = "is empty"
    elif case == "loose":
        root.mkdir()
        _grey(1, 0).save(root / "a.png")
        match = "no class subfolders .1 images lie directly"
    elif case == "no_images":
        make_folder(root)
        (root / "dog").mkdir()
        (root / "dog" / "notes.txt").write_text("hi")
        named, match = root / "dog", "holds no images .only 1 non-image file"
    elif case == "corrupt":                                      # not an image: found when reading headers
        named, match = _corrupt(make_folder(root)), "not a readable image"
    elif case == "truncated":                                   # a good header, cut pixel data
        make_folder(root)
        good = (root / "bee" / "000.png").read_bytes()
        named, match = _corrupt(root, "bee/cut.png", good[: len(good) // 2]), "not a readable image"
    elif case == "mixed":
        make_folder(root)
        _grey(1, 0, (24, 30)).save(root / "cat" / "big.png")
        match = r"2 different sizes.*24x30 .height x width.: 1 image.s., e.g. .*big.png.*,size=20 "
    elif case == "one_class":
        make_folder(root, classes=("only",))
        match = "only one class folder"
    elif case == "train_only":
        make_folder(root / "train")
        make_folder(root / "val")
        match = "has a train/ subfolder but no test/"
    elif case == "extra":
        for sub in ("train", "test", "val"):
            make_folder(root / sub)
        match = "holds val/ besides train/ and test/"
    elif case == "test_class":
        make_folder(root / "train")
        make_folder(root / "test", classes=("ant", "zebra"))
        named, match = root / "test", "lacks .zebra"
    elif case == "channels":
        make_folder(root)
        with pytest.raises(UserDataError, match="channels must be 1 .grey. or 3"):
            load_folder(root, channels=4)
        return
    with pytest.raises(UserDataError, match=match) as err:
        load_data(f"folder:{root}")
    assert isinstance(err.value, ValueError) and str(named) in str(err.value)


def test_end_to_end_train_lenet5_on_fashion_mnist_pngs(tmp_path):
    """300 real Fashion-MNIST test images (trousers and bags, 150 each) as PNG
    class folders; one epoch of lenet5 must beat chance on the held-out images.
    Two well-separated classes: one epoch of ~17 steps reliably leaves the
    initial plateau there (96-100% over seeds), while on all ten classes it
    often does not (2-37%), which would make this test a coin toss."""
    x, y = read_mnist_like(FASHION_MNIST_DIR, "test")              # (10000, 1, 28, 28) uint8
    root = tmp_path / "fashion"
    for k, name in ((1, "trouser"), (8, "bag")):
        (root / name).mkdir(parents=True)
        for i in torch.nonzero(y == k)[:150, 0].tolist():
            Image.fromarray(x[i, 0].numpy()).save(root / name / f"{i}.png")
    data = load_data(f"folder:{root}")
    assert data.classes == ("bag", "trouser") and data.train_x.shape[1:] == (1, 28, 28)
    torch.manual_seed(0)
    model = entroprune.create("lenet5", num_classes=data.num_classes, in_channels=data.in_channels)
    train(model, data, TrainConfig(epochs=1, lr=0.05, batch_size=16, progress=False))
    x_eval = torch.cat([data.val_x, data.test_x])                  # 57 held-out images
    y_eval = torch.cat([data.val_y, data.test_y])
    assert evaluate(model, x_eval, y_eval) > 75.0                  # chance is 50%
