"""``entroprune analyze`` and ``entroprune export``."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import typer

from ..entropy import EntropyConfig
from ..export import ExportError, export_model
from ..reporting.entropy_report import analyze
from .common import check_output, fail, get_data, get_model, input_shape_of, parse_shape, set_threads
from .options import CalibSize, DataDir, Dataset, Seed, Threads


def analyze_cmd(
    model: str = typer.Argument("pretrained:resnet20", help="model file, pretrained:NAME or zoo name"),
    out: Path = typer.Option(Path("runs/analyze"), "--out", "-o", help="folder for JSON and figures"),
    calib_size: CalibSize = 512,
    levels: int = typer.Option(8, min=2, max=255, help="quantisation levels of the aura matrix"),
    connectivity: int = typer.Option(8, help="4 or 8"),
    dataset: Dataset = "fashion_mnist",
    data_dir: DataDir = None,
    seed: Seed = 0,
    threads: Threads = None,
) -> None:
    """Per-filter and per-layer entropies (aura, mass, rectifier state), heatmap, bar chart."""
    set_threads(threads)
    if connectivity not in (4, 8):
        fail("--connectivity must be 4 or 8")
    if not 2 <= levels <= 255:
        fail("--levels must be between 2 and 255")
    if calib_size < 1:
        fail(f"--calib-size must be at least 1, got {calib_size}")
    check_output(out, folder=True)
    data = get_data(dataset, data_dir)
    net = get_model(model, data)
    if not any(isinstance(m, torch.nn.Conv2d) for m in net.modules()):
        fail(f"{model} has no Conv2d layer: spatial entropy is measured on convolution outputs")
    images = data.calibration(calib_size, seed=seed)
    res = analyze(net, images, out, label=model, cfg=EntropyConfig(levels=levels, connectivity=connectivity))
    typer.echo(json.dumps({"out": str(out), "network_aura": round(res["network"]["aura"], 4),
                           "network_mass": round(res["network"]["mass"], 4),
                           "files": ["entropy.json", "heatmap_aura.png", "layers.png"]}))


FORMATS = {"onnx": (".onnx",), "torchscript": (".pt", ".pth", ".ts", ".torchscript")}
FORMAT_NAMES = {"onnx": "an ONNX", "torchscript": "a TorchScript"}


def export_cmd(
    model: str = typer.Argument(..., help="model file or pretrained:NAME"),
    out: Path = typer.Option(..., "--out", "-o", help="output file (.onnx, or .pt for torchscript)"),
    fmt: str = typer.Option("onnx", "--format", help="onnx or torchscript"),
    input_shape: str = typer.Option("1,28,28", help="C,H,W of one input image"),
) -> None:
    """Export a (pruned) model to ONNX or TorchScript for deployment."""
    if fmt not in FORMATS:
        fail(f"unknown --format {fmt!r}: use onnx or torchscript")
    other = next(f for f in FORMATS if f != fmt)
    if out.suffix.lower() in FORMATS[other]:
        fail(f"--out {out} names {FORMAT_NAMES[other]} file but --format is {fmt}; write --out "
             f"{out.with_suffix(FORMATS[fmt][0])}, or pass --format {other}")
    check_output(out, folder=False)
    parse_shape(input_shape)
    net = get_model(model)
    shape = input_shape_of(net, input_shape)
    try:
        path = export_model(net, out, fmt, torch.zeros(1, *shape))
    except (ExportError, ValueError) as e:
        fail(str(e))
    typer.echo(json.dumps({"out": str(path), "format": fmt}))
