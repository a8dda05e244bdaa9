"""Helpers shared by every CLI command: error translation and ``--set`` parsing.

Library errors (:class:`cpcaudio.errors.CPCAudioError`) become one line on stderr and the error's exit
code; ``cpcaudio --debug ...`` re-raises them so the traceback is visible.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

import typer

from cpcaudio.errors import CPCAudioError

_DEBUG_KEY = "debug"


def debug_enabled(ctx: typer.Context | None) -> bool:
    """Whether the top-level ``--debug`` flag was given."""
    while ctx is not None:
        if isinstance(ctx.obj, dict) and ctx.obj.get(_DEBUG_KEY):
            return True
        ctx = ctx.parent
    return False


@contextlib.contextmanager
def user_errors(ctx: typer.Context | None = None) -> Iterator[None]:
    """Turn library errors into a one-line message and a non-zero exit code.

    Usage errors exit with 2, data errors with 3, resource errors with 4 (see ``cpcaudio.errors``).
    A ``KeyboardInterrupt`` exits with 130 after saying that work can be resumed.
    """
    try:
        yield
    except CPCAudioError as error:
        if debug_enabled(ctx):
            raise
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(code=error.exit_code) from None
    except KeyboardInterrupt:
        if debug_enabled(ctx):
            raise
        typer.echo("interrupted: completed work is kept; rerun the same command to resume.", err=True)
        raise typer.Exit(code=130) from None


def echo(message: str, quiet: bool = False) -> None:
    """Print to stdout unless ``quiet``."""
    if not quiet:
        typer.echo(message)


def stderr_is_terminal() -> bool:
    """True when progress bars should be drawn."""
    return sys.stderr.isatty()
