"""Command-line interface. ``launch.main`` (the console script) installs the
Ctrl-C handling before anything heavy is imported; ``main.app`` is the typer app."""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name in ("app", "main"):
        import importlib
        # the submodule is named like the function it holds: import it by path, not "from . import main"
        return getattr(importlib.import_module("entroprune.cli.main"), name)
    raise AttributeError(f"module 'entroprune.cli' has no attribute {name!r}")
