"""Benchmark and test helpers of the GES solver (docs/METHODS.md section 6;
Barisin & Horenko, arXiv 2404.04734), not public API: a synthetic layer whose
outputs depend on known input channels (``tests/sparsify``), and the solver's
wall time against the number of sampled patches (``benchmarks/ges.py``)."""

from __future__ import annotations

import time

import torch

from .entropic import EntropicConfig, moments, solve


def synthetic_layer(n: int, channels: int, outputs: int, group: int, active: list[int],
                    noise: float = 0.01, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Patches (n, channels * group) and outputs (n, outputs) of a linear layer
    whose outputs depend only on the ``active`` input channels (plus noise)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, channels * group, generator=gen)
    w = torch.randn(outputs, channels, group, generator=gen)
    mask = torch.zeros(channels)
    mask[active] = 1.0
    w = (w * mask[None, :, None]).reshape(outputs, -1)    # (O, D)
    y = x @ w.T + 0.5 + noise * torch.randn(n, outputs, generator=gen)
    return x, y


def solver_cost(sizes: list[int], channels: int = 64, outputs: int = 64, group: int = 9,
                cfg: EntropicConfig | None = None, seed: int = 0) -> list[dict[str, float]]:
    """Wall time of the solver against the number of sampled patches.

    One synthetic layer (half of its channels active) is drawn with the largest
    size; each row solves on its first ``n`` patches and reports the time of the
    Gram matrices (grows with ``n``) and of the iterations (does not)."""
    cfg = cfg or EntropicConfig()
    x, y = synthetic_layer(max(sizes), channels, outputs, group, list(range(0, channels, 2)), seed=seed)
    rows = []
    for n in sizes:
        t0 = time.perf_counter()
        m = moments(x[:n], y[:n], group, cfg.fit_intercept)
        t1 = time.perf_counter()
        res = solve(m, cfg=cfg)
        t2 = time.perf_counter()
        rows.append({"n_patches": n, "columns": channels * group, "gram_seconds": t1 - t0,
                     "solve_seconds": t2 - t1, "total_seconds": t2 - t0,
                     "iterations": res.iterations, "seconds_per_iteration": (t2 - t1) / max(1, res.iterations)})
    return rows
