"""Static post-training INT8 quantization with ONNX Runtime's quantizer.

What it does. Post-training quantization maps each float tensor ``r`` to 8-bit
integers ``q`` through an affine map ``r ~= scale * (q - zero_point)`` and lets
the runtime compute convolutions and matrix products in integer arithmetic
(Jacob et al. [1]). It is *static*: the ranges of the activations are measured
once, ahead of time, on calibration images, and frozen into the model, so no
range is computed at inference time.

* Weights: per output channel, symmetric (``zero_point = 0``), INT8. One scale
  per filter keeps a filter with small weights from being crushed by the
  largest filter of its layer (Krishnamoorthi [2], section 3); symmetric
  weights let the integer kernels skip the weight zero-point correction.
* Activations: one (scale, zero point) per tensor, asymmetric 8-bit, whose
  range is calibrated by running the fp32 model on a seeded sample of
  TRAINING images (``DataBundle.calibration``) and taking each tensor's
  min/max (``minmax``), or a range that clips outliers: the KL-divergence
  choice of TensorRT (``entropy``) or the 99.999th percentile
  (``percentile``). Calibrating on the test set would leak it into the model;
  the accuracy check uses the validation split.
* Format: QDQ ([3]): the fp32 graph with QuantizeLinear/DequantizeLinear pairs
  inserted around every quantizable tensor. ORT fuses each DQ -> op -> Q
  pattern into an integer kernel (QLinearConv, QGemm, ...) when the session is
  created; an operator with no integer kernel stays in float between its DQ/Q.
* The first convolution, which reads the 1-3 channel image, is left in float
  by default (``float_first_conv``): ORT runs it faster in fp32 (see the
  measurements at the config field).

Steps of ``quantize``: export the model to fp32 ONNX with ``export_model``,
run ORT's pre-processing (symbolic shape inference + graph optimisation, which
the quantizer asks for), ``quantize_static`` with a reader over the
calibration images, check the INT8 model loads and agrees with fp32, measure
both on the validation split when it is given, then move the INT8 file into
place atomically. Everything intermediate lives in a temporary folder that is
removed on success and on any failure.

[1] B. Jacob et al., "Quantization and Training of Neural Networks for
    Efficient Integer-Arithmetic-Only Inference", CVPR 2018.
[2] R. Krishnamoorthi, "Quantizing deep convolutional networks for efficient
    inference: A whitepaper", arXiv:1806.08342, 2018.
[3] ONNX Runtime documentation, "Quantize ONNX models",
    https://onnxruntime.ai/docs/performance/model-optimizations/quantization.html
"""

from __future__ import annotations

import contextlib
import io
import re
import shutil
import tempfile
import time
import warnings
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from ..errors import first_line
from ..io import atomic_write
from .onnx_eval import as_float32, onnx_logits, session

METHODS = ("minmax", "entropy", "percentile")
ACTIVATION_TYPES = ("quint8", "qint8")
EXPORT_OPSET = 17                 # what entroprune.export writes; up-conversion only (onnx has no 17 -> 13 adapters)
# operator domains ONNX Runtime's CPU provider implements; any other domain is a custom op it cannot run
KNOWN_DOMAINS = {"", "ai.onnx", "ai.onnx.ml", "com.microsoft"}


class QuantizeError(RuntimeError):
    """A model that cannot be quantized: ``operator`` names the culprit (or is None)."""

    def __init__(self, message: str, operator: str | None = None):
        super().__init__(message)
        self.operator = operator


@dataclass
class QuantizeConfig:
    calib_size: int = 256            # calibration images used (the first ones of ``calib_images``)
    # activation ranges: minmax | entropy | percentile. Over 3 calibration samples (results/QUANTIZE.md)
    # minmax and percentile tie within 0.03 point on resnet20, vgg_small, mobilenetv2 (minmax calibrates
    # 2x faster); entropy (KL) loses 0.2-0.6 point, clips the logits and takes 4-14x longer.
    method: str = "minmax"
    per_channel: bool = True         # one weight scale per output channel
    symmetric_weights: bool = True   # weight zero point 0
    # uint8 activations: ORT's x86 int8 kernels multiply uint8 activations by int8 weights (the u8s8
    # form of AVX2 / AVX-512 VNNI); s8s8 takes a slower path. Speedup over fp32 at batch 1 / 64 (AMD EPYC,
    # VNNI, ORT 1.32, 1 thread; results/QUANTIZE.md), quint8 vs qint8: resnet20 1.99/2.09x vs 0.68/0.62x,
    # mobilenetv2 1.30/2.04x vs 0.71/1.23x, vgg_small 2.67/2.80x vs 2.81/2.85x; accuracy within 0.04 point.
    activation_type: str = "quint8"
    # keep the conv(s) reading the image in float: with 1-3 input channels the reduction (C*kh*kw = 9-25)
    # is too short for ORT's int8 kernels (lenet5's first conv: 1.6 ms int8 vs 0.45 ms fp32, batch 64).
    # Speedup over fp32 at batch 1 / 64, first conv float vs int8 (results/QUANTIZE.md): resnet20
    # 1.99/2.09x vs 1.99/1.88x, vgg_small 2.67/2.80x vs 2.63/2.57x, mobilenetv2 1.30/2.04x vs 1.27/1.64x;
    # accuracy within 0.1 point; it holds < 1% of the weights.
    float_first_conv: bool = True
    opset: int = 17                  # >= 17: the exporter writes 17, a higher opset is converted to
    preprocess: bool = True          # ORT's quant_pre_process first (skipped with a note if it fails)
    calib_batch_size: int = 32       # images per calibration forward pass
    eval_batch_size: int = 500       # images per forward pass of the accuracy check
    deviation_images: int = 64       # images on which INT8 logits are compared with fp32 logits
    threads: int | None = None       # ORT intra-op threads of the checks (None: torch.get_num_threads())

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"unknown calibration method {self.method!r}: choose one of {', '.join(METHODS)}")
        if self.activation_type not in ACTIVATION_TYPES:
            raise ValueError(f"unknown activation type {self.activation_type!r}: choose quint8 or qint8")
        if self.opset < EXPORT_OPSET:
            raise ValueError(f"opset {self.opset} is below {EXPORT_OPSET}, the opset entroprune's exporter writes "
                             f"(ONNX cannot convert it down); use opset >= {EXPORT_OPSET}")
        for name in ("calib_size", "calib_batch_size", "eval_batch_size", "deviation_images"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")


# --------------------------------------------------------------------------- ONNX Runtime helpers

def _ort():
    """``onnxruntime`` (and onnx), or a QuantizeError saying how to install them."""
    try:
        import onnx  # noqa: F401
        import onnxruntime
        import onnxruntime.quantization  # noqa: F401
    except ImportError as e:
        raise QuantizeError(f"INT8 quantization needs the onnx and onnxruntime packages ({e}): "
                            "pip install 'entroprune[export]'") from None
    return onnxruntime


class _ImageReader:
    """ORT's CalibrationDataReader protocol over an in-memory image array."""

    def __init__(self, name: str, images: np.ndarray, batch_size: int):
        self.name, self.images, self.batch_size, self.pos = name, images, batch_size, 0

    def get_next(self) -> dict | None:
        if self.pos >= len(self.images):
            return None
        batch = self.images[self.pos:self.pos + self.batch_size]
        self.pos += self.batch_size
        return {self.name: batch}

    def rewind(self) -> None:
        self.pos = 0


# --------------------------------------------------------------------------- errors that name the operator

def _custom_ops(model_path: Path) -> list[str]:
    """``domain::OpType`` of every node in a domain ONNX Runtime has no kernels for."""
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    return sorted({f"{n.domain}::{n.op_type}" for n in graph.node if n.domain not in KNOWN_DOMAINS})


def _explain(e: BaseException, stage: str) -> QuantizeError:
    """Turn an exporter / ORT / quantizer exception into a one-line QuantizeError
    that names the operator (parsed from the message) and the way out."""
    msg = str(e)
    m = re.search(r"Exporting the operator '([^']+)'", msg)
    if m:
        return QuantizeError(f"the ONNX exporter has no translation of operator {m.group(1)} (opset "
                             f"{EXPORT_OPSET}), so the model cannot reach ONNX Runtime's quantizer; replace that "
                             "layer with standard ones (Conv2d, Linear, pooling, ReLU) before quantizing",
                             m.group(1))
    m = re.search(r"Fatal error: ([\w.]*):(\w+)\(", msg)
    if m:
        op = f"{m.group(1)}::{m.group(2)}" if m.group(1) else m.group(2)
        return QuantizeError(f"{stage}: ONNX Runtime does not know operator {op} (a custom op, no kernel "
                             "registered), so it cannot run the model to calibrate it; write that layer with "
                             "standard PyTorch ops, or ship the fp32 model (entroprune export)", op)
    m = re.search(r"Could not find an implementation for (\w+)\((\d+)\) node with name '([^']*)'", msg)
    if m:
        op = m.group(1)
        return QuantizeError(f"{stage}: ONNX Runtime's CPU provider has no kernel for operator {op} (version "
                             f"{m.group(2)}, node '{m.group(3)}') with these input types (e.g. float64); cast "
                             "the model to float32 (model.float()) or replace that layer", op)
    m = re.search(r"running (\w+) node\. Name:'([^']*)'", msg)
    if m:
        return QuantizeError(f"{stage}: operator {m.group(1)} (node '{m.group(2)}') failed in ONNX Runtime: "
                             f"{first_line(e, 300)}; check that layer on a float32 input of the calibration shape",
                             m.group(1))
    return QuantizeError(f"{stage} failed ({first_line(e, 300)}); the model's ONNX graph may "
                         "hold an operator ONNX Runtime's quantizer cannot handle: export it with "
                         "`entroprune export` and inspect it, or ship the fp32 model")


# --------------------------------------------------------------------------- graph summaries

def _op_counts(path: Path) -> tuple[dict[str, int], dict[str, int]]:
    """(integer, float) node counts by op type of a QDQ model: a node counts as
    integer when every one of its inputs that is produced by a node or is a
    weight comes out of a DequantizeLinear, i.e. ORT can fuse it into an
    integer kernel; any other compute node runs in float (an operator the
    quantizer has no rule for, or one kept in float on purpose)."""
    import onnx

    graph = onnx.load(str(path)).graph
    producer = {out: n.op_type for n in graph.node for out in n.output}
    qdq = {"QuantizeLinear", "DequantizeLinear"}
    ints, floats = Counter(), Counter()
    for n in graph.node:
        if n.op_type in qdq:
            continue
        data_inputs = [i for i in n.input if i in producer]       # skips graph inputs and constants
        fed_by_dq = data_inputs and all(producer[i] == "DequantizeLinear" for i in data_inputs)
        (ints if fed_by_dq else floats)[n.op_type] += 1
    return dict(sorted(ints.items())), dict(sorted(floats.items()))


# --------------------------------------------------------------------------- quantize

@contextlib.contextmanager
def _quiet_c_stdout():
    """Silence writes to file descriptor 1 from C++ code: torch's TorchScript
    exporter leaves its ONNX log switched on (torch 2.13) and dumps the whole IR
    graph to stdout when an operator has no ONNX translation."""
    import os
    import sys

    try:
        sys.stdout.flush()
        saved = os.dup(1)
    except (OSError, ValueError):      # no real stdout (e.g. closed): nothing to silence
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
            yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def _export_fp32(model: nn.Module, example: torch.Tensor, path: Path, opset: int) -> None:
    """fp32 ONNX of ``model`` (eval mode; its training flag is put back)."""
    from ..export import export_model

    training = model.training
    try:
        with torch.no_grad(), warnings.catch_warnings(), _quiet_c_stdout():
            warnings.simplefilter("ignore")           # the TorchScript exporter's deprecation notices
            export_model(model, path, "onnx", example)
    except Exception as e:
        raise _explain(e, "ONNX export") from e
    finally:
        model.train(training)
    if opset != EXPORT_OPSET:
        import onnx
        from onnx import version_converter

        onnx.save(version_converter.convert_version(onnx.load(str(path)), opset), str(path))


def _first_convs(path: Path) -> list[str]:
    """Names of the Conv nodes that read a graph input (the image) directly."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    inputs = {i.name for i in graph.input}
    return [n.name for n in graph.node if n.op_type == "Conv" and n.input and n.input[0] in inputs]


def _quantize_file(src: Path, dst: Path, images: np.ndarray, input_name: str, cfg: QuantizeConfig,
                   exclude: list[str]) -> None:
    import onnxruntime.quantization as oq

    method = {"minmax": oq.CalibrationMethod.MinMax, "entropy": oq.CalibrationMethod.Entropy,
              "percentile": oq.CalibrationMethod.Percentile}[cfg.method]
    act = oq.QuantType.QUInt8 if cfg.activation_type == "quint8" else oq.QuantType.QInt8
    reader = _ImageReader(input_name, images, cfg.calib_batch_size)
    cache = None
    # the histogram calibrators print progress to stdout: keep the CLI's JSON output clean
    with contextlib.redirect_stdout(io.StringIO()):
        if cfg.method == "entropy":
            # quantize_static builds its entropy calibrator with 128 histogram bins and 128 quantized bins
            # (ORT 1.32) and passes no bin counts through: the KL search then has one candidate threshold,
            # the full range, and 'entropy' equals minmax. Calibrate here with TensorRT's 2048 histogram
            # bins / 128 quantized bins and hand the ranges to quantize_static as its calibration cache.
            calibrator = oq.create_calibrator(src, None, augmented_model_path=str(dst.with_name("augmented.onnx")),
                                           calibrate_method=method,
                                           extra_options={"num_bins": 2048, "num_quantized_bins": 128})
            calibrator.collect_data(reader)
            cache = dst.with_name("calibration.json")
            oq.save_tensors_data(calibrator.compute_data(), cache)
            del calibrator
        oq.quantize_static(str(src), str(dst), reader, quant_format=oq.QuantFormat.QDQ, per_channel=cfg.per_channel,
                           activation_type=act, weight_type=oq.QuantType.QInt8, calibrate_method=method,
                           extra_options={"WeightSymmetric": cfg.symmetric_weights, "ActivationSymmetric": False},
                           calibration_cache_path=cache, nodes_to_exclude=exclude)


def quantize(model: nn.Module, calib_images: torch.Tensor, out: str | Path,
             val: tuple[torch.Tensor, torch.Tensor] | None = None,
             config: QuantizeConfig | None = None) -> dict:
    """Quantize ``model`` to an INT8 QDQ ONNX file at ``out`` and return a report.

    ``calib_images`` ``(N, C, H, W)`` are training images (the first
    ``config.calib_size`` are used); ``val = (x, y)`` is the validation split on
    which fp32 and INT8 accuracy are measured in ONNX Runtime. Raises
    QuantizeError (naming the operator) for a model that does not quantize;
    ``out`` is then left untouched.
    """
    cfg = config or QuantizeConfig()
    out = Path(out)
    if out.suffix != ".onnx":
        raise ValueError(f"the INT8 model is an ONNX file: {out} should end in .onnx")
    if not isinstance(calib_images, torch.Tensor) or calib_images.dim() != 4 or len(calib_images) == 0:
        shape = tuple(calib_images.shape) if isinstance(calib_images, torch.Tensor) else type(calib_images)
        raise ValueError(f"calib_images must be a non-empty (N, C, H, W) tensor of training images, got {shape}")
    if val is not None and (len(val) != 2 or len(val[0]) != len(val[1]) or len(val[0]) == 0):
        raise ValueError("val must be (images, labels) of the same non-zero length")
    ort = _ort()
    t0 = time.perf_counter()
    images = as_float32(calib_images[:cfg.calib_size])
    threads = cfg.threads or torch.get_num_threads()
    report: dict = {"out": str(out), "format": "QDQ", "config": asdict(cfg),
                    "calibration_images": int(len(images)), "input_shape": list(images.shape[1:]),
                    "onnxruntime": ort.__version__}

    with tempfile.TemporaryDirectory(prefix="entroprune-quant-") as tmp:
        fp32, pre, int8 = Path(tmp) / "model.fp32.onnx", Path(tmp) / "model.pre.onnx", Path(tmp) / "model.int8.onnx"
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        _export_fp32(model, torch.from_numpy(images[:1]).to(device), fp32, cfg.opset)
        custom = _custom_ops(fp32)
        if custom:   # ORT would fail later, inside its calibrator, with a less readable message
            raise QuantizeError(f"the model holds operator {', '.join(custom)}, which ONNX Runtime has no kernel "
                                "for (a custom op), so its quantizer cannot run it to calibrate; write that layer "
                                "with standard PyTorch ops, or ship the fp32 model (entroprune export)", custom[0])
        try:
            fp32_sess = session(fp32, threads)
        except Exception as e:
            raise _explain(e, "loading the fp32 model in ONNX Runtime") from e
        input_name = fp32_sess.get_inputs()[0].name

        # pre-processing: symbolic shape inference + ORT's graph optimisations (constant folding, fusions),
        # so the quantizer sees shapes and fewer nodes (mobilenetv2 loses its Constant nodes: 1% smaller file)
        src, report["preprocessed"] = fp32, False
        if cfg.preprocess:
            from onnxruntime.quantization.shape_inference import quant_pre_process
            try:
                quant_pre_process(str(fp32), str(pre))
                src, report["preprocessed"] = pre, True
            except Exception as e:           # not fatal: the quantizer also works on the raw export
                report["preprocess_skipped"] = f"{first_line(e, 300)}"
        report["kept_float"] = _first_convs(src) if cfg.float_first_conv else []
        try:
            _quantize_file(src, int8, images, input_name, cfg, report["kept_float"])
        except Exception as e:
            raise _explain(e, "ONNX Runtime's quantizer") from e
        try:
            int8_sess = session(int8, threads)
        except Exception as e:
            raise _explain(e, "loading the INT8 model in ONNX Runtime") from e
        report["int8_nodes"], report["float_nodes"] = _op_counts(int8)

        # agreement on a few images: validation images when given, else calibration images
        probe = as_float32(val[0][:cfg.deviation_images]) if val is not None else images[:cfg.deviation_images]
        ref, got = onnx_logits(fp32_sess, probe), onnx_logits(int8_sess, probe)
        report["deviation_images"] = int(len(probe))
        report["max_abs_logit_deviation"] = float(np.abs(ref - got).max())
        report["max_abs_logit_fp32"] = float(np.abs(ref).max())

        for key in ("val_images", "fp32_accuracy", "int8_accuracy", "accuracy_delta", "top1_agreement"):
            report[key] = None
        if val is not None:
            vx, vy = val
            ref = onnx_logits(fp32_sess, vx, cfg.eval_batch_size)
            got = onnx_logits(int8_sess, vx, cfg.eval_batch_size)
            y = vy.cpu().numpy() if isinstance(vy, torch.Tensor) else np.asarray(vy)
            report["val_images"] = int(len(y))
            report["fp32_accuracy"] = float(100.0 * (ref.argmax(1) == y).mean())
            report["int8_accuracy"] = float(100.0 * (got.argmax(1) == y).mean())
            report["accuracy_delta"] = report["int8_accuracy"] - report["fp32_accuracy"]
            report["top1_agreement"] = float(100.0 * (ref.argmax(1) == got.argmax(1)).mean())

        report["fp32_bytes"], report["int8_bytes"] = fp32.stat().st_size, int8.stat().st_size
        report["size_ratio"] = report["fp32_bytes"] / report["int8_bytes"]
        del fp32_sess, int8_sess
        atomic_write(out, lambda tmp_out: shutil.copyfile(int8, tmp_out))   # only now does ``out`` change
    report["seconds"] = time.perf_counter() - t0
    return report
