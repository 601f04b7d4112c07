"""The user's own data sets: ``folder:PATH`` and ``npz:PATH`` names, the
splits and the training statistics shared by ``folder.py`` and ``npz.py``.

Split rules (the same for both readers):

- test: the data's own test set if it has one (``train/`` + ``test/``
  subfolders, or ``x_test``/``y_test`` arrays); else a held-out
  ``test_fraction`` (default 10%, at least one image) of all images, drawn
  with a FIXED seed (``TEST_SEED``), not with ``seed``: a run with another
  seed must never test on images an earlier run trained on.
- validation: ``min(val_size, max(1, 10% of the remaining images))`` images
  (so the default ``val_size=5000`` acts only on folders of more than 50,000
  images), drawn with ``seed`` exactly as for the named data sets;
  ``val_size=0`` gives an empty validation split.
- train: the rest; ``limit_train`` keeps its first images.

Normalisation: per-channel mean and std of the training split only (after the
test and validation images are taken out, before ``limit_train``), in units
of ``x / pixel_scale`` (255 for uint8 images, 1 for float arrays); stored in
the ``DataBundle`` (``mean``, ``std``, ``pixel_scale``, ``normalise()``).
"""

from __future__ import annotations

from pathlib import Path

import torch

from .datasets import DataBundle, normalise

TEST_FRACTION = 0.1   # held-out test fraction when the data has no test set
VAL_CAP = 0.1         # the validation split takes at most this fraction of the training images
TEST_SEED = 0         # the held-out test split never depends on the run's seed


class UserDataError(ValueError):
    """A ``folder:`` or ``npz:`` data set is missing or malformed; the message
    names the file or folder and says what to do."""


# options that may follow the path in a name: folder:PATH,size=32,channels=3
_OPTIONS = {"folder": ("size", "channels", "test_fraction"), "npz": ("layout", "test_fraction")}


def parse_spec(spec: str) -> tuple[str, str, dict[str, str]]:
    """``"folder:PATH,key=value,..."`` -> ``("folder", "PATH", {key: value})``.

    A path that exists as written is taken whole (even with commas in it);
    otherwise trailing ``,key=value`` parts with a known key are options.
    """
    kind, _, rest = spec.partition(":")
    if kind not in _OPTIONS or not rest:
        raise UserDataError(f"{spec!r}: write folder:PATH or npz:PATH, with the path after the colon")
    parts = rest.split(",")
    if Path(rest).exists() or not all("=" in p for p in parts[1:]):
        return kind, rest, {}
    options = dict(p.split("=", 1) for p in parts[1:])
    unknown = sorted(set(options) - set(_OPTIONS[kind]))
    if unknown:
        raise UserDataError(f"{spec!r}: unknown option {', '.join(unknown)}; {kind}: takes "
                            f"{', '.join(_OPTIONS[kind])} (e.g. {kind}:PATH,test_fraction=0.2)")
    return kind, parts[0], options


def _typed(spec: str, options: dict[str, str]) -> dict:
    """Option strings as the readers' keyword arguments."""
    out: dict = {}
    try:
        for key, value in options.items():
            if key == "size":        # "32" or "32x48" (height x width)
                hw = [int(v) for v in value.lower().split("x")]
                out[key] = hw[0] if len(hw) == 1 else tuple(hw)
            elif key == "channels":
                out[key] = int(value)
            elif key == "test_fraction":
                out[key] = float(value)
            else:
                out[key] = value
    except ValueError as e:
        raise UserDataError(f"{spec!r}: bad option value ({e}); e.g. size=32 or size=32x48, "
                            "channels=1 or 3, test_fraction=0.1") from e
    return out


def load_spec(spec: str, val_size: int = 5000, seed: int = 0, limit_train: int | None = None) -> DataBundle:
    """Load ``folder:PATH[,options]`` or ``npz:PATH[,options]``; the bundle is
    named by ``spec`` itself, so ``--dataset <name>`` reproduces it."""
    kind, path, options = parse_spec(spec)
    kwargs = dict(val_size=val_size, seed=seed, limit_train=limit_train, name=spec, **_typed(spec, options))
    if kind == "folder":
        from .folder import load_folder
        return load_folder(path, **kwargs)
    from .npz import load_npz
    return load_npz(path, **kwargs)


def _check_fraction(test_fraction: float, where: str) -> None:
    if not 0.0 < test_fraction < 1.0:
        raise UserDataError(f"{where}: test_fraction must be between 0 and 1 (exclusive), "
                            f"got {test_fraction}")


def channel_stats(x: torch.Tensor, pixel_scale: float) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of ``x / pixel_scale`` for ``x`` (N, C, H, W),
    accumulated in float64 over chunks (no float copy of the whole set)."""
    c = x.shape[1]
    s1 = torch.zeros(c, dtype=torch.float64)
    s2 = torch.zeros(c, dtype=torch.float64)
    for chunk in x.split(2048):
        v = chunk.to(torch.float64).div_(pixel_scale).transpose(0, 1).reshape(c, -1)  # (C, n*H*W)
        s1 += v.sum(1)
        s2 += (v * v).sum(1)
    count = x.shape[0] * x.shape[2] * x.shape[3]
    mean = s1 / count
    std = (s2 / count - mean * mean).clamp_min(0).sqrt()
    std = torch.where(std < 1e-8, torch.ones_like(std), std)   # a constant channel: only centre it
    return tuple(mean.tolist()), tuple(std.tolist())


def make_bundle(name: str, x: torch.Tensor, y: torch.Tensor, num_classes: int, *,
                x_test: torch.Tensor | None = None, y_test: torch.Tensor | None = None,
                pixel_scale: float = 255.0, test_fraction: float = TEST_FRACTION,
                val_size: int = 5000, seed: int = 0, limit_train: int | None = None,
                classes: tuple[str, ...] = (), where: str = "") -> DataBundle:
    """Split raw images ``x`` (N, C, H, W) with labels ``y`` (N,) by the rules
    in the module docstring, normalise with the training statistics."""
    where = where or name
    if x_test is None:
        _check_fraction(test_fraction, where)
        n_test = max(1, round(x.shape[0] * test_fraction))
        perm = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(TEST_SEED))
        test_idx, pool = perm[:n_test], perm[n_test:]
        x_test, y_test, x, y = x[test_idx], y[test_idx], x[pool], y[pool]
    assert y_test is not None
    n = x.shape[0]
    n_val = min(max(0, val_size), max(1, int(n * VAL_CAP)))
    if n - n_val < 1:
        raise UserDataError(f"{where}: only {n} training image(s) after the test split, too few to "
                            "also hold out a validation split; add images (a few per class at least)")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    val_idx, train_idx = perm[:n_val], perm[n_val:]
    mean, std = channel_stats(x[train_idx], pixel_scale)   # training split only, before limit_train
    if limit_train is not None:
        train_idx = train_idx[:limit_train]

    def norm(t: torch.Tensor) -> torch.Tensor:
        return normalise(t, mean, std, pixel_scale)

    return DataBundle(name=name, train_x=norm(x[train_idx]), train_y=y[train_idx],
                      val_x=norm(x[val_idx]), val_y=y[val_idx], test_x=norm(x_test), test_y=y_test,
                      num_classes=num_classes, mean=mean, std=std, pixel_scale=pixel_scale,
                      classes=tuple(classes))
