"""Your own model and your own images, compressed end to end.

1. an image folder (one subfolder per class; here written from Fashion-MNIST
   test images with --make-folder, in real use your own PNG/JPEG files);
2. your model (``mynet.py``), trained on it;
3. ``entroprune.compress``: channels chosen by the error they leave after the
   refit, reconstructed, fine-tuned with distillation, measured in ONNX Runtime;
4. the compressed file reloaded in a FRESH process, bit-exactly.

    cd examples/own_model
    python run.py --make-folder images          # writes images/<class>/*.png, then runs
    python run.py --folder images --quick       # a fast check (what the test runs)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import torch

import entroprune
from entroprune.data import load_data, read_mnist_like
from entroprune.training import TrainConfig, evaluate, train

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))        # so that "mynet:build" imports, here and in the fresh process
from mynet import build  # noqa: E402


def make_folder(folder: Path, per_class: int) -> None:
    """Fashion-MNIST images as PNG files in class subfolders."""
    from PIL import Image

    x, y = read_mnist_like(Path("/usr/share/datasets/fashion-mnist"), "test")   # (N, 1, 28, 28) uint8
    names = ["tshirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot"]
    for k, name in enumerate(names):
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i, idx in enumerate((y == k).nonzero().flatten()[:per_class].tolist()):
            Image.fromarray(x[idx, 0].numpy()).save(folder / name / f"{i:05d}.png")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--folder", type=Path, default=HERE / "images")
    ap.add_argument("--make-folder", type=Path, help="write a Fashion-MNIST image folder here first")
    ap.add_argument("--quick", action="store_true", help="few images and epochs: a check, not a result")
    ap.add_argument("--out", type=Path, default=HERE / "runs" / "mynet")
    args = ap.parse_args()
    torch.manual_seed(0)
    if args.make_folder:
        make_folder(args.make_folder, 100 if args.quick else 600)
        args.folder = args.make_folder
    data = load_data(f"folder:{args.folder}")                      # splits and normalisation from the folder
    model = build(num_classes=data.num_classes, in_channels=data.in_channels)
    train(model, data, TrainConfig(epochs=6 if args.quick else 15, batch_size=32, lr=0.05, progress=False))
    print(f"trained: validation accuracy {evaluate(model, data.val_x, data.val_y):.1f}%")
    small, report = entroprune.compress(
        model, data, target="2x", method="greedy_refit", finetune_epochs=1 if args.quick else 5,
        latency_repeats=5 if args.quick else 30, calib_size=64 if args.quick else 512, progress=False,
        factory="mynet:build", factory_kwargs={"num_classes": data.num_classes, "in_channels": data.in_channels},
        out=args.out)
    print(report["table"])
    # the compressed file, reloaded in a fresh process, must give the same outputs bit for bit
    x = data.test_x[:16]
    torch.save(x, args.out / "probe.pt")
    with torch.no_grad():
        torch.save(small(x), args.out / "expected.pt")
    check = ("import sys, torch, entroprune; sys.path.insert(0, sys.argv[1]); m = entroprune.load(sys.argv[2]); "
             "x = torch.load(sys.argv[3]); e = torch.load(sys.argv[4]); "
             "print('bit-exact' if torch.equal(m(x), e) else 'DIFFERENT')")
    out = subprocess.run([sys.executable, "-c", check, str(HERE), str(args.out / "model.safetensors"),
                          str(args.out / "probe.pt"), str(args.out / "expected.pt")],
                         capture_output=True, text=True, check=True).stdout.strip()
    print(json.dumps({"macs_ratio": round(report["macs_ratio"], 2), "reload": out,
                      "test_acc": report["deployed"]["test_acc"]}))
    sys.exit(0 if out == "bit-exact" else 1)


if __name__ == "__main__":
    main()
