"""The plots of a probe report, drawn with matplotlib's Agg canvas directly (no global backend switch, no
display needed):

* ``accuracy.png``: test accuracy of the model next to every baseline, one group of bars per protocol,
  with the majority-class accuracy as a dashed line (hatched bars repeat another protocol's fit on the
  same samples, ``same_problem_as``);
* ``confusion_<protocol>.png``: the model's confusion matrix per protocol, rows normalised to recall (none
  for a protocol that repeats another's fit, ``same_problem_as``: that protocol's matrix is the one);
* ``det.png`` (speaker task): the DET curve of the verification trials, one curve per feature source,
  false-rejection against false-acceptance rate on normal-deviate axes, each source's EER marked.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from cpcaudio.evaluate.verification import verification_of
from cpcaudio.report.html import save_figure
from cpcaudio.report.tables import percent, protocols as report_protocols

DPI = 120
COLORS = ["tab:red", "tab:blue", "tab:green", "tab:gray", "tab:purple", "tab:orange"]
DET_TICKS = (0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 0.95)  # error rates on the DET axes
DET_CLIP = 0.0005  # error rates of 0 (or 1) drawn at this distance from the edge (the normal deviate is infinite)


def _accuracy_figure(report: dict[str, Any]) -> Any:
    from matplotlib.figure import Figure

    protocols = report_protocols(report)
    features = list(dict.fromkeys(r["features"] for r in report["results"]))
    figure = Figure(figsize=(max(4.0, 1.6 * len(protocols) * max(1, len(features)) / 2 + 2), 3.6))
    axes = figure.add_subplot(1, 1, 1)
    width = 0.8 / max(1, len(features))
    colors = COLORS
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


def _normal_deviate(rates: Any) -> np.ndarray:
    """Probit of error rates (the DET axes), clipped to [DET_CLIP, 1 - DET_CLIP]."""
    from statistics import NormalDist

    clipped = np.clip(np.asarray(rates, dtype=np.float64), DET_CLIP, 1.0 - DET_CLIP)
    return np.array([NormalDist().inv_cdf(float(p)) for p in clipped.ravel()]).reshape(clipped.shape)


def _det_figure(section: dict[str, Any], title: str) -> Any:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(5.0, 4.6))
    axes = figure.add_subplot(1, 1, 1)
    for k, row in enumerate(r for r in section["results"] if r.get("det")):
        color = COLORS[k % len(COLORS)]
        far, frr = row["det"]["false_alarm"], row["det"]["miss"]
        axes.plot(_normal_deviate(far), _normal_deviate(frr), color=color,
                  label=f"{row['features']} (EER {percent(row['eer'])}, minDCF {row['min_dcf']:.3f})")
        eer = _normal_deviate(row["eer"])
        axes.plot([eer], [eer], "o", color=color, markersize=4)
    limits = _normal_deviate([DET_TICKS[0], DET_TICKS[-1]])
    axes.plot(limits, limits, color="black", linestyle="dashed", linewidth=0.8)  # FAR = FRR
    ticks = _normal_deviate(DET_TICKS)
    labels = [f"{100 * p:g}" for p in DET_TICKS]
    axes.set_xticks(ticks, labels, fontsize=7)
    axes.set_yticks(ticks, labels, fontsize=7)
    axes.set_xlim(*limits)
    axes.set_ylim(*limits)
    axes.set_xlabel("false acceptance rate (%)")
    axes.set_ylabel("false rejection rate (%)")
    axes.set_title(title, fontsize=9)
    axes.grid(True, linewidth=0.3)
    axes.legend(fontsize=7, loc="upper right")
    figure.tight_layout()
    return figure


def write_plots(report: dict[str, Any], out: Path) -> list[Path]:
    """Write ``accuracy.png``, the model's ``confusion_<protocol>.png`` and, when the report has
    verification results with an EER, ``det.png`` into the directory ``out``.

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
    section = verification_of(report)
    if section is not None:
        trials = section["trials"]
        title = f"speaker verification (cosine): {trials['target']} target / {trials['nontarget']} non-target trials"
        written.append(save_figure(_det_figure(section, title), out / "det.png", dpi=DPI))
    return written
