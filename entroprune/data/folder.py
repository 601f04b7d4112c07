"""A folder of images as a data set: ``load_data("folder:PATH")``.

Layout: one subfolder per class; the class names, sorted, give the labels
0..K-1. Images may sit at any depth inside their class folder. If ``PATH``
has exactly the subfolders ``train/`` and ``test/``, each holds the class
folders and ``test/`` is the test set (its classes must be among
``train/``'s); otherwise the test set is a held-out fraction (see
``custom.py`` for every split rule).

Images are read with Pillow: every format it opens (PNG, JPEG, BMP, GIF,
TIFF, WebP, ...), chosen by file extension; hidden files and folders (and
``__MACOSX``-like ``__`` folders) are skipped. Each image is converted to
grey ("L", ``channels=1``) or RGB (``channels=3``) and resized (bilinear) to
``size``. Defaults: ``size`` is the size every image already has (mixed
sizes are an error asking for ``size``), ``channels`` is 1 when every image
is greyscale (by its Pillow mode) and 3 otherwise. 16-bit grey images are
scaled to 8 bits (not clipped); EXIF orientation is not applied.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .custom import TEST_FRACTION, UserDataError, make_bundle
from .datasets import DataBundle

# Extensions Pillow can open, minus its stub formats that need an external
# plugin or program (HDF5, GRIB, BUFR, WMF/EMF, PostScript) and video.
_STUBS = {".h5", ".hdf", ".grib", ".bufr", ".wmf", ".emf", ".eps", ".ps", ".mpeg", ".mpg"}
Image.init()
IMAGE_EXTENSIONS = frozenset(ext for ext, fmt in Image.registered_extensions().items()
                             if fmt in Image.OPEN and ext not in _STUBS)
_GREY_MODES = {"1", "L", "LA", "I", "F", "I;16", "I;16L", "I;16B", "I;16N"}


@dataclass
class ImageFolder:
    """The raw images of a folder, before any split."""
    x: torch.Tensor                  # (N, C, H, W) uint8: all images, or train/'s
    y: torch.Tensor                  # (N,) int64 labels, index into classes
    classes: tuple[str, ...]
    x_test: torch.Tensor | None      # (N_test, C, H, W) uint8 when there is a test/ folder
    y_test: torch.Tensor | None


def _hidden(name: str) -> bool:
    return name.startswith((".", "__"))


def _subfolders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not _hidden(p.name))


def _image_files(folder: Path) -> list[Path]:
    """Image files anywhere under ``folder``, sorted, hidden ones skipped."""
    return sorted(p for p in folder.rglob("*")
                  if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
                  and not any(_hidden(part) for part in p.relative_to(folder).parts))


def _split_roots(root: Path) -> tuple[Path, Path | None]:
    """``(train_root, test_root)``: root/train and root/test, or (root, None)."""
    names = {p.name for p in _subfolders(root)}
    if not names & {"train", "test"}:
        return root, None
    missing = {"train", "test"} - names
    if missing:
        present = ({"train", "test"} - missing).pop()
        raise UserDataError(
            f"{root} has a {present}/ subfolder but no {missing.pop()}/: with train/ and test/ both are "
            f"needed, each holding one subfolder per class. Rename the held-out folder (e.g. val/) to "
            f"test/, or if '{present}' is a class, give it another name")
    extra = sorted(names - {"train", "test"})
    if extra:
        raise UserDataError(
            f"{root} holds {', '.join(f'{e}/' for e in extra)} besides train/ and test/; entroprune "
            "makes its own validation split from train/, so move those images into train/ or "
            "remove the folders")
    return root / "train", root / "test"


def _class_files(split_root: Path) -> dict[str, list[Path]]:
    """``{class name: its image files}`` for one split folder, sorted by name."""
    classes = _subfolders(split_root)
    if not classes:
        loose = len(_image_files(split_root))
        what = f"has no class subfolders ({loose} images lie directly in it)" if loose else (
            "has no class subfolders" if any(split_root.iterdir()) else "is empty")
        raise UserDataError(f"{split_root} {what}; put the images into one subfolder per class, "
                            f"e.g. {split_root / 'cat' / '1.png'} and {split_root / 'dog' / '2.png'}")
    out = {}
    for folder in classes:
        files = _image_files(folder)
        if not files:
            others = sum(p.is_file() for p in folder.rglob("*"))
            note = f" (only {others} non-image file(s))" if others else ""
            raise UserDataError(f"class folder {folder} holds no images{note}; add images "
                                f"({', '.join(sorted(IMAGE_EXTENSIONS & {'.png', '.jpg', '.jpeg', '.bmp'}))} "
                                "...) or remove the folder")
        out[folder.name] = files
    return out


def _bad_image(path: Path, e: Exception) -> UserDataError:
    return UserDataError(f"{path} is not a readable image ({type(e).__name__}: {e}); "
                         "replace it with a good copy or delete it")


def _header(path: Path) -> tuple[tuple[int, int], bool]:
    """``((H, W), is_grey)`` from the file's header, without decoding pixels."""
    try:
        with Image.open(path) as im:
            w, h = im.size
            grey = im.mode in _GREY_MODES
            if im.mode in ("P", "PA"):     # a palette image is grey if every entry is
                pal = np.asarray(im.getpalette() or [0, 0, 0]).reshape(-1, 3)
                grey = bool((pal == pal[:, :1]).all())
    except Exception as e:   # Pillow's decoders raise many types (OSError, SyntaxError, ...)
        raise _bad_image(path, e) from e
    return (h, w), grey


def _pixels(path: Path, size: tuple[int, int], channels: int) -> np.ndarray:
    """One image decoded, converted and resized: ``(H, W, C)`` uint8."""
    h, w = size
    try:
        with Image.open(path) as im:
            if im.mode.startswith("I"):      # 16-bit grey: scale 0..65535 to 0..255, not clip
                im = Image.fromarray(np.clip(np.rint(np.asarray(im, np.float64) / 257), 0, 255)
                                     .astype(np.uint8))
            im = im.convert("L" if channels == 1 else "RGB")
            if im.size != (w, h):            # Pillow sizes are (W, H)
                im = im.resize((w, h), Image.Resampling.BILINEAR)
            return np.asarray(im).reshape(h, w, channels)
    except Exception as e:   # truncated data shows only when decoding
        raise _bad_image(path, e) from e


def read_images(files: list[Path], size: int | tuple[int, int], channels: int) -> torch.Tensor:
    """Images ``files`` as uint8 ``(N, C, H, W)``, converted and resized as
    ``read_image_folder`` does (use it with ``DataBundle.normalise`` on new images)."""
    hw = _check_size(size, "read_images")
    out = np.empty((len(files), hw[0], hw[1], channels), dtype=np.uint8)     # (N, H, W, C)
    for i, path in enumerate(files):
        out[i] = _pixels(Path(path), hw, channels)
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()        # (N, C, H, W)


def _check_size(size, where: str) -> tuple[int, int]:
    hw = (size, size) if isinstance(size, int) else tuple(size) if isinstance(size, (tuple, list)) else ()
    if len(hw) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in hw):
        raise UserDataError(f"{where}: size must be a positive int or (height, width), got {size!r}")
    return hw  # type: ignore[return-value]


def _common_size(headers: dict[Path, tuple[tuple[int, int], bool]], root: Path) -> tuple[int, int]:
    """The one size every image has; mixed sizes are an error asking for ``size``."""
    sizes = Counter(hw for hw, _ in headers.values())
    if len(sizes) == 1:
        return next(iter(sizes))
    example = {}
    for path, (hw, _) in headers.items():
        example.setdefault(hw, path)
    listed = "; ".join(f"{h}x{w} (height x width): {n} image(s), e.g. {example[(h, w)]}"
                       for (h, w), n in sizes.most_common(3))
    more = f"; and {len(sizes) - 3} more sizes" if len(sizes) > 3 else ""
    h, w = sizes.most_common(1)[0][0]
    text = str(h) if h == w else f"{h}x{w}"
    raise UserDataError(f"the images in {root} have {len(sizes)} different sizes ({listed}{more}); "
                        f"to resize them all to one size pass size={h if h == w else (h, w)} to load_folder, "
                        f"or --dataset folder:{root},size={text} (any HxW or one number for square images)")


def read_image_folder(path: str | Path, size: int | tuple[int, int] | None = None,
                      channels: int | None = None) -> ImageFolder:
    """Read every image of the folder ``path`` (layout in the module docstring)."""
    root = Path(path)
    if not root.exists():
        raise UserDataError(f"no folder {root}; check the path (it should hold one subfolder of "
                            "images per class)")
    if not root.is_dir():
        hint = f"; for a NumPy archive use npz:{root}" if root.suffix == ".npz" else ""
        raise UserDataError(f"{root} is a file, not a folder of class subfolders{hint}")
    train_root, test_root = _split_roots(root)
    train = _class_files(train_root)
    if len(train) < 2:
        raise UserDataError(f"{train_root} has only one class folder ({next(iter(train))}/); a classifier "
                            "needs at least 2 classes: add one subfolder of images per class")
    test = _class_files(test_root) if test_root is not None else {}
    stray = sorted(set(test) - set(train))
    if stray:
        raise UserDataError(f"{test_root} has class folders that {train_root} lacks ({', '.join(stray)}); "
                            "every test class needs training images: fix the names or add them to train/")
    classes = tuple(train)                     # sorted folder names; label = index
    label = {c: i for i, c in enumerate(classes)}

    headers = {p: _header(p) for files in (*train.values(), *test.values()) for p in files}
    hw = _check_size(size, str(root)) if size is not None else _common_size(headers, root)
    if channels is None:
        channels = 1 if all(grey for _, grey in headers.values()) else 3
    if channels not in (1, 3):
        raise UserDataError(f"{root}: channels must be 1 (grey) or 3 (RGB), got {channels}")

    def read(split: dict[str, list[Path]]) -> tuple[torch.Tensor, torch.Tensor]:
        files = [p for files in split.values() for p in files]
        y = torch.tensor([label[c] for c, fs in split.items() for _ in fs], dtype=torch.int64)  # (N,)
        return read_images(files, hw, channels), y

    x, y = read(train)
    x_test, y_test = read(test) if test_root is not None else (None, None)
    return ImageFolder(x=x, y=y, classes=classes, x_test=x_test, y_test=y_test)


def load_folder(path: str | Path, *, size: int | tuple[int, int] | None = None, channels: int | None = None,
                test_fraction: float = TEST_FRACTION, val_size: int = 5000, seed: int = 0,
                limit_train: int | None = None, name: str | None = None) -> DataBundle:
    """A folder of images as a ``DataBundle``: read as in ``read_image_folder``,
    split and normalised by the rules of ``custom.py`` (test: ``test/`` or a
    fixed-seed ``test_fraction``; validation: ``min(val_size, max(1, 10% of
    the rest))`` drawn with ``seed``; statistics of the training split).
    ``name`` defaults to ``"folder:PATH"``."""
    data = read_image_folder(path, size=size, channels=channels)
    return make_bundle(name or f"folder:{path}", data.x, data.y, len(data.classes),
                       x_test=data.x_test, y_test=data.y_test, pixel_scale=255.0,
                       test_fraction=test_fraction, val_size=val_size, seed=seed,
                       limit_train=limit_train, classes=data.classes, where=str(path))
