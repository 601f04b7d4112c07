"""A channel criterion that sees the reconstruction (docs/METHODS.md section 8):
channels are ranked by the output error they leave in their consumers AFTER
the least-squares refit of ``reconstruct/``, by greedy backward elimination.

In the spirit of ThiNet (J.-H. Luo, J. Wu, W. Lin, "ThiNet: A Filter Level
Pruning Method for Deep Neural Network Compression", ICCV 2017), which
removes, greedily, the input channels of the next layer whose removal
changes its output least; here the change is measured after the remaining
inputs are refitted (as in Y. He, X. Zhang, J. Sun, "Channel Pruning for
Accelerating Very Deep Neural Networks", ICCV 2017), which is what the
reconstruction stage then does.

For one consumer layer (a convolution or linear layer whose input channels
belong to the group; depthwise convolutions are passed through) with input
patches ``X`` (N, D), D = C * k, and weights ``W`` (O, D): its output is
``Y = X W^T``, so with the centred Gram ``G = X^T X / N`` the ridge refit on a
kept column set R has the error ``E(R) = min_V ||Y - X_R V||^2 / N + lam ||V||^2``.
Removing one more channel (its block ``b`` of k columns) from R raises the
error by exactly (block elimination of a quadratic; the "optimal brain
surgeon" identity)::

    dE_b = trace(V_b^T (P_bb)^-1 V_b),   P = (G_RR + lam I)^-1,  V = P G_R. W^T,

after which ``V <- V_r - P_rb P_bb^-1 V_b`` and ``P <- P_rr - P_rb P_bb^-1 P_br``
(rank-k downdates, no new inverse). Each step removes the channel with the
smallest sum over the group's consumers of ``dE_b / E_total`` (each consumer's
error relative to its output variance). A channel's score is the cumulative
relative error at the step it goes (non-decreasing along the order), so the
pruner removes channels in the greedy order within a group and, across
groups (global scope), the cheapest errors first. Groups without a consumer
fall back to L1 magnitude.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ..measure import layer_costs
from ..reconstruct.patches import conv_patches, sample_positions
from .importance import Criterion, L1Criterion, register_criterion


class _Consumer:
    """Greedy state of one consumer layer: the kept columns, ``P`` and ``V``."""

    def __init__(self, gram: torch.Tensor, weight: torch.Tensor, blocks: dict[int, list[int]], ridge: float):
        d = gram.shape[0]
        scale = float(gram.diagonal().mean()).__abs__() or 1.0
        g = gram / scale                                        # (D, D), mean variance 1: ridge is relative
        w = weight.double() * scale ** 0.5                      # (O, D): same outputs on the scaled inputs
        self.energy = max(float((w @ g * w).sum()), 1e-30)      # output variance ||Y||^2 / N
        a = g + ridge * torch.eye(d, dtype=torch.float64)
        self.P = torch.linalg.inv(a)                            # (D, D)
        self.V = self.P @ (g @ w.T)                             # (D, O)
        self.active = torch.arange(d)                           # original column ids, in P's order
        self.blocks = blocks                                    # root channel -> original column ids

    def positions(self, channel: int) -> torch.Tensor:
        return torch.searchsorted(self.active, torch.tensor(self.blocks[channel]))

    def costs(self, channels: list[int]) -> torch.Tensor:
        """(len(channels),) relative error increase of removing each channel now."""
        out = torch.zeros(len(channels), dtype=torch.float64)
        sizes: dict[int, list[int]] = {}
        for i, c in enumerate(channels):
            if c in self.blocks:
                sizes.setdefault(len(self.blocks[c]), []).append(i)
        for _, rows in sizes.items():       # batched by block size
            idx = torch.stack([self.positions(channels[i]) for i in rows])            # (n, k)
            pbb = self.P[idx[:, :, None], idx[:, None, :]]                              # (n, k, k)
            vb = self.V[idx]                                                            # (n, k, O)
            sol = torch.linalg.solve(pbb, vb)                                           # (n, k, O)
            out[rows] = (vb * sol).sum((1, 2)) / self.energy
        return out

    def remove(self, channel: int) -> None:
        if channel not in self.blocks:
            return
        b = self.positions(channel)
        keep = torch.ones(len(self.active), dtype=torch.bool)
        keep[b] = False
        r = keep.nonzero().squeeze(1)
        p_rb, p_bb = self.P[r][:, b], self.P[b][:, b]                                   # (R, k), (k, k)
        gain = p_rb @ torch.linalg.inv(p_bb)                                            # (R, k)
        self.V = self.V[r] - gain @ self.V[b]
        self.P = self.P[r][:, r] - gain @ p_rb.T
        self.active = self.active[r]


class GreedyRefitCriterion(Criterion):
    """Scores = cumulative relative refit error of the consumers, by greedy elimination."""

    name = "greedy_refit"
    needs_data = True

    def __init__(self, positions: int = 4096, ridge: float = 1e-3, bn_weighting: bool = True,
                 per_mac: bool = True, seed: int = 0):
        self.positions, self.ridge, self.bn_weighting, self.per_mac, self.seed = (
            positions, ridge, bn_weighting, per_mac, seed)
        self.bn_scale: dict[nn.Module, torch.Tensor] = {}

    def _grams(self, model: nn.Module, layers: set[nn.Module], images: torch.Tensor) -> dict[nn.Module, torch.Tensor]:
        """Centred Gram (D, D) of each layer's input patches on ``images``, one forward pass."""
        gen = torch.Generator().manual_seed(self.seed)
        grams: dict[nn.Module, torch.Tensor] = {}
        produced: dict[int, nn.Module] = {}          # id of a layer's output tensor -> the layer
        self.bn_scale: dict[nn.Module, torch.Tensor] = {}

        def bn_hook(mod, args, out):                  # a BatchNorm fed directly by a consumer layer
            src = produced.get(id(args[0]))
            if src is not None and src not in self.bn_scale and mod.weight is not None:
                self.bn_scale[src] = (mod.weight.detach() / (mod.running_var + mod.eps).sqrt()).double().abs()

        def hook(mod, args, out):
            produced[id(out)] = mod
            if mod in grams:
                return
            inp = args[0]
            pos = sample_positions(tuple(out.shape[1:]), out.shape[0], self.positions, gen)
            if isinstance(mod, nn.Conv2d):
                x = conv_patches(mod, inp, pos).reshape(len(pos.flat), -1)   # (P, C * k)
            else:
                x = inp.reshape(-1, inp.shape[-1])[pos.flat]                   # (P, F)
            x = x.double() - x.double().mean(0)
            grams[mod] = x.T @ x / x.shape[0]

        hooks = [m.register_forward_hook(hook) for m in layers]
        if self.bn_weighting:
            hooks += [m.register_forward_hook(bn_hook) for m in model.modules()
                      if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
        was_training = model.training
        try:
            with torch.no_grad():
                model.eval()(images)
        finally:
            for h in hooks:
                h.remove()
            model.train(was_training)
        return grams

    @staticmethod
    def _consumers(group) -> list[tuple[nn.Module, dict[int, list[int]]]]:
        """(layer, root channel -> its input channels) of every mixing consumer of a group."""
        found = []
        for item in group:
            m = item.dep.target.module
            if item.dep.handler.__name__ != "prune_in_channels" or not isinstance(m, (nn.Conv2d, nn.Linear)):
                continue
            if isinstance(m, nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels:
                continue                                         # depthwise: passes channels through
            chans: dict[int, list[int]] = {}
            for idx, root in zip(item.idxs, item.root_idxs):
                chans.setdefault(int(root), []).append(int(idx))
            found.append((m, chans))
        return found

    def scores(self, model, groups, calib):
        if calib is None:
            raise ValueError("the greedy_refit criterion needs calibration images")
        images = calib[0]
        consumers = [self._consumers(g) for g in groups]
        layers = {m for cs in consumers for m, _ in cs}
        grams = self._grams(model, layers, images) if layers else {}
        fallback = L1Criterion().scores(model, groups, calib) if any(not cs for cs in consumers) else None
        out = []
        for gi, (group, cs) in enumerate(zip(groups, consumers)):
            roots = [int(i) for i in group[0].idxs]
            cs = [(m, ch) for m, ch in cs if m in grams]
            if not cs:
                out.append(fallback[gi])
                continue
            states = []
            for m, chans in cs:
                k = m.kernel_size[0] * m.kernel_size[1] if isinstance(m, nn.Conv2d) else 1
                weight = _dense_weight(m)                                              # (O, C_in * k)
                if m in self.bn_scale:     # errors weighted as the BatchNorm after the layer scales them
                    weight = weight.double() * self.bn_scale[m][:, None]
                blocks = {r: [c * k + j for c in chans[r] for j in range(k)] for r in chans}
                states.append(_Consumer(grams[m], weight, blocks, self.ridge))
            out.append(self._greedy(roots, states))
        if self.per_mac:
            per_channel = _macs_per_channel(model, groups, tuple(images.shape[1:]))
            out = [s / max(c, 1.0) for s, c in zip(out, per_channel)]
        return out

    @staticmethod
    def _greedy(roots: list[int], states: list[_Consumer]) -> torch.Tensor:
        left = list(roots)
        score = torch.zeros(len(roots), dtype=torch.float64)
        where = {r: i for i, r in enumerate(roots)}
        total = 0.0
        while len(left) > 1:
            cost = sum(s.costs(left) for s in states)                                 # (len(left),)
            j = int(torch.argmin(cost))
            total += float(cost[j].clamp_min(0))
            c = left.pop(j)
            score[where[c]] = total
            for s in states:
                s.remove(c)
        score[where[left[0]]] = 2 * total + 1.0                                        # the last one stays
        return score.float()


def _macs_per_channel(model: nn.Module, groups, input_shape: tuple[int, ...]) -> list[float]:
    """MACs one channel of each group costs (its share of every layer the group
    shrinks, at the unpruned widths)."""
    macs = {r.name: r.macs for r in layer_costs(model, input_shape)}
    names = {m: n for n, m in model.named_modules()}
    out = []
    for group in groups:
        n, seen, total = len(group[0].idxs), set(), 0.0
        for item in group:
            key = (names.get(item.dep.target.module), item.dep.handler.__name__)
            if key[0] in macs and key not in seen:
                seen.add(key)
                total += macs[key[0]] / n
        out.append(total)
    return out


def _dense_weight(m: nn.Module) -> torch.Tensor:
    """(O, C_in * k) weight over ALL input channels (a grouped convolution's
    weight is block-diagonal in this layout)."""
    w = m.weight.detach()
    if isinstance(m, nn.Linear) or m.groups == 1:
        return w.reshape(w.shape[0], -1)
    o, cg, kh, kw = w.shape
    dense = torch.zeros(o, m.in_channels, kh * kw, dtype=w.dtype)
    per_out = o // m.groups
    for g in range(m.groups):
        dense[g * per_out:(g + 1) * per_out, g * cg:(g + 1) * cg] = w[g * per_out:(g + 1) * per_out].reshape(
            per_out, cg, kh * kw)
    return dense.reshape(o, -1)


register_criterion("greedy_refit", GreedyRefitCriterion)
