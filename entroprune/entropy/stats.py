"""Streaming activation statistics (docs/METHODS.md section 1, "Streaming"):
hooks that reduce each batch to running sums inside the forward pass and
never keep activations.

    with ActivationStats(model, None, ("aura", "mass")) as stats:   # every conv
        for xb in batches:
            model(xb)
    per_filter = stats.per_filter()      # {layer: {"aura": (C,), "mass": (C,)}}

Where to measure: ``None`` = every convolution, read after its activation
(``conv_sites``); a list of module names and/or module types (``["layer1.0.
relu1", nn.ReLU]``) = those modules' own outputs; or ``{layer: Site}``.

``RectifierStats`` does the same on rectifier inputs for the ON/OFF state
entropy of EASIER/NEPENTHE. Under ``torch.distributed`` the sums are
all-reduced when read, so every process returns the statistics of the whole
calibration set.

Activations holding NaN or infinity stop the measurement at once with a
``NonFiniteError`` (``entroprune.reconstruct``) naming the module, instead
of folding them silently into the statistics.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from ..training import distributed as dist_utils
from .estimators import binary_entropy, layer_state_entropy, mass_entropy, spatial_aura_entropy
from .sites import Site, activation_key, conv_sites


@dataclass
class EntropyConfig:
    levels: int = 8           # quantisation levels of the aura matrix
    connectivity: int = 8     # 4- or 8-connected neighbourhood
    normalize_mass: bool = False


ESTIMATORS = ("aura", "mass")


def _check_finite(t: torch.Tensor, what: str) -> None:
    """Raise ``NonFiniteError`` if ``t`` holds NaN or infinity."""
    if t.is_floating_point() and not bool(torch.isfinite(t).all()):
        from ..reconstruct.least_squares import NonFiniteError  # not at the top: that import is circular
        bad = int((~torch.isfinite(t)).sum())
        raise NonFiniteError(f"{what} holds {bad} NaN or infinite values of {t.numel()}: the model's weights or "
                             "the input images are not finite (a diverged model, or damaged data)")


class _Hooks:
    def __init__(self, model: nn.Module):
        self.model = model
        self.handles: list = []

    def __enter__(self):
        self.attach()
        return self

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()
        self.handles.clear()
        return False


def resolve_sites(model: nn.Module, where) -> dict[str, Site]:
    """``{layer: Site}`` from ``where``: None (every Conv2d, after its
    activation), ``{layer: Site}``, or an iterable of module names and/or
    module types (each matching module's own output)."""
    if where is None:
        return conv_sites(model)
    modules = dict(model.named_modules())
    if isinstance(where, dict):
        sites = where
    else:
        if isinstance(where, (str, type)):
            where = [where]
        sites = {}
        for item in where:
            if isinstance(item, type) and issubclass(item, nn.Module):
                found = {n: Site(n) for n, m in modules.items() if n and isinstance(m, item)}
                if not found:
                    raise ValueError(f"the model has no module of type {item.__name__}")
                sites.update(found)
            elif isinstance(item, str):
                sites[item] = Site(item)
            else:
                raise ValueError(f"modules to measure are names or nn.Module types, got {item!r}")
    missing = sorted({s.module for s in sites.values()} - set(modules))
    if missing:
        sample = ", ".join(n for n in list(modules)[1:9])
        raise ValueError(f"no module named {', '.join(map(repr, missing))} in the model "
                         f"(its modules include {sample}, ...; see model.named_modules())")
    return sites


class ActivationStats(_Hooks):
    """Per-filter running means of entropy estimators at the given sites.

    ``sites`` (see ``resolve_sites``) maps a layer name (usually a
    convolution) to the Site where its activations are read; several layers
    may share one site. Every site must output (N, C, H, W) maps.
    """

    def __init__(self, model: nn.Module, sites=None, estimators=("aura",),
                 cfg: EntropyConfig | None = None):
        super().__init__(model)
        unknown = set(estimators) - set(ESTIMATORS)
        if unknown:
            raise ValueError(f"unknown estimators {sorted(unknown)}; choose from {ESTIMATORS}")
        sites = resolve_sites(model, sites)
        self.sites, self.estimators, self.cfg = sites, tuple(estimators), cfg or EntropyConfig()
        self.sums: dict[tuple[str, str | None], dict[str, torch.Tensor]] = {}
        self.counts: dict[tuple[str, str | None], int] = {}

    def _reduce(self, key, out: torch.Tensor) -> None:
        if not isinstance(out, torch.Tensor) or out.dim() != 4:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"module {key[0]!r} outputs {shape}, not (N, C, H, W) maps: spatial entropy "
                             "needs the output of a convolution (or of the layers after it)")
        with torch.no_grad():
            maps = out.detach()
            _check_finite(maps, f"the output of module {key[0]!r}")
            if key[1] is not None:
                maps = self._activations[key](maps)
            sums = self.sums.setdefault(key, {})
            for est in self.estimators:
                if est == "aura":
                    v = spatial_aura_entropy(maps, self.cfg.levels, self.cfg.connectivity)
                else:
                    v = mass_entropy(maps, self.cfg.normalize_mass)
                s = v.sum(0).double()                             # (C,)
                sums[est] = sums[est] + s if est in sums else s
            self.counts[key] = self.counts.get(key, 0) + maps.shape[0]

    def attach(self) -> None:
        modules = dict(self.model.named_modules())
        self._activations = {}
        hooked = set()
        for site in self.sites.values():
            key = self._key(site)
            if key in hooked:
                continue
            hooked.add(key)
            if site.activation is not None:
                self._activations[key] = site.activation
            self.handles.append(modules[site.module].register_forward_hook(
                lambda mod, inp, out, key=key: self._reduce(key, out)))

    def _key(self, site: Site) -> tuple[str, str | None]:
        return (site.module, activation_key(site.activation))

    def per_filter(self) -> dict[str, dict[str, torch.Tensor]]:
        """``{layer: {estimator: (C,) mean over calibration images}}``."""
        out = {}
        for layer, site in self.sites.items():
            key = self._key(site)
            if key not in self.sums:
                continue
            count = torch.tensor([float(self.counts[key])], dtype=torch.float64)
            dist_utils.all_reduce_sum(count)
            out[layer] = {}
            for est, s in self.sums[key].items():
                total = dist_utils.all_reduce_sum(s.clone())
                out[layer][est] = (total / count).float()
        return out

    def per_layer(self) -> dict[str, dict[str, float]]:
        """``{layer: {estimator: mean over its filters}}``."""
        return {layer: {est: float(v.mean()) for est, v in ests.items()}
                for layer, ests in self.per_filter().items()}


class RectifierStats(_Hooks):
    """ON/OFF counts of rectifier inputs (``z >= 0`` is ON), per channel.

    Inputs are read by a forward *pre*-hook, before an in-place rectifier
    overwrites them.
    """

    def __init__(self, model: nn.Module, rectifier_names: list[str]):
        super().__init__(model)
        self.names = list(rectifier_names)
        self.on: dict[str, torch.Tensor] = {}
        self.total: dict[str, torch.Tensor] = {}

    def attach(self) -> None:
        modules = dict(self.model.named_modules())
        for name in self.names:
            self.handles.append(modules[name].register_forward_pre_hook(
                lambda mod, inp, name=name: self._reduce(name, inp[0])))

    def _reduce(self, name: str, z: torch.Tensor) -> None:
        with torch.no_grad():
            _check_finite(z.detach(), f"the input of rectifier {name!r}")
            on = (z.detach() >= 0).transpose(0, 1).reshape(z.shape[1], -1)   # (C, N*H*W)
            s = on.sum(1).double()
            t = torch.full_like(s, float(on.shape[1]))
            self.on[name] = self.on[name] + s if name in self.on else s
            self.total[name] = self.total[name] + t if name in self.total else t

    def p_on(self) -> dict[str, torch.Tensor]:
        return {n: dist_utils.all_reduce_sum(self.on[n].clone()) / dist_utils.all_reduce_sum(
            self.total[n].clone()) for n in self.on}

    def per_channel(self, nondegenerate: bool = False) -> dict[str, torch.Tensor]:
        """``{rectifier: (C,) ON/OFF entropy in bits}``; with ``nondegenerate``,
        always-ON / always-OFF channels are NaN (NEPENTHE)."""
        out = {}
        for n, p in self.p_on().items():
            h = binary_entropy(p)
            if nondegenerate:
                h = torch.where((p == 0) | (p == 1), torch.full_like(h, float("nan")), h)
            out[n] = h.float()
        return out

    def per_layer(self, nondegenerate: bool = False) -> dict[str, float]:
        return {n: layer_state_entropy(h) for n, h in self.per_channel(nondegenerate).items()}
