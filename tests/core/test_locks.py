"""The one-writer lock: a second holder is refused with the folder and the pid; a killed holder frees it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cpcaudio.locks import LOCK_FILE, OutputLockedError, output_lock

HOLD = "import sys, time\nfrom cpcaudio.locks import output_lock\nwith output_lock(sys.argv[1], 'train'):\n    print('held', flush=True)\n    time.sleep(60)\n"


def _holder(folder: Path) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "held"
    return process


def test_second_writer_is_refused_naming_folder_and_pid(tmp_path: Path):
    holder = _holder(tmp_path / "out")
    try:
        with pytest.raises(OutputLockedError, match=rf"out is being written by another train \(pid {holder.pid}\)"):
            with output_lock(tmp_path / "out", "train"):
                pass
    finally:
        holder.kill()
        holder.wait()


def test_lock_dies_with_a_killed_process(tmp_path: Path):
    holder = _holder(tmp_path / "out")
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    with output_lock(tmp_path / "out", "train") as path:
        assert path == tmp_path / "out" / LOCK_FILE
        assert path.read_text().strip() == str(os.getpid())


def test_lock_is_reentrant_after_release_in_one_process(tmp_path: Path):
    with output_lock(tmp_path, "prepare"):
        pass
    started = time.monotonic()
    with output_lock(tmp_path, "prepare"):
        assert time.monotonic() - started < 1.0
