"""The fused numba kernel counts exactly what the torch reference counts."""

import subprocess
import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from entroprune.entropy import aura_kernel, aura_matrices, spatial_aura_entropy

pytestmark = pytest.mark.skipif(not aura_kernel.available(), reason="numba not installed")


@pytest.mark.parametrize("shape", [(2, 3, 7, 9), (2, 3, 1, 6), (2, 3, 6, 1), (1, 1, 1, 1), (4, 8, 28, 28)])
@pytest.mark.parametrize("connectivity", [4, 8])
@pytest.mark.parametrize("levels", [2, 8, 17])
def test_kernel_equals_reference(shape, connectivity, levels):
    g = torch.Generator().manual_seed(hash((shape, connectivity, levels)) % 2**31)
    x = torch.randn(shape, generator=g).relu()        # many zeros, as after a rectifier
    x[0, 0] = 3.0                                     # one constant map
    fast = aura_matrices(x, levels, connectivity)
    ref = aura_matrices(x, levels, connectivity, reference=True)
    assert fast.dtype == ref.dtype == torch.float32
    assert torch.equal(fast, ref)


@settings(max_examples=40, deadline=None)
@given(h=st.integers(1, 9), w=st.integers(1, 9), levels=st.integers(2, 12), conn=st.sampled_from([4, 8]),
       seed=st.integers(0, 2**16), steps=st.booleans())
def test_kernel_equals_reference_property(h, w, levels, conn, seed, steps):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 3, h, w, generator=g)
    if steps:  # few distinct values: every bin edge is hit exactly
        x = torch.randint(0, levels + 1, (2, 3, h, w), generator=g).float() / levels
    assert torch.equal(aura_matrices(x, levels, conn), aura_matrices(x, levels, conn, reference=True))


def test_kernel_reads_non_contiguous_and_double_input():
    x = torch.randn(3, 4, 10, 12, dtype=torch.float64).transpose(2, 3)
    assert torch.equal(aura_matrices(x), aura_matrices(x, reference=True))


def test_empty_maps_are_a_clear_error():
    with pytest.raises(ValueError, match="at least one position"):
        aura_matrices(torch.zeros(1, 2, 0, 4))


@pytest.mark.parametrize("connectivity", [4, 8])
def test_kernel_entropy_equals_reference(connectivity):
    x = torch.randn(8, 16, 14, 14, generator=torch.Generator().manual_seed(3)).relu()
    fast = spatial_aura_entropy(x, 8, connectivity)
    ref = spatial_aura_entropy(x, 8, connectivity, reference=True)
    assert fast.shape == ref.shape == (8, 16)
    assert torch.allclose(fast, ref, atol=1e-5)
    assert fast.std() > 0.05                           # the maps really differ


def test_entropy_beyond_the_c_log_c_table():
    # maps of more than 2^16 positions take the path without a c log c table
    x = torch.zeros(1, 2, 2, 40000)
    x[0, 0, 0, 0] = 1.0
    x[0, 1, :, ::3] = 2.0
    fast, ref = spatial_aura_entropy(x), spatial_aura_entropy(x, reference=True)
    assert aura_matrices(x).max() > 2**16
    assert torch.allclose(fast, ref, atol=1e-5) and (fast > 0).all()


def test_kernel_leaves_torch_thread_count_alone():
    # numba's OpenMP pool starts on the first call; run it in a fresh process
    code = ("import torch; torch.set_num_threads(1);"
            "from entroprune.entropy import spatial_aura_entropy;"
            "spatial_aura_entropy(torch.randn(2, 3, 8, 8)); print(torch.get_num_threads())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "1"


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("size", [5, 20])           # numba's min/max (short rows) and torch's
def test_non_finite_activations_are_a_clear_error(bad, size):
    x = torch.rand(2, 3, size, size)
    x[1, 2, 3, 4] = bad
    with pytest.raises(ValueError, match="NaN or infinite"):
        spatial_aura_entropy(x)
