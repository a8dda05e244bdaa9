"""One writer per output folder: an OS-level lock that dies with its process.

``prepare``, ``train`` and ``extract`` hold :func:`output_lock` on their output folder for as long as
they write there. The lock is ``fcntl.flock`` on a ``.lock`` file inside the folder, so the kernel
releases it when the process ends in any way (exit, crash, kill -9): there is never a stale lock to
delete by hand. The holder's pid is written into the file, so a second writer is told who holds it.
Under torchrun only rank 0 writes, so only rank 0 takes the lock.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Union

from cpcaudio.errors import UsageError

LOCK_FILE = ".lock"

try:  # POSIX; on Windows the folder is not locked (documented)
    import fcntl
except ImportError:  # pragma: no cover - not on the platforms CI runs
    fcntl = None  # type: ignore[assignment]


class OutputLockedError(UsageError):
    """Another live process is writing into the same output folder."""


@contextlib.contextmanager
def output_lock(folder: Union[str, os.PathLike], what: str = "job") -> Iterator[Path]:
    """Hold the writer's lock of ``folder`` (created if missing) inside a ``with`` block.

    Args:
        folder: the output folder.
        what: the kind of job, for the message (``prepare``, ``train``, ``extract``).

    Yields:
        The lock file's path (``folder/.lock``; it stays behind, unlocked, and is not an output).

    Raises:
        OutputLockedError: another process holds the lock; the message names the folder and its pid.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_FILE
    if fcntl is None:  # pragma: no cover
        yield path
        return
    handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            holder = os.pread(handle, 32, 0).decode("ascii", "replace").strip() or "unknown"
            raise OutputLockedError(
                f"{folder} is being written by another {what} (pid {holder}); wait for it to finish, "
                "stop it, or choose another output folder"
            ) from None
        os.ftruncate(handle, 0)
        os.pwrite(handle, f"{os.getpid()}\n".encode("ascii"), 0)
        try:
            yield path
        finally:
            os.ftruncate(handle, 0)
            fcntl.flock(handle, fcntl.LOCK_UN)
    finally:
        os.close(handle)
