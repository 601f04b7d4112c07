"""Quoting a caught exception inside entroprune's own error messages."""

from __future__ import annotations


def first_line(error: BaseException, limit: int = 160) -> str:
    """``"TypeName: first line of the message"``, cut at a word boundary with an
    ellipsis past ``limit`` characters; the bare type name when the message is
    empty (``EOFError()`` from an empty file has none)."""
    lines = str(error).strip().splitlines()
    text = lines[0].strip() if lines else ""
    if len(text) > limit:
        text = text[:limit].rsplit(" ", 1)[0].rstrip(",;:") + "…"
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
