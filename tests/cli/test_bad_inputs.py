"""Bad inputs, verb by verb: each must end in ONE line ``error: ...`` (exit
status 2, no traceback), leave every input file as it was and leave no
output behind (no file, no hidden ``.tmp``). Runs in-process on LeNet-5 and
the synthetic data set; tiny settings."""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import typer
from typer.testing import CliRunner

import entroprune
from entroprune.cli import app
from entroprune.cli.errors import EntropruneGroup

runner = CliRunner()
S = ["--dataset", "synthetic"]
NAN_FIRST = "features.3.bias (2 NaN of 16 values)"        # the first bad tensor of the NaN model
READ_ONLY = Path("/proc/sys")                             # read-only even for root (containers mount it so)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """The input files every case reads: a good model, one with NaN and inf in
    its weights, a truncated one, a plain file and a folder."""
    folder = tmp_path_factory.mktemp("inputs")
    shutil.copy(entroprune.pretrained_path("lenet5"), folder / "good.safetensors")
    model = entroprune.load(folder / "good.safetensors")
    with torch.no_grad():
        model.features[3].bias[:2] = float("nan")
        model.classifier[1].weight[0, 0] = float("inf")
    entroprune.save(model, folder / "nan.safetensors", allow_nonfinite=True)
    torch.save(model.state_dict(), folder / "nan.pt")                   # for --factory
    raw = (folder / "good.safetensors").read_bytes()
    (folder / "trunc.safetensors").write_bytes(raw[: len(raw) // 2])
    (folder / "afile").write_text("not a folder")
    (folder / "adir").mkdir()
    (folder / "adir.onnx").mkdir()
    return folder


def snapshot(*folders: Path) -> dict[str, str]:
    """sha256 of every file (and a mark for every folder) below ``folders``;
    lock files are left out (a lock is not an output)."""
    out = {}
    for folder in folders:
        for p in sorted(folder.rglob("*")):
            if p.name.endswith(".lock"):
                continue
            out[str(p)] = "folder" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def assert_one_error(res, *needles: str, code: int = 2) -> str:
    """Exit ``code``, no traceback, exactly one ``error:`` line holding every needle."""
    assert res.exit_code == code, res.output
    assert "Traceback" not in res.output, res.output
    errors = [line for line in res.output.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and errors[0].startswith("error: "), res.output
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])
    return errors[0]


def _truncated_ckpt(work: Path) -> None:
    (work / "m.safetensors.ckpt").write_bytes(b"PK\x03\x04 cut short")


def _empty_ckpt(work: Path) -> None:
    (work / "m.safetensors.ckpt").write_bytes(b"")


def _state_row_without_accuracy(work: Path) -> None:
    (work / "d").mkdir()
    (work / "d" / "state.json").write_text('{"method": "easier", "config": {}, "rows": [{"step": 0, "removed": []}]}')


def _damaged_state(work: Path) -> None:
    (work / "d").mkdir()
    (work / "d" / "state.json").write_text('{"method": "easier", "rows": [')


@dataclass
class Case:
    id: str
    args: list[str]
    needles: tuple[str, ...]
    prepare: Callable[[Path], None] | None = None


NAN = "{in}/nan.safetensors"
GOOD = "{in}/good.safetensors"
NAN_CASES = [Case(f"nan-{verb}", args, ("non-finite", NAN_FIRST)) for verb, args in [
    ("eval", ["eval", NAN, *S]),
    ("info", ["info", NAN]),
    ("train", ["train", NAN, *S, "--epochs", "1", "--out", "{w}/m.safetensors"]),
    ("finetune", ["finetune", NAN, *S, "--epochs", "1", "--out", "{w}/m.safetensors"]),
    ("finetune-teacher", ["finetune", GOOD, *S, "--distill", NAN, "--epochs", "1", "--out", "{w}/m.safetensors"]),
    ("prune", ["prune", NAN, *S, "--target-macs", "2x", "--out", "{w}/m.safetensors"]),
    ("compress", ["compress", NAN, *S, "--target-macs", "2x", "--out", "{w}/c"]),
    ("search", ["search", NAN, *S, "--target-macs", "2x", "--out", "{w}/s"]),
    ("analyze", ["analyze", NAN, *S, "--out", "{w}/a"]),
    ("export", ["export", NAN, "--out", "{w}/m.onnx"]),
    ("fold", ["fold", NAN, "--out", "{w}/m.safetensors"]),
    ("depth", ["depth", NAN, *S, "--out", "{w}/d"]),
    ("sparsify", ["sparsify", NAN, *S, "--out", "{w}/m.safetensors"]),
    ("quantize", ["quantize", NAN, *S, "--out", "{w}/m.onnx"]),
    ("factory", ["prune", "{in}/nan.pt", "--factory", "entroprune.models.lenet:lenet5", *S, "--out",
                 "{w}/m.safetensors"]),
]]

# every verb with an output: (verb and arguments before --out, a file output?)
WRITERS = {
    "train": (["train", "lenet5", *S, "--epochs", "1"], True),
    "finetune": (["finetune", GOOD, *S, "--epochs", "1"], True),
    "prune": (["prune", GOOD, *S], True),
    "export": (["export", GOOD], True),
    "fold": (["fold", GOOD], True),
    "sparsify": (["sparsify", GOOD, *S], True),
    "quantize": (["quantize", GOOD, *S], True),
    "analyze": (["analyze", GOOD, *S], False),
    "depth": (["depth", GOOD, *S], False),
    "compress": (["compress", GOOD, *S], False),
    "search": (["search", GOOD, *S], False),
}
SUFFIX = {"export": ".onnx", "quantize": ".onnx"}
OUTPUT_CASES = []
for verb, (head, is_file) in WRITERS.items():
    name = "m" + SUFFIX.get(verb, ".safetensors") if is_file else "run"
    OUTPUT_CASES.append(Case(f"parent-is-a-file-{verb}", [*head, "--out", f"{{in}}/afile/{name}"],
                             ("afile is a file, not a folder",)))
    if is_file:
        folder = "adir.onnx" if verb in SUFFIX else "adir"
        OUTPUT_CASES.append(Case(f"out-is-a-folder-{verb}", [*head, "--out", f"{{in}}/{folder}"],
                                 ("is a folder; give a file name",)))
    else:
        OUTPUT_CASES.append(Case(f"out-is-a-file-{verb}", [*head, "--out", "{in}/afile"],
                                 ("is a file; choose a folder",)))
    OUTPUT_CASES.append(Case(f"read-only-{verb}", [*head, "--out", f"{READ_ONLY}/{name}"], ("is not writable",)))
OUTPUT_CASES.append(Case("checkpoint-is-a-folder-train", ["train", "lenet5", *S, "--out", "{w}/m.safetensors",
                                                          "--checkpoint", "{in}/adir"], ("is a folder",)))
OUTPUT_CASES.append(Case("report-parent-is-a-file-fold", ["fold", GOOD, "--out", "{w}/m.safetensors",
                                                          "--report", "{in}/afile/r.json"], ("afile is a file",)))

TRAIN = ["train", "lenet5", *S, "--out", "{w}/m.safetensors"]
NUMBER_CASES = [Case(f"{id_}", args, needles) for id_, args, needles in [
    ("train-epochs-0", [*TRAIN, "--epochs", "0"], ("'--epochs'", "greater than or equal to 1")),
    ("train-epochs-negative", [*TRAIN, "--epochs", "-3"], ("'--epochs'",)),
    ("train-batch-size-0", [*TRAIN, "--batch-size", "0"], ("'--batch-size'",)),
    ("train-limit-train-0", [*TRAIN, "--limit-train", "0"], ("'--limit-train'",)),
    ("train-threads-negative", [*TRAIN, "--threads", "-1"], ("'--threads'",)),
    ("train-lr-nan", [*TRAIN, "--lr", "nan"], ("lr=nan must be a finite number > 0",)),
    ("train-epochs-not-a-number", [*TRAIN, "--epochs", "ten"], ("'--epochs'", "valid integer")),
    ("finetune-epochs-0", ["finetune", GOOD, *S, "--epochs", "0", "--out", "{w}/m.safetensors"], ("'--epochs'",)),
    ("finetune-lr-0", ["finetune", GOOD, *S, "--lr", "0", "--out", "{w}/m.safetensors"], ("lr=0.0",)),
    ("eval-threads-0", ["eval", GOOD, *S, "--threads", "0"], ("'--threads'",)),
    ("eval-split", ["eval", GOOD, *S, "--split", "train"], ("--split must be test or val",)),
    ("info-threads-0", ["info", GOOD, "--runtime", "torch", "--threads", "0"], ("'--threads'",)),
    ("info-runtime", ["info", GOOD, "--runtime", "tflite"], ("unknown --runtime",)),
    ("info-input-shape", ["info", GOOD, "--input-shape", "28,28"], ("--input-shape must be three",)),
    ("analyze-levels-1", ["analyze", GOOD, *S, "--levels", "1", "--out", "{w}/a"], ("'--levels'",)),
    ("analyze-connectivity", ["analyze", GOOD, *S, "--connectivity", "6", "--out", "{w}/a"], ("4 or 8",)),
    ("analyze-calib-size-0", ["analyze", GOOD, *S, "--calib-size", "0", "--out", "{w}/a"], ("--calib-size",)),
    ("analyze-threads-0", ["analyze", GOOD, *S, "--threads", "0", "--out", "{w}/a"], ("'--threads'",)),
    ("sparsify-eps-0", ["sparsify", GOOD, *S, "--eps-e", "0", "--out", "{w}/m.safetensors"], ("--eps-e",)),
    ("sparsify-eps-nan", ["sparsify", GOOD, *S, "--eps-e", "nan", "--out", "{w}/m.safetensors"], ("--eps-e",)),
    ("sparsify-ridge", ["sparsify", GOOD, *S, "--ridge", "-1", "--out", "{w}/m.safetensors"], ("--ridge",)),
    ("sparsify-target", ["sparsify", GOOD, *S, "--target", "1.5", "--out", "{w}/m.safetensors"], ("--target",)),
    ("sparsify-min-keep", ["sparsify", GOOD, *S, "--min-keep", "2", "--out", "{w}/m.safetensors"],
     ("--min-keep must be in [0, 1], got 2",)),
    ("sparsify-threshold", ["sparsify", GOOD, *S, "--threshold", "-1", "--out", "{w}/m.safetensors"],
     ("--threshold must be >= 0",)),
    ("sparsify-calib-images-1", ["sparsify", GOOD, *S, "--calib-images", "1", "--out", "{w}/m.safetensors"],
     ("'--calib-images'",)),
    ("sparsify-sweep-target", ["sparsify", GOOD, *S, "--sweep", "0.2,1.2", "--sweep-over", "target", "--report",
                               "{w}/r"], ("every --sweep target must be in [0, 1), got 1.2",)),
    ("fold-examples-0", ["fold", GOOD, "--examples", "0", "--out", "{w}/m.safetensors"], ("'--examples'",)),
    ("fold-input-shape", ["fold", GOOD, "--input-shape", "28,28", "--out", "{w}/m.safetensors"],
     ("--input-shape must be three",)),
    ("depth-zeta", ["depth", GOOD, *S, "--zeta", "1.5", "--out", "{w}/d"], ("--zeta must be in (0, 1), got 1.5",)),
    ("depth-tolerance", ["depth", GOOD, *S, "--tolerance", "-1", "--out", "{w}/d"], ("--tolerance must be >= 0",)),
    ("depth-epochs-0", ["depth", GOOD, *S, "--epochs", "0", "--out", "{w}/d"], ("'--epochs'",)),
    ("depth-lr-0", ["depth", GOOD, *S, "--lr", "0", "--out", "{w}/d"], ("lr=0.0",)),
    ("depth-max-rounds-0", ["depth", GOOD, *S, "--max-rounds", "0", "--out", "{w}/d"], ("'--max-rounds'",)),
    ("depth-threads-0", ["depth", GOOD, *S, "--threads", "0", "--out", "{w}/d"], ("'--threads'",)),
    ("quantize-calib-size-0", ["quantize", GOOD, *S, "--calib-size", "0", "--out", "{w}/m.onnx"], ("--calib-size",)),
    ("quantize-threads-0", ["quantize", GOOD, *S, "--threads", "0", "--out", "{w}/m.onnx"], ("'--threads'",)),
    ("prune-threads-0", ["prune", GOOD, *S, "--threads", "0", "--out", "{w}/m.safetensors"], ("'--threads'",)),
]]

OTHER_CASES = [
    Case("export-torchscript-to-onnx", ["export", GOOD, "--format", "torchscript", "--out", "{w}/m.onnx"],
         ("names an ONNX file but --format is torchscript", "m.pt")),
    Case("export-onnx-to-pt", ["export", GOOD, "--out", "{w}/m.pt"],
         ("names a TorchScript file but --format is onnx",)),
    Case("export-format", ["export", GOOD, "--format", "tflite", "--out", "{w}/m.tflite"], ("unknown --format",)),
    Case("export-input-shape", ["export", GOOD, "--input-shape", "28,28", "--out", "{w}/m.onnx"],
         ("--input-shape must be three positive numbers C,H,W", "'28,28'")),
    Case("export-wrong-input-shape", ["export", GOOD, "--input-shape", "3,32,32", "--out", "{w}/m.onnx"],
         ("pass the right --input-shape",)),
    Case("info-folder", ["info", "{in}/adir"], ("is a folder, not a model file",)),
    Case("eval-truncated", ["eval", "{in}/trunc.safetensors", *S], ("trunc.safetensors", "truncated")),
    Case("fold-truncated", ["fold", "{in}/trunc.safetensors", "--out", "{w}/m.safetensors"], ("truncated",)),
    Case("train-truncated-checkpoint", [*TRAIN, "--epochs", "1", "--limit-train", "50"],
         ("m.safetensors.ckpt cannot be read", "--restart"), _truncated_ckpt),
    Case("train-empty-checkpoint", [*TRAIN, "--epochs", "1", "--limit-train", "50"],
         ("m.safetensors.ckpt cannot be read (EOFError)", "--restart"), _empty_ckpt),
    Case("depth-state-row-without-accuracy", ["depth", GOOD, *S, "--out", "{w}/d"],
         ("d/state.json is damaged (step row 0 lacks val_acc)", "--restart"), _state_row_without_accuracy),
    Case("depth-damaged-state", ["depth", GOOD, *S, "--out", "{w}/d"], ("d/state.json is damaged", "--restart"),
         _damaged_state),
    Case("unknown-option", ["eval", GOOD, "--epochs", "3"], ("No such option: --epochs", "--help")),
]

CASES = NAN_CASES + OUTPUT_CASES + NUMBER_CASES + OTHER_CASES


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_clear_line_and_changes_nothing(case, inputs, tmp_path):
    if str(READ_ONLY) in " ".join(case.args) and os.access(READ_ONLY, os.W_OK):
        pytest.skip(f"{READ_ONLY} is writable here")
    work = tmp_path / "work"
    work.mkdir()
    if case.prepare is not None:
        case.prepare(work)
    before = snapshot(inputs, work)
    res = runner.invoke(app, [a.replace("{in}", str(inputs)).replace("{w}", str(work)) for a in case.args])
    assert_one_error(res, *case.needles)
    assert snapshot(inputs, work) == before          # inputs intact; no output, no .tmp, no new folder


def test_untrained_zoo_model_is_evaluated_with_a_warning():
    res = runner.invoke(app, ["eval", "lenet5", *S])
    assert res.exit_code == 0, res.output
    assert "warning: lenet5 is a new, untrained model (use pretrained:lenet5" in res.output


# ---------------------------------------------------------------- the one error path (errors.py)

def _raise(exc: BaseException):
    def command() -> None:
        raise exc
    return command


def _library_value_error() -> None:
    from entroprune.measure import get_runtime
    get_runtime("no-such-runtime")                     # a `raise ValueError(...)` of entroprune itself


def _foreign_value_error() -> None:
    int("seven")                                       # a ValueError that entroprune did not raise: a bug


def _errors():
    from entroprune.io.fingerprint import FingerprintMismatch
    from entroprune.io.lock import LockedError
    from entroprune.pruning.structural import PruningError
    from entroprune.reconstruct import NonFiniteError
    from entroprune.training.trainer import TrainingDiverged
    return [
        ("pruning-error", _raise(PruningError("cannot reach\nthe target")), 2, "error: cannot reach the target"),
        ("fingerprint", _raise(FingerprintMismatch("other settings")), 2, "error: other settings"),
        ("locked", _raise(LockedError("in use by PID 7")), 2, "error: in use by PID 7"),
        ("non-finite", _raise(NonFiniteError("NaN in x")), 2, "error: NaN in x"),
        ("diverged", _raise(TrainingDiverged("loss became nan")), 2, "error: loss became nan"),
        ("library-value-error", _library_value_error, 2, "error: unknown runtime 'no-such-runtime'"),
        ("disk-full", _raise(OSError(errno.ENOSPC, "No space left on device", "m.safetensors")), 2,
         "error: [Errno 28] No space left on device: 'm.safetensors'"),
        ("ctrl-c", _raise(KeyboardInterrupt()), 130, "interrupted"),
        ("bug", _raise(ZeroDivisionError("division by zero")), 1, "error: unexpected ZeroDivisionError"),
        ("foreign-value-error", _foreign_value_error, 1, "error: unexpected ValueError"),
    ]


@pytest.mark.parametrize("name, command, code, line", _errors(), ids=[e[0] for e in _errors()])
def test_one_error_path_for_every_command(name, command, code, line):
    """A command that forgot to catch: the group still prints one line (or,
    for a bug, the traceback and a line asking for a report)."""
    test_app = typer.Typer(cls=EntropruneGroup)
    test_app.command("boom")(command)
    test_app.command("other")(lambda: None)
    res = runner.invoke(test_app, ["boom"])
    assert res.exit_code == code, res.output
    last = res.output.strip().splitlines()[-1]
    assert last.startswith(line), res.output
    if code == 1:
        assert "Traceback" in res.output
        assert f"this is a bug in entroprune {entroprune.__version__}; please report it" in last
    else:
        assert "Traceback" not in res.output and len(res.output.strip().splitlines()) == 1


def test_sparsify_refuses_a_nan_model_from_python(inputs):
    from entroprune.reconstruct import NonFiniteError
    from entroprune.sparsify import sparsify
    model = entroprune.load(inputs / "nan.safetensors", allow_nonfinite=True)
    with pytest.raises(NonFiniteError, match=r"non-finite weights, first features\.3\.bias \(2 NaN"):
        sparsify(model, torch.randn(4, 1, 28, 28))
    good = entroprune.load(inputs / "good.safetensors")
    with pytest.raises(NonFiniteError, match="calibration batch"):
        sparsify(good, torch.full((4, 1, 28, 28), float("inf")))
