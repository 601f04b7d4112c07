"""``entroprune quantize``: static INT8 quantization for ONNX Runtime
(``entroprune/deploy/quantize.py``). Calibrates on training images, checks
fp32 against INT8 on the validation split, writes one QDQ ``.onnx`` file."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from ..deploy import QuantizeConfig, QuantizeError, quantize
from .common import check_output, fail, get_data, get_model, set_threads
from .options import DataDir, Dataset, Threads


def quantize_cmd(
    model: str = typer.Argument(..., help="model file, pretrained:NAME or zoo name"),
    out: Path = typer.Option(..., "--out", "-o", help="the INT8 model, an .onnx file"),
    calib_size: int = typer.Option(256, help="calibration images drawn from the training split (>= 1)"),
    method: str = typer.Option("minmax", help="activation ranges: minmax, entropy or percentile"),
    activations: str = typer.Option("quint8", help="activation type: quint8 (fast on x86) or qint8"),
    float_first_conv: bool = typer.Option(True, "--float-first-conv/--int8-first-conv",
                                          help="keep the convolution that reads the image in float (faster in ORT)"),
    dataset: Dataset = "fashion_mnist",
    data_dir: DataDir = None,
    seed: int = typer.Option(0, help="seed of the calibration sample (the validation split is fixed)"),
    threads: Threads = None,
) -> None:
    """Quantize to INT8 (QDQ ONNX, per-channel weights); print fp32 vs INT8 validation accuracy and sizes."""
    set_threads(threads)
    if out.suffix != ".onnx":
        fail(f"--out must name an .onnx file (the INT8 model runs in ONNX Runtime), got {str(out)!r}; "
             f"e.g. --out {out.with_suffix('.onnx')}")
    if calib_size < 1:
        fail(f"--calib-size must be at least 1, got {calib_size}")
    try:
        cfg = QuantizeConfig(calib_size=calib_size, method=method, activation_type=activations,
                             float_first_conv=float_first_conv, threads=threads)
    except ValueError as e:
        fail(str(e))
    check_output(out, folder=False)
    data = get_data(dataset, data_dir)
    net = get_model(model, data)
    try:
        rep = quantize(net, data.calibration(calib_size, seed=seed), out, val=(data.val_x, data.val_y), config=cfg)
    except (QuantizeError, ValueError) as e:
        fail(str(e))
    typer.echo(f"validation accuracy ({rep['val_images']:,} images): fp32 {rep['fp32_accuracy']:.2f}%  "
               f"int8 {rep['int8_accuracy']:.2f}%  ({rep['accuracy_delta']:+.2f} points)")
    typer.echo(f"file size: fp32 {rep['fp32_bytes']:,} B  int8 {rep['int8_bytes']:,} B  "
               f"({rep['size_ratio']:.2f}x smaller)")
    typer.echo(f"max |int8 - fp32| logit on {rep['deviation_images']} images: {rep['max_abs_logit_deviation']:.3f} "
               f"(fp32 logits up to {rep['max_abs_logit_fp32']:.1f})")
    if rep["float_nodes"]:
        kept = f"; kept in float on purpose: {', '.join(rep['kept_float'])}" if rep["kept_float"] else ""
        typer.echo(f"nodes left in float: {rep['float_nodes']}{kept}")
    summary = {k: rep[k] for k in ("out", "fp32_accuracy", "int8_accuracy", "fp32_bytes", "int8_bytes",
                                   "size_ratio", "max_abs_logit_deviation")}
    summary.update(method=cfg.method, activations=cfg.activation_type, calibration_images=rep["calibration_images"])
    typer.echo(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in summary.items()}))
