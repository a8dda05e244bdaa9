"""Helpers shared by every CLI command: error translation and ``--set`` parsing.

Library errors (:class:`cpcaudio.errors.CPCAudioError`) become one line on stderr and the error's exit
code; ``cpcaudio --debug ...`` re-raises them so the traceback is visible.
"""

from __future__ import annotations

import contextlib
import errno
import sys
from collections.abc import Iterator

import typer

from cpcaudio.errors import CPCAudioError, DataError, ResourceError, TrainingInterrupted

_DEBUG_KEY = "debug"


def debug_enabled(ctx: typer.Context | None) -> bool:
    """Whether the top-level ``--debug`` flag was given."""
    while ctx is not None:
        if isinstance(ctx.obj, dict) and ctx.obj.get(_DEBUG_KEY):
            return True
        ctx = ctx.parent
    return False


INTERRUPTED = "completed work is kept; rerun the same command to resume."


@contextlib.contextmanager
def user_errors(ctx: typer.Context | None = None, interrupted: str = INTERRUPTED) -> Iterator[None]:
    """Turn library errors into a one-line message and a non-zero exit code.

    Usage errors exit with 2, data errors with 3, resource errors with 4, a diverged training with 5 (see
    ``cpcaudio.errors``). Errors of the environment that escape the library are translated too: an
    ``OSError`` (a path that cannot be read or written: 3; a full disk: 4) and running out of memory (4).
    A training stopped by a signal (:class:`TrainingInterrupted`) prints ``interrupted: <its message>``
    and exits with 130 (SIGINT) or 143 (SIGTERM); a bare ``KeyboardInterrupt`` prints
    ``interrupted: <interrupted>`` (the command says what is kept and how to go on) and exits with 130.
    """
    try:
        yield
    except TrainingInterrupted as error:
        if debug_enabled(ctx):
            raise
        typer.echo(f"interrupted: {one_line(error)}", err=True)
        raise typer.Exit(code=error.exit_code) from None
    except CPCAudioError as error:
        if debug_enabled(ctx):
            raise
        typer.echo(f"error: {one_line(error)}", err=True)
        raise typer.Exit(code=error.exit_code) from None
    except (OSError, MemoryError) as error:
        # The environment, not the input: an unwritable path, a full disk, no memory left.
        if debug_enabled(ctx):
            raise
        code, message = _environment_error(error)
        typer.echo(f"error: {message}", err=True)
        raise typer.Exit(code=code) from None
    except RuntimeError as error:
        if debug_enabled(ctx) or type(error).__name__ != "OutOfMemoryError":  # torch.OutOfMemoryError
            raise
        typer.echo(f"error: {_OUT_OF_MEMORY}", err=True)
        raise typer.Exit(code=ResourceError.exit_code) from None
    except KeyboardInterrupt:
        if debug_enabled(ctx):
            raise
        typer.echo(f"interrupted: {interrupted}", err=True)
        raise typer.Exit(code=130) from None


_OUT_OF_MEMORY = (
    "out of memory; lower data.batch_size or data.window_size (train) or --batch-size / --chunk-seconds "
    "(extract); completed work is kept, rerun the same command to resume"
)


def one_line(error: object) -> str:
    """The error's message on one line, printable whatever the terminal's encoding (bytes of a
    non-UTF-8 file name appear as ``\\xNN``)."""
    text = " ".join(part.strip() for part in str(error).splitlines() if part.strip())
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a lone surrogate that no file name byte made
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _environment_error(error: BaseException) -> tuple[int, str]:
    """Exit code and message for an ``OSError``/``MemoryError`` that escaped a command."""
    if isinstance(error, MemoryError):
        return ResourceError.exit_code, _OUT_OF_MEMORY
    assert isinstance(error, OSError)
    where = " ".join(one_line(name) for name in (error.filename, error.filename2) if name is not None)
    reason = error.strerror or one_line(error)
    if error.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        fix = "free some space or choose another output directory, then rerun the same command"
        return ResourceError.exit_code, f"{where}: {reason}; {fix}" if where else f"{reason}; {fix}"
    fix = "check that the path exists and that you may read it (inputs) or write there (outputs)"
    return DataError.exit_code, f"{where}: {reason}; {fix}" if where else f"{reason}; {fix}"


def echo(message: str, quiet: bool = False) -> None:
    """Print to stdout unless ``quiet``."""
    if not quiet:
        typer.echo(message)


def stderr_is_terminal() -> bool:
    """True when progress bars should be drawn."""
    return sys.stderr.isatty()
