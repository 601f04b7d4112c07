"""A per-layer latency table for ONNX Runtime, with a measured overhead model.

Pruning to fewer MACs does not buy proportionally less time: on small inputs
per-operator overhead and memory traffic dominate, and some widths are slower
than larger ones (ORT's blocked NCHWc convolutions need channel counts that
are multiples of the vector width). A ``LatencyTable`` measures what a layer
really costs on this machine and predicts a whole model's latency from them:

* An entry is one ``LayerConfig`` (``layer_graph.py``): a one-layer ONNX model
  (``onnx_layers.py``: the Conv / Gemm plus its fused activation) timed in an
  ORT session, minus a null graph with the same input and output shapes timed
  interleaved with it (the per-session overhead), so that an entry is the
  layer's own cost. Medians, in rounds (``table_timing.py``); several calls
  per sample for sub-0.1 ms layers.
* ``predict(model, input_shape) = a + b1 * sum(NCHWc entries) + b2 *
  sum(other entries) + c * layers + d * MB``: ``a`` is the whole-model session
  overhead; ``b1`` and ``b2`` correct what single-layer sessions get wrong,
  apart for layers ORT runs in its blocked NCHWc layout (recorded per entry:
  their one-layer sessions pay layout reorders that a chain of such layers in
  a whole model does not) and for the others; ``c`` is a per-layer dispatch
  cost; ``d`` prices the megabytes written by the other operations (residual
  adds, pooling, concatenations). ``a, b1, b2, c, d >= 0`` are fitted by
  ``calibrate`` (least squares on relative errors) on whole-model
  measurements, and stored with the entries.

A table is keyed by runtime, runtime version, CPU model, threads, batch size
and measurement method; it lives in one JSON file per key under
``~/.cache/entroprune/latency/`` (or ``$ENTROPRUNE_CACHE/latency``, or an
explicit ``cache_dir``), written atomically and merged with what another
process wrote meanwhile. A second table with the same key measures only
missing entries; a file written for another key is never read for this one.
At one thread the clock is the CPU time of the calling thread (ORT then runs
on it alone), so that other jobs of a busy machine do not inflate entries.

Speed drift: every entry and whole-model measurement carries the median of a
fixed reference layer timed in the same rounds (``ref_ms``), a record of how
fast the machine was. With ``normalize=True`` (not the default) times are
kept relative to it and reported at the quietest speed the table has seen (the
smallest ``ref_ms``). On a busy machine this helped at batch 1 and hurt at
batch 64 (the reference's slowdowns did not match the models'); on a quiet
machine the reference hardly moves and it changes nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import time
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch.nn as nn

from ..io import atomic_write_json
from .layer_graph import LayerConfig, ModelProfile, OtherOp, layer_configs, model_profile
from .runtime import OnnxRuntime
from .table_timing import CHUNK, measure_layers, measure_models

__all__ = ["LatencyTable", "LatencyTableError", "LayerConfig", "OtherOp", "OverheadFit", "candidate_widths",
           "cpu_model", "default_cache_dir", "default_calibration_models", "fit_overhead", "layer_configs",
           "model_profile", "model_signature"]

METHOD = "layer-minus-null/3"       # bump when entries are measured differently: old files are then not read
FEATURES = ("const", "nchwc_ms", "plain_ms", "layers", "other_mb")   # the overhead model's terms (docstring)
MS_FEATURES = ("nchwc_ms", "plain_ms", "layers_ms")                   # the sums of entries
# the older model with one slope for every entry; kept beside the main fit for callers that sum the
# entries themselves without telling NCHWc ones apart (less accurate at batch 64)
TOTAL_FEATURES = ("const", "layers_ms", "layers", "other_mb")


class LatencyTableError(RuntimeError):
    pass


def cpu_model() -> str:
    """The CPU's "model name" from /proc/cpuinfo, else ``platform.processor()``."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown-cpu"


def default_cache_dir() -> Path:
    """``$ENTROPRUNE_CACHE/latency`` if set, else ``~/.cache/entroprune/latency``."""
    root = os.environ.get("ENTROPRUNE_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "entroprune") / "latency"


def candidate_widths(n: int) -> list[int]:
    """The widths a table measures for a layer of ``n`` channels, ascending:
    every width up to 16, then multiples of 4 up to 64, of 8 up to 128, of 16
    up to 256 and of 32 beyond (so every multiple of 16 up to 256: ORT's
    blocked layouts need them), and always ``n`` itself."""
    if n < 1:
        raise ValueError(f"a layer has at least one channel, got {n}")
    steps = ((16, 1), (64, 4), (128, 8), (256, 16))
    out = set()
    for w in range(1, n + 1):
        step = next((s for top, s in steps if w <= top), 32)
        if w % step == 0:
            out.add(w)
    return sorted(out | {n})


@dataclass
class OverheadFit:
    """``whole_ms = sum(coef[f] * feature[f])`` over the fitted features
    (``FEATURES``); ``coef_total``, if fitted, is the same over
    ``TOTAL_FEATURES``, used when the features lack the NCHWc split."""

    coef: dict[str, float]
    models: int                      # calibration models it was fitted on
    median_abs_error: float          # relative, on those models
    max_abs_error: float
    ref_ms: float = 1.0              # the table's quiet reference time when fitted (see LatencyTable)
    coef_total: dict[str, float] | None = None

    def predict(self, features: dict[str, float]) -> float:
        for coef in (self.coef, self.coef_total or {}):
            if coef and all(f in features for f in coef):
                return sum(c * features[f] for f, c in coef.items())
        raise KeyError(f"overhead features {sorted(self.coef)} (or {sorted(self.coef_total or [])}) needed, "
                       f"got {sorted(features)}: use LatencyTable.features(model, input_shape)")

    def to_dict(self) -> dict:
        return {"coef": self.coef, "models": self.models, "median_abs_error": self.median_abs_error,
                "max_abs_error": self.max_abs_error, "ref_ms": self.ref_ms, "coef_total": self.coef_total}


def fit_overhead(points: Sequence[dict[str, float]], features: Sequence[str] = FEATURES) -> OverheadFit:
    """Non-negative least squares of ``measured_ms`` on ``features`` of each
    point, on relative residuals (every model weighs the same whatever its size)."""
    from scipy.optimize import nnls

    if len(points) < len(features):
        raise LatencyTableError(f"fitting {len(features)} overhead parameters needs at least that many "
                                f"calibration models, got {len(points)}")
    y = np.array([p["measured_ms"] for p in points], dtype=np.float64)            # (M,)
    a = np.array([[p[f] for f in features] for p in points], dtype=np.float64)   # (M, F)
    coef, _ = nnls(a / y[:, None], np.ones_like(y))                              # rows scaled by 1 / y
    rel = np.abs(a @ coef / y - 1.0)                                              # (M,)
    return OverheadFit({f: float(c) for f, c in zip(features, coef)}, len(points), float(np.median(rel)),
                       float(rel.max()))


def model_signature(prof: ModelProfile, input_shape: tuple[int, ...]) -> str:
    """A model's identity for latency: its layers, other ops and input shape."""
    text = json.dumps([list(input_shape), [c.key for _, c in prof.layers],
                       [(o.op, o.out_elements) for o in prof.others]])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class LatencyTable:
    """Measured per-layer latencies and a fitted whole-model overhead for one
    (runtime, version, CPU, threads, batch size); see the module docstring.

    ``repeats`` is the number of timed samples per entry (medians), taken in
    ``rounds`` passes over the entries measured together (``table_timing``);
    ``normalize`` reports times at the quietest reference speed seen (module
    docstring); ``progress`` shows a tqdm bar while ``ensure`` measures.
    """

    def __init__(self, threads: int = 1, batch_size: int = 1, runtime: str = "onnxruntime",
                 cache_dir: str | Path | None = None, repeats: int = 15, rounds: int = 3,
                 normalize: bool = False, progress: bool = True):
        if runtime != "onnxruntime":
            raise ValueError(f"latency tables are measured in ONNX Runtime only, got runtime={runtime!r}; "
                             "time eager torch models with measure_latency(..., runtime='torch')")
        if batch_size < 1 or repeats < 3 or not 1 <= rounds <= repeats:
            raise ValueError(f"need batch_size >= 1, repeats >= 3 and 1 <= rounds <= repeats; got {batch_size}, "
                             f"{repeats}, {rounds}")
        ort = OnnxRuntime(threads)     # the install hint, if onnxruntime is missing
        self.threads, self.batch_size, self.progress = ort.threads, batch_size, progress
        self.repeats, self.rounds, self.normalize = repeats, rounds, normalize
        self.clock = "cpu" if self.threads == 1 else "wall"
        self.key = {"runtime": runtime, "runtime_version": ort.version, "cpu": cpu_model(),
                    "threads": self.threads, "batch_size": batch_size, "method": METHOD, "clock": self.clock}
        digest = hashlib.sha256(json.dumps(self.key, sort_keys=True).encode()).hexdigest()[:12]
        slug = re.sub(r"[^A-Za-z0-9.]+", "-", f"{runtime}-{ort.version}-t{self.threads}-b{batch_size}")
        folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.path = folder / f"{slug}-{digest}.json"
        self.entries: dict[str, dict[str, float]] = {}      # LayerConfig.key -> measure_layers' dict
        self.calibration: dict[str, dict] = {}               # model signature -> features and measured_ms
        self.fit: OverheadFit | None = None
        self._fit_name = "fit_normalized" if normalize else "fit"       # the two modes' fits differ
        self.measured = 0                                     # entries this object measured (not cached)
        self._read()

    # ------------------------------------------------------------------ file
    def _load_file(self) -> dict | None:
        if not self.path.exists():
            return None
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError) as e:
            warnings.warn(f"ignoring the unreadable latency table {self.path} ({e}); it will be rewritten",
                          stacklevel=3)
            return None
        if data.get("key") != self.key:        # another key (or an edited file): never used for this one
            warnings.warn(f"ignoring {self.path}: it was written for another key", stacklevel=3)
            return None
        return data

    def _read(self) -> None:
        data = self._load_file() or {}
        self.entries.update(data.get("entries", {}))
        self.calibration.update(data.get("calibration", {}))
        if data.get(self._fit_name):
            f = data[self._fit_name]
            self.fit = OverheadFit(f["coef"], f["models"], f["median_abs_error"], f["max_abs_error"],
                                   f.get("ref_ms", 1.0), f.get("coef_total"))
            points = [p for p in self.calibration.values() if all(k in p for k in TOTAL_FEATURES)]
            if self.fit.coef_total is None and len(points) >= len(TOTAL_FEATURES):   # a file from before it
                self.fit.coef_total = fit_overhead(
                    [{**p, "measured_ms": self.quiet_ms(p["measured_ms"], p.get("ref_ms"))} for p in points],
                    TOTAL_FEATURES).coef

    def save(self) -> Path:
        """Write the table, merged with entries another process added meanwhile."""
        disk = self._load_file() or {}
        entries = {**disk.get("entries", {}), **self.entries}
        calibration = {**disk.get("calibration", {}), **self.calibration}
        fits = {k: disk[k] for k in ("fit", "fit_normalized") if disk.get(k)}
        if self.fit:
            fits[self._fit_name] = self.fit.to_dict()
        atomic_write_json(self.path, {"key": self.key, "entries": entries, "calibration": calibration, **fits,
                                      "updated": time.time()})
        return self.path

    # ------------------------------------------------------------------ entries
    def __contains__(self, cfg: LayerConfig) -> bool:
        return cfg.key in self.entries

    def __len__(self) -> int:
        return len(self.entries)

    def ensure(self, configs: Iterable[LayerConfig]) -> None:
        """Measure every config not in the table yet (a tqdm bar when
        ``progress``), saving the file after every chunk."""
        missing = list({c.key: c for c in configs if c.key not in self.entries}.values())
        if not missing:
            return
        from tqdm import tqdm

        bar = tqdm(total=len(missing) * self.rounds, desc=f"latency table b{self.batch_size} t{self.threads}",
                   unit="layer", disable=not self.progress, leave=False)
        try:
            for start in range(0, len(missing), CHUNK):
                chunk = missing[start:start + CHUNK]
                self.entries.update(measure_layers(chunk, self.batch_size, self.threads, self.repeats,
                                                   self.rounds, self.clock, tick=lambda: bar.update(1)))
                self.measured += len(chunk)
                self.save()                       # an interrupted run keeps what it measured
        finally:
            bar.close()

    @property
    def quiet_ref_ms(self) -> float:
        """The reference layer's quietest median seen by this table (1.0 when
        not normalizing or nothing carries one)."""
        refs = [e["ref_ms"] for e in (*self.entries.values(), *self.calibration.values()) if e.get("ref_ms")]
        return min(refs) if self.normalize and refs else 1.0

    def quiet_ms(self, ms: float, ref_ms: float | None, quiet_ref_ms: float | None = None) -> float:
        """``ms`` measured while the reference took ``ref_ms``, at the quietest
        speed (``quiet_ref_ms``: ``self.quiet_ref_ms``, passed to save a scan)."""
        if not (self.normalize and ref_ms):
            return ms
        return ms * (quiet_ref_ms or self.quiet_ref_ms) / ref_ms

    def _entry_ms(self, key: str, quiet_ref_ms: float | None = None) -> float:
        e = self.entries[key]
        return self.quiet_ms(e["ms"], e.get("ref_ms"), quiet_ref_ms)

    def layer_ms(self, cfg: LayerConfig) -> float:
        """The layer's own milliseconds (measured now if missing)."""
        self.ensure([cfg])
        return self._entry_ms(cfg.key)

    def widths_ms(self, cfg: LayerConfig, in_widths: Iterable[int] | None = None,
                  out_widths: Iterable[int] | None = None) -> dict[tuple[int, int], float]:
        """``{(in, out): ms}`` of ``cfg`` at every pair of the given widths;
        by default its own input width and ``candidate_widths`` of its output
        (a depthwise layer: one width for both, keyed ``(w, w)``)."""
        ins = [cfg.in_channels] if in_widths is None else sorted(set(in_widths))
        outs = candidate_widths(cfg.out_channels) if out_widths is None else sorted(set(out_widths))
        if cfg.depthwise:        # in == out: the output widths, or the input ones when only those are given
            one = ins if (in_widths is not None and out_widths is None) else outs
            variants = {(w, w): cfg.with_widths(w, w) for w in one}
        else:
            variants = {(i, o): cfg.with_widths(i, o) for i in ins for o in outs}
        self.ensure(variants.values())
        q = self.quiet_ref_ms
        return {k: self._entry_ms(c.key, q) for k, c in variants.items()}

    # ------------------------------------------------------------------ models
    def features(self, model: nn.Module | ModelProfile, input_shape: tuple[int, ...]) -> dict[str, float]:
        """The overhead model's features of ``model`` (its entries measured if missing)."""
        prof = model if isinstance(model, ModelProfile) else model_profile(model, input_shape)
        self.ensure(c for _, c in prof.layers)
        q = self.quiet_ref_ms
        ms = [(self._entry_ms(c.key, q), bool(self.entries[c.key].get("nchwc"))) for _, c in prof.layers]
        blocked = sum(t for t, nchwc in ms if nchwc)         # entries of layers ORT runs in NCHWc
        return {"const": 1.0, "layers_ms": sum(t for t, _ in ms), "nchwc_ms": blocked,
                "plain_ms": sum(t for t, _ in ms) - blocked,
                "other_mb": 4e-6 * self.batch_size * prof.other_elements,       # float32 bytes written
                "layers": float(len(prof.layers)), "others": float(len(prof.others))}

    def measure_models(self, models: Sequence[nn.Module], input_shape: tuple[int, ...],
                       repeats: int | None = None) -> list[tuple[float, float]]:
        """Whole-model ``(median ms, reference median ms)`` with this table's
        runtime, clock, threads and batch (timed in rounds, interleaved across
        models); ``quiet_ms(*pair)`` is the time at the quietest speed."""
        reps = repeats or (30 if self.batch_size < 16 else 12)
        return measure_models(models, input_shape, self.batch_size, self.threads, reps, self.rounds, self.clock)

    def calibrate(self, models: Sequence[tuple[str, nn.Module]], input_shape: tuple[int, ...],
                  remeasure: bool = False) -> OverheadFit:
        """Measure each ``(name, model)`` whole (reusing a stored measurement
        of an identical model unless ``remeasure``), fit the overhead on them
        and store both in the table file."""
        profs = [model_profile(m, input_shape) for _, m in models]
        sigs = [model_signature(p, input_shape) for p in profs]
        todo = [i for i, sig in enumerate(sigs) if remeasure or sig not in self.calibration]
        self.ensure(c for p in profs for _, c in p.layers)
        for i, (ms, ref) in zip(todo, self.measure_models([models[i][1] for i in todo], input_shape)):
            self.calibration[sigs[i]] = {"name": models[i][0], "measured_ms": ms, "ref_ms": ref}
        points = []
        for sig, prof in zip(sigs, profs):   # features from the current entries, measurements as stored
            self.calibration[sig] = point = {**self.calibration[sig], **self.features(prof, input_shape)}
            points.append({**point, "measured_ms": self.quiet_ms(point["measured_ms"], point.get("ref_ms"))})
        self.fit = fit_overhead(points)
        self.fit.ref_ms = self.quiet_ref_ms
        self.fit.coef_total = fit_overhead(points, TOTAL_FEATURES).coef
        self.save()
        return self.fit

    def predict(self, model: nn.Module | ModelProfile, input_shape: tuple[int, ...]) -> float:
        """Predicted whole-model milliseconds (layers measured if missing)."""
        if self.fit is None:
            raise LatencyTableError(f"the latency table {self.path} has no overhead fit yet: call "
                                    "table.calibrate(models, input_shape) once on a few models of the kind "
                                    "you predict (e.g. default_calibration_models())")
        f = self.features(model, input_shape)
        # the fit's milliseconds are at the quiet speed of its time; rescale if a quieter one was seen since
        s = self.quiet_ref_ms / self.fit.ref_ms
        return s * self.fit.predict({k: v / s if k in MS_FEATURES else v for k, v in f.items()})


def default_calibration_models(input_shape: tuple[int, ...] = (1, 28, 28), num_classes: int = 10,
                               names: Sequence[str] | None = None) -> list[tuple[str, nn.Module]]:
    """Models to fit the overhead on: every zoo model (untrained) as it is, and
    copies with widths reduced at random (random channel scores, global
    ranking, to 1/2 and 1/5 of the MACs) and uniformly (same fraction in every
    layer, to 1/3 of the MACs). No magnitude-pruned model: those are kept for
    validation."""
    import torch

    from ..models import create, list_models
    from ..pruning import PruneConfig, get_criterion, prune_to_macs

    out = []
    for name in names or list_models():
        torch.manual_seed(0)                                  # the same weights on every call
        base = create(name, num_classes=num_classes, in_channels=input_shape[0])
        out.append((name, base))
        for scope, target in (("global", 0.5), ("global", 0.2), ("uniform", 0.33)):
            small, _ = prune_to_macs(base, get_criterion("random", seed=1), input_shape,
                                     PruneConfig(target_macs=target, scope=scope))
            out.append((f"{name}-random-{scope}-{target}", small))
    return out
