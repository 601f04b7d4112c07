"""What guards a run: one job per run folder (a second one stops at once
naming the holder; a lock left by a killed job is taken over), Ctrl-C, a
damaged search checkpoint, and the fingerprint that lets ``train`` and
``finetune`` resume only their own run. Real processes where the test is
about processes (lock holders, signals); in-process otherwise."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

import entroprune
from entroprune.cli import app
from tests.cli.test_bad_inputs import assert_one_error

runner = CliRunner()
ENTROPRUNE = Path(sys.executable).with_name("entroprune")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
SEARCH = ["search", "pretrained:lenet5", "--target-macs", "2x", "--episodes", "20", "--warmup", "5",
          "--dataset", "synthetic", "--reward-images", "32", "--val-subset", "200", "--top-k", "1",
          "--no-reconstruct"]


def _wait_for(predicate, timeout: float = 120.0, what: str = "") -> None:
    end = time.time() + timeout
    while not predicate():
        if time.time() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def _holder_pid(folder: Path) -> str:
    lock = folder / ".entroprune.lock"
    return lock.read_text().strip() if lock.exists() else ""


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_second_job_on_a_run_folder_stops_at_once_and_the_first_finishes_whole(tmp_path):
    folder = tmp_path / "s"
    first = subprocess.Popen([str(ENTROPRUNE), *SEARCH, "--out", str(folder)], env=ENV,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(lambda: _holder_pid(folder) or first.poll() is not None, what="the first job's lock")
        assert _holder_pid(folder) == str(first.pid)
        t0 = time.time()
        second = runner.invoke(app, [*SEARCH, "--out", str(folder)])
        assert_one_error(second, f"in use by another entroprune job (PID {first.pid})")
        assert time.time() - t0 < 30 and first.poll() is None          # refused while the first still runs
        out, err = first.communicate(timeout=600)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0, err
    episodes = [json.loads(line)["episode"] for line in (folder / "search" / "search_log.jsonl").read_text()
                .splitlines()]
    assert episodes == list(range(20))                                   # whole: 20 lines, none twice
    assert json.loads(out.strip().splitlines()[-1])["episodes"] == 20


def test_a_lock_left_by_a_killed_job_is_taken_over(tmp_path):
    """The holder is io/lock.py's RunLock itself (loaded alone, so the process
    starts in a blink), killed with SIGKILL: the OS releases its lock."""
    folder = tmp_path / "s"
    lock_py = Path(importlib.util.find_spec("entroprune.io.lock").origin)
    holder = subprocess.Popen([sys.executable, "-c", (
        "import importlib.util, sys, time\n"
        f"spec = importlib.util.spec_from_file_location('lock', {str(lock_py)!r})\n"
        "lock = importlib.util.module_from_spec(spec); spec.loader.exec_module(lock)\n"
        f"lock.RunLock({str(folder)!r}).__enter__()\n"
        "print('held', flush=True); time.sleep(600)\n")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        tiny = ["search", "pretrained:lenet5", "--target-macs", "2x", "--episodes", "2", "--warmup", "1",
                "--dataset", "synthetic", "--reward-images", "32", "--val-subset", "200", "--top-k", "1",
                "--checkpoint-every", "1", "--out", str(folder)]
        refused = runner.invoke(app, tiny)
        assert_one_error(refused, f"(PID {holder.pid})")
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    finally:
        if holder.poll() is None:
            holder.kill()
    assert _holder_pid(folder) == str(holder.pid)                        # the dead holder's file is still there
    res = runner.invoke(app, tiny)
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout.strip().splitlines()[-1])["episodes"] == 2

    # a search checkpoint damaged afterwards (the run not finished) is named, with what to do
    for name in ("report.json", "model.safetensors"):
        (folder / name).unlink()
    ckpt = folder / "search" / "search.ckpt"
    ckpt.write_bytes(ckpt.read_bytes()[:1000])
    damaged = _sha(ckpt)
    res = runner.invoke(app, tiny)
    assert_one_error(res, f"search checkpoint {ckpt} cannot be read", "delete it")
    assert _sha(ckpt) == damaged and not (folder / "model.safetensors").exists()


def test_ctrl_c_prints_one_line_and_exits_130(tmp_path):
    out = tmp_path / "m.safetensors"
    # as at a terminal: a job started in the background of a non-interactive shell (CI, nohup ... &) inherits
    # SIGINT as *ignored*, and then Ctrl-C rightly does nothing; the child gets the default disposition back
    proc = subprocess.Popen([str(ENTROPRUNE), "train", "lenet5", "--dataset", "synthetic", "--epochs", "200",
                             "--out", str(out)], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        seen = [proc.stderr.readline() for _ in range(1)]
        while not seen[-1].startswith("warning: lenet5 is a new") and seen[-1] and len(seen) < 50:
            seen.append(proc.stderr.readline())                          # wait until the command has started
        assert seen[-1].startswith("warning: lenet5 is a new, untrained model"), seen
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, (proc.returncode, err[-600:])
    assert "Traceback" not in err and err.rstrip().endswith("interrupted")
    assert not out.exists() and not list(tmp_path.glob(".*.tmp"))


def test_train_refuses_the_checkpoint_of_other_settings(tmp_path):
    """The pair a new user ran: a default run, then the same output with
    another data set, learning rate and seed (short: one epoch, 500 images)."""
    out = tmp_path / "m.safetensors"
    first = ["train", "lenet5", "--epochs", "1", "--limit-train", "500", "--out", str(out)]
    res = runner.invoke(app, first)
    assert res.exit_code == 0, res.output
    done = {p.name: _sha(p) for p in tmp_path.iterdir()}
    other = ["train", "lenet5", "--dataset", "synthetic", "--epochs", "1", "--limit-train", "500", "--lr", "0.01",
             "--seed", "3", "--out", str(out)]
    line = assert_one_error(runner.invoke(app, other), f"checkpoint {out}.ckpt belongs to a run with other settings",
                            "lr: 0.1 there, 0.01 here", "seed: 0 there, 3 here", "--restart")
    assert "name: fashion_mnist there, synthetic here" in line
    assert {p.name: _sha(p) for p in tmp_path.iterdir()} == done         # nothing changed
    res = runner.invoke(app, [*other, "--restart"])
    assert res.exit_code == 0, res.output
    assert entroprune.load(out).entroprune_info["seed"] == 3


@pytest.fixture(scope="module")
def synthetic():
    from entroprune.data import load_data
    return load_data("synthetic")


def test_finetune_resumes_only_its_own_run(tmp_path, synthetic):
    """A checkpoint left by an interrupted finetune of other settings is
    refused by name; the same settings reuse it; --restart starts over."""
    from entroprune.training import TrainConfig, train

    out = tmp_path / "ft.safetensors"
    ckpt = Path(f"{out}.ckpt")
    args = ["finetune", "pretrained:lenet5", "--dataset", "synthetic", "--epochs", "1", "--lr", "0.01",
            "--out", str(out)]
    model = entroprune.load(entroprune.pretrained_path("lenet5"))
    train(model, synthetic, TrainConfig(epochs=1, lr=0.005, progress=False), checkpoint=ckpt)
    line = assert_one_error(runner.invoke(app, args), f"checkpoint {ckpt} belongs to a run", "--restart")
    assert "lr: 0.005 there, 0.01 here" in line and not out.exists()

    model = entroprune.load(entroprune.pretrained_path("lenet5"))
    train(model, synthetic, TrainConfig(epochs=1, lr=0.01, progress=False), checkpoint=ckpt, restart=True)
    res = runner.invoke(app, args)                                       # the same run: reused, not redone
    assert res.exit_code == 0 and "reusing the finished run" in res.output, res.output
    assert out.exists() and not ckpt.exists()

    train(entroprune.load(entroprune.pretrained_path("lenet5")), synthetic,
          TrainConfig(epochs=1, lr=0.005, progress=False), checkpoint=ckpt)
    res = runner.invoke(app, [*args, "--restart"])
    assert res.exit_code == 0 and "reusing" not in res.output, res.output


def test_train_and_finetune_refuse_an_output_another_job_writes(tmp_path):
    import os

    from entroprune.io.lock import RunLock

    out = tmp_path / "m.safetensors"
    with RunLock(out):                                     # another job is writing m.safetensors
        for args in (["train", "lenet5", "--epochs", "1", "--limit-train", "50"],
                     ["finetune", "pretrained:lenet5", "--epochs", "1"]):
            assert_one_error(runner.invoke(app, [*args, "--out", str(out)]),
                             f"in use by another entroprune job (PID {os.getpid()})")
    assert not out.exists() and not (tmp_path / "m.safetensors.ckpt").exists()
