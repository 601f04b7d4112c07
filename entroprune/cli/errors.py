"""The one error path of the command line, used by ``entroprune`` and by
``typer.testing.CliRunner`` alike (both call ``EntropruneGroup.main``):

- an error the user can fix (an exception class of entroprune's own, a
  ``ValueError``/``RuntimeError``/``KeyError`` raised by a ``raise`` statement
  in entroprune's code, an operating-system error such as a full disk or a
  denied permission): ``error: <message>`` on one line, exit status 2;
- a usage error (unknown option, a number out of its range): the same one
  line, with where to find the help, exit status 2;
- Ctrl-C: ``interrupted``, exit status 130;
- anything else is a bug: its traceback, then a line asking to report it
  with entroprune's version, exit status 1.
"""

from __future__ import annotations

import linecache
import sys
import traceback
from pathlib import Path
from typing import Any

import typer
from typer.core import TyperGroup

try:                                   # recent typer carries its own copy of click
    from typer._click.exceptions import ClickException, NoArgsIsHelpError
except ImportError:                    # older typer: click itself
    from click.exceptions import ClickException, NoArgsIsHelpError

PACKAGE_DIR = Path(__file__).resolve().parents[1]      # .../entroprune
USAGE_EXIT, BUG_EXIT, INTERRUPTED_EXIT = 2, 1, 130


def show_error(message: str) -> None:
    """``error: message`` on stderr, on one line."""
    one_line = " ".join(part.strip() for part in str(message).splitlines() if part.strip())
    typer.secho(f"error: {one_line}", fg=typer.colors.RED, err=True)


def _raised_here(e: BaseException) -> bool:
    """Was ``e`` raised by a ``raise`` statement in entroprune's own code?"""
    tb = e.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    path = Path(tb.tb_frame.f_code.co_filename)
    if not path.is_relative_to(PACKAGE_DIR):
        return False
    return linecache.getline(str(path), tb.tb_lineno).lstrip().startswith("raise")


def user_message(e: BaseException) -> str | None:
    """The message of an error the user can fix, or None for a bug."""
    kind = type(e)
    if isinstance(e, OSError) and e.errno is not None:      # permissions, full disk, missing file
        return str(e)
    ours = kind.__module__.split(".")[0] == "entroprune" and not kind.__name__.startswith("_")
    if ours and isinstance(e, (ValueError, RuntimeError, OSError, LookupError)):
        return str(e)
    if kind in (ValueError, RuntimeError, KeyError) and _raised_here(e):
        return str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
    return None


def report_bug(e: BaseException) -> None:
    from .. import __version__
    traceback.print_exception(type(e), e, e.__traceback__, file=sys.stderr)
    typer.secho(f"error: unexpected {type(e).__name__}: this is a bug in entroprune {__version__}; please "
                "report it with the command you ran and the traceback above", fg=typer.colors.RED, err=True)


class EntropruneGroup(TyperGroup):
    """typer's group, with entroprune's error path around every command."""

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        try:
            rv = super().main(args=args, prog_name=prog_name, complete_var=complete_var, standalone_mode=False,
                              **extra)
            code = rv if isinstance(rv, int) and not isinstance(rv, bool) else 0
            if code == INTERRUPTED_EXIT:             # typer turns Ctrl-C into a silent Exit(130)
                typer.echo("interrupted", err=True)
        except NoArgsIsHelpError as e:
            e.show()
            code = e.exit_code
        except ClickException as e:
            hint = ""
            ctx = getattr(e, "ctx", None)
            if ctx is not None:
                hint = f" (see: {ctx.command_path} --help)"
            show_error(f"{e.format_message()}{hint}")
            code = e.exit_code
        except (KeyboardInterrupt, typer.Abort):
            typer.echo("interrupted", err=True)
            code = INTERRUPTED_EXIT
        except Exception as e:
            message = user_message(e)
            if message is None:
                report_bug(e)
                code = BUG_EXIT
            else:
                show_error(message)
                code = USAGE_EXIT
        if not standalone_mode:
            return code
        sys.exit(code)
