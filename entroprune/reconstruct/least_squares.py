"""Ridge least squares of a layer's outputs on its input patches: the one
implementation shared by feature-map reconstruction (``reconstruct.py``,
docs/METHODS.md section 7), the reconstruction-aware channel criterion
(``pruning/greedy_refit.py``, section 8) and the refit of generalized entropic
sparsification (``sparsify/``, section 6).

A convolution (or linear layer) is a linear map from its input patches
``X`` (N x D, D = C * k: C input channels of k columns each, k = kh * kw) to
its outputs ``Y`` (N x O). Everything here works on second moments, which
are formed once (the only cost that grows with N) and then solved in
``O(D^3)``:

    G = Xc^T Xc / N,   S = Xc^T Yc / N,   E = ||Yc||^2 / N,

with ``Xc, Yc`` centred when an intercept is fitted. X and Y are
standardised by one scalar each (mean column variance of X is 1,
``||Y||^2 / N`` is 1), so that a ridge ``lam`` is dimensionless: relative to
the mean input variance. The ridge solution restricted to kept channels is
``V = (G_kk + lam I)^-1 S_k``, mapped back to the original units as the
layer's weight ``V^T * y_scale / x_scale`` and bias ``y_mean - W x_mean``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


class NonFiniteError(ValueError):
    """A tensor that must hold finite numbers holds NaN or infinity."""


def check_finite(tensor: torch.Tensor, what: str) -> None:
    """Raise ``NonFiniteError`` naming ``what`` if ``tensor`` has NaN or inf."""
    if not bool(torch.isfinite(tensor).all()):
        raise NonFiniteError(f"{what} holds NaN or infinite values; the model or its inputs are broken "
                             "(a model trained with too high a learning rate?)")


@dataclass
class Moments:
    """Standardised second moments of one layer's regression."""
    gram: torch.Tensor           # (D, D) X^T X / N, float64
    cross: torch.Tensor          # (D, O) X^T Y / N
    energy: float                # ||Y||^2 / N (1 after standardisation, unless Y == 0)
    x_mean: torch.Tensor         # (D,) zeros without intercept
    y_mean: torch.Tensor         # (O,)
    x_scale: float
    y_scale: float
    group: int                   # k: columns per input channel

    @property
    def channels(self) -> int:
        return self.gram.shape[0] // self.group


def moments(x: torch.Tensor, y: torch.Tensor, group: int = 1, fit_intercept: bool = True,
            chunk: int = 4096) -> Moments:
    """Gram matrices of patches ``x`` (N, D) and outputs ``y`` (N, O), in float64."""
    n, d = x.shape
    if d % group:
        raise ValueError(f"{d} input columns are not a multiple of the channel block {group}")
    if n < 1:
        raise ValueError("least squares needs at least one sampled row")
    check_finite(x, "the layer's input patches")
    check_finite(y, "the layer's target outputs")
    xm = x.double().mean(0) if fit_intercept else torch.zeros(d, dtype=torch.float64)   # (D,)
    ym = y.double().mean(0) if fit_intercept else torch.zeros(y.shape[1], dtype=torch.float64)
    gram = torch.zeros(d, d, dtype=torch.float64)
    cross = torch.zeros(d, y.shape[1], dtype=torch.float64)
    energy = 0.0
    for i in range(0, n, chunk):  # chunks bound the float64 copies
        xc = x[i:i + chunk].double() - xm                  # (n_i, D)
        yc = y[i:i + chunk].double() - ym                  # (n_i, O)
        gram += xc.T @ xc
        cross += xc.T @ yc
        energy += float((yc * yc).sum())
    gram, cross, energy = gram / n, cross / n, energy / n
    return standardise(gram, cross, energy, xm, ym, group)


def standardise(gram: torch.Tensor, cross: torch.Tensor, energy: float, x_mean: torch.Tensor,
                y_mean: torch.Tensor, group: int) -> Moments:
    """``Moments`` from raw (centred) second moments: X and Y divided by one scalar each."""
    x_scale = math.sqrt(max(float(gram.diagonal().mean()), 1e-30))
    y_scale = math.sqrt(max(energy, 1e-30))
    return Moments(gram / x_scale**2, cross / (x_scale * y_scale), energy / y_scale**2,
                   x_mean, y_mean, x_scale, y_scale, group)


def solve_spd(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a^-1 b`` for a symmetric positive (semi-)definite ``a``: Cholesky when it
    succeeds, else least squares (a singular Gram with no ridge: the minimum-norm
    solution, which reproduces the fit exactly)."""
    chol, info = torch.linalg.cholesky_ex(a)
    if int(info) == 0:
        return torch.cholesky_solve(b, chol)
    return torch.linalg.lstsq(a, b, driver="gelsd").solution


def channel_columns(keep: list[int], group: int) -> torch.Tensor:
    """Column indices of the kept channels' blocks of ``group`` columns each."""
    return torch.tensor([c * group + j for c in keep for j in range(group)], dtype=torch.long)


def refit(x: torch.Tensor | Moments, y: torch.Tensor | None, keep: list[int] | None = None, group: int = 1,
          ridge: float = 1e-4, fit_intercept: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Ridge least squares of ``y`` on the kept channels' columns of ``x``
    (all channels when ``keep`` is None).

    Returns the layer weight (O, len(keep) * group) and bias (O,) (None without
    intercept), in the original units; ``ridge`` is relative to the mean input
    variance (0: plain least squares)."""
    if ridge < 0:
        raise ValueError(f"the ridge must be >= 0, got {ridge}")
    m = x if isinstance(x, Moments) else moments(x, y, group, fit_intercept)
    keep = list(range(m.channels)) if keep is None else keep
    cols = channel_columns(keep, m.group)
    g = m.gram[cols][:, cols].clone()                      # (D', D')
    g.diagonal().add_(ridge)
    v = solve_spd(g, m.cross[cols])                        # (D', O) standardised
    weight = (v * (m.y_scale / m.x_scale)).T               # (O, D')
    bias = (m.y_mean - weight @ m.x_mean[cols]) if fit_intercept else None   # (O,)
    return weight, bias


def residual(x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
             chunk: int = 4096) -> tuple[float, float]:
    """``(||y - x W^T - b||^2, ||y - mean(y)||^2)``, summed over rows and outputs."""
    err, tot = 0.0, 0.0
    ym = y.double().mean(0)
    wt = weight.double().T                                 # (D, O)
    for i in range(0, x.shape[0], chunk):
        pred = x[i:i + chunk].double() @ wt                # (n_i, O)
        if bias is not None:
            pred = pred + bias.double()
        err += float(((y[i:i + chunk].double() - pred) ** 2).sum())
        tot += float(((y[i:i + chunk].double() - ym) ** 2).sum())
    return err, tot


def relative_error(x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor,
                   bias: torch.Tensor | None = None, chunk: int = 4096) -> float:
    """``||y - x W^T - b||^2 / ||y - mean(y)||^2`` (fraction of unexplained variance)."""
    err, tot = residual(x, y, weight, bias, chunk)
    return err / max(tot, 1e-30)


def holdout_mask(n: int, every: int) -> torch.Tensor:
    """(n,) bool: every ``every``-th row held out (none when ``every`` < 2)."""
    held = torch.zeros(n, dtype=torch.bool)
    if every >= 2:
        held[::every] = True
    return held
