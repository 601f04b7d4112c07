"""Generalized entropic sparsification (GES): the solver for one layer.

Source: T. Barisin, I. Horenko, "Towards Generalized Entropic Sparsification
for Convolutional Neural Networks", arXiv 2404.04734 (Neural Computation
2025); the objective is the SPARTAn family of the same group. See METHODS.md,
section 6.

A convolution (or linear layer) is a linear regression from its input patches
``X`` (``N x D``, ``D = C * k``: ``C`` input channels of ``k`` columns each,
``k = kh * kw`` for a convolution, the flattened block of one channel for a
linear layer) to its outputs ``Y`` (``N x O``). Input channels get feature
weights ``w`` on the probability simplex; with ``w_hat = C * w`` expanded to
the ``k`` columns of each channel (mean one, so uniform ``w`` is plain ridge;
this scaling is the project's choice) the problem is::

    min_{w in simplex, B}  F(w, B) = ||Y - X diag(w_hat) B||^2 / N + lam ||B||^2 - eps_E H(w),
    H(w) = -sum_c w_c log w_c.

X and Y are standardised first (means removed when the layer has a bias; X
divided by one scalar so that its mean column variance is 1, Y by one scalar so
that ``||Y||^2 / N = 1``), so ``lam`` and ``eps_E`` are dimensionless and the
loss is a relative reconstruction error. Why ``w`` becomes sparse: minimising
the ridge term over ``w`` for a fixed product ``V = diag(w_hat) B`` gives
``lam (sum_c ||V_c||^(2/3))^3 / C^2``, a group quasi-norm that favours few
channels; the entropy keeps ``w`` smooth, and a small ``eps_E`` lets most of it
go to (near) zero. Measured on the shipped LeNet-5: sparsity grows as
``eps_E`` falls and saturates at a level set by ``lam`` (at ``lam = 0.5``,
little changes below ``eps_E = 0.003``), so both are knobs.

Alternating minimisation; ``F`` never increases (the objective is tracked).

B-step (exact block minimiser): ``B = (W G W + lam I)^-1 W S`` with
``W = diag(w_hat)``, ``G = X^T X / N`` and ``S = X^T Y / N``. Once the Gram
matrices are formed (``O(N D^2)``, the only cost that grows with the number of
sampled patches) each evaluation is ``O(D^3)``, independent of ``N``.

w-step (closed form). For fixed ``B`` let ``Z_c = X_c B_c`` be the part of the
prediction carried by channel ``c``; the loss is the convex quadratic
``L(w) = E - 2 C p.w + C^2 w^T Q w`` with ``Q_ab = <Z_a, Z_b> / N`` and
``p_c = <Z_c, Y> / N``, so the per-channel cost term is its gradient
``D_c = dL/dw_c = -2 C p_c + 2 C^2 (Q w)_c``. For a move ``delta = w' - w``
inside the simplex (``sum delta = 0``), ``delta = s (a - b)`` with ``a, b``
probability vectors and ``s = ||delta||_1 / 2``, so by Jensen
``delta^T Q delta <= s^2 max_ab d_ab``, ``d_ab = Q_aa + Q_bb - 2 Q_ab``, and by
Pinsker (``||delta||_1^2 <= 2 KL(w'||w)``)::

    L(w') <= L(w) + D.delta + tau KL(w'||w)   for tau >= tau_max = C^2 max_ab d_ab / 2.

Minimising this majoriser minus ``eps_E H(w')`` over the simplex (Lagrange
multiplier for ``sum w' = 1``) gives the softmax::

    w' = softmax((tau log w - D) / (tau + eps_E)).

``tau = 0`` is the linearised step ``w = softmax(-D / eps_E)``; the fixed points
of every ``tau`` are the points where ``w = softmax(-D / eps_E)``, the
stationarity condition of the entropic problem (by the envelope theorem ``D``
at the exact ``B`` is also the gradient of ``min_B F``).

The project's choice of step size: alternating one majorised w-step with the
B-step converges very slowly (``B`` compensates every change of ``w``), so
``tau`` is chosen by backtracking on the true objective after the B-step:
start from half the previous ``tau``, accept ``w'`` if
``F(w', B*(w')) <= F(w, B*(w))``, otherwise multiply ``tau`` by 4. After
``w_steps`` rejections ``tau_max`` is computed; at ``tau >= tau_max`` the step is
accepted without test, which is safe because
``F(w', B*(w')) <= F(w', B) <= F(w, B)`` by the majoriser. Small ``tau``
(large steps) is tried first, so the pure softmax step is used whenever it
decreases ``F`` and stays in a trust region ``KL(w'||w) <= max_kl`` (larger
``tau`` moves less). Without the trust region a tiny ``eps_E`` makes the first
step from the uniform start jump to the single channel with the most negative
``D_c``: a degenerate stationary point (a channel of weight ~0 gets ``B_c ~ 0``
and hence ``D_c ~ 0``, no signal to come back) with a far worse ``F``.
The objective is non-convex, so the result is a stationary point reached from
the uniform start, not a certified global minimum.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch

from ..reconstruct.least_squares import Moments, moments, refit, relative_error  # noqa: F401  (re-exported)


@dataclass
class EntropicConfig:
    eps_e: float = 0.003         # entropy weight eps_E; small -> sparse w
    ridge: float = 0.5           # lam, in units of the mean input variance; large -> sparse w
    max_iter: int = 50           # outer iterations (w-step + B-step)
    tol: float = 1e-6            # stop when the objective decreases by less (relative)
    max_kl: float = 0.25         # trust region: KL(w' || w) of one w-step at most this
    w_steps: int = 8             # backtracking trials before the safe tau_max bound is computed
    fit_intercept: bool = True   # centre X and Y (layers with a bias)


@dataclass
class EntropicResult:
    w: torch.Tensor              # (C,) feature weights on the simplex
    log_w: torch.Tensor          # (C,)
    B: torch.Tensor              # (D, O) regression weights (standardised units)
    grad: torch.Tensor           # (C,) D_c at the solution
    objective: list[float] = field(default_factory=list)  # F, initial then after each iteration
    iterations: int = 0
    converged: bool = False
    seconds: float = 0.0


def _expand(w_hat: torch.Tensor, group: int) -> torch.Tensor:
    return w_hat.repeat_interleave(group)                  # (C,) -> (D,)


def objective_and_gradient(m: Moments, log_w: torch.Tensor, B: torch.Tensor, cfg: EntropicConfig,
             ) -> tuple[float, torch.Tensor]:
    """``F(w, B)`` in standardised units, and ``D_c = dL/dw_c`` at fixed B
    (``C * sum_{j in c} 2 B_j.(G V - S)_j``, ``V = diag(w_hat) B``); one product with G."""
    c = m.channels
    w = log_w.exp()                                        # (C,)
    v = _expand(c * w, m.group)[:, None] * B               # (D, O)
    gv = m.gram @ v                                        # (D, O)
    loss = m.energy - 2 * float((v * m.cross).sum()) + float((v * gv).sum())
    entropy = -float((w * log_w).sum())
    grad = c * (2 * (B * (gv - m.cross)).sum(1)).view(c, m.group).sum(1)   # (C,)
    return loss + cfg.ridge * float((B * B).sum()) - cfg.eps_e * entropy, grad


def objective(m: Moments, log_w: torch.Tensor, B: torch.Tensor, cfg: EntropicConfig) -> float:
    """F(w, B) in standardised units."""
    return objective_and_gradient(m, log_w, B, cfg)[0]


def gradient(m: Moments, log_w: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """``D_c = dF/dw_c`` (loss part) at fixed ``B``."""
    return objective_and_gradient(m, log_w, B, EntropicConfig())[1]


def b_step(m: Moments, log_w: torch.Tensor, ridge: float) -> torch.Tensor:
    """Exact ridge minimiser over B for fixed w: (W G W + lam I)^-1 W S."""
    wd = _expand(m.channels * log_w.exp(), m.group)        # (D,)
    a = wd[:, None] * m.gram * wd[None, :]                 # (D, D)
    a.diagonal().add_(ridge)
    chol, info = torch.linalg.cholesky_ex(a)
    rhs = wd[:, None] * m.cross                            # (D, O)
    if int(info) == 0:
        return torch.cholesky_solve(rhs, chol)
    return torch.linalg.lstsq(a, rhs).solution


def channel_quadratic(m: Moments, B: torch.Tensor, chunk_elems: int = 1 << 23):
    """``Q`` (C, C) and ``p`` (C,) of the loss as a function of w for fixed B."""
    c, k, o = m.channels, m.group, B.shape[1]
    B3 = B.view(c, k, o)                                   # (C, k, O)
    p = (B3 * m.cross.view(c, k, o)).sum((1, 2))           # (C,)
    gcols = m.gram.view(-1, c, k).permute(1, 0, 2)         # (C, D, k): G[:, J_b]
    q = torch.empty(c, c, dtype=torch.float64)
    step = max(1, chunk_elems // max(1, m.gram.shape[0] * o))
    for b0 in range(0, c, step):
        gz = torch.bmm(gcols[b0:b0 + step], B3[b0:b0 + step])   # (b, D, O) = G[:, J_b] B_b
        q[:, b0:b0 + step] = torch.einsum("ako,bako->ab", B3, gz.view(-1, c, k, o))
    q = (q + q.T) / 2
    return q, p


def tau_bound(m: Moments, B: torch.Tensor) -> float:
    """``tau_max = C^2 max_ab (Q_aa + Q_bb - 2 Q_ab) / 2``: the w-step majorises the loss."""
    q, _ = channel_quadratic(m, B)
    d = q.diagonal()
    return max(0.0, m.channels ** 2 * float((d[:, None] + d[None, :] - 2 * q).max()) / 2)


def entropic_step(log_w: torch.Tensor, grad: torch.Tensor, tau: float, eps: float) -> torch.Tensor:
    """``log softmax((tau log w - D) / (tau + eps_E))``: the closed-form w-step."""
    return torch.log_softmax((tau * log_w - grad) / (tau + eps), 0)


def solve(x: torch.Tensor | Moments, y: torch.Tensor | None = None, group: int = 1,
          cfg: EntropicConfig | None = None) -> EntropicResult:
    """Feature weights of the input channels of one layer, from patches
    ``x`` (N, D) and outputs ``y`` (N, O) (or precomputed ``Moments``)."""
    cfg = cfg or EntropicConfig()
    if cfg.eps_e <= 0 or cfg.ridge <= 0:
        raise ValueError(f"eps_E and the ridge must be > 0, got {cfg.eps_e} and {cfg.ridge}")
    t0 = time.perf_counter()
    m = x if isinstance(x, Moments) else moments(x, y, group, cfg.fit_intercept)
    c = m.channels
    log_w = torch.full((c,), -math.log(c), dtype=torch.float64)     # uniform start
    B = b_step(m, log_w, cfg.ridge)
    f, grad = objective_and_gradient(m, log_w, B, cfg)
    trace = [f]
    tau, converged, iterations = cfg.eps_e, False, 0
    for it in range(1, cfg.max_iter + 1):
        iterations = it
        tau, tau_max, trials = tau / 2, None, 0
        while True:  # backtracking on tau; tau >= tau_max always decreases F
            new_log = entropic_step(log_w, grad, tau, cfg.eps_e)
            if float((new_log.exp() * (new_log - log_w)).sum()) > cfg.max_kl and (
                    tau_max is None or tau < tau_max):   # trust region: a larger tau moves less
                tau = max(4 * tau, 1e-12) if tau_max is None else min(4 * tau, tau_max)
                continue
            new_B = b_step(m, new_log, cfg.ridge)
            new_f, new_grad = objective_and_gradient(m, new_log, new_B, cfg)
            trials += 1
            if new_f <= trace[-1]:
                break
            if tau_max is not None and tau >= tau_max:
                # the majoriser guarantees F(w', B) <= F(w, B); keep B if rounding made B*(w') worse
                kept, kept_grad = objective_and_gradient(m, new_log, B, cfg)
                if kept < new_f:
                    new_B, new_f, new_grad = B, kept, kept_grad
                break
            if tau_max is None and trials >= cfg.w_steps:
                tau_max = tau_bound(m, B)
            tau = max(4 * tau, 1e-12)
            if tau_max is not None:
                tau = min(tau, tau_max)
        log_w, B, grad = new_log, new_B, new_grad
        trace.append(new_f)
        if trace[-2] - trace[-1] <= cfg.tol * max(1.0, abs(trace[-1])):
            converged = True
            break
    return EntropicResult(log_w.exp(), log_w, B, grad, trace, iterations, converged, time.perf_counter() - t0)

