"""Atomic file writes: write to a temporary file in the same folder, fsync,
then ``os.replace`` it over the target, so a reader (or a crash) never sees a
half-written file.

The temporary file of ``DIR/NAME`` is ``DIR/.NAME.<pid>.<random>.tmp``. A
writer killed outright (``kill -9``, power loss) cannot remove it, so every
write first removes the stale temporary files of the SAME output: those whose
writer PID no longer runs on this machine, or that were last modified more
than an hour ago (a PID reused since). Temporary files without a PID (written
by an older entroprune, ``.NAME.<8 random characters>.tmp``) count as stale
after a minute. Nothing else is touched: not other outputs' temporary files
(``.NAME.ckpt.*.tmp`` belongs to ``NAME.ckpt``), nor a live writer's. The PID
test assumes the folder is not written from two machines at once.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

STALE_SECONDS = 3600          # a temporary file untouched this long is stale whatever its PID
STALE_SECONDS_NO_PID = 60     # ... and one that names no PID, this long
_WITH_PID = re.compile(r"(\d+)\.[a-z0-9_]+")       # middle of ".NAME.<pid>.<random>.tmp"
_NO_PID = re.compile(r"[a-z0-9_]{8}")              # middle of an older ".NAME.<random>.tmp"


def _pid_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:      # another user's process: alive
        return True
    return True


def remove_stale_temps(path: str | Path, now: float | None = None) -> list[Path]:
    """Remove the stale temporary files of ``path`` (see the module's
    docstring); returns what was removed."""
    path = Path(path)
    head, tail = f".{path.name}.", ".tmp"
    now = time.time() if now is None else now
    removed = []
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return removed
    for entry in entries:
        name = entry.name
        if not (name.startswith(head) and name.endswith(tail)) or len(name) <= len(head) + len(tail):
            continue
        middle = name[len(head):-len(tail)]
        try:
            age = now - entry.stat(follow_symlinks=False).st_mtime
        except OSError:
            continue
        m = _WITH_PID.fullmatch(middle)
        if m is not None:
            pid = int(m.group(1))
            stale = (pid != os.getpid() and not _pid_running(pid)) or age > STALE_SECONDS
        else:
            stale = _NO_PID.fullmatch(middle) is not None and age > STALE_SECONDS_NO_PID
        if stale and entry.is_file(follow_symlinks=False):
            try:
                os.unlink(entry.path)
                removed.append(Path(entry.path))
            except FileNotFoundError:    # another writer cleaned it first
                pass
    return removed


def atomic_write(path: str | Path, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` then move ``tmp_path`` onto ``path`` atomically
    (after removing the stale temporary files of earlier, killed writes)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the usual permissions
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    def write(tmp: str) -> None:
        with open(tmp, "w") as f:
            f.write(text)
    return atomic_write(path, write)


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    return atomic_write(path, lambda tmp: torch.save(obj, tmp))
