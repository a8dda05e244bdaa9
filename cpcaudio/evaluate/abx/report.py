"""An ABX report on disk: ``results.json``, ``results.md`` (one table) and ``abx.png`` (a bar plot).

Files are replaced atomically; the plot is drawn on matplotlib's Agg canvas (no display needed).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Union

import numpy as np

from cpcaudio.errors import UsageError
from cpcaudio.files import atomic_write_bytes

PathLike = Union[str, Path]


def json_safe(value: Any) -> Any:
    """``value`` with NaN and infinite floats replaced by None (strict JSON), recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    return value


def check_report_dir(out: Any, overwrite: bool, what: str) -> None:
    """Refuse, before any work, an ``out`` that cannot be a folder or already holds a report (``what``).

    Nothing is checked when ``out`` is None (no report written).
    """
    if out is None:
        return
    from cpcaudio.resources import check_output_dir

    check_output_dir(Path(out), "report directory")
    if (Path(out) / "results.json").exists() and not overwrite:
        raise UsageError(f"{out} already holds {what} (results.json); pass --overwrite to replace it")


def write_text(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, lambda file: file.write(text.encode("utf-8")))


def write_json(path: Path, value: Any) -> None:
    """Write ``value`` as strict, indented JSON to ``path`` atomically."""
    write_text(path, json.dumps(json_safe(value), indent=1, allow_nan=False) + "\n")


def error_text(error: Any) -> str:
    """An error fraction as a percentage with two decimals, or ``n/a``."""
    if error is None or (isinstance(error, float) and not math.isfinite(error)):
        return "n/a"
    return f"{100 * float(error):.2f}"


def columns(results: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """The (speaker mode, context mode) pairs of ``results``, in order of appearance."""
    return list(dict.fromkeys((r["speaker_mode"], r["context_mode"]) for r in results))


def markdown_table(report: dict[str, Any]) -> str:
    """The ABX error rates (%) as a Markdown table: one row per features, one column per mode."""
    results = report["results"]
    modes = columns(results)
    header = ["features"] + [f"{speaker} spk / {context} ctx" for speaker, context in modes]
    items = report["items"]
    lines = [
        f"ABX error rate (%, lower is better) on {report['dataset']['path']} "
        f"({items['count']} items, {items['phones']} phones, {items['speakers']} speakers; "
        f"slicing {report['settings']['slicing']}).",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] + ["---:"] * len(modes)) + "|",
    ]
    for name in dict.fromkeys(r["features"] for r in results):
        cells = [name]
        for speaker, context in modes:
            row = [r for r in results
                   if r["features"] == name and (r["speaker_mode"], r["context_mode"]) == (speaker, context)]
            cells.append(error_text(row[0]["error"]) if row else "")
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    for name, description in report.get("features", {}).items():
        lines.append(f"- `{name}`: {description}")
    return "\n".join(lines) + "\n"


def bar_figure(report: dict[str, Any], title: str = "ABX error") -> Any:
    """Grouped bars: one group per mode, one bar per features."""
    from matplotlib.figure import Figure

    results = report["results"]
    modes = columns(results)
    names = list(dict.fromkeys(r["features"] for r in results))
    figure = Figure(figsize=(max(4.5, 1.3 * len(modes) * max(1, len(names)) / 2 + 2.5), 3.6))
    axes = figure.add_subplot(1, 1, 1)
    width = 0.8 / max(1, len(names))
    colors = ["tab:red", "tab:blue", "tab:green", "tab:gray", "tab:purple", "tab:orange", "tab:brown", "tab:olive"]
    for k, name in enumerate(names):
        values = []
        for mode in modes:
            row = [r for r in results if r["features"] == name and (r["speaker_mode"], r["context_mode"]) == mode]
            error = row[0]["error"] if row else None
            values.append(np.nan if error is None or not math.isfinite(error) else 100 * error)
        positions = np.arange(len(modes)) + (k - (len(names) - 1) / 2) * width
        bars = axes.bar(positions, values, width, label=name, color=colors[k % len(colors)])
        axes.bar_label(bars, fmt="%.1f", fontsize=7)
    axes.set_xticks(np.arange(len(modes)), [f"{s} speaker\n{c} context" for s, c in modes])
    axes.set_ylabel("ABX error (%)")
    axes.set_title(title)
    axes.legend(fontsize=8)
    figure.tight_layout()
    return figure


def save_figure(figure: Any, path: Path) -> None:
    """Render ``figure`` to a PNG at ``path`` atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figure)
    atomic_write_bytes(path, lambda file: figure.savefig(file, format="png", dpi=120))


def write_report(report: dict[str, Any], out: PathLike) -> list[Path]:
    """Write ``results.json``, ``results.md`` and ``abx.png`` into ``out`` (created if missing).

    Returns:
        The paths written.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "results.json", report)
    write_text(out / "results.md", markdown_table(report))
    save_figure(bar_figure(report), out / "abx.png")
    return [out / "results.json", out / "results.md", out / "abx.png"]
