"""Where a result came from: the git commit, whether the tree had local
changes, the command line, and the versions that shape the numbers. Every
benchmark row and report stores this, so that anyone can rerun it."""

from __future__ import annotations

import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _code_version(where: Path) -> dict[str, Any]:
    status = _git(["status", "--porcelain", "--untracked-files=no"], where)
    return {"commit": _git(["rev-parse", "HEAD"], where), "dirty": bool(status) if status is not None else None}


# the code this process runs is the code it imported: its commit is read once, at import
# (a long benchmark process must not record the commit the tree has moved on to since)
_AT_IMPORT = _code_version(Path(__file__).resolve().parent)


def provenance(argv: list[str] | None = None, cwd: str | Path | None = None) -> dict[str, Any]:
    """``{"commit", "dirty", "command", "python", "torch", "threads", "host", "date"}``; the commit
    (and whether the tree had local changes) as of this process's import of entroprune."""
    version = _code_version(Path(cwd)) if cwd else _AT_IMPORT
    return {
        **version,
        "command": shlex.join(argv if argv is not None else sys.argv),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "host": platform.node(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def commit_files(paths: list[str | Path], message: str, attempts: int = 5) -> bool:
    """``git add`` and commit only these files (never what else is staged), for
    benchmark rows committed as they finish; retries while another git process
    holds the index lock. False (and a warning) if it could not."""
    files = [str(p) for p in paths]
    for _ in range(attempts):
        add = subprocess.run(["git", "add", *files], capture_output=True)
        if add.returncode == 0 and subprocess.run(["git", "commit", "-qm", message, "--", *files],
                                                  capture_output=True).returncode == 0:
            return True
        time.sleep(3)
    print(f"warning: could not commit {message!r}; the files are on disk and can be committed later", flush=True)
    return False

# the sentence a results table carries when some of its rows predate provenance records
OLDER_ROWS_NOTE = ("Rows whose JSON carries no `provenance` were written by older code "
                   "([PROVENANCE.md](PROVENANCE.md) names the commit that added each). ")
