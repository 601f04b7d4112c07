"""Atomic writes: a writer killed with SIGKILL leaves its hidden temporary
file; the next write of the same output removes it, and nothing else."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from entroprune.io.atomic import STALE_SECONDS_NO_PID, atomic_write, atomic_write_text, remove_stale_temps

ATOMIC_PY = Path(__file__).resolve().parents[2] / "entroprune" / "io" / "atomic.py"


def _killed_writer(target: Path) -> Path:
    """Start a writer of ``target`` that hangs half-way through, kill -9 it,
    and return the temporary file it left."""
    code = (
        "import importlib.util, sys, time\n"
        "spec = importlib.util.spec_from_file_location('atomic', sys.argv[1])\n"
        "atomic = importlib.util.module_from_spec(spec); spec.loader.exec_module(atomic)\n"
        "def write(tmp):\n"
        "    with open(tmp, 'wb') as f:\n"
        "        f.write(b'half a model'); f.flush()\n"
        "        print(tmp, flush=True); time.sleep(600)\n"
        "atomic.atomic_write(sys.argv[2], write)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(ATOMIC_PY), str(target)], stdout=subprocess.PIPE,
                            text=True)
    tmp = Path(proc.stdout.readline().strip())
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert tmp.exists() and tmp.name.startswith(f".{target.name}.{proc.pid}.") and tmp.suffix == ".tmp"
    return tmp


def test_the_next_write_removes_what_a_killed_writer_left(tmp_path):
    target = tmp_path / "m.safetensors"
    left = _killed_writer(target)
    assert not target.exists()                                  # the output never appeared half-written
    atomic_write_text(target, "whole")
    assert target.read_text() == "whole" and not left.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]


def test_only_stale_temporary_files_of_the_same_output_are_removed(tmp_path):
    target = tmp_path / "m.safetensors"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        live = tmp_path / f".m.safetensors.{sleeper.pid}.abcd1234.tmp"          # a writer still at work
        other = _killed_writer(tmp_path / "m.safetensors.ckpt")                   # another output's leftover
        old_no_pid = tmp_path / ".m.safetensors.k3j4h5g6.tmp"                     # an older entroprune's
        new_no_pid = tmp_path / ".m.safetensors.q1w2e3r4.tmp"
        not_ours = tmp_path / ".m.safetensors.notes.txt"
        for p in (live, old_no_pid, new_no_pid, not_ours):
            p.write_text("x")
        past = time.time() - STALE_SECONDS_NO_PID - 5
        os.utime(old_no_pid, (past, past))
        removed = remove_stale_temps(target)
        assert removed == [old_no_pid]
        assert live.exists() and other.exists() and new_no_pid.exists() and not_ours.exists()
        atomic_write(target, lambda tmp: Path(tmp).write_text("done"))
        assert live.exists() and other.exists() and target.read_text() == "done"
    finally:
        sleeper.kill()
        sleeper.wait()
    remove_stale_temps(target)                                                   # its writer is gone now
    assert not live.exists() and other.exists()
