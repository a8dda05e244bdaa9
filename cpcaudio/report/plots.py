"""The plots of a probe report, drawn with matplotlib's Agg canvas directly (no global backend switch, no
display needed):

* ``accuracy.png``: test accuracy of the model next to every baseline, one group of bars per protocol,
  with the majority-class accuracy as a dashed line (hatched bars repeat another protocol's fit on the
  same samples, ``same_problem_as``);
* ``confusion_<protocol>.png``: the model's confusion matrix per protocol, rows normalised to recall (none
  for a protocol that repeats another's fit, ``same_problem_as``: that protocol's matrix is the one).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from cpcaudio.report.html import save_figure
from cpcaudio.report.tables import percent, protocols as report_protocols

DPI = 120


def _accuracy_figure(report: dict[str, Any]) -> Any:
    from matplotlib.figure import Figure

    protocols = report_protocols(report)
    features = list(dict.fromkeys(r["features"] for r in report["results"]))
    figure = Figure(figsize=(max(4.0, 1.6 * len(protocols) * max(1, len(features)) / 2 + 2), 3.6))
    axes = figure.add_subplot(1, 1, 1)
    width = 0.8 / max(1, len(features))
    colors = ["tab:red", "tab:blue", "tab:green", "tab:gray", "tab:purple", "tab:orange"]
    repeated = False
    for k, name in enumerate(features):
        values, same = [], []
        for protocol in protocols:
            match = [r for r in report["results"] if r["features"] == name and r["protocol"] == protocol]
            values.append(100 * match[0]["accuracy"] if match else np.nan)
            same.append(bool(match and match[0].get("same_problem_as")))
        positions = np.arange(len(protocols)) + (k - (len(features) - 1) / 2) * width
        bars = axes.bar(positions, values, width, label=name, color=colors[k % len(colors)])
        for bar, is_same in zip(bars, same):
            if is_same:  # the same fit as another protocol (e.g. window-mean of mean-pooled features)
                bar.set_hatch("//")
                repeated = True
        axes.bar_label(bars, fmt="%.0f", fontsize=7)
    for p, protocol in enumerate(protocols):
        majority = [r for r in report["results"] if r["protocol"] == protocol][0]["majority_class_accuracy"]
        axes.hlines(100 * majority, p - 0.45, p + 0.45, colors="black", linestyles="dashed", linewidth=1)
    axes.set_xticks(np.arange(len(protocols)), protocols)
    axes.set_ylabel("test accuracy (%)")
    axes.set_ylim(0, 105)
    hatched = "; hatched: the same fit as another protocol" if repeated else ""
    axes.set_title(f"{report['task']} probe: model vs baselines (dashed: majority class{hatched})", fontsize=9)
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


def write_plots(report: dict[str, Any], out: Path) -> list[Path]:
    """Write ``accuracy.png`` and the model's ``confusion_<protocol>.png`` into the directory ``out``.

    Returns:
        The paths written.
    """
    written = [save_figure(_accuracy_figure(report), out / "accuracy.png", dpi=DPI)]
    for result in report["results"]:
        if result["features"] != "model" or result.get("same_problem_as"):  # (that protocol's matrix)
            continue
        path = out / f"confusion_{result['protocol']}.png"
        title = f"model, {report['task']} / {result['protocol']}: accuracy {percent(result['accuracy'])}"
        written.append(save_figure(_confusion_figure(result, title), path, dpi=DPI))
    return written
