"""Data-parallel training with torchrun: 2 CPU processes, gloo backend."""

import json
import os
import subprocess
import sys


def test_torchrun_two_processes(tmp_path, free_port):
    out = tmp_path / "ddp.safetensors"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", free_port,
           "-m", "entroprune.cli", "train", "lenet5", "--out", str(out), "--epochs", "2",
           "--limit-train", "6000", "--batch-size", "64", "--lr", "0.05", "--threads", "1"]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith("{")]
    assert len(lines) == 1, res.stdout          # only rank 0 reports and saves
    result = json.loads(lines[0])
    # two processes took part, ended with identical weights (checked by the trainer), and learned
    assert result["world_size"] == 2
    assert out.exists() and result["val_acc"] > 50
