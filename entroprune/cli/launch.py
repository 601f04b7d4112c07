"""The ``entroprune`` console script: Ctrl-C at any moment, including while
torch is still being imported, prints one line and exits with 130.

While the heavy modules load (torch, numpy, matplotlib through the commands)
SIGINT is held back: an interrupt landing inside their C initialisation can be
swallowed, or leave a half-imported module that fails later with an unrelated
traceback. Once they are loaded the signal is let through; one that arrived
meanwhile is delivered then, as a KeyboardInterrupt caught below."""

from __future__ import annotations

import signal
import sys


def main() -> None:
    held = hasattr(signal, "pthread_sigmask")
    try:
        if held:
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            from .main import main as run  # the heavy imports happen here
        finally:
            if held:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})   # a pending Ctrl-C lands now
        run()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
