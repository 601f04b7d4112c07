"""One job per run folder or output file: an OS lock (``fcntl.flock``) held
while the job runs. A second job on the same folder stops at once with an
error naming the holder's PID; a lock left by a killed process is released by
the OS with the process, so the next job simply takes it."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


class LockedError(RuntimeError):
    """Another running job holds the lock."""


class RunLock:
    """``with RunLock(folder): ...`` (or a file path: its ``.NAME.lock`` beside it)."""

    def __init__(self, target: str | Path):
        target = Path(target)
        self.target = target
        self.path = target / ".entroprune.lock" if target.is_dir() or not target.suffix else \
            target.parent / f".{target.name}.lock"
        self._fd: int | None = None

    def __enter__(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise LockedError(f"{self.target} is in use by another entroprune job (PID {holder}); wait for it "
                              "to finish, or choose another output") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
