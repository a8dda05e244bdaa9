"""The demo's report: figures and the page's prose, from the stages' results.

:func:`build_report` draws the figures (training curves, probe accuracy bars, a map of utterance
embeddings) and describes the page (:class:`cpcaudio.report.html.Page`): the results table, how to read
it, the pretraining, the setup, the time per stage, the files and the command that reproduces the run.
:func:`accuracy_table` is the table :class:`cpcaudio.demo.DemoResult` returns.
"""

from __future__ import annotations

import math
import os
import platform
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from cpcaudio.demo.abx_units import report_part
from cpcaudio.demo.figures import accuracy_bars, training_curves, utterance_map
from cpcaudio.demo.plan import DemoPlan
from cpcaudio.demo.state import (
    ABX_DIR, DATA_DIR, FEATURES_DIR, FIGURES_DIR, RUN_DIR, STATE_FILE, UNITS_DIR, probe_dir_name,
)
from cpcaudio.report.html import Bullets, Code, Heading, Image, Page, Paragraph, Table

FEATURE_NAMES = {"model": "CPC (trained)", "random": "CPC (random init)", "mfcc": "MFCC", "logmel": "log-mel"}


def accuracy_table(reports: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    """``{"<task>/<protocol>": {"<features>": test accuracy}}`` from the probe reports of each task."""
    table: dict[str, dict[str, float]] = {}
    for task, report in reports.items():
        for result in report["results"]:
            table.setdefault(f"{task}/{result['protocol']}", {})[result["features"]] = float(result["accuracy"])
    return table


def repeated_fits(reports: dict[str, dict[str, Any]]) -> dict[tuple[str, str], str]:
    """``{("<task>/<protocol>", "<features>"): "<task>/<fitted protocol>"}`` for the results that repeat
    another protocol's fit on the same samples (``window-mean`` of the features that the ``window``
    protocol already averages: MFCC, log-mel, encoder features)."""
    return {
        (f"{task}/{result['protocol']}", result["features"]): f"{task}/{result['same_problem_as']}"
        for task, report in reports.items()
        for result in report["results"]
        if result.get("same_problem_as")
    }


@dataclass
class RunOutcome:
    """What the stages of a demo run produced: the inputs of its report.

    Attributes:
        out_dir: the demo folder.
        plan: the demo's plan.
        dataset_path, checkpoint: the prepared dataset and the trained model.
        reports: the probe report of each task (as in its ``results.json``).
        accuracy: :func:`accuracy_table` of ``reports``.
        stage_seconds: wall time of each stage.
        state: the demo state (its ``commands`` give the page's "Reproduce" block).
        abx_reports: the ``abx`` stage's reports (``{"abx": ..., "units": ...}``; empty without the stage).
    """

    out_dir: Path
    plan: DemoPlan
    dataset_path: Path
    checkpoint: Path
    reports: dict[str, dict[str, Any]]
    accuracy: dict[str, dict[str, float]]
    stage_seconds: dict[str, float]
    state: dict[str, Any]
    abx_reports: dict[str, dict[str, Any]] = field(default_factory=dict)


def build_report(outcome: RunOutcome) -> tuple[list[Path], Page]:
    """Draw the figures into ``OUT/figures`` and describe the report page.

    Returns:
        (every PNG the page shows, the page).
    """
    from cpcaudio.data import PreparedDataset
    from cpcaudio.extract import FeatureStore
    from cpcaudio.train import read_metrics

    out_dir, reports = outcome.out_dir, outcome.reports
    figures_dir = out_dir / FIGURES_DIR
    figures_dir.mkdir(parents=True, exist_ok=True)
    dataset = PreparedDataset.open(outcome.dataset_path)
    metrics = read_metrics(out_dir / RUN_DIR)
    figures = [
        training_curves(metrics, figures_dir / "training_curves.png"),
        accuracy_bars(outcome.accuracy, FEATURE_NAMES, _chance(reports), figures_dir / "probe_accuracy.png",
                      repeated=set(repeated_fits(reports))),
    ]
    store = FeatureStore.open(out_dir / FEATURES_DIR)
    embedding_path, silhouette = utterance_map(store, figures_dir / "utterance_map.png")
    figures.append(embedding_path)
    confusions = []
    for task, report in reports.items():
        for result in report["results"]:
            if result["features"] == "model":
                path = out_dir / probe_dir_name(task) / f"confusion_{result['protocol']}.png"
                if path.is_file():
                    confusions.append((task, result["protocol"], path))
    abx_figures, abx_blocks = report_part(outcome.abx_reports, FEATURE_NAMES, figures_dir, out_dir)
    page = _page(outcome, dataset, metrics, silhouette, confusions, abx_blocks)
    return figures + [path for _, _, path in confusions] + abx_figures, page


def _chance(reports: dict[str, dict[str, Any]]) -> dict[str, float]:
    chance = {}
    for task, report in reports.items():
        for result in report["results"]:
            chance[f"{task}/{result['protocol']}"] = float(result["majority_class_accuracy"])
    return chance


def _percent(value: Optional[float]) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{100 * value:.1f}%"


def _page(
    outcome: RunOutcome,
    dataset: Any,
    metrics: list[dict[str, Any]],
    silhouette: Optional[float],
    confusions: list[tuple[str, str, Path]],
    abx_blocks: list[Any],
) -> Page:
    from cpcaudio import __version__
    from cpcaudio.config import CPCConfig

    plan, reports, accuracy, stage_seconds = outcome.plan, outcome.reports, outcome.accuracy, outcome.stage_seconds
    config = CPCConfig.from_dict(plan.config)
    source = "the synthetic corpus" if plan.data is None else f"`{plan.data}`"
    page = Page(f"cpcaudio demo: CPC on {source if plan.data else 'a synthetic multi-speaker corpus'}")

    columns = list(accuracy)
    features = [name for name in FEATURE_NAMES if any(name in accuracy[c] for c in columns)]
    repeated = repeated_fits(reports)
    headline = []
    for column in columns:
        row = accuracy[column]
        if "model" in row:
            others = ", ".join(f"{FEATURE_NAMES[n]} {_percent(row[n])}" for n in features if n != "model" and n in row)
            headline.append(f"**{_column_title(column, config, reports)}**: CPC {_percent(row['model'])} ({others})")
    page.add(
        Paragraph(
            f"A CPC model was pretrained for {plan.steps} steps on {source}, its frozen context features were "
            "probed with a linear classifier, and the same probe was fitted on the same split to MFCC, log-mel "
            "and the same architecture with random weights. Test accuracy:"
        ),
        Bullets(headline),
        Heading("Results"),
        Table(
            ["features"] + [_column_title(c, config, reports) for c in columns],
            [[FEATURE_NAMES[n]] + [_cell(accuracy, repeated, c, n) for c in columns] for n in features]
            + [["majority class"] + [_percent(_chance(reports).get(c)) for c in columns]],
        ),
        *([Paragraph(_repeated_note(repeated, config, reports))] if repeated else []),
        Paragraph(_counts_sentence(reports, dataset)),
        Paragraph(_reading_notes(plan, reports)),
        Image("figures/probe_accuracy.png", "Probe test accuracy: the CPC model next to its baselines "
                "(dashed: majority class of the training samples)."),
    )
    for task, protocol, path in confusions:
        page.add(Image(path.relative_to(outcome.out_dir).as_posix(),
                         f"Confusion matrix of the CPC features, {task} probe ({protocol}), rows normalised.",
                         width=640))
    page.add(*abx_blocks)
    page.add(
        Heading("Pretraining"),
        Image("figures/training_curves.png", "InfoNCE loss and per-step prediction accuracy (the positive "
                f"among {config.predictor.num_negatives} negatives) over training steps; lines: training "
                "batches, dots: validation windows."),
        Paragraph(_training_sentence(metrics, config)),
        Heading("Utterance embeddings"),
        Image("figures/utterance_map.png", "Utterances (mean of the CPC context features over time) projected "
                "on their first two principal components, coloured by speaker; circles: train, crosses: test."
                + ("" if silhouette is None else f" Silhouette score of the speakers in the full feature space: "
                   f"{silhouette:.2f}.")),
    )
    timings = [[name, f"{seconds:.0f} s"] for name, seconds in stage_seconds.items()]
    timings.append(["total (without this report)", f"{sum(stage_seconds.values()):.0f} s"])
    page.add(
        Heading("Setup"),
        Table(["", ""], _setup_rows(plan, dataset, outcome.checkpoint, config, __version__), align=["l", "l"]),
        Heading("Time per stage"),
        Table(["stage", "wall time"], timings),
        Paragraph("Times come from the invocation that ran each stage; a resumed demo keeps the earlier ones."),
        Heading("Files"),
        Code(_files_listing(plan, reports, bool(outcome.abx_reports))),
        Heading("Reproduce"),
        Code("\n".join(outcome.state.get("commands", [])[:1]) or "cpcaudio demo"),
        Paragraph(
            "The same seed and time budget give the same numbers: the number of training steps is derived "
            "from the budget with a fixed reference speed, windows and negatives are drawn from seeded "
            "generators, and the probes are seeded."
        ),
    )
    return page


def _cell(accuracy: dict[str, dict[str, float]], repeated: dict[tuple[str, str], str], column: str, name: str) -> str:
    """The table cell of features ``name`` in ``column``; ``*`` marks a value that repeats another column's fit."""
    return _percent(accuracy[column].get(name)) + ("*" if (column, name) in repeated else "")


def _repeated_note(repeated: dict[tuple[str, str], str], config: Any, reports: dict[str, dict[str, Any]]) -> str:
    """The footnote of the ``*`` cells: which features, and which column's probe they repeat."""
    parts = []
    for column, fitted in dict.fromkeys((c, f) for (c, _), f in repeated.items()):
        names = [FEATURE_NAMES.get(n, n) for (c, n) in repeated if c == column]
        parts.append(
            f"{', '.join(names)} in \"{_column_title(column, config, reports)}\" repeat \""
            f"{_column_title(fitted, config, reports)}\""
        )
    return (
        "*: " + "; ".join(parts) + ": for these features the window vector already is the mean over the window's "
        "frames, so both columns are the same probe, fitted once."
    )


def _reading_notes(plan: DemoPlan, reports: dict[str, dict[str, Any]]) -> str:
    notes = ["How to read it: a linear probe measures what the frozen features make linearly separable."]
    if "speaker" in reports:
        notes.append(
            "The window-level speaker probe follows CPC_audio: each window is encoded alone and its **last** "
            "context frame is the window's vector (MFCC and log-mel are averaged over the window's frames), so it "
            "asks the context to carry the speaker at every instant. The window-mean column pools the same "
            "windows by the **mean** over their frames, as SUPERB's speaker identification does; the "
            "utterance-level probe averages over the whole utterance."
        )
    if plan.data is None:
        notes.append(
            "Log-mel energies are a strong baseline on synthetic voices, whose spectral envelopes differ by "
            "construction."
        )
    return " ".join(notes)


def _column_title(column: str, config: Any, reports: dict[str, dict[str, Any]]) -> str:
    task, _, protocol = column.partition("/")
    label = str(reports.get(task, {}).get("label") or task)  # e.g. "digit" for the class task on FSDD
    window = config.data.window_size / config.data.sample_rate
    titles = {
        "phone/frame": "phone (per frame)",
        "speaker/window": f"speaker (per {window:g} s window, last frame)",
        "speaker/window-mean": f"speaker (per {window:g} s window, mean)",
        "speaker/utterance": "speaker (per utterance)",
        "class/utterance": f"{label} (per utterance)",
        "class/utterance-svm": f"{label} (RBF-SVM, TS2Vec protocol)",
    }
    return titles.get(column, f"{label} ({protocol})")


def _counts_sentence(reports: dict[str, dict[str, Any]], dataset: Any) -> str:
    parts = []
    for task, report in reports.items():
        seen = set()
        for result in report["results"]:
            if result["protocol"] in seen:
                continue
            seen.add(result["protocol"])
            counts = result["counts"]
            parts.append(
                f"{task}/{result['protocol']}: {counts['train_samples']} training and {counts['test_samples']} test "
                f"samples, {counts['classes']} classes"
            )
    rule = dataset.meta.get("split_rule") or "the dataset's train/test split"
    return (
        "Probe sizes: " + "; ".join(parts) + f". Train and test come from the dataset's split ({rule}); the "
        "probe's L2 penalty is chosen on a validation part of train."
    )


def _training_sentence(metrics: list[dict[str, Any]], config: Any) -> str:
    train = [m for m in metrics if m.get("kind") == "train"]
    valid = [m for m in metrics if m.get("kind") == "valid"]
    if not train:
        return "No training metrics were logged."
    first, last = train[0], train[-1]
    k = config.predictor.num_steps
    text = (
        f"Training loss {first['loss']:.3f} at step {first['step']} -> {last['loss']:.3f} at step {last['step']} "
        f"(chance: ln({config.predictor.num_negatives + 1}) = {math.log(config.predictor.num_negatives + 1):.3f}); "
        f"step-1 accuracy {100 * first['accuracy'][0]:.1f}% -> {100 * last['accuracy'][0]:.1f}%, step-{k} "
        f"{100 * first['accuracy'][-1]:.1f}% -> {100 * last['accuracy'][-1]:.1f}%."
    )
    if valid:
        text += (
            f" Validation at step {valid[-1]['step']}: loss {valid[-1]['loss']:.3f}, step-1 accuracy "
            f"{100 * valid[-1]['accuracy'][0]:.1f}%."
        )
    seconds = sum(m.get("seconds", 0.0) for m in train)
    audio = sum(m.get("audio_seconds", 0.0) for m in train)
    if seconds > 0:
        text += f" Throughput {audio / seconds:.1f} seconds of audio per second."
    return text


def _setup_rows(
    plan: DemoPlan, dataset: Any, checkpoint: Path, config: Any, version: str
) -> list[list[str]]:
    import torch

    hours = float(np.sum(dataset.lengths)) / dataset.sample_rate / 3600
    train = dataset.indices("train")
    test = dataset.indices("test")
    source = (
        f"synthetic (eSpeak NG voices), {plan.num_speakers} speakers, seed {plan.seed}"
        if plan.data is None else plan.data
    )
    rows = [
        ["dataset", source],
        ["size", f"{len(dataset)} utterances ({len(train)} train, {len(test)} test), {len(set(dataset.speakers))} "
                 f"speakers, {60 * hours:.1f} min at {dataset.sample_rate} Hz"],
        ["model", f"encoder {config.encoder.hidden_dim} channels (strides {list(config.encoder.strides)}), "
                  f"{config.context.kind.upper()} {config.context.hidden_dim}, K = {config.predictor.num_steps}, "
                  f"{config.predictor.num_negatives} negatives ({config.data.sampler} batches)"],
        ["training", f"{plan.steps} steps of {config.data.batch_size} x {config.data.window_size} samples, Adam lr "
                     f"{config.optim.learning_rate:g} ({config.optim.warmup_steps} warm-up steps, "
                     f"{config.optim.schedule}), seed {plan.seed}; budget {plan.minutes:g} min, preset {plan.preset}"],
        ["checkpoint", f"`{checkpoint}`"],
        ["machine", _machine()],
        ["software", f"cpcaudio {version}{_commit()}, torch {torch.__version__}, Python {platform.python_version()}"],
    ]
    return rows


def _machine() -> str:
    import torch

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    text = (
        f"{platform.system()} {platform.machine()}{_cpu_name()}, {cores} CPU cores, "
        f"torch threads {torch.get_num_threads()}"
    )
    if torch.cuda.is_available():
        text += f", GPU {torch.cuda.get_device_name(0)}"
    return text


def _cpu_name() -> str:
    """`` (<CPU model>)`` from /proc/cpuinfo on Linux, else the platform's processor string, or empty."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return f" ({line.split(':', 1)[1].strip()})"
    except OSError:
        pass
    return f" ({platform.processor()})" if platform.processor() else ""


def _commit() -> str:
    """`` (commit abc1234)`` when the package runs from a git checkout, else empty."""
    try:
        completed = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).resolve().parent, capture_output=True,
            text=True, timeout=5, check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    commit = completed.stdout.strip()
    return f" (commit {commit})" if completed.returncode == 0 and commit else ""


def _files_listing(plan: DemoPlan, reports: dict[str, dict[str, Any]], abx: bool) -> str:
    lines = [
        f"{STATE_FILE:<22} the plan (every setting) and the finished stages",
    ]
    if plan.data is None:
        lines.append(f"{DATA_DIR + '/':<22} the prepared synthetic corpus (cpcaudio info {DATA_DIR})")
    lines += [
        f"{RUN_DIR + '/':<22} last.pt, best.pt, metrics.jsonl, tensorboard/, config.yaml",
        f"{FEATURES_DIR + '/':<22} context features of every utterance (feature store)",
    ]
    for task in reports:
        lines.append(f"{probe_dir_name(task) + '/':<22} results.json, results.md, accuracy.png, confusion_*.png")
    if abx:
        lines.append(f"{ABX_DIR + '/':<22} results.json, results.md, abx.png (cpcaudio abx)")
        lines.append(f"{UNITS_DIR + '/':<22} results.json, results.md, pnmi.png, one folder of k-means and units "
                     "per features (cpcaudio units)")
    lines.append(f"{FIGURES_DIR + '/':<22} the figures of this page")
    return "\n".join(lines)
