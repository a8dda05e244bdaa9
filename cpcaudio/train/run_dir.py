"""The run directory: what it holds, whether a new run may start in it, and its descriptive files.

What a run directory ``OUT`` holds::

    OUT/last.pt          checkpoint after the latest saved step (everything needed to resume exactly)
    OUT/best.pt          checkpoint with the lowest validation loss so far (its metrics inside)
    OUT/metrics.jsonl    one JSON object per logged step ("kind": "train") and per validation ("valid")
    OUT/tensorboard/     TensorBoard event files (train/*, valid/* scalars)
    OUT/config.yaml      the resolved configuration
    OUT/command.txt      the command line of every invocation (one per line, resumes appended)
    OUT/.lock            the writer's lock (see :mod:`cpcaudio.locks`): one run writes here at a time

A new run starts only in a missing or empty folder, or one holding nothing but these files (what a run
killed before its first checkpoint leaves); anything else needs ``--overwrite``, which replaces only
these files and leaves the rest alone.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Optional, Union

from cpcaudio.config import CPCConfig
from cpcaudio.errors import UsageError
from cpcaudio.locks import LOCK_FILE, OutputLockedError, output_lock
from cpcaudio.train.distributed import DistributedContext, broadcast_object

PathLike = Union[str, os.PathLike]

LAST_CHECKPOINT = "last.pt"
BEST_CHECKPOINT = "best.pt"
METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"
CONFIG_FILE = "config.yaml"
COMMAND_FILE = "command.txt"
RUN_FILES = (LAST_CHECKPOINT, BEST_CHECKPOINT, METRICS_FILE, TENSORBOARD_DIR, CONFIG_FILE, COMMAND_FILE)


def resumable_checkpoint(out_dir: PathLike, resume: bool) -> Optional[Path]:
    """``out_dir/last.pt`` when ``resume`` is asked for and the file exists (else None: a new run)."""
    last = Path(out_dir) / LAST_CHECKPOINT
    return last if resume and last.is_file() else None


def is_run_file(name: str) -> bool:
    """Whether an entry of a run directory is the run's own: :data:`RUN_FILES`, the lock file, or the
    temporary ``.NAME.*.tmp`` of a write that was killed."""
    return name in RUN_FILES or name == LOCK_FILE or (name.startswith(".") and name.endswith(".tmp"))


def foreign_entries(out_dir: PathLike) -> list[str]:
    """The entries of ``out_dir`` that are not a run's own (sorted; empty when ``out_dir`` is missing)."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return []
    return sorted(entry.name for entry in out_dir.iterdir() if not is_run_file(entry.name))


def claim_run_dir(out_dir: PathLike, overwrite: bool, is_main: bool = True) -> None:
    """Make ``out_dir`` ready for a new run: refuse an existing run unless ``overwrite``, which deletes it.

    Only the files of :data:`RUN_FILES` are deleted (and only by the main process); anything else the user
    keeps in the directory stays.

    Raises:
        UsageError: ``out_dir`` holds a run (``last.pt``), or files that are not a run's, and ``overwrite``
            is not set.
    """
    out_dir = Path(out_dir)
    if (out_dir / LAST_CHECKPOINT).is_file() and not overwrite:
        raise UsageError(
            f"{out_dir} already holds a run ({LAST_CHECKPOINT}); pass --resume to continue it or "
            "--overwrite to start over"
        )
    foreign = foreign_entries(out_dir)
    if foreign and not overwrite:
        more = f" and {len(foreign) - 1} more" if len(foreign) > 1 else ""
        raise UsageError(
            f"{out_dir} is not empty and holds no cpcaudio run ({foreign[0]!r}{more}); choose a new or empty "
            "folder, or pass --overwrite to start a run there anyway (only a run's own files are replaced)"
        )
    if overwrite and is_main:
        for name in RUN_FILES:
            path = out_dir / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()


def write_run_description(out_dir: PathLike, config: CPCConfig, command: str) -> None:
    """Write ``config.yaml`` (the resolved config) and append ``command`` to ``command.txt``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config.save(out_dir / CONFIG_FILE)
    with open(out_dir / COMMAND_FILE, "a") as file:
        file.write(command + "\n")


@contextlib.contextmanager
def run_dir_lock(out_dir: PathLike, context: DistributedContext) -> Iterator[None]:
    """Hold the writer's lock of ``out_dir`` (rank 0, the only writer) for the whole block.

    The ranks agree: when rank 0 cannot take the lock, every rank raises. When the block fails before any
    run file was written, a lock file this call created is removed again, and so is a folder it created:
    a run refused at the start leaves nothing behind.

    Raises:
        OutputLockedError: another process writes into ``out_dir``; the message names it and its pid.
    """
    out_dir = Path(out_dir)
    with contextlib.ExitStack() as stack:
        failure, created, lock_created = None, False, False
        if context.is_main:
            created, lock_created = not out_dir.exists(), not (out_dir / LOCK_FILE).exists()
            try:
                stack.enter_context(output_lock(out_dir, "train"))
            except OutputLockedError as error:
                failure = str(error)
        failure = broadcast_object(failure, context)
        if failure is not None:
            raise OutputLockedError(failure)
        try:
            yield
        except BaseException:
            if lock_created:
                _remove_lock(out_dir, created)
            raise


def _remove_lock(out_dir: Path, folder_created: bool) -> None:
    """Delete the lock file (called while it is held) unless a run file was written, and, if
    ``folder_created``, the folder once empty."""
    try:
        if any(is_run_file(entry.name) and entry.name != LOCK_FILE for entry in out_dir.iterdir()):
            return
        (out_dir / LOCK_FILE).unlink()
        if folder_created and not any(out_dir.iterdir()):
            out_dir.rmdir()
    except OSError:
        pass
