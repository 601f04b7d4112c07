"""Entropy estimators of activations: plain functions on tensors.

- ``spatial_aura_entropy``: how heterogeneous each 2-D activation map is over
  space (B. Musat, R. Andonie, arXiv 2312.04926; METHODS.md section 1). Each
  map is quantised to ``levels`` uniform bins between its own min and max; the
  aura (generalised grey-level co-occurrence) matrix counts every ordered pair
  of neighbouring positions ``(s, t)`` once in each direction; the result is
  the Shannon entropy of the normalised matrix, in bits, in
  ``[0, 2 log2 levels]``. A constant map has entropy 0.
- ``mass_entropy``: entropy of the non-negative activation mass over positions.
- ``state_entropy``: the ON/OFF entropy of rectifier inputs (EASIER, Quetu et
  al., arXiv 2404.18949; NEPENTHE, Liao et al., arXiv 2404.16890).

Everything is vectorised over maps; no Python loop runs over maps or pixels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import aura_kernel

# neighbour offsets (dy, dx) of half of each neighbourhood; the other half is
# the reverse direction, counted by symmetrising the aura matrix
HALF_OFFSETS = {4: ((0, 1), (1, 0)), 8: ((0, 1), (1, 0), (1, 1), (1, -1))}
PROB_FLOOR = 1e-10  # EASIER clamps probabilities at 1e-10 before the logarithm


def quantize(maps: torch.Tensor, levels: int) -> torch.Tensor:
    """Per-map uniform quantisation of ``maps`` (N, C, H, W) to int32 levels
    ``floor(levels * (x - min) / (max - min))``, the maximum going to the top
    level ``levels - 1``. A constant map is all level 0."""
    lo = maps.amin(dim=(-2, -1), keepdim=True)                 # (N, C, 1, 1)
    hi = maps.amax(dim=(-2, -1), keepdim=True)
    scale = levels / torch.where(hi > lo, hi - lo, torch.ones_like(hi))
    # float32 (x - lo) * scale: x - lo >= 0 exactly, so truncation is floor;
    # the fused kernel (aura_kernel.py) does the same arithmetic
    return ((maps - lo) * scale).clamp_(max=levels - 1).to(torch.int32)


def _check_aura_args(maps: torch.Tensor, levels: int, connectivity: int) -> tuple[int, int, int, int]:
    if connectivity not in HALF_OFFSETS:
        raise ValueError(f"connectivity must be 4 or 8, got {connectivity}")
    if maps.dim() != 4:
        raise ValueError(f"maps must be (N, C, H, W), got shape {tuple(maps.shape)}")
    if not 2 <= levels <= 255:
        raise ValueError(f"levels must be in [2, 255], got {levels}")
    if maps.shape[-1] * maps.shape[-2] == 0:
        raise ValueError(f"maps must have at least one position, got shape {tuple(maps.shape)}")
    return tuple(maps.shape)


def _use_kernel(maps: torch.Tensor, reference: bool) -> bool:
    return maps.device.type == "cpu" and aura_kernel.available() and not reference


def aura_matrices(maps: torch.Tensor, levels: int = 8, connectivity: int = 8,
                  reference: bool = False) -> torch.Tensor:
    """Aura matrices ``M`` (N, C, L, L): ``M[i, j]`` = number of ordered
    neighbouring pairs with level ``i`` at ``s`` and ``j`` at ``t``. Symmetric.

    Implementation: the level maps are padded with a sentinel level ``L`` (one
    column left and right, one row below) and flattened, so that every
    neighbour offset is a shift of the flat array; pairs touching the sentinel
    fall into bins that are dropped. One ``bincount`` per offset counts the
    pair codes ``map * K^2 + i * K + j`` (``K = L + 1``) of all maps at once.

    On the CPU the fused numba kernel of ``aura_kernel.py`` computes the same
    counts about 10x faster; ``reference=True`` forces the torch code (which
    also serves other devices).
    """
    _check_aura_args(maps, levels, connectivity)
    if _use_kernel(maps, reference):
        return aura_kernel.aura_cpu(maps, levels, connectivity)[0]
    return _aura_matrices_torch(maps, levels, connectivity)


def _aura_matrices_torch(maps: torch.Tensor, levels: int, connectivity: int) -> torch.Tensor:
    """The whole-tensor torch implementation (the reference; any device)."""
    n, c, h, w = maps.shape
    nmaps, k = n * c, levels + 1
    q = quantize(maps.float(), levels).view(nmaps, h, w)
    qp = F.pad(q, (1, 1, 0, 1), value=levels).view(-1)         # (M*(H+1)*(W+2),)
    row = w + 2
    # code of the level at s, offset by its map: map * K^2 + level * K
    base = torch.arange(nmaps, dtype=torch.int32, device=maps.device) * (k * k)
    first = (qp.view(nmaps, -1) * k + base.view(nmaps, 1)).view(-1)
    counts = None
    for dy, dx in HALF_OFFSETS[connectivity]:
        d = dy * row + dx                                      # flat shift from s to t
        # one contiguous add over all maps: a shift that crosses into the next
        # map starts from the bottom sentinel row, whose pairs are dropped
        bc = torch.bincount(first[:-d] + qp[d:], minlength=nmaps * k * k)
        counts = bc if counts is None else counts.add_(bc)
    m = counts.view(n, c, k, k)[..., :levels, :levels].float()
    return m + m.transpose(-1, -2)                              # both directions


def _entropy_bits(p: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """-sum p log2 p over ``dims``, with 0 log 0 = 0."""
    logp = torch.log2(torch.where(p > 0, p, torch.ones_like(p)))
    return -(p * logp).sum(dim=dims)


def spatial_aura_entropy(maps: torch.Tensor, levels: int = 8, connectivity: int = 8,
                         reference: bool = False) -> torch.Tensor:
    """Spatial aura entropy in bits of each map of ``maps`` (N, C, H, W) -> (N, C).

    A 1x1 map has no neighbouring pairs and gets entropy 0. On the CPU the
    fused kernel computes it (in float64, then float32); ``reference=True``
    uses the torch code, whose float32 sums agree to about 1e-6 bits.
    """
    _check_aura_args(maps, levels, connectivity)
    if _use_kernel(maps, reference):
        return aura_kernel.aura_cpu(maps, levels, connectivity, matrices=False)[1]
    m = _aura_matrices_torch(maps, levels, connectivity)           # (N, C, L, L)
    total = m.sum(dim=(-2, -1), keepdim=True)
    p = m / torch.where(total > 0, total, torch.ones_like(total))
    return _entropy_bits(p, (-2, -1))


def mass_entropy(maps: torch.Tensor, normalize: bool = False) -> torch.Tensor:
    """Entropy in bits of ``p = relu(A) / sum relu(A)`` over the positions of
    each map (N, C, H, W) -> (N, C); an all-zero map has entropy 0. With
    ``normalize``, divided by ``log2(H*W)`` so that it lies in [0, 1]."""
    a = maps.float().clamp(min=0).flatten(2)                    # (N, C, H*W)
    total = a.sum(-1, keepdim=True)
    p = a / torch.where(total > 0, total, torch.ones_like(total))
    h = _entropy_bits(p, (-1,))
    if normalize:
        positions = a.shape[-1]
        h = h / torch.log2(torch.tensor(float(positions))) if positions > 1 else torch.zeros_like(h)
    return h


def on_fraction(pre_activations: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Count of ON states (``z >= 0``) per channel and the number of samples
    per channel: ``z`` is (N, C, H, W) or (N, C)."""
    z = pre_activations
    on = (z >= 0).transpose(0, 1).reshape(z.shape[1], -1)       # (C, N*H*W)
    return on.sum(1).double(), on.shape[1]


def binary_entropy(p_on: torch.Tensor) -> torch.Tensor:
    """``-p log2 p - (1-p) log2 (1-p)`` with probabilities clamped at 1e-10."""
    p = p_on.clamp(PROB_FLOOR, 1.0)
    q = (1.0 - p_on).clamp(PROB_FLOOR, 1.0)
    return -(p * torch.log2(p) + q * torch.log2(q))


def state_entropy(pre_activations: torch.Tensor, nondegenerate: bool = False) -> torch.Tensor:
    """ON/OFF entropy in bits of each channel's rectifier input (C,).

    ``p_on`` is the fraction of ``z >= 0`` over samples and positions (EASIER).
    With ``nondegenerate`` (NEPENTHE), channels that are always ON or always
    OFF get NaN, so that ``nanmean`` leaves them out of a layer's entropy.
    """
    on, total = on_fraction(pre_activations)
    p_on = on / total
    h = binary_entropy(p_on)
    if nondegenerate:
        h = torch.where((on == 0) | (on == total), torch.full_like(h, float("nan")), h)
    return h.float()


def layer_state_entropy(h: torch.Tensor) -> float:
    """A layer's entropy: mean over its channels, NaN (degenerate) ones left
    out; 0 when every channel is degenerate."""
    valid = h[~torch.isnan(h)]
    return float(valid.mean()) if valid.numel() else 0.0
