"""The run directory: what it holds, whether a new run may start in it, and its descriptive files.

What a run directory ``OUT`` holds::

    OUT/last.pt          checkpoint after the latest saved step (everything needed to resume exactly)
    OUT/best.pt          checkpoint with the lowest validation loss so far (its metrics inside)
    OUT/metrics.jsonl    one JSON object per logged step ("kind": "train") and per validation ("valid")
    OUT/tensorboard/     TensorBoard event files (train/*, valid/* scalars)
    OUT/config.yaml      the resolved configuration
    OUT/command.txt      the command line of every invocation (one per line, resumes appended)
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Optional, Union

from cpcaudio.config import CPCConfig
from cpcaudio.errors import UsageError

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


def claim_run_dir(out_dir: PathLike, overwrite: bool, is_main: bool = True) -> None:
    """Make ``out_dir`` ready for a new run: refuse an existing run unless ``overwrite``, which deletes it.

    Only the files of :data:`RUN_FILES` are deleted (and only by the main process); anything else the user
    keeps in the directory stays.

    Raises:
        UsageError: ``out_dir`` holds a run (``last.pt``) and ``overwrite`` is not set.
    """
    out_dir = Path(out_dir)
    if (out_dir / LAST_CHECKPOINT).is_file() and not overwrite:
        raise UsageError(
            f"{out_dir} already holds a run ({LAST_CHECKPOINT}); pass --resume to continue it or "
            "--overwrite to start over"
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
