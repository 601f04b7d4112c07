import math

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from entroprune.entropy import (
    aura_kernel,
    aura_matrices,
    binary_entropy,
    layer_state_entropy,
    mass_entropy,
    quantize,
    spatial_aura_entropy,
    state_entropy,
)


def m(rows):
    return torch.tensor(rows, dtype=torch.float32).view(1, 1, len(rows), len(rows[0]))


def test_quantize_by_hand():
    q = quantize(m([[0.0, 1.0, 2.0, 3.0]]), 4)
    assert q.flatten().tolist() == [0, 1, 2, 3]
    q = quantize(m([[0.0, 0.49, 0.5, 1.0]]), 2)   # bins [0, .5) and [.5, 1]
    assert q.flatten().tolist() == [0, 0, 1, 1]


def test_checkerboard_by_hand():
    board = m([[0, 1], [1, 0]])
    # 4-connected: 2 horizontal + 2 vertical pairs, all (0,1) or (1,0), each counted both ways
    assert aura_matrices(board, 2, 4)[0, 0].tolist() == [[0, 4], [4, 0]]
    assert spatial_aura_entropy(board, 2, 4).item() == 1.0
    # 8-connected adds the two diagonals, (0,0) and (1,1): P = [2, 4, 4, 2] / 12
    assert aura_matrices(board, 2, 8)[0, 0].tolist() == [[2, 4], [4, 2]]
    expected = -(2 * (2 / 12) * math.log2(2 / 12) + 2 * (4 / 12) * math.log2(4 / 12))
    assert abs(spatial_aura_entropy(board, 2, 8).item() - expected) < 1e-6


def test_stripes_by_hand():
    stripes = m([[0, 1, 0], [0, 1, 0], [0, 1, 0]])
    a = aura_matrices(stripes, 2, 4)[0, 0]
    # vertical pairs: 6, all same level (4 of level 0, 2 of level 1); horizontal: 6, all mixed
    assert a.tolist() == [[8, 6], [6, 4]]
    assert a.sum() == 2 * (6 + 6)
    # 8-connected: diagonals 2*2*2 = 8 pairs, all mixed -> M[0,1] += 8 both ways
    a8 = aura_matrices(stripes, 2, 8)[0, 0]
    assert a8.tolist() == [[8, 14], [14, 4]]


def test_constant_and_tiny_maps_have_zero_entropy():
    maps = torch.full((2, 3, 5, 5), 7.0)
    assert torch.equal(spatial_aura_entropy(maps), torch.zeros(2, 3))
    assert torch.equal(spatial_aura_entropy(torch.randn(1, 2, 1, 1)), torch.zeros(1, 2))


def neighbour_pairs(h, w, connectivity):
    """Ordered neighbouring pairs of an h x w map, each counted in both directions."""
    half = (h - 1) * w + h * (w - 1) + (2 * (h - 1) * (w - 1) if connectivity == 8 else 0)
    return 2 * half


constant_case = dict(
    shape=st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(1, 9), st.integers(1, 9)),
    value=st.floats(allow_nan=False, allow_infinity=False, width=32),   # negative, huge, subnormal
    levels=st.integers(2, 255), conn=st.sampled_from([4, 8]))


def check_constant_maps(shape, value, levels, conn, reference):
    n, c, h, w = shape
    maps = torch.full(shape, value, dtype=torch.float32)
    a = aura_matrices(maps, levels, conn, reference=reference)
    expected = torch.zeros(n, c, levels, levels)
    expected[..., 0, 0] = neighbour_pairs(h, w, conn)      # every pair is (level 0, level 0)
    assert torch.equal(a, expected)
    assert torch.equal(spatial_aura_entropy(maps, levels, conn, reference=reference), torch.zeros(n, c))


@settings(max_examples=60, deadline=None)
@given(**constant_case)
def test_constant_maps_have_zero_entropy_reference(shape, value, levels, conn):
    check_constant_maps(shape, value, levels, conn, reference=True)


@pytest.mark.skipif(not aura_kernel.available(), reason="numba not installed")
@settings(max_examples=60, deadline=None)
@given(**constant_case)
@example(shape=(1, 1, 4, 7), value=0.0, levels=2, conn=4)   # the kernel gave -8.9e-16 here
def test_constant_maps_have_zero_entropy_kernel(shape, value, levels, conn):
    check_constant_maps(shape, value, levels, conn, reference=False)


def test_mass_entropy_by_hand():
    assert mass_entropy(m([[1, 1], [1, 1]])).item() == 2.0              # uniform over 4
    assert mass_entropy(m([[5, 0], [0, 0]])).item() == 0.0              # all mass at one place
    assert mass_entropy(m([[-3, -1], [0, 0]])).item() == 0.0            # all-zero after relu
    assert mass_entropy(m([[1, 1], [-9, 2]])).item() == 1.5             # p = .25 .25 0 .5
    assert mass_entropy(m([[1, 1], [1, 1]]), normalize=True).item() == 1.0


def test_state_entropy_by_hand():
    z = torch.tensor([[1.0, -1.0, 0.0], [2.0, -3.0, -1.0]]).view(2, 3)   # (N=2, C=3)
    # channel 0: always ON; 1: always OFF; 2: half (0 counts as ON)
    h = state_entropy(z)
    assert h[2].item() == 1.0
    assert h[0].item() < 1e-8 and h[1].item() < 1e-8
    hn = state_entropy(z, nondegenerate=True)
    assert torch.isnan(hn[0]) and torch.isnan(hn[1]) and hn[2].item() == 1.0
    assert layer_state_entropy(hn) == 1.0
    assert layer_state_entropy(torch.tensor([float("nan")])) == 0.0
    assert abs(binary_entropy(torch.tensor([0.25])).item() - 0.8112781) < 1e-6
    conv = torch.tensor([[[[1.0, -1.0], [1.0, 1.0]]]])                  # (1, 1, 2, 2): p_on = .75
    assert abs(state_entropy(conv).item() - 0.8112781) < 1e-6


def test_batched_equals_one_by_one():
    x = torch.randn(3, 4, 9, 7)
    full = spatial_aura_entropy(x)
    single = torch.stack([spatial_aura_entropy(x[i:i + 1, j:j + 1])[0, 0] for i in range(3) for j in range(4)])
    assert torch.equal(full.flatten(), single)


maps_strategy = st.builds(
    lambda seed, h, w, n, scale: torch.randn(n, 2, h, w, generator=torch.Generator().manual_seed(seed)) * scale,
    st.integers(0, 10_000), st.integers(2, 9), st.integers(2, 9), st.integers(1, 3), st.floats(0.01, 100.0))


@settings(max_examples=60, deadline=None)
@given(maps=maps_strategy, levels=st.integers(2, 16), conn=st.sampled_from([4, 8]))
def test_bounds_and_symmetry(maps, levels, conn):
    a = aura_matrices(maps, levels, conn)
    assert torch.equal(a, a.transpose(-1, -2))
    h = spatial_aura_entropy(maps, levels, conn)
    assert (h >= 0).all() and (h <= 2 * math.log2(levels) + 1e-5).all()


@settings(max_examples=60, deadline=None)
@given(maps=maps_strategy, a=st.floats(0.5, 20.0), b=st.floats(-50.0, 50.0))
def test_invariant_to_positive_affine_change(maps, a, b):
    # the same quantisation up to float rounding at bin edges: compare the level maps
    q1, q2 = quantize(maps, 8), quantize(maps * a + b, 8)
    if torch.equal(q1, q2):
        assert torch.allclose(spatial_aura_entropy(maps), spatial_aura_entropy(maps * a + b))
    else:  # a value on a bin edge moved by rounding: at most one level, at few pixels
        assert (q1 - q2).abs().max() <= 1 and (q1 != q2).float().mean() < 0.05
