"""Data-parallel helpers for ``torchrun``: a no-op in a single process.

``torchrun --nproc_per_node 2 -m entroprune.cli train ...`` sets WORLD_SIZE,
RANK and the rendezvous variables; we use gloo on CPU and NCCL on CUDA.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
import torch.nn as nn


def is_distributed() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def setup() -> tuple[int, int]:
    """Initialise the process group if launched by torchrun; ``(rank, world)``."""
    if not is_distributed():
        return 0, 1
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
    return dist.get_rank(), dist.get_world_size()


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def wrap(model: nn.Module) -> nn.Module:
    """DDP-wrap ``model`` when distributed (parameters are broadcast from rank 0)."""
    if dist.is_available() and dist.is_initialized():
        return nn.parallel.DistributedDataParallel(model)
    return model


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum ``t`` over processes in place (no-op in one process)."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def assert_in_sync(model: nn.Module) -> None:
    """Raise if the ranks' parameters differ (DDP must keep them identical)."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    flat = torch.cat([p.detach().flatten() for p in model.parameters()])
    lo, hi = flat.clone(), flat.clone()
    dist.all_reduce(lo, op=dist.ReduceOp.MIN)
    dist.all_reduce(hi, op=dist.ReduceOp.MAX)
    if not torch.equal(lo, hi):
        raise RuntimeError("data-parallel ranks hold different weights after training")
