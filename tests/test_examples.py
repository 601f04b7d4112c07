"""The example a user copies runs: a model not in the zoo, compressed from an
image folder, reloaded bit-exactly in a fresh process."""

import json
import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "own_model" / "run.py"


def test_own_model_from_an_image_folder(tmp_path):
    res = subprocess.run([sys.executable, str(EXAMPLE), "--make-folder", str(tmp_path / "images"), "--quick",
                          "--out", str(tmp_path / "run")], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    result = json.loads(res.stdout.strip().splitlines()[-1])
    assert result["reload"] == "bit-exact"
    assert abs(result["macs_ratio"] - 2.0) < 0.1
    assert result["test_acc"] > 40.0          # 6 epochs on ~800 images of 10 classes: far above chance (10%)
    assert (tmp_path / "run" / "report.md").exists()
