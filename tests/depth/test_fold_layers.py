"""Exactness of the layer algebra: BatchNorm folding, 1x1 / Linear chains,
the border ring of k x k merges, skip absorption."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from entroprune.depth import (
    FoldConfig,
    absorb_skip,
    compose_convs,
    compose_linears,
    fold,
    fold_batchnorm,
    interior_mask,
    measure_merge,
)
from entroprune.measure import count_depth

from .util import images, max_diff, randomize_batchnorm


def _bn(n, cls=nn.BatchNorm2d, seed=0):
    g = torch.Generator().manual_seed(seed)
    bn = cls(n)
    with torch.no_grad():
        bn.running_mean.copy_(torch.randn(n, generator=g))
        bn.running_var.copy_(0.2 + torch.rand(n, generator=g))
        bn.weight.copy_(0.5 + torch.rand(n, generator=g))
        bn.bias.copy_(torch.randn(n, generator=g))
    return bn.eval()


@pytest.mark.parametrize("groups,bias", [(1, False), (1, True), (4, False), (8, True)])
def test_batchnorm_folds_exactly_into_conv(groups, bias):
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 16, 3, 2, 1, groups=groups, bias=bias)
    bn = _bn(16)
    folded = fold_batchnorm(conv, bn)
    x = images(3, (8, 15, 15))
    dev = measure_merge([conv, bn], folded, x)
    assert dev.max_abs < 1e-5, dev
    assert folded.bias is not None and folded.groups == groups


def test_batchnorm_folds_exactly_into_linear():
    torch.manual_seed(0)
    lin, bn = nn.Linear(20, 12), _bn(12, nn.BatchNorm1d)
    dev = measure_merge([lin, bn], fold_batchnorm(lin, bn), torch.randn(7, 20))
    assert dev.max_abs < 1e-5


def test_pointwise_chain_is_exact():
    torch.manual_seed(0)
    convs = [nn.Conv2d(6, 24, 1), nn.Conv2d(24, 24, 1, stride=2), nn.Conv2d(24, 5, 1, bias=False)]
    merged = compose_convs(convs)
    x = images(2, (6, 11, 11))
    dev = measure_merge(convs, merged, x)
    assert merged.kernel_size == (1, 1) and merged.stride == (2, 2)
    assert dev.max_abs < 1e-5 and dev.border_fraction == 0.0


def test_linear_chain_is_exact():
    torch.manual_seed(0)
    layers = [nn.Linear(30, 50), nn.Linear(50, 40, bias=False), nn.Linear(40, 7)]
    merged = compose_linears(layers)
    dev = measure_merge(layers, merged, torch.randn(9, 30))
    assert (merged.in_features, merged.out_features) == (30, 7)
    assert dev.max_abs < 1e-5


def test_fold_merges_a_conv_bn_identity_chain_exactly():
    """conv -> BN -> Identity (a removed rectifier) -> conv -> BN: one conv (1x1, so exact)."""
    x = images(4, (8, 10, 10))
    model = nn.Sequential(nn.Conv2d(8, 32, 1, bias=False), nn.BatchNorm2d(32), nn.Identity(),
                          nn.Conv2d(32, 8, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU())
    randomize_batchnorm(model, x)
    folded, rep = fold(model, x)
    assert count_depth(folded).conv_linear == 1 and rep["conv_linear_after"] == 1
    assert max_diff(model, folded, x) < 1e-5
    assert rep["max_abs_deviation"] < 1e-5
    assert [m["kind"] for m in rep["merges"]] == ["bn", "bn", "chain"]
    assert rep["macs_after"] < rep["macs_before"]


def test_fold_merges_lenet_classifier_when_rectifiers_are_gone():
    from entroprune.models import create
    torch.manual_seed(0)
    model = create("lenet5").eval()
    model.classifier[2] = nn.Identity()
    model.classifier[4] = nn.Identity()
    x = images(8)
    folded, rep = fold(model, x)
    assert rep["conv_linear_before"] == 5 and rep["conv_linear_after"] == 3
    assert isinstance(folded.classifier[1], nn.Linear) and folded.classifier[1].out_features == 10
    assert max_diff(model, folded, x) < 1e-5


def _ring_bound(a: nn.Conv2d, b: nn.Conv2d, x: torch.Tensor) -> float:
    """Derived bound of the border error of compose_convs([a, b]).

    Where b's window covers the intermediate's zero padding, the composite
    sees a's extended response there instead of 0, so the error in output
    channel c is sum over those taps of b[c, j, t] * ext_a(x)[j]. With
    |ext_a(x)[j]| <= ||a[j]||_1 * max|x| + |bias_a[j]|, the error is at most
    max_c ||b[c]||_1 * max_j (||a[j]||_1 * max|x| + |bias_a[j]|)."""
    a_w, b_w = a.weight.detach(), b.weight.detach()
    ext = a_w.abs().sum((1, 2, 3)) * x.abs().max() + a.bias.detach().abs()
    return float(b_w.abs().sum((1, 2, 3)).max() * ext.max())


def test_3x3_3x3_border_ring_is_measured_and_bounded():
    torch.manual_seed(0)
    a, b = nn.Conv2d(4, 8, 3, padding=1), nn.Conv2d(8, 6, 3, padding=1)
    merged = compose_convs([a, b])
    assert merged.kernel_size == (5, 5) and merged.padding == (2, 2)
    x = images(3, (4, 12, 12))
    dev = measure_merge([a, b], merged, x)
    assert dev.interior_max_abs < 1e-5                    # the interior is exact
    assert dev.border_fraction == pytest.approx(1 - 10 * 10 / (12 * 12))  # a ring one pixel wide
    with torch.no_grad():
        diff = merged(x) - b(a(x))                        # (N, 6, 12, 12)
        # the error is b applied to a's response on the ring of the intermediate
        # grid that the original pads with zeros
        ext = F.conv2d(x, a.weight, a.bias, padding=2)    # (N, 8, 14, 14): a on the grid padded for b
        ring = torch.ones(14, 14, dtype=torch.bool)
        ring[1:-1, 1:-1] = False
        ext_ring = ext * ring                             # zero where the original has real values
        assert float((diff - F.conv2d(ext_ring, b.weight)).abs().max()) < 1e-5
        tight = float(b.weight.abs().sum((1, 2, 3)).max() * ext_ring.abs().max())
    mask = interior_mask([a, b], (12, 12))
    assert float(diff.abs().amax((0, 1))[mask].max()) < 1e-5 and bool((diff.abs().amax((0, 1))[~mask] > 0).all())
    assert 1e-2 < dev.border_max_abs <= tight <= _ring_bound(a, b, x)


# (C_in, C_mid, C_out, first (k, stride, padding, groups), second (k, stride, padding, groups))
GEOMETRIES = [
    (3, 6, 5, (3, 1, 1, 1), (3, 1, 1, 1)),
    (3, 6, 5, (3, 2, 1, 1), (3, 1, 1, 1)),
    (3, 6, 4, (5, 1, 2, 1), (3, 2, 1, 1)),
    (4, 12, 12, (1, 1, 0, 1), (3, 1, 1, 12)),             # pointwise then depthwise
    (8, 8, 6, (3, 1, 1, 8), (1, 1, 0, 1)),                # depthwise then pointwise
    (8, 8, 8, (3, 1, 1, 8), (3, 1, 1, 8)),                # depthwise twice: stays depthwise
    (4, 8, 6, (3, 1, 1, 2), (3, 1, 0, 2)),                # grouped twice: stays grouped
    (3, 6, 5, ((3, 1), 1, (1, 0), 1), ((1, 3), 1, (0, 1), 1)),
]


@pytest.mark.parametrize("c0,c1,c2,ga,gb", GEOMETRIES)
def test_interior_of_a_merged_kxk_chain_equals_the_original(c0, c1, c2, ga, gb):
    torch.manual_seed(0)
    a = nn.Conv2d(c0, c1, ga[0], ga[1], ga[2], groups=ga[3]).double()
    b = nn.Conv2d(c1, c2, gb[0], gb[1], gb[2], groups=gb[3]).double()
    merged = compose_convs([a, b])
    x = images(2, (c0, 13, 13)).double()
    with torch.no_grad():
        assert merged(x).shape == b(a(x)).shape
    dev = measure_merge([a, b], merged, x)
    assert dev.interior_max_abs < 1e-12, dev              # float64: exact up to rounding
    assert merged.groups == (8 if ga[3] == gb[3] == 8 else min(ga[3], gb[3]))


def test_depthwise_pointwise_merge_is_skipped_when_macs_grow():
    x = images(4, (16, 12, 12))
    model = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1, groups=16, bias=False), nn.BatchNorm2d(16),
                          nn.Identity(), nn.Conv2d(16, 24, 1, bias=False), nn.BatchNorm2d(24))
    randomize_batchnorm(model, x)
    folded, rep = fold(model, x)
    assert rep["conv_linear_after"] == 2 and rep["macs_after"] == rep["macs_before"]
    (skip,) = rep["skipped"]
    assert "depthwise 3x3 + pointwise 1x1 -> dense 3x3" in skip["reason"] and "raise MACs" in skip["reason"]
    forced, rep2 = fold(model, x, FoldConfig(force=True))
    assert rep2["conv_linear_after"] == 1 and rep2["macs_after"] > rep2["macs_before"]
    chain = next(m for m in rep2["merges"] if m["kind"] == "chain")
    # the pointwise layer has no padding: depthwise then pointwise composes exactly
    assert chain["exact"] and chain["max_dev"] < 1e-5 and chain["border_fraction"] == 0.0
    assert max_diff(model, forced, x) < 1e-5


@pytest.mark.parametrize("stride", [1, 2])
def test_skip_absorption_is_exact(stride):
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 8 if stride == 1 else 16, 3, stride, 1)
    skip = None if stride == 1 else nn.Conv2d(8, 16, 1, stride)
    merged = absorb_skip(conv, skip)
    x = images(3, (8, 14, 14))
    dev = measure_merge(lambda t: conv(t) + (t if skip is None else skip(t)), merged, x)
    assert dev.max_abs < 1e-5                             # borders included
    assert merged.kernel_size == (3, 3)
