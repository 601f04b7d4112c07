"""The ``entroprune`` console script: Ctrl-C at any moment, including while
torch is still being imported, prints one line and exits with 130."""

from __future__ import annotations

import sys


def main() -> None:
    try:
        from .main import main as run  # the heavy imports (torch, the commands) happen here
        run()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
