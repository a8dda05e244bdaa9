"""Probe reports on disk: ``results.json`` and the Markdown table ``results.md`` (plus the plots of
:mod:`cpcaudio.report.plots`), written by :func:`write_report`."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Union

from cpcaudio.files import atomic_write_bytes

PathLike = Union[str, Path]


def percent(value: float) -> str:
    """``0.363`` as ``36.3%`` (``n/a`` for None or NaN)."""
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.1f}%"


def protocols(report: dict[str, Any]) -> list[str]:
    """The report's protocols, in the order of its results."""
    seen: list[str] = []
    for result in report["results"]:
        if result["protocol"] not in seen:
            seen.append(result["protocol"])
    return seen


def markdown_table(report: dict[str, Any]) -> str:
    """The report as Markdown: a header naming dataset, task and model, then one table per protocol with
    the model first and the baselines below it; a row that repeats another protocol's fit (the same
    samples, ``same_problem_as``) says so in its probe column and below the table."""
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
    for protocol in protocols(report):
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
            probe = row["probe"] + (f" (= {row['same_problem_as']})" if row.get("same_problem_as") else "")
            lines.append(
                f"| {row['features']} | {probe} | {percent(row['accuracy'])} | "
                f"{percent(row['balanced_accuracy'])} | {percent(row['macro_f1'])} | "
                f"{percent(row['train_accuracy'])} | {counts['train_samples']} / {counts['test_samples']} | "
                f"{counts['classes']} |"
            )
        lines.append("")
        lines.append(
            f"Majority class of train: {percent(rows[0]['majority_class_accuracy'])} of the test samples; "
            f"uniform chance {percent(1.0 / max(rows[0]['counts']['classes'], 1))}."
        )
        same = [row for row in rows if row.get("same_problem_as")]
        if same:
            lines.append(
                f"{', '.join(row['features'] for row in same)}: the same samples as the "
                f"{same[0]['same_problem_as']} protocol (its window vector already is the mean over the window's "
                "frames), so that probe was fitted once and is reported under both."
            )
        excluded = {k: v for k, v in rows[0]["counts"].get("excluded", {}).items() if v}
        if excluded:
            lines.append(f"Left out of the test: {excluded}.")
    if report.get("verification"):
        lines += verification_lines(report["verification"])
    return "\n".join(lines) + "\n"


def verification_lines(section: dict[str, Any]) -> list[str]:
    """The speaker-verification section of ``results.md``: EER and minDCF of every feature source."""
    cost = section["min_dcf"]
    trials = section["trials"]
    lines = [
        "",
        "## verification: cosine scores of utterance embeddings (no training)",
        "",
        f"| features | EER | minDCF (P_target {cost['p_target']:g}) | target / non-target trials | "
        "mean score target / non-target |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in section["results"]:
        dcf = "n/a" if row["min_dcf"] is None else f"{row['min_dcf']:.3f}"
        means = (f"{row['mean_target_score']:.3f} / {row['mean_nontarget_score']:.3f}"
                 if "mean_target_score" in row else "n/a")
        lines.append(
            f"| {row['features']} | {percent(row['eer'])} | {dcf} | {row['target_trials']} / "
            f"{row['nontarget_trials']} | {means} |"
        )
    lines += [
        "",
        f"Embedding: {section['embedding']}. Score: {section['scoring']}. Trials: {trials['note']}; "
        f"{trials['rule']} (seed {trials['seed']}). EER: {section['eer']}. minDCF: "
        f"C_miss {cost['c_miss']:g}, C_fa {cost['c_fa']:g}, normalised by the best trivial system (1.0: no better "
        "than accepting or rejecting every trial).",
    ]
    return lines


def write_report(report: dict[str, Any], out: PathLike) -> list[Path]:
    """Write ``results.json``, ``results.md``, ``accuracy.png``, ``confusion_<protocol>.png`` and (speaker
    verification) ``det.png`` into ``out``.

    Args:
        report: the dict returned by :func:`cpcaudio.evaluate.run_probe`.
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
    from cpcaudio.report.plots import write_plots  # (matplotlib only when plots are written)

    written += write_plots(report, out)
    return written
