"""Feature-map reconstruction of a structurally pruned model (docs/METHODS.md
section 7): the least-squares refit that makes a pruned model usable before
any fine-tuning.

Removing channels leaves every consumer of those channels computing from
fewer inputs than it was trained for, so a model pruned to 5x fewer MACs sits
at chance accuracy. AMC (Y. He et al., arXiv 1802.03494) scored its episodes
on models whose layers were first refitted by least squares on recorded
feature maps; channel pruning (Y. He, X. Zhang, J. Sun, ICCV 2017) and ThiNet
(J.-H. Luo et al., ICCV 2017) reconstruct each layer's output the same way.

What this module does, in one forward pass of the pruned model over the
calibration images (all at once, so that a layer's input is complete when
it is reached):
1. once per original model (``Reconstructor``): sample positions of every
   convolution and linear layer's output and record the ORIGINAL model's
   output there (before BatchNorm and activation);
2. walking the pruned model in execution order, a pre-forward hook at each
   layer whose per-group inputs lost channels (``layers="pruned"``; or every
   layer after the first change, ``layers="all"``) gathers its input patches
   at the sampled positions, coming from the already pruned AND refitted
   network, and fits the layer's weights (and a bias) by ridge least squares
   to the original outputs of the channels it kept; grouped convolutions
   are fitted group by group, depthwise ones need nothing (no input lost);
3. the refit replaces the weights only if it reconstructs held-out rows
   (every ``holdout``-th sampled row, not used in the fit) better than the
   pruned weights do; otherwise the layer keeps its weights and the report
   says so.
The layer's BatchNorm is left as it is: its statistics describe the original
pre-BatchNorm outputs, which the refit reproduces. Re-estimating them
afterwards (``batchnorm=True``) is an option, measured, not a default.
Which original channels a pruned layer kept comes from ``channel_map``
(recorded by entroprune's pruner).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn as nn

from ..pruning.structural import channel_map
from ..training import recalibrate_batchnorm
from .least_squares import check_finite, holdout_mask, moments, refit, residual
from .patches import PatchError, Positions, layer_rows, outputs_at, sample_positions

LAYERS = ("pruned", "all")


class ReconstructError(ValueError):
    """The reconstruction cannot be done; the message says why."""


@dataclass
class ReconstructConfig:
    images: int = 512            # calibration images (from the training split)
    positions: int = 16384       # sampled output positions per layer
    ridge: float = 1e-3          # relative to the mean input variance
    holdout: int = 5             # every holdout-th sampled row checks the refit (0: accept every refit)
    layers: str = "pruned"       # "pruned": layers whose inputs lost channels; "all": every layer after a change
    add_bias: bool = True        # a layer without bias gains one (the intercept of the fit)
    batchnorm: bool = False      # re-estimate BatchNorm statistics afterwards
    seed: int = 0                # sampled positions

    def __post_init__(self) -> None:
        if self.images < 2 or self.positions < 1:
            raise ReconstructError(f"reconstruction needs >= 2 images and >= 1 position per layer, "
                                   f"got images={self.images}, positions={self.positions}")
        if self.ridge < 0:
            raise ReconstructError(f"the reconstruction ridge must be >= 0, got {self.ridge}")
        if self.holdout < 0 or self.holdout == 1:
            raise ReconstructError(f"holdout must be 0 (off) or >= 2 (every k-th row), got {self.holdout}")
        if self.layers not in LAYERS:
            raise ReconstructError(f"layers must be one of {', '.join(LAYERS)}, got {self.layers!r}")


def _weighted(model: nn.Module) -> dict[str, nn.Module]:
    return {n: m for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}


def _in_per_group(m: nn.Module) -> int:
    return m.in_channels // m.groups if isinstance(m, nn.Conv2d) else m.in_features


class Reconstructor:
    """The original model's outputs at sampled positions, recorded once; call it
    on pruned copies of that model (in place) to reconstruct them."""

    def __init__(self, original: nn.Module, images: torch.Tensor, cfg: ReconstructConfig | None = None):
        self.cfg = cfg or ReconstructConfig()
        if images.ndim < 2 or images.shape[0] < 2:
            raise ReconstructError("reconstruction needs a batch of at least 2 calibration images")
        self.images = images[: self.cfg.images]                    # (n, C, H, W)
        check_finite(self.images, "the calibration images")
        self.layers = _weighted(original)
        self.in_per_group = {n: _in_per_group(m) for n, m in self.layers.items()}
        self.out_width = {n: (m.out_channels if isinstance(m, nn.Conv2d) else m.out_features)
                          for n, m in self.layers.items()}
        gen = torch.Generator().manual_seed(self.cfg.seed)
        self.positions: dict[str, Positions] = {}
        self.targets: dict[str, torch.Tensor] = {}                 # name -> (P, O_original)
        names = {m: n for n, m in self.layers.items()}

        def record(mod, inp, out):
            name = names[mod]
            if name in self.targets:                               # a layer run twice: its first call
                return
            pos = sample_positions(tuple(out.shape[1:]), out.shape[0], self.cfg.positions, gen)
            self.positions[name] = pos
            self.targets[name] = outputs_at(out, pos, isinstance(mod, nn.Conv2d)).detach().clone()

        hooks = [m.register_forward_hook(record) for m in self.layers.values()]
        was_training = original.training
        try:
            with torch.no_grad():
                original.eval()(self.images)
        finally:
            for h in hooks:
                h.remove()
            original.train(was_training)
        for name, y in self.targets.items():
            check_finite(y, f"the original model's output of layer {name!r}")

    def __call__(self, pruned: nn.Module) -> dict[str, Any]:
        """Refit ``pruned`` in place; a report per layer."""
        t0 = time.time()
        cfg = self.cfg
        kept = channel_map(pruned)
        layers = _weighted(pruned)
        for name in layers:
            if name not in self.targets:
                continue
            if getattr(pruned, "entroprune_kept", None) is None and len(kept[name]["out"]) != self.out_width[name]:
                raise ReconstructError(
                    f"layer {name!r} has {len(kept[name]['out'])} outputs but the original "
                    f"{self.out_width[name]}, and the model does not say which channels it kept; prune it with "
                    "entroprune (prune_to_macs, a search policy) so that the channel map is recorded")
        report: dict[str, dict[str, Any]] = {}
        state = {"changed": False}
        names = {m: n for n, m in layers.items()}

        def pre_hook(mod, args):
            name = names[mod]
            if name in report:
                return
            report[name] = self._layer(name, mod, args[0], kept[name]["out"], state)

        hooks = [m.register_forward_pre_hook(pre_hook) for m in layers.values()]
        was_training = pruned.training
        try:
            with torch.no_grad():
                pruned.eval()(self.images)
        finally:
            for h in hooks:
                h.remove()
            pruned.train(was_training)
        if cfg.batchnorm:
            recalibrate_batchnorm(pruned, self.images)
        refitted = [n for n, r in report.items() if r.get("refitted")]
        return {"op": "reconstruct", "config": asdict(cfg), "images": int(self.images.shape[0]),
                "refitted": refitted,
                "kept_weights": {n: r["reason"] for n, r in report.items() if r.get("candidate")
                                 and not r.get("refitted")},
                "layers": report, "seconds": time.time() - t0}

    # ---- one layer ----
    def _layer(self, name: str, layer: nn.Module, inp: torch.Tensor, kept_out: list[int],
               state: dict[str, bool]) -> dict[str, Any]:
        cfg = self.cfg
        if name not in self.targets:
            return {"candidate": False, "reason": "not a layer of the original model"}
        lost_inputs = _in_per_group(layer) < self.in_per_group[name]
        candidate = lost_inputs or (cfg.layers == "all" and state["changed"])
        if len(kept_out) < self.out_width[name] or lost_inputs:
            state["changed"] = True                    # layers after this one see other inputs
        if not candidate:
            return {"candidate": False}
        if isinstance(layer, nn.Conv2d) and layer.groups == layer.in_channels and layer.groups > 1 \
                and not cfg.layers == "all":
            return {"candidate": False, "reason": "depthwise: no input lost"}
        try:
            rows = layer_rows(layer, inp, self.positions[name])    # [(P, D_g)] per group
        except PatchError as e:
            return {"candidate": True, "refitted": False, "reason": f"skipped: {e}"}
        y = self.targets[name][:, kept_out]                        # (P, O')
        groups = len(rows)
        per_out = y.shape[1] // groups
        k = (layer.kernel_size[0] * layer.kernel_size[1]) if isinstance(layer, nn.Conv2d) else 1
        weight = layer.weight.detach().reshape(layer.weight.shape[0], -1)   # (O', D_g)
        bias = layer.bias.detach() if layer.bias is not None else None
        fit_intercept = bias is not None or cfg.add_bias
        held = holdout_mask(y.shape[0], cfg.holdout)
        fit_rows = ~held if bool(held.any()) else torch.ones_like(held)
        new_w, new_b = [], []
        err_old = err_new = total = 0.0
        for g, x in enumerate(rows):
            out_g = slice(g * per_out, (g + 1) * per_out)
            yg = y[:, out_g]
            mom = moments(x[fit_rows], yg[fit_rows], k, fit_intercept)
            w_g, b_g = refit(mom, None, None, ridge=cfg.ridge, fit_intercept=fit_intercept)
            new_w.append(w_g)
            new_b.append(b_g)
            check = held if bool(held.any()) else fit_rows
            e_old, tot = residual(x[check], yg[check], weight[out_g], None if bias is None else bias[out_g])
            e_new, _ = residual(x[check], yg[check], w_g, b_g)
            err_old, err_new, total = err_old + e_old, err_new + e_new, total + tot
        rec = {"candidate": True, "rows": int(y.shape[0]), "inputs_lost": lost_inputs,
               "error_before": err_old / max(total, 1e-30), "error_after": err_new / max(total, 1e-30)}
        if err_new >= err_old:
            rec.update(refitted=False, reason="the refit does not lower the held-out error")
            return rec
        self._write(layer, torch.cat(new_w), torch.cat(new_b) if fit_intercept else None)
        state["changed"] = True
        rec["refitted"] = True
        return rec

    @staticmethod
    def _write(layer: nn.Module, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        with torch.no_grad():
            layer.weight.copy_(weight.view_as(layer.weight).to(layer.weight.dtype))
            if bias is None:
                return
            if layer.bias is None:        # the fit's intercept becomes a bias (saved and exported as such)
                layer.bias = nn.Parameter(torch.zeros(layer.weight.shape[0], dtype=layer.weight.dtype))
            layer.bias.copy_(bias.to(layer.bias.dtype))


def reconstruct(pruned: nn.Module, original: nn.Module, images: torch.Tensor,
                cfg: ReconstructConfig | None = None) -> dict[str, Any]:
    """Refit ``pruned`` (in place) so that its layers reproduce ``original``'s
    outputs on ``images`` (calibration images of the training split); a report."""
    return Reconstructor(original, images, cfg)(pruned)
