"""Reports on disk: a probe's ``results.json``, ``results.md`` and plots (:mod:`.tables`, :mod:`.plots`),
and the demo's page in Markdown and HTML (:mod:`.html`)."""

from __future__ import annotations

import importlib
from typing import Any

# Temporary: the names of the former module ``cpcaudio/report.py``, until imports use the submodules.
_MOVED = {
    "PathLike": "tables",
    "markdown_table": "tables",
    "write_report": "tables",
    "_percent": ("tables", "percent"),
    "_protocols": ("tables", "protocols"),
    "_accuracy_figure": "plots",
    "_confusion_figure": "plots",
    "_save_figure": ("html", "save_figure"),
}


def __getattr__(name: str) -> Any:
    if name not in _MOVED:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    where = _MOVED[name]
    module, attribute = where if isinstance(where, tuple) else (where, name)
    return getattr(importlib.import_module(f"{__name__}.{module}"), attribute)
