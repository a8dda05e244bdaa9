"""The demo folder and its resume state, ``demo.json``: the plan and the stages already finished.

A rerun with the same plan resumes (finished stages are skipped); a rerun with another plan is refused
unless ``overwrite`` is given; a folder that holds something else than a demo is never touched.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from cpcaudio.demo.plan import DemoPlan
from cpcaudio.errors import UsageError

STATE_FILE = "demo.json"
STATE_FORMAT = "cpcaudio-demo"
STATE_FORMAT_VERSION = 1
DATA_DIR, RUN_DIR, FEATURES_DIR, FIGURES_DIR = "data", "run", "features", "figures"
ABX_DIR, UNITS_DIR = "abx", "units"
REPORT_STEM = "report"

_OWN_ENTRIES = {
    STATE_FILE, DATA_DIR, RUN_DIR, FEATURES_DIR, FIGURES_DIR, ABX_DIR, UNITS_DIR, f"{REPORT_STEM}.md",
    f"{REPORT_STEM}.html",
}


def probe_dir_name(task: str) -> str:
    """The folder of a probe task's results inside the demo folder."""
    return f"probe_{task}"


def is_own_entry(name: str) -> bool:
    """Whether a file or folder of that name in the demo folder is one the demo writes."""
    temporary_state = name.startswith(f".{STATE_FILE}.") and name.endswith(".tmp")
    return name in _OWN_ENTRIES or name.startswith(probe_dir_name("")) or temporary_state


def open_state(out_dir: Path, plan: DemoPlan, overwrite: bool) -> dict[str, Any]:
    """The demo state in ``out_dir``: fresh, or the earlier one when its plan matches.

    Raises:
        UsageError: ``out_dir`` is a file, holds something else than a demo, holds an unreadable state,
            or holds a demo of another plan (and ``overwrite`` is false).
    """
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"{out_dir} exists and is not a folder; choose another --out")
    state_path = out_dir / STATE_FILE
    fresh = {"format": STATE_FORMAT, "format_version": STATE_FORMAT_VERSION, "plan": plan.to_dict(), "stages": {}}
    entries = list(out_dir.iterdir()) if out_dir.is_dir() else []
    if not entries:
        out_dir.mkdir(parents=True, exist_ok=True)
        return fresh
    if not state_path.is_file() and not all(is_own_entry(p.name) for p in entries):
        raise UsageError(
            f"{out_dir} is not empty and holds no demo ({STATE_FILE} is missing); choose a new --out folder"
        )
    if overwrite:
        for entry in entries:
            if is_own_entry(entry.name):
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
        return fresh
    if not state_path.is_file():
        return fresh  # our own files from a run interrupted before the state was saved
    try:
        state = json.loads(state_path.read_text())
    except (OSError, ValueError) as error:
        raise UsageError(f"cannot read {state_path} ({error}); pass --overwrite to start the demo again") from None
    earlier = state.get("plan", {})
    if state.get("format") != STATE_FORMAT or earlier != plan.to_dict():
        changed = sorted(key for key in plan.to_dict() if earlier.get(key) != plan.to_dict()[key])
        raise UsageError(
            f"{out_dir} holds a demo with other settings ({', '.join(changed) or 'format'} differ); rerun with the "
            "same options to resume it, pass --overwrite to start over, or choose another --out"
        )
    state.setdefault("stages", {})
    return state


def save_state(out_dir: Path, state: dict[str, Any]) -> None:
    """Write ``demo.json`` atomically."""
    from cpcaudio.files import atomic_write_bytes

    text = json.dumps(state, indent=1) + "\n"
    atomic_write_bytes(out_dir / STATE_FILE, lambda file: file.write(text.encode()))


def mark_finished(out_dir: Path, state: dict[str, Any], stage: str, seconds: float) -> None:
    """Record ``stage`` as finished after ``seconds`` of wall time, and save the state."""
    state["stages"][stage] = {"seconds": round(seconds, 2), "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    save_state(out_dir, state)
