"""Sampled regression rows of a convolution or linear layer: which output
positions are sampled, the input patch behind each, and the output there.

A row of a convolution is one output position ``(n, h, w)``: its input patch
is the ``C x kh x kw`` window that the kernel sees there (zero padding
included), flattened in the weight's own order (channel-major, then kernel
row, then column), so that ``output[n, :, h, w] = W.view(O, -1) @ patch + b``
for an ungrouped convolution. A row of a linear layer is one input vector
(all leading dimensions are rows). Patches are gathered at the sampled
positions only, never unfolded over the whole batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


class PatchError(ValueError):
    """A layer whose patches cannot be gathered (the message says why)."""


@dataclass
class Positions:
    """Sampled rows of one layer for a batch of ``images`` inputs."""
    flat: torch.Tensor          # (P,) sorted indices into images * H_out * W_out (or the rows of a linear layer)
    out_hw: tuple[int, int]     # (H_out, W_out); (1, 1) for a linear layer on (N, F)

    def nhw(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(P,) image, output row and output column of each sampled position."""
        h, w = self.out_hw
        n, rest = self.flat // (h * w), self.flat % (h * w)
        return n, rest // w, rest % w


def sample_positions(out_shape: tuple[int, ...], images: int, count: int, generator: torch.Generator) -> Positions:
    """``count`` distinct rows (all of them if fewer) of a layer whose output for
    one input has ``out_shape``: (O, H, W) for a convolution, (..., O) for linear."""
    if len(out_shape) == 3:
        hw = (int(out_shape[1]), int(out_shape[2]))
    else:
        hw = (int(math.prod(out_shape[:-1])), 1)   # extra leading dims of a linear layer are rows too
    total = images * hw[0] * hw[1]
    flat = torch.randperm(total, generator=generator)[: min(count, total)]
    return Positions(torch.sort(flat).values, hw)


def outputs_at(out: torch.Tensor, pos: Positions, is_conv: bool) -> torch.Tensor:
    """(P, O) outputs of a layer at the sampled rows, from its output tensor."""
    if is_conv:                                                    # out: (N, O, H, W)
        n, h, w = pos.nhw()
        return out[n, :, h, w]
    return out.reshape(-1, out.shape[-1])[pos.flat]               # (rows, O) -> (P, O)


def _padding(layer: nn.Conv2d) -> tuple[int, int]:
    if layer.padding_mode != "zeros":
        raise PatchError(f"padding mode {layer.padding_mode!r} (only zero padding is modelled)")
    if isinstance(layer.padding, str):
        if layer.padding == "valid":
            return 0, 0
        if any(s != 1 for s in layer.stride):
            raise PatchError("padding='same' with a stride")
        kh, kw = layer.kernel_size
        dh, dw = layer.dilation
        total_h, total_w = dh * (kh - 1), dw * (kw - 1)
        if total_h % 2 or total_w % 2:
            raise PatchError("padding='same' with an even kernel (asymmetric padding)")
        return total_h // 2, total_w // 2
    return int(layer.padding[0]), int(layer.padding[1])


def conv_patches(layer: nn.Conv2d, inp: torch.Tensor, pos: Positions) -> torch.Tensor:
    """(P, C, kh * kw) input windows of ``layer`` at the sampled positions; ``inp`` is (N, C, H, W)."""
    ph, pw = _padding(layer)
    x = F.pad(inp, (pw, pw, ph, ph))                               # (N, C, H + 2ph, W + 2pw)
    n, h, w = pos.nhw()
    (kh, kw), (sh, sw), (dh, dw) = layer.kernel_size, layer.stride, layer.dilation
    taps = [x[n, :, h * sh + i * dh, w * sw + j * dw] for i in range(kh) for j in range(kw)]  # each (P, C)
    return torch.stack(taps, dim=2)                                # (P, C, kh * kw)


def layer_rows(layer: nn.Module, inp: torch.Tensor, pos: Positions) -> list[torch.Tensor]:
    """The regression inputs of each weight group of ``layer``: a list of
    (P, D_g) tensors, one per convolution group (one for a linear layer)."""
    if isinstance(layer, nn.Linear):
        return [inp.reshape(-1, inp.shape[-1])[pos.flat]]          # (P, F)
    patches = conv_patches(layer, inp, pos)                        # (P, C, K)
    per = layer.in_channels // layer.groups
    return [patches[:, g * per:(g + 1) * per].reshape(patches.shape[0], -1) for g in range(layer.groups)]
