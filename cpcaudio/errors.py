"""Exceptions raised by cpcaudio.

Every error that a user can cause (bad input, bad configuration, bad data) is a subclass of
:class:`CPCAudioError`. The CLI turns these into one line on stderr and an exit code; anything else that
escapes is a bug in cpcaudio and is shown with its traceback.
"""

from __future__ import annotations


class CPCAudioError(Exception):
    """Base class of every error cpcaudio raises on purpose.

    Attributes:
        exit_code: the process exit code the CLI uses for this kind of error.
    """

    exit_code: int = 1


class UsageError(CPCAudioError, ValueError):
    """The request itself is wrong: an unknown option value, a bad config key, a missing argument."""

    exit_code = 2


class ConfigError(UsageError):
    """A configuration key or value is invalid."""


class DataError(CPCAudioError):
    """Input data is unreadable, corrupt or inconsistent (audio, labels, split lists, datasets)."""

    exit_code = 3


class CheckpointError(DataError):
    """A checkpoint is truncated, of an unknown format version, or not safe to load."""


class ResourceError(CPCAudioError):
    """The requested work cannot fit in the available memory or disk."""

    exit_code = 4


class DivergenceError(CPCAudioError):
    """Training diverged: the loss, the gradients or the weights became NaN or infinite.

    Training stops at once; the run's last checkpoint written before (if any) is finite and kept, and
    nothing non-finite is ever saved.
    """

    exit_code = 5


class TrainingInterrupted(CPCAudioError):
    """Training stopped on SIGINT (Ctrl-C) or SIGTERM after saving ``last.pt`` at the interrupted step.

    The CLI prints the message after ``interrupted:`` (not ``error:``) and exits with ``128 + signal``:
    130 for SIGINT, 143 for SIGTERM, as a shell reports a process ended by that signal.

    Attributes:
        exit_code: ``128 + signum``.
        signum: the signal received.
    """

    exit_code = 130

    def __init__(self, message: str, signum: int = 2) -> None:
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + signum
