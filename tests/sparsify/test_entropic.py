import math

import pytest
import torch

from entroprune.sparsify import EntropicConfig, refit, relative_error, solve
from entroprune.sparsify._bench import solver_cost, synthetic_layer
from entroprune.sparsify.entropic import (
    b_step,
    channel_quadratic,
    entropic_step,
    gradient,
    moments,
    objective,
    tau_bound,
)

ACTIVE = [0, 2, 5]


@pytest.fixture(scope="module")
def layer():
    # a 3x3 convolution's regression: 8 input channels of 9 columns, 6 outputs
    return synthetic_layer(4000, channels=8, outputs=6, group=9, active=ACTIVE, noise=0.05)


def test_weight_goes_to_the_channels_the_outputs_depend_on(layer):
    x, y = layer
    res = solve(x, y, 9)
    assert res.converged
    assert float(res.w.sum()) == pytest.approx(1.0, abs=1e-12)
    assert float(res.w.min()) >= 0.0
    inactive = [c for c in range(8) if c not in ACTIVE]
    assert float(res.w[inactive].max()) < 1e-4          # uniform would be 0.125
    assert float(res.w[ACTIVE].min()) > 0.3
    assert sorted(torch.argsort(res.w, descending=True)[:3].tolist()) == ACTIVE


def test_other_layout_linear_layer():
    x, y = synthetic_layer(3000, channels=12, outputs=5, group=1, active=[1, 4, 7, 10], noise=0.01, seed=3)
    res = solve(x, y, 1)
    assert sorted(torch.argsort(res.w, descending=True)[:4].tolist()) == [1, 4, 7, 10]
    assert float(res.w[[0, 2, 3, 5, 6, 8, 9, 11]].max()) < 1e-4


@pytest.mark.parametrize("eps, ridge, w_steps", [(0.003, 0.5, 8), (0.03, 0.05, 8), (1e-4, 2.0, 8),
                                                 (0.3, 1e-3, 8), (0.003, 0.5, 1)])
def test_objective_is_non_increasing(layer, eps, ridge, w_steps):
    # w_steps=1 makes the backtracking fall back to the tau_max majoriser often
    x, y = layer
    res = solve(x, y, 9, EntropicConfig(eps_e=eps, ridge=ridge, tol=1e-12, max_iter=60, w_steps=w_steps))
    obj = torch.tensor(res.objective, dtype=torch.float64)
    assert len(obj) == res.iterations + 1
    assert bool((obj.diff() <= 1e-12 * obj.abs().max()).all()), obj.diff().max()
    assert float(obj[-1]) < float(obj[0])


def test_tiny_eps_does_not_collapse_onto_one_channel(layer):
    # without the trust region the first softmax step keeps only one active channel
    x, y = layer
    res = solve(x, y, 9, EntropicConfig(eps_e=1e-5, ridge=10.0))
    assert float(res.w[ACTIVE].min()) > 0.2
    collapsed = solve(x, y, 9, EntropicConfig(eps_e=1e-5, ridge=10.0, max_kl=float("inf")))
    assert float(collapsed.w.max()) > 0.99 and collapsed.objective[-1] > res.objective[-1] + 0.1


def test_solution_is_the_entropic_fixed_point(layer):
    # stationarity of the entropic problem: w = softmax(-D_c / eps_E)
    x, y = layer
    cfg = EntropicConfig(tol=1e-14, max_iter=400)
    res = solve(x, y, 9, cfg)
    assert res.converged
    assert float((res.w - torch.softmax(-res.grad / cfg.eps_e, 0)).abs().max()) < 1e-4


def test_w_step_at_tau_max_is_a_majorise_minimise_step(layer):
    # from any w, with B fixed, the closed-form step with tau_max does not increase F(w, B)
    x, y = layer
    m = moments(x, y, 9)
    cfg = EntropicConfig(eps_e=0.01, ridge=0.1)
    gen = torch.Generator().manual_seed(1)
    for _ in range(5):
        log_w = torch.log_softmax(torch.randn(8, generator=gen, dtype=torch.float64) * 2, 0)
        B = b_step(m, log_w, cfg.ridge)
        tau = tau_bound(m, B)
        new = entropic_step(log_w, gradient(m, log_w, B), tau, cfg.eps_e)
        assert objective(m, new, B, cfg) <= objective(m, log_w, B, cfg) + 1e-14


def test_gradient_matches_the_channel_quadratic_and_autograd(layer):
    x, y = layer
    m = moments(x, y, 9)
    log_w = torch.log_softmax(torch.arange(8, dtype=torch.float64) / 4, 0)
    B = b_step(m, log_w, 0.1)
    q, p = channel_quadratic(m, B)
    w = log_w.exp()
    assert torch.allclose(gradient(m, log_w, B), 2 * (64 * q @ w - 8 * p), atol=1e-10)
    wr = w.clone().requires_grad_(True)
    v = (8 * wr).repeat_interleave(9)[:, None] * B
    loss = m.energy - 2 * (v * m.cross).sum() + (v * (m.gram @ v)).sum()
    loss.backward()
    assert torch.allclose(wr.grad, gradient(m, log_w, B), atol=1e-10)


def test_deterministic(layer):
    x, y = layer
    a, b = solve(x, y, 9), solve(x, y, 9)
    assert torch.equal(a.w, b.w) and a.objective == b.objective


def test_refit_beats_the_unrefitted_pruned_layer():
    # channel 1 is channel 0 plus a little noise; the outputs use both
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2000, 4, 9, generator=gen)
    x[:, 1] = x[:, 0] + 0.1 * torch.randn(2000, 9, generator=gen)
    x = x.reshape(2000, 36)
    weight = torch.randn(3, 36, generator=gen)
    bias = torch.tensor([0.5, -1.0, 2.0])
    y = x @ weight.T + bias
    keep = [0, 2, 3]                                   # remove channel 1
    cols = [c * 9 + j for c in keep for j in range(9)]
    pruned_err = relative_error(x[:, cols], y, weight[:, cols], bias)
    w2, b2 = refit(x, y, keep, group=9, ridge=1e-6)
    refit_err = relative_error(x[:, cols], y, w2, b2)
    assert w2.shape == (3, 27) and b2.shape == (3,)
    assert pruned_err > 0.1
    assert refit_err < 0.1 * pruned_err
    # nothing removed: the refit recovers the layer exactly
    w3, b3 = refit(x, y, [0, 1, 2, 3], group=9, ridge=1e-12)
    assert torch.allclose(w3.float(), weight, atol=1e-3) and torch.allclose(b3.float(), bias, atol=1e-3)


def test_bad_config():
    x, y = synthetic_layer(100, 4, 2, 1, [0])
    with pytest.raises(ValueError, match="eps_E"):
        solve(x, y, 1, EntropicConfig(eps_e=0.0))
    with pytest.raises(ValueError, match="multiple"):
        solve(x, y, 3)


def test_solver_cost_rows():
    sizes = [256, 512, 1024, 2048]
    rows = solver_cost(sizes, channels=16, outputs=16, group=9)
    assert [r["n_patches"] for r in rows] == sizes
    for r in rows:
        assert r["columns"] == 144 and r["iterations"] >= 1
        assert r["total_seconds"] == pytest.approx(r["gram_seconds"] + r["solve_seconds"])
        assert math.isfinite(r["seconds_per_iteration"])
