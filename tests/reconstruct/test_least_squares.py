"""The shared ridge least squares: exact values on hand-made regressions."""

import pytest
import torch

from entroprune.reconstruct.least_squares import (
    NonFiniteError,
    holdout_mask,
    moments,
    refit,
    relative_error,
    residual,
    solve_spd,
)


def test_plain_least_squares_recovers_a_linear_map_exactly():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(400, 6, generator=g)                  # 3 channels of 2 columns
    w = torch.tensor([[1.0, -2.0, 0.5, 0.0, 3.0, 1.0], [0.0, 1.0, 1.0, 2.0, -1.0, 0.0]])
    y = x @ w.T + torch.tensor([0.25, -1.0])
    weight, bias = refit(x, y, group=2, ridge=0.0, fit_intercept=True)
    assert torch.allclose(weight.float(), w, atol=1e-5)
    assert torch.allclose(bias.float(), torch.tensor([0.25, -1.0]), atol=1e-5)
    assert relative_error(x, y, weight, bias) < 1e-10


def test_refit_on_kept_channels_only_uses_their_columns():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(300, 6, generator=g)
    w = torch.tensor([[1.0, 2.0, 0.0, 0.0, -1.0, 0.5]])   # channel 1 (columns 2, 3) carries nothing
    y = x @ w.T
    weight, bias = refit(x, y, keep=[0, 2], group=2, ridge=0.0, fit_intercept=False)
    assert bias is None
    assert torch.allclose(weight.float(), torch.tensor([[1.0, 2.0, -1.0, 0.5]]), atol=1e-5)


def test_ridge_shrinks_towards_zero():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(200, 3, generator=g)
    y = x @ torch.tensor([[2.0, -1.0, 1.0]]).T
    small, _ = refit(x, y, ridge=0.0, fit_intercept=False)
    big, _ = refit(x, y, ridge=10.0, fit_intercept=False)
    assert big.norm() < 0.5 * small.norm()


def test_singular_gram_without_ridge_still_fits():
    x = torch.randn(50, 2).repeat(1, 2)                  # duplicated columns: singular Gram
    y = x[:, :1] * 3.0
    weight, bias = refit(x, y, ridge=0.0, fit_intercept=False)
    assert relative_error(x, y, weight, bias) < 1e-8
    assert torch.allclose(solve_spd(torch.eye(2, dtype=torch.float64), torch.ones(2, 1, dtype=torch.float64)),
                          torch.ones(2, 1, dtype=torch.float64))


def test_residual_and_relative_error_values():
    x = torch.tensor([[1.0], [2.0], [3.0]])
    y = torch.tensor([[1.0], [2.0], [4.0]])
    err, tot = residual(x, y, torch.tensor([[1.0]]))
    assert err == pytest.approx(1.0)                      # only the last row is off, by 1
    assert tot == pytest.approx(14 / 3)                   # variance of (1, 2, 4) times 3
    assert relative_error(x, y, torch.tensor([[1.0]])) == pytest.approx(3 / 14)


def test_non_finite_inputs_are_a_clear_error():
    x = torch.ones(4, 2)
    x[1, 0] = float("nan")
    with pytest.raises(NonFiniteError, match="input patches"):
        moments(x, torch.ones(4, 1))


def test_holdout_mask():
    assert holdout_mask(7, 3).tolist() == [True, False, False, True, False, False, True]
    assert not holdout_mask(5, 0).any()
