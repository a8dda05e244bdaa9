"""``run_demo``: the stages in order, each skipped when an earlier run finished it, then the report."""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

from cpcaudio.demo.abx_units import STAGE as ABX_STAGE
from cpcaudio.demo.abx_units import abx_table, pnmi_table, runs_abx, stage_abx
from cpcaudio.demo.page import FEATURE_NAMES, RunOutcome, accuracy_table, build_report
from cpcaudio.demo.plan import DemoPlan, inspect_dataset, make_plan
from cpcaudio.demo.presets import SIZES
from cpcaudio.demo.stages import (
    DemoEvent, Emitter, ProgressCallback, stage_data, stage_extract, stage_probe, stage_train,
)
from cpcaudio.demo.state import REPORT_STEM, mark_finished, open_state, save_state
from cpcaudio.errors import UsageError
from cpcaudio.report.html import write_page

PathLike = Union[str, os.PathLike]


@dataclass
class DemoResult:
    """What :func:`run_demo` returns.

    Attributes:
        out_dir: the demo folder.
        report_markdown, report_html: the report pages.
        figures: PNG files the report shows.
        dataset: the prepared dataset used.
        checkpoint: the trained model (``run/last.pt``).
        accuracy: ``{"<task>/<protocol>": {"model": acc, "random": acc, "mfcc": acc, "logmel": acc}}``
            test accuracies in [0, 1].
        abx: ``{"within spk / within ctx": {"model": error, ...}, ...}`` ABX errors in [0, 1] on the test
            split (empty when the dataset has no phone alignments).
        pnmi: ``{"model": PNMI, ...}`` of the k-means units on the test split, in [0, 1].
        stage_seconds: wall time of each stage (from the invocation that ran it).
        skipped: stages that were already done and were skipped by this call.
        plan: the settings.
    """

    out_dir: Path
    report_markdown: Path
    report_html: Path
    figures: list[Path]
    dataset: Path
    checkpoint: Path
    accuracy: dict[str, dict[str, float]]
    stage_seconds: dict[str, float]
    skipped: list[str]
    plan: DemoPlan
    abx: dict[str, dict[str, float]] = field(default_factory=dict)
    pnmi: dict[str, float] = field(default_factory=dict)

    def table(self) -> str:
        """The accuracies as a plain-text table (features as rows, task/protocol as columns), then the ABX
        errors (modes as columns) and the units' PNMI, where the demo has them."""
        text = _text_table(self.accuracy, lambda column, v: f"{100 * v:.1f}%")
        if self.abx:
            text += "\n\nABX error (speaker mode/context mode; lower is better) and PNMI of the k-means units:\n"
            columns = {mode.replace(" spk / ", "/").replace(" ctx", ""): row for mode, row in self.abx.items()}
            text += _text_table({**columns, "PNMI": self.pnmi},
                                lambda column, v: f"{v:.3f}" if column == "PNMI" else f"{100 * v:.1f}%", width=13)
        return text


def _text_table(columns: dict[str, dict[str, float]], cell: Any, width: int = 16) -> str:
    """Features as rows (the report's names and order), one column per entry of ``columns``; ``cell(column,
    value)`` writes a value, ``-`` stands where a feature set has none."""
    features = [name for name in FEATURE_NAMES if any(name in values for values in columns.values())]
    first = max(len(FEATURE_NAMES[name]) for name in features) if features else 8
    lines = [f"{'features':<{first}}  " + "  ".join(f"{c:>{width}}" for c in columns)]
    for name in features:
        cells = [("-" if name not in values else cell(column, values[name])) for column, values in columns.items()]
        lines.append(f"{FEATURE_NAMES[name]:<{first}}  " + "  ".join(f"{c:>{width}}" for c in cells))
    return "\n".join(lines)


def _check_integer(value: Any, option: str, minimum: int, expected: str) -> None:
    """Raise a UsageError unless ``value`` is an int (not a bool) of at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UsageError(f"--{option} must be {expected}, got {value!r}")


def run_demo(
    out_dir: PathLike,
    *,
    minutes: Optional[float] = None,
    data: Optional[PathLike] = None,
    device: Optional[str] = None,
    seed: int = 0,
    progress: Optional[ProgressCallback] = None,
    size: str = "default",
    steps: Optional[int] = None,
    threads: Optional[int] = None,
    overrides: Sequence[str] = (),
    overwrite: bool = False,
    command: Optional[str] = None,
) -> DemoResult:
    """Run prepare -> train -> extract -> probe -> abx -> report into ``out_dir``; resume if interrupted.

    Args:
        out_dir: the demo folder (created; a finished or interrupted demo of the same settings is resumed).
        minutes: time budget of the whole demo in minutes; sets the number of training steps through the
            preset's reference speed (default: the preset's, 10 minutes for ``default``).
        data: a prepared dataset (``cpcaudio prepare ...``) to use instead of the synthetic corpus.
        device: ``cpu``, ``cuda``, ``cuda:N`` or ``mps`` (default: CUDA when available, else MPS, else CPU;
            see :func:`cpcaudio.devices.resolve_device`). On CUDA the ``default`` size uses the larger
            ``default-gpu`` preset.
        seed: seed of everything (corpus, model initialisation, windows, negatives, probes).
        progress: called with a :class:`~cpcaudio.demo.stages.DemoEvent` at every stage start/end and as
            work advances.
        size: ``default`` or ``tiny`` (a reduced run for tests, about a minute on 2 CPU cores).
        steps: train exactly this many steps instead of deriving them from ``minutes``.
        threads: torch intra-op threads while the demo runs (restored afterwards). Default 1 on CPU: on a
            machine shared with other jobs, more threads than free cores slow the small sequential
            operations of training by an order of magnitude, and a fixed count keeps the numbers
            reproducible. Give the number of free cores on an idle machine to go faster.
        overrides: ``section.key=value`` changes of the preset's training config (as ``cpcaudio train
            --set``), e.g. ``["data.sampler=same-speaker"]``; they win over what the demo derives from
            ``data`` (``data.window_size``), and keys the demo sets itself (steps, seed, sample rate,
            channels) are refused.
        overwrite: delete an earlier demo in ``out_dir`` and start over.
        command: the command line to record (default: ``sys.argv``).

    Returns:
        A :class:`DemoResult` (paths, accuracies, timings).

    Raises:
        UsageError: bad size/minutes/steps/device, or ``out_dir`` holds something else or a demo with
            other settings. DataError: ``data`` is not a usable prepared dataset.
    """
    import torch

    from cpcaudio.devices import resolve_device

    if size not in SIZES:
        raise UsageError(f"unknown demo size {size!r}; choose one of {', '.join(SIZES)}")
    if minutes is not None and not (isinstance(minutes, (int, float)) and 0 < minutes < math.inf):
        raise UsageError(f"--minutes must be a positive number, got {minutes!r}")
    if steps is not None:
        _check_integer(steps, "steps", 1, "a positive integer")
    _check_integer(seed, "seed", 0, "an integer >= 0")
    if threads is not None:
        _check_integer(threads, "threads", 1, "a positive integer")
    resolved_device = resolve_device(device)
    command = command if command is not None else " ".join(["cpcaudio", *sys.argv[1:]])
    dataset_info = inspect_dataset(Path(data)) if data is not None else None
    plan = make_plan(size, minutes, steps, seed, resolved_device.type, data, dataset_info, list(overrides))

    previous_threads = torch.get_num_threads()
    if threads is None:
        threads = 1 if resolved_device.type == "cpu" else previous_threads
    torch.set_num_threads(threads)
    try:
        return _run(Path(out_dir), plan, resolved_device, progress, overwrite, command)
    finally:
        torch.set_num_threads(previous_threads)


def _run(
    out_dir: Path, plan: DemoPlan, device: Any, progress: Optional[ProgressCallback], overwrite: bool, command: str
) -> DemoResult:
    """The stages of :func:`run_demo`, its arguments validated and its plan made."""
    import torch

    state = open_state(out_dir, plan, overwrite)
    state["commands"] = [*state.get("commands", []), command]
    state["threads"] = torch.get_num_threads()
    save_state(out_dir, state)

    emit = Emitter(progress)
    emit.count = len(["data", "train", "extract", *plan.tasks, *([ABX_STAGE] if runs_abx(plan) else []), "report"])
    skipped: list[str] = []

    def finish(stage: str, began: float, message: str, was_skipped: bool) -> None:
        if was_skipped:
            skipped.append(stage)
            emit(DemoEvent(stage, "skip", message=message))
            return
        seconds = time.perf_counter() - began
        mark_finished(out_dir, state, stage, seconds)
        emit(DemoEvent(stage, "end", message=message, seconds=seconds))

    began = time.perf_counter()
    dataset_path, message, was_skipped = stage_data(out_dir, plan, emit)
    finish("data", began, message, was_skipped)

    began = time.perf_counter()
    checkpoint, message, was_skipped = stage_train(out_dir, plan, dataset_path, device, emit, command)
    finish("train", began, message, was_skipped)

    began = time.perf_counter()
    _, message, was_skipped = stage_extract(out_dir, checkpoint, dataset_path, device, emit)
    finish("extract", began, message, was_skipped)

    reports: dict[str, dict[str, Any]] = {}
    for task in plan.tasks:  # the tasks the dataset supports (see cpcaudio.demo.plan.TASK_SUPPORT)
        began = time.perf_counter()
        reports[task], message, was_skipped = stage_probe(out_dir, plan, task, checkpoint, dataset_path, device, emit)
        finish(f"probe-{task}", began, message, was_skipped)

    abx_reports: dict[str, dict[str, Any]] = {}
    if runs_abx(plan):  # ABX and k-means units need phone alignments
        began = time.perf_counter()
        abx_reports, message, was_skipped = stage_abx(out_dir, plan, dataset_path, device, emit)
        finish(ABX_STAGE, began, message, was_skipped)

    began = time.perf_counter()
    emit(DemoEvent("report", "start", message="figures, report.md and report.html"))
    accuracy = accuracy_table(reports)
    stage_seconds = {
        name: float(info.get("seconds", 0.0)) for name, info in state["stages"].items() if name != "report"
    }
    figures, page = build_report(
        RunOutcome(out_dir, plan, dataset_path, checkpoint, reports, accuracy, stage_seconds, state, abx_reports)
    )
    markdown_path, html_path = write_page(page, out_dir, REPORT_STEM)
    finish("report", began, f"{markdown_path} and {html_path}", False)
    stage_seconds["report"] = state["stages"]["report"]["seconds"]
    return DemoResult(
        out_dir=out_dir,
        report_markdown=markdown_path,
        report_html=html_path,
        figures=figures,
        dataset=dataset_path,
        checkpoint=checkpoint,
        accuracy=accuracy,
        stage_seconds=stage_seconds,
        skipped=skipped,
        plan=plan,
        abx=abx_table(abx_reports.get("abx")),
        pnmi=pnmi_table(abx_reports.get("units")),
    )
