"""The reference checkpoints shipped with entroprune (trained on
Fashion-MNIST by ``entroprune train``; see ``checkpoints/manifest.json``)."""

from __future__ import annotations

import json
from pathlib import Path

CHECKPOINT_DIR = Path(__file__).resolve().parent.parent / "checkpoints"


def manifest() -> dict:
    path = CHECKPOINT_DIR / "manifest.json"
    return json.loads(path.read_text()) if path.exists() else {}


def pretrained_path(name: str) -> Path:
    """Path of the shipped checkpoint of zoo model ``name``."""
    path = CHECKPOINT_DIR / f"{name}_fashion_mnist.safetensors"
    if not path.exists():
        shipped = sorted(p.name for p in CHECKPOINT_DIR.glob("*.safetensors"))
        raise FileNotFoundError(f"no shipped checkpoint for {name!r} (looked for {path}); "
                                f"shipped: {', '.join(shipped) or 'none'}")
    return path
