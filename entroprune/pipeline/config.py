"""The settings of one compression job (``compress.py``), validated where
they are built: a bad value is a ``CompressError`` that names the setting
and its allowed range, before any work starts."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from ..pruning import CRITERIA, PruningError, parse_macs_target
from ..reconstruct import ReconstructConfig
from ..search import SearchConfig
from ..search.env import WALLS

TARGET_KINDS = ("macs", "latency")
CHANNEL_METHODS = ("search", "policy", "ges", "none")     # besides the criteria of pruning.CRITERIA
DEPTH_METHODS = ("easier", "nepenthe")
RUNTIMES = ("onnxruntime", "torch")


class CompressError(ValueError):
    """A compression job cannot run as asked; the message says why and what to do."""


def parse_target(target: str | float) -> float:
    """``"5x"`` -> 0.2 (keep a fifth: five times fewer MACs, or five times faster), ``0.2`` -> 0.2."""
    try:
        return parse_macs_target(target)
    except PruningError as e:
        raise CompressError(str(e).replace("MACs target", "target")) from None


@dataclass
class CompressConfig:
    # what to reach
    target: str | float = "5x"          # "5x": five times fewer MACs (or five times faster); 0.2: keep 20%
    target_kind: str = "macs"           # "macs" or "latency" (predicted by the per-layer table, then measured)
    # which channels go
    method: str = "l1"                  # a criterion (l1, aura, ...), search, policy, ges, none
    scope: str = "global"               # criteria: rank all groups together, or the same fraction everywhere
    min_keep: float = 0.1               # every channel group keeps >= this fraction ...
    min_channels: int = 1               # ... and at least this many channels
    tolerance: float = 0.02             # relative tolerance on the target
    calib_size: int = 512               # calibration images (training split) for scores and statistics
    search: SearchConfig = field(default_factory=lambda: SearchConfig(episodes=80))
    policy: str | tuple[float, ...] = "uniform"   # method "policy": uniform, random, or preserve ratios per group
    ges_target: float | None = None     # ges: fraction of each layer's channels to remove (None: its threshold)
    # what happens to the pruned model
    reconstruct: ReconstructConfig | None = field(default_factory=ReconstructConfig)
    depth: str | None = None            # then remove rectifiers: easier or nepenthe (each step fine-tuned)
    depth_tolerance: float = 0.5        # ... while validation accuracy stays within this many points
    depth_max_steps: int | None = None  # ... and at most this many steps (EASIER removals, NEPENTHE rounds)
    finetune_epochs: int = 10
    finetune_lr: float = 0.01
    distill: bool = True                # the unpruned model teaches the pruned one while it is fine-tuned
    distill_weight: float = 0.7
    distill_temperature: float = 4.0
    fold: bool = False                  # fold BatchNorm and linear chains before measuring the deployed model
    quantize: bool = False              # end with static INT8 quantization (ONNX, QDQ)
    # how it is measured
    runtime: str = "onnxruntime"        # the runtime of the latency figures (torch eager is reported beside it)
    threads: int = 1                    # intra-op threads while timing
    latency_batches: tuple[int, ...] = (1, 64)
    latency_repeats: int = 30
    measure_latency: bool = True        # time the compressed model (always for a latency target or INT8)
    eval_stages: bool = True            # accuracy after every stage (False: only before and at the end)
    seed: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        self.keep = parse_target(self.target)          # fraction of the cost to keep
        self.latency_batches = tuple(self.latency_batches)
        methods = (*CRITERIA, *CHANNEL_METHODS)
        checks: list[tuple[str, bool, str]] = [
            ("target_kind", self.target_kind in TARGET_KINDS, f"one of {', '.join(TARGET_KINDS)}"),
            ("method", self.method in methods, f"one of {', '.join(sorted(methods))}"),
            ("scope", self.scope in ("global", "uniform"), "global or uniform"),
            ("min_keep", 0.0 <= self.min_keep < 1.0, "in [0, 1)"),
            ("min_channels", self.min_channels >= 1, ">= 1"),
            ("tolerance", 0.0 < self.tolerance < 0.5, "in (0, 0.5)"),
            ("calib_size", self.calib_size >= 2, ">= 2"),
            ("ges_target", self.ges_target is None or 0.0 < self.ges_target < 1.0, "None or in (0, 1)"),
            ("depth", self.depth in (None, *DEPTH_METHODS), f"None or one of {', '.join(DEPTH_METHODS)}"),
            ("depth_tolerance", self.depth_tolerance >= 0, ">= 0"),
            ("depth_max_steps", self.depth_max_steps is None or self.depth_max_steps >= 1, "None or >= 1"),
            ("finetune_epochs", self.finetune_epochs >= 0, ">= 0"),
            ("finetune_lr", math.isfinite(self.finetune_lr) and self.finetune_lr > 0, "a finite number > 0"),
            ("distill_weight", 0.0 <= self.distill_weight <= 1.0, "in [0, 1]"),
            ("distill_temperature", self.distill_temperature > 0, "> 0"),
            ("runtime", self.runtime in RUNTIMES, f"one of {', '.join(RUNTIMES)}"),
            ("threads", self.threads >= 1, ">= 1"),
            ("latency_batches", len(self.latency_batches) > 0 and all(b >= 1 for b in self.latency_batches),
             "one or more batch sizes >= 1"),
            ("latency_repeats", self.latency_repeats >= 1, ">= 1"),
            ("search.wall", self.search.wall in WALLS, f"one of {', '.join(WALLS)}"),
            ("search.episodes", self.search.episodes >= 1, ">= 1"),
        ]
        for name, ok, rule in checks:
            if not ok:
                value = getattr(self, name) if "." not in name else getattr(self.search, name.split(".")[1])
                raise CompressError(f"setting {name}={value!r} must be {rule}")
        if self.search.agent.warmup >= self.search.episodes and self.method == "search":
            raise CompressError(f"the search has {self.search.episodes} episodes but {self.search.agent.warmup} "
                                "random warm-up episodes: the agent would never act; raise episodes or lower warmup")
        if isinstance(self.policy, str) and self.policy not in ("uniform", "random"):
            raise CompressError(f"policy {self.policy!r} must be uniform, random, or preserve ratios per group")
        if self.method == "none" and self.depth is None and not self.quantize and not self.fold:
            raise CompressError("method 'none' with no depth reduction, folding or quantization changes nothing")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("progress")
        d["keep"] = self.keep
        return d

    @property
    def structural(self) -> bool:
        """Channels removed by a criterion or the search (what reconstruction refits)."""
        return self.method in CRITERIA or self.method in ("search", "policy")
