"""Files written so that a reader never sees half of one: temporary file, fsync, rename.

Every stage writes its outputs through :func:`atomic_write_bytes` (checkpoints, reports, feature-store
metadata), so a process killed at any moment leaves the previous complete file or none, plus at worst a
hidden ``.NAME.*.tmp`` that :func:`remove_stale_temporaries` deletes when the job restarts.
"""

from __future__ import annotations

import glob
import os
import tempfile
from pathlib import Path
from typing import Any, Union

PathLike = Union[str, os.PathLike]


def atomic_write_bytes(path: PathLike, write: Any) -> None:
    """Call ``write(file_object)`` on a temporary file beside ``path``, then rename it into place.

    Temporary files of ``path`` that an earlier, killed writer left behind are removed once the new
    file is in place.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)  # mkstemp makes 0600; give the usual file mode
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        stale.unlink(missing_ok=True)


def remove_stale_temporaries(directory: PathLike) -> list[Path]:
    """Delete the temporary files (``.NAME.*.tmp``) that writers killed mid-write left in ``directory``.

    Call it when a job (re)starts in ``directory``, before it writes anything: no writer of its own is
    active then. Returns the removed paths.
    """
    removed = []
    for stale in Path(directory).glob(".*.tmp"):
        if stale.is_file():
            stale.unlink(missing_ok=True)
            removed.append(stale)
    return removed
