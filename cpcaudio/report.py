"""Probe reports on disk: ``results.json``, a Markdown table (``results.md``) and PNG plots.

Plots are drawn with matplotlib's Agg canvas directly (no global backend switch, no display needed):

* ``accuracy.png``: test accuracy of the model next to every baseline, one group of bars per protocol,
  with the majority-class accuracy as a dashed line;
* ``confusion_<protocol>.png``: the model's confusion matrix per protocol, rows normalised to recall.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Union

import numpy as np

from cpcaudio.checkpoint import atomic_write_bytes

PathLike = Union[str, Path]


def _percent(value: float) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.1f}%"


def _protocols(report: dict[str, Any]) -> list[str]:
    seen: list[str] = []
    for result in report["results"]:
        if result["protocol"] not in seen:
            seen.append(result["protocol"])
    return seen


def markdown_table(report: dict[str, Any]) -> str:
    """The report as Markdown: a header naming dataset, task and model, then one table per protocol with
    the model first and the baselines below it."""
    dataset = report["dataset"]
    lines = [
        f"# Probe: {report['task']} ({report['label']}) on {dataset['path']}",
        "",
        f"- model: {report['model']['description']}",
    ]
    for name, description in report["features"].items():
        if name != "model":
            lines.append(f"- {name}: {description}")
    lines.append(
        f"- split: {len(report['split']['train'])} train / {len(report['split']['test'])} test utterances"
        f" ({len(report['split']['unused'])} unused); seed {report['seeds']['seed']}"
    )
    if report["model"]["random_init"]:
        lines.append("- note: no checkpoint was given, so the 'model' row is an untrained, randomly initialised CPC")
    for protocol in _protocols(report):
        rows = [r for r in report["results"] if r["protocol"] == protocol]
        lines += [
            "",
            f"## {protocol}: {report['protocols'].get(protocol, '')}",
            "",
            "| features | probe | accuracy | balanced accuracy | macro-F1 | train accuracy | train / test samples | classes |",
            "|---|---|---:|---:|---:|---:|---:|---:|",
        ]
        for row in rows:
            counts = row["counts"]
            lines.append(
                f"| {row['features']} | {row['probe']} | {_percent(row['accuracy'])} | "
                f"{_percent(row['balanced_accuracy'])} | {_percent(row['macro_f1'])} | "
                f"{_percent(row['train_accuracy'])} | {counts['train_samples']} / {counts['test_samples']} | "
                f"{counts['classes']} |"
            )
        lines.append("")
        lines.append(
            f"Majority class of train: {_percent(rows[0]['majority_class_accuracy'])} of the test samples; "
            f"uniform chance {_percent(1.0 / max(rows[0]['counts']['classes'], 1))}."
        )
        excluded = {k: v for k, v in rows[0]["counts"].get("excluded", {}).items() if v}
        if excluded:
            lines.append(f"Left out of the test: {excluded}.")
    return "\n".join(lines) + "\n"


def _accuracy_figure(report: dict[str, Any]) -> Any:
    from matplotlib.figure import Figure

    protocols = _protocols(report)
    features = list(dict.fromkeys(r["features"] for r in report["results"]))
    figure = Figure(figsize=(max(4.0, 1.6 * len(protocols) * max(1, len(features)) / 2 + 2), 3.6))
    axes = figure.add_subplot(1, 1, 1)
    width = 0.8 / max(1, len(features))
    colors = ["tab:red", "tab:blue", "tab:green", "tab:gray", "tab:purple", "tab:orange"]
    for k, name in enumerate(features):
        values = []
        for protocol in protocols:
            match = [r for r in report["results"] if r["features"] == name and r["protocol"] == protocol]
            values.append(100 * match[0]["accuracy"] if match else np.nan)
        positions = np.arange(len(protocols)) + (k - (len(features) - 1) / 2) * width
        bars = axes.bar(positions, values, width, label=name, color=colors[k % len(colors)])
        axes.bar_label(bars, fmt="%.0f", fontsize=7)
    for p, protocol in enumerate(protocols):
        majority = [r for r in report["results"] if r["protocol"] == protocol][0]["majority_class_accuracy"]
        axes.hlines(100 * majority, p - 0.45, p + 0.45, colors="black", linestyles="dashed", linewidth=1)
    axes.set_xticks(np.arange(len(protocols)), protocols)
    axes.set_ylabel("test accuracy (%)")
    axes.set_ylim(0, 105)
    axes.set_title(f"{report['task']} probe: model vs baselines (dashed: majority class)", fontsize=9)
    axes.legend(fontsize=7, loc="upper right")
    figure.tight_layout()
    return figure


def _confusion_figure(result: dict[str, Any], title: str) -> Any:
    from matplotlib.figure import Figure

    matrix = np.asarray(result["confusion_matrix"], dtype=np.float64)
    totals = matrix.sum(axis=1, keepdims=True)
    normalised = np.divide(matrix, totals, out=np.zeros_like(matrix), where=totals > 0)
    labels = result["labels"]
    size = min(14.0, max(4.0, 0.22 * len(labels) + 2.5))
    figure = Figure(figsize=(size, size * 0.9))
    axes = figure.add_subplot(1, 1, 1)
    image = axes.imshow(normalised, vmin=0.0, vmax=1.0, cmap="Blues")
    font = 8 if len(labels) <= 20 else 5
    axes.set_xticks(np.arange(len(labels)), labels, rotation=90, fontsize=font)
    axes.set_yticks(np.arange(len(labels)), labels, fontsize=font)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(title, fontsize=9)
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04, label="fraction of the true class")
    figure.tight_layout()
    return figure


def _save_figure(figure: Any, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figure)
    atomic_write_bytes(path, lambda file: figure.savefig(file, format="png", dpi=120))


def write_report(report: dict[str, Any], out: PathLike) -> list[Path]:
    """Write ``results.json``, ``results.md``, ``accuracy.png`` and ``confusion_<protocol>.png`` into ``out``.

    Args:
        report: the dict returned by :func:`cpcaudio.probe.run_probe`.
        out: output directory (created if missing); existing report files are replaced atomically.

    Returns:
        The paths written.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    text = json.dumps(report, indent=1, allow_nan=False) + "\n"
    atomic_write_bytes(out / "results.json", lambda file: file.write(text.encode()))
    written.append(out / "results.json")
    table = markdown_table(report)
    atomic_write_bytes(out / "results.md", lambda file: file.write(table.encode()))
    written.append(out / "results.md")
    _save_figure(_accuracy_figure(report), out / "accuracy.png")
    written.append(out / "accuracy.png")
    for result in report["results"]:
        if result["features"] != "model":
            continue
        path = out / f"confusion_{result['protocol']}.png"
        title = (
            f"model, {report['task']} / {result['protocol']}: accuracy {_percent(result['accuracy'])}"
        )
        _save_figure(_confusion_figure(result, title), path)
        written.append(path)
    return written
