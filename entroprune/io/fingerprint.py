"""Run fingerprints: the settings that determine a resumable job's result
(data, seed, learning rate, epochs, the starting weights, the method's
options), so that a rerun resumes only the SAME job, and otherwise stops
with an error that names what differs."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import torch


def weights_digest(state: dict[str, torch.Tensor] | torch.nn.Module) -> str:
    """sha256 over the names, shapes and values of a state dict (or a module's)."""
    if isinstance(state, torch.nn.Module):
        state = state.state_dict()
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name]
        h.update(name.encode())
        if isinstance(t, torch.Tensor):
            t = t.detach().cpu().contiguous()
            h.update(str(tuple(t.shape)).encode() + str(t.dtype).encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def data_digest(data: Any) -> dict[str, Any]:
    """Name, split sizes and a hash of the labels and a strided sample of the
    training images of a ``DataBundle``: another data set, split or seed differs."""
    h = hashlib.sha256()
    for t in (data.train_y, data.val_y, data.train_x.flatten()[:: 9973]):
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return {"name": data.name, "train": int(data.train_x.shape[0]), "val": int(data.val_x.shape[0]),
            "hash": h.hexdigest()[:16]}


def normalise(value: Any) -> Any:
    """JSON round trip, so that tuples and lists (or ints and floats) compare as stored."""
    return json.loads(json.dumps(value, default=str))


def differences(stored: dict[str, Any], current: dict[str, Any], prefix: str = "") -> list[str]:
    """Human-readable list of the settings that differ: ``"lr: 0.1 there, 0.01 here"``."""
    out = []
    for key in sorted(set(stored) | set(current)):
        a, b = stored.get(key, "<absent>"), current.get(key, "<absent>")
        if isinstance(a, dict) and isinstance(b, dict):
            out += differences(a, b, f"{prefix}{key}.")
        elif a != b and not (a == "<absent>" and b is None):   # a setting added since, at its default None
            out.append(f"{prefix}{key}: {a} there, {b} here")
    return out


class FingerprintMismatch(ValueError):
    """A resumable run's state was written by a job with other settings."""


def check_fingerprint(stored: dict[str, Any] | None, current: dict[str, Any], what: str,
                      ignore: tuple[str, ...] = ()) -> None:
    """Raise ``FingerprintMismatch`` naming the differing settings of ``what`` (a file or folder).
    ``ignore``: dotted keys (``"config.eval_stages"``) that change what is reported, not the result."""
    current = normalise(current)
    if stored is None:
        raise FingerprintMismatch(f"{what} was written by an older entroprune that did not record its settings; "
                                  "delete it (or pass --restart) to start over")
    diff = [d for d in differences(normalise(stored), current) if d.split(":")[0] not in ignore]
    if diff:
        shown = "; ".join(diff[:6]) + (f"; and {len(diff) - 6} more" if len(diff) > 6 else "")
        raise FingerprintMismatch(f"{what} belongs to a run with other settings ({shown}); pass --restart to "
                                  "discard it and start over, or choose another output")
