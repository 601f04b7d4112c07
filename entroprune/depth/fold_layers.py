"""Layer algebra for folding the linear neighbours left behind by depth
reduction (METHODS.md sections 4 and 5: "a rectifier replaced by the identity
only saves time once the now-linear neighbours are folded together").

- ``fold_batchnorm``: BatchNorm (eval statistics) into the preceding Conv2d or
  Linear. Exact up to float rounding.
- ``compose_convs`` / ``compose_linears``: a chain of layers with nothing
  nonlinear between them as ONE layer. Linear chains and convolution chains
  whose inner layers have no padding are exact. Otherwise the composite kernel
  (size ``k1 + (k2 - 1) * s1``, stride ``s1 * s2``, padding ``p1 + p2 * s1``;
  for stride 1: ``k1 + k2 - 1`` and the sum of paddings) is exact except in a
  border ring: the original pads the *intermediate* map with zeros, the
  composite sees the first layer's response to the padded input there.
- ``absorb_skip``: a residual addition ``conv(x) + skip(x)`` with an identity
  or convolution skip, as one convolution (the skip kernel placed at the right
  offset of the main kernel; the identity is a centred delta). Exact.
- ``measure_merge``: max / mean absolute output deviation of a merge on given
  inputs, split into the interior and the border ring for convolution chains.

The algebra is done in float64 and cast back to the layers' dtype. Grouped
and depthwise convolutions are expanded to dense block-diagonal kernels,
composed, and stored back with the largest grouping the composite keeps
(``gcd`` of the groups): depthwise then pointwise gives a dense k x k kernel.

Skip paths folded into a convolution, and dead computation, are replaced by
``Zero``; an emptied convolution by ``Constant``. Both are leaf modules
registered with save/load (``register_module_spec``); see ``fold.py``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..io.module_specs import register_module_spec

Pair = tuple[int, int]


class Zero(nn.Module):
    """Outputs zeros of shape ``(N, 1, ..., 1)``: a skip path whose computation
    now lives inside a convolution (``y + Zero()(x)`` broadcasts to ``y``
    unchanged), or dead computation whose consumers ignore it. The batch size
    is kept so that a ``Constant`` downstream knows it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.new_zeros((x.shape[0],) + (1,) * (x.dim() - 1)) if x.dim() else x.new_zeros(())


class Constant(nn.Module):
    """Outputs ``value`` per channel, whatever its input: an emptied convolution
    (all weights zero, as NEPENTHE leaves one) outputs its bias at every
    position. ``value`` (C,) is a buffer; the output is ``(N, C, *spatial)``
    with N the input's batch size."""

    def __init__(self, channels: int, spatial: Sequence[int] = ()):
        super().__init__()
        self.spatial = tuple(int(s) for s in spatial)
        self.register_buffer("value", torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c = (x.shape[0] if x.dim() else 1), self.value.numel()
        out = self.value.view(1, c, *(1,) * len(self.spatial))
        return out.expand(n, c, *self.spatial).contiguous()           # (N, C, *spatial), writable


register_module_spec(Zero, lambda m: {})
register_module_spec(Constant, lambda m: {"channels": m.value.numel(), "spatial": list(m.spatial)})


class FoldError(ValueError):
    """Layers that cannot be folded (with the reason)."""


# ---------------------------------------------------------------- geometry

@dataclass(frozen=True)
class ConvGeometry:
    """Kernel, stride and zero padding of a (composite) convolution, per dim.
    Dilation is 1: input index = ``out_index * stride - padding + offset``."""

    kernel: Pair
    stride: Pair
    padding: Pair

    @staticmethod
    def of(conv: nn.Conv2d) -> ConvGeometry:
        reason = unsupported_conv(conv)
        if reason:
            raise FoldError(reason)
        return ConvGeometry(tuple(conv.kernel_size), tuple(conv.stride), tuple(conv.padding))

    def then(self, nxt: ConvGeometry) -> ConvGeometry:
        """Geometry of ``nxt`` applied after ``self``, as one convolution."""
        k = tuple(k1 + (k2 - 1) * s1 for k1, k2, s1 in zip(self.kernel, nxt.kernel, self.stride))
        p = tuple(p1 + p2 * s1 for p1, p2, s1 in zip(self.padding, nxt.padding, self.stride))
        s = tuple(s1 * s2 for s1, s2 in zip(self.stride, nxt.stride))
        return ConvGeometry(k, s, p)

    def out_size(self, hw: Sequence[int]) -> Pair:
        return tuple((n + 2 * p - k) // s + 1 for n, k, s, p in zip(hw, self.kernel, self.stride, self.padding))


def unsupported_conv(conv: nn.Module) -> str | None:
    """Why ``conv`` cannot take part in a merge, or None."""
    if type(conv) is not nn.Conv2d:
        return f"{type(conv).__name__} is not a Conv2d"
    if isinstance(conv.padding, str):
        return f"string padding {conv.padding!r} is not supported"
    if tuple(conv.dilation) != (1, 1):
        return f"dilation {tuple(conv.dilation)} is not supported"
    if conv.padding_mode != "zeros":
        return f"padding mode {conv.padding_mode!r} is not zero padding"
    return None


def conv_kind(conv: nn.Conv2d, kernel: Pair | None = None, groups: int | None = None) -> str:
    """``"depthwise 3x3"``, ``"pointwise 1x1"``, ``"dense 5x5"``, ``"grouped(4) 3x3"``."""
    k = kernel or tuple(conv.kernel_size)
    g = conv.groups if groups is None else groups
    size = f"{k[0]}x{k[1]}"
    if g > 1:
        return f"depthwise {size}" if g == conv.in_channels else f"grouped({g}) {size}"
    return f"pointwise {size}" if k == (1, 1) else f"dense {size}"


# ---------------------------------------------------------- dense kernels

def dense_weight(conv: nn.Conv2d) -> torch.Tensor:
    """The kernel as a dense ``(C_out, C_in, kh, kw)`` float64 tensor
    (block-diagonal for grouped convolutions)."""
    w = conv.weight.detach().double()  # (C_out, C_in/g, kh, kw)
    g = conv.groups
    if g == 1:
        return w.clone()
    co, ci = conv.out_channels // g, conv.in_channels // g
    dense = w.new_zeros(g, co, g, ci, *w.shape[2:])
    idx = torch.arange(g)
    dense[idx, :, idx] = w.view(g, co, ci, *w.shape[2:])
    return dense.view(conv.out_channels, conv.in_channels, *w.shape[2:])


def grouped_weight(dense: torch.Tensor, groups: int) -> torch.Tensor:
    """Inverse of ``dense_weight``: ``(C_out, C_in/g, kh, kw)``; the dense
    kernel must be block-diagonal with ``groups`` blocks."""
    if groups == 1:
        return dense
    c_out, c_in = dense.shape[:2]
    co, ci = c_out // groups, c_in // groups
    blocks = dense.reshape(groups, co, groups, ci, *dense.shape[2:])
    idx = torch.arange(groups)
    rest = blocks.clone()
    rest[idx, :, idx] = 0
    if rest.abs().max() != 0:
        raise FoldError(f"the composite kernel is not block-diagonal with {groups} groups")
    return blocks[idx, :, idx].reshape(c_out, ci, *dense.shape[2:])


def _bias(layer: nn.Module, n: int) -> torch.Tensor:
    b = layer.bias
    return b.detach().double() if b is not None else torch.zeros(n, dtype=torch.float64,
                                                                  device=layer.weight.device)


def new_conv(template: nn.Conv2d, in_channels: int, out_channels: int, geo: ConvGeometry, groups: int,
             weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Conv2d:
    """A fresh Conv2d with the given weights, in ``template``'s dtype/device."""
    w = template.weight
    conv = nn.Conv2d(in_channels, out_channels, geo.kernel, geo.stride, geo.padding, groups=groups,
                     bias=bias is not None, device=w.device, dtype=w.dtype)
    with torch.no_grad():
        conv.weight.copy_(weight.to(w.dtype))
        if bias is not None:
            conv.bias.copy_(bias.to(w.dtype))
    return conv


def new_linear(template: nn.Linear, weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Linear:
    w = template.weight
    lin = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, device=w.device, dtype=w.dtype)
    with torch.no_grad():
        lin.weight.copy_(weight.to(w.dtype))
        if bias is not None:
            lin.bias.copy_(bias.to(w.dtype))
    return lin


# ---------------------------------------------------------------- folding

@torch.no_grad()
def fold_batchnorm(layer: nn.Module, bn: nn.modules.batchnorm._BatchNorm) -> nn.Module:
    """A new Conv2d/Linear computing ``bn(layer(x))`` with BN's running stats:
    ``w' = w * g / sqrt(var + eps)`` per output channel, ``b' = (b - mean) * g / sqrt(var + eps) + beta``."""
    if bn.running_mean is None or bn.running_var is None:
        raise FoldError("BatchNorm without running statistics cannot be folded")
    n = layer.out_channels if isinstance(layer, nn.Conv2d) else layer.out_features
    if bn.num_features != n:
        raise FoldError(f"BatchNorm has {bn.num_features} features, the layer {n} outputs")
    dev = bn.running_mean.device
    gamma = bn.weight.detach().double() if bn.affine else torch.ones(n, dtype=torch.float64, device=dev)
    beta = bn.bias.detach().double() if bn.affine else torch.zeros(n, dtype=torch.float64, device=dev)
    scale = gamma / torch.sqrt(bn.running_var.double() + bn.eps)   # (C_out,)
    bias = (_bias(layer, n) - bn.running_mean.double()) * scale + beta
    w = layer.weight.detach().double()
    w = w * scale.view(-1, *([1] * (w.ndim - 1)))                   # (C_out, ...) scaled per row
    if isinstance(layer, nn.Linear):
        return new_linear(layer, w, bias)
    return new_conv(layer, layer.in_channels, layer.out_channels, ConvGeometry.of(layer), layer.groups, w, bias)


def compose_kernels(a: torch.Tensor, b: torch.Tensor, stride_a: Pair) -> torch.Tensor:
    """Dense kernel of ``conv_b(conv_a(x))``: ``a`` (C1, C0, ka_h, ka_w), ``b``
    (C2, C1, kb_h, kb_w); tap ``t`` of ``b`` shifts ``a`` by ``t * stride_a``."""
    c1, c0, ka_h, ka_w = a.shape
    c2, _, kb_h, kb_w = b.shape
    sh, sw = stride_a
    out = a.new_zeros(c2, c0, ka_h + (kb_h - 1) * sh, ka_w + (kb_w - 1) * sw)  # (C2, C0, K_h, K_w)
    a_flat = a.reshape(c1, -1)                                                  # (C1, C0*ka_h*ka_w)
    for ty in range(kb_h):
        for tx in range(kb_w):
            tap = (b[:, :, ty, tx] @ a_flat).view(c2, c0, ka_h, ka_w)
            out[:, :, ty * sh:ty * sh + ka_h, tx * sw:tx * sw + ka_w] += tap
    return out


def composite_groups(convs: Sequence[nn.Conv2d]) -> int:
    """Groups the composite keeps: contiguous equal channel partitions nest, so
    the composite is block-diagonal for the gcd of the groups."""
    return math.gcd(*[c.groups for c in convs])


def compose_geometry(convs: Sequence[nn.Conv2d]) -> ConvGeometry:
    geo = ConvGeometry.of(convs[0])
    for c in convs[1:]:
        geo = geo.then(ConvGeometry.of(c))
    return geo


@torch.no_grad()
def compose_convs(convs: Sequence[nn.Conv2d]) -> nn.Conv2d:
    """One Conv2d computing ``convs[-1](...convs[0](x))`` (exact away from the
    border ring caused by the inner layers' zero padding)."""
    for a, b in zip(convs, convs[1:]):
        if a.out_channels != b.in_channels:
            raise FoldError(f"channel mismatch: {a.out_channels} outputs into {b.in_channels} inputs")
    w = dense_weight(convs[0])                                       # (C1, C0, k, k)
    bias = _bias(convs[0], convs[0].out_channels)                    # (C1,)
    geo = ConvGeometry.of(convs[0])
    for c in convs[1:]:
        b = dense_weight(c)                                          # (C2, C1, k2, k2)
        bias = b.sum((2, 3)) @ bias + _bias(c, c.out_channels)       # (C2,)
        w = compose_kernels(w, b, geo.stride)                        # (C2, C0, K, K)
        geo = geo.then(ConvGeometry.of(c))
    groups = composite_groups(convs)
    has_bias = any(c.bias is not None for c in convs)
    return new_conv(convs[0], convs[0].in_channels, convs[-1].out_channels, geo, groups,
                    grouped_weight(w, groups), bias if has_bias else None)


@torch.no_grad()
def compose_linears(layers: Sequence[nn.Linear]) -> nn.Linear:
    """One Linear computing ``layers[-1](...layers[0](x))``: ``W = W_n ... W_1``. Exact."""
    w = layers[0].weight.detach().double()                           # (F1, F0)
    bias = _bias(layers[0], layers[0].out_features)
    for lin in layers[1:]:
        wn = lin.weight.detach().double()                            # (F2, F1)
        bias = wn @ bias + _bias(lin, lin.out_features)
        w = wn @ w                                                   # (F2, F0)
    has_bias = any(m.bias is not None for m in layers)
    return new_linear(layers[0], w, bias if has_bias else None)


def skip_placement(main: ConvGeometry, skip: ConvGeometry) -> Pair:
    """Offset of the skip kernel inside the main kernel so that both read the
    same input positions; FoldError if the skip does not fit."""
    if main.stride != skip.stride:
        raise FoldError(f"skip stride {skip.stride} differs from the convolution's {main.stride}")
    off = tuple(pm - ps for pm, ps in zip(main.padding, skip.padding))
    if any(o < 0 or o + ks > km for o, ks, km in zip(off, skip.kernel, main.kernel)):
        raise FoldError(f"a {skip.kernel} skip kernel (padding {skip.padding}) does not fit inside the "
                        f"{main.kernel} kernel (padding {main.padding})")
    return off


@torch.no_grad()
def absorb_skip(conv: nn.Conv2d, skip: nn.Conv2d | None) -> nn.Conv2d:
    """One Conv2d computing ``conv(x) + skip(x)``; ``skip=None`` is the
    identity (a centred delta kernel). Exact, borders included: both read the
    same zero-padded input."""
    main = ConvGeometry.of(conv)
    w = dense_weight(conv)                                           # (C_out, C_in, K, K)
    bias = _bias(conv, conv.out_channels)
    if skip is None:
        if conv.in_channels != conv.out_channels:
            raise FoldError(f"identity skip needs as many outputs as inputs ({conv.in_channels} -> "
                            f"{conv.out_channels})")
        sgeo = ConvGeometry((1, 1), (1, 1), (0, 0))
        sw = torch.eye(conv.in_channels, dtype=w.dtype, device=w.device).view(*w.shape[:2], 1, 1)
        groups = conv.groups                                         # a delta fits any grouping
    else:
        if (skip.in_channels, skip.out_channels) != (conv.in_channels, conv.out_channels):
            raise FoldError("skip and convolution have different channel counts")
        sgeo = ConvGeometry.of(skip)
        sw = dense_weight(skip)
        bias = bias + _bias(skip, skip.out_channels)
        groups = math.gcd(conv.groups, skip.groups)
    oh, ow = skip_placement(main, sgeo)
    w[:, :, oh:oh + sgeo.kernel[0], ow:ow + sgeo.kernel[1]] += sw
    has_bias = conv.bias is not None or (skip is not None and skip.bias is not None)
    return new_conv(conv, conv.in_channels, conv.out_channels, main, groups,
                    grouped_weight(w, groups), bias if has_bias else None)


# ------------------------------------------------------------ measurement

@dataclass
class Deviation:
    """Absolute output deviation of a merge on some inputs."""

    max_abs: float
    mean_abs: float
    interior_max_abs: float | None = None   # convolution chains: outputs unaffected by inner padding
    border_max_abs: float | None = None     # ... and those in the border ring
    border_fraction: float | None = None    # share of output positions in the ring

    def as_dict(self) -> dict[str, float | None]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


def interior_mask(convs: Sequence[nn.Conv2d], in_hw: Sequence[int]) -> torch.Tensor:
    """``(H_out, W_out)`` bool mask of chain outputs whose receptive field never
    touches an inner layer's zero padding (where the composite is exact)."""
    hw = ConvGeometry.of(convs[0]).out_size(in_hw)
    mask = torch.ones(1, 1, *hw, dtype=torch.float64)                 # valid map after the first layer
    for c in convs[1:]:
        kh, kw = c.kernel_size
        ones = torch.ones(1, 1, kh, kw, dtype=torch.float64)
        mask = (F.conv2d(mask, ones, stride=c.stride, padding=c.padding) == kh * kw).double()
    return mask[0, 0].bool()


@torch.no_grad()
def measure_merge(original: Sequence[nn.Module] | Callable[[torch.Tensor], torch.Tensor], merged: nn.Module,
                  x: torch.Tensor) -> Deviation:
    """Deviation of ``merged(x)`` from the original computation: a sequence of
    layers applied in turn (a chain; conv chains also get the interior/border
    split) or any callable."""
    if callable(original) and not isinstance(original, Sequence):
        ref = original(x)
    else:
        ref = x
        for layer in original:
            ref = layer(ref)
    out = merged(x)
    diff = (out - ref).abs()                                          # (N, C, H, W) or (N, F)
    dev = Deviation(float(diff.max()) if diff.numel() else 0.0, float(diff.mean()) if diff.numel() else 0.0)
    if isinstance(original, Sequence) and len(original) > 1 and all(type(m) is nn.Conv2d for m in original):
        mask = interior_mask(original, x.shape[-2:]).to(diff.device)  # (H, W)
        inner, ring = diff[..., mask], diff[..., ~mask]
        dev.interior_max_abs = float(inner.max()) if inner.numel() else 0.0
        dev.border_max_abs = float(ring.max()) if ring.numel() else 0.0
        dev.border_fraction = float((~mask).double().mean())
    return dev
