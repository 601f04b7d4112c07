"""Mini-batches sliced from in-memory tensors, with light augmentation.

Augmentation (training only): random crop after zero padding of 2 pixels and
a random horizontal flip, done per batch on the tensor (vectorised, no PIL).
Under DDP each process takes every ``world_size``-th index of one shared
seeded permutation.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F


def augment(x: torch.Tensor, g: torch.Generator, pad: int = 2) -> torch.Tensor:
    """Random crop (zero padding ``pad``) and horizontal flip of ``x`` (N, C, H, W)."""
    n, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))                        # (N, C, H+2p, W+2p)
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=g)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=g)
    rows = (dy[:, None] + torch.arange(h)[None, :])                # (N, H)
    cols = (dx[:, None] + torch.arange(w)[None, :])                # (N, W)
    idx_n = torch.arange(n)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[idx_n, rows[:, :, None], cols[:, None, :]]  # (N, H, W, C)
    out = out.permute(0, 3, 1, 2).contiguous()
    flip = torch.rand(n, generator=g) < 0.5
    out[flip] = out[flip].flip(-1)
    return out


def iterate_batches(x: torch.Tensor, y: torch.Tensor, batch_size: int, *, shuffle: bool = False,
                    augment_images: bool = False, seed: int = 0, rank: int = 0,
                    world_size: int = 1) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(images, labels)`` batches; seeded and shardable across ranks."""
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(x.shape[0], generator=g) if shuffle else torch.arange(x.shape[0])
    order = order[rank::world_size]
    if world_size > 1:  # equal number of batches on every rank, or DDP hangs
        per_rank = x.shape[0] // world_size
        order = order[:per_rank]
    for start in range(0, order.numel(), batch_size):
        idx = order[start:start + batch_size]
        xb = x[idx]
        if augment_images:
            xb = augment(xb, g)
        yield xb, y[idx]


def num_batches(n: int, batch_size: int, world_size: int = 1) -> int:
    per_rank = n // world_size if world_size > 1 else n
    return (per_rank + batch_size - 1) // batch_size
