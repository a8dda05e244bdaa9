"""The whole pipeline in one call: ``run_demo(out_dir)`` prepares, pretrains, extracts, probes and reports.

Stages, each one library call that a CLI command also makes (so the demo is the recipe of a real run)::

    data     cpcaudio.data.prepare("synthetic", ...)     -> OUT/data        (skipped with data=PREPARED_DIR)
    train    cpcaudio.train.train(...)                   -> OUT/run         (last.pt, metrics.jsonl, ...)
    extract  cpcaudio.feature_store.extract_to_store(...) -> OUT/features    (context features of every utterance)
    probe    cpcaudio.probe.run_probe(...) per task       -> OUT/probe_<task> (results.json, plots)
    report   figures + report.md + report.html           -> OUT/report.md, OUT/report.html, OUT/figures/

**Resuming.** ``OUT/demo.json`` records the plan (every setting that decides the numbers) and the stages
already finished. Run the same call again after an interruption and every finished stage is skipped:
the dataset is complete once its ``meta.json`` exists, training continues from ``run/last.pt`` (exactly:
see :mod:`cpcaudio.train`), extraction continues where its store stopped, and a probe is done once its
``results.json`` is written. A rerun with other settings into the same folder is refused (pass
``overwrite=True`` to start over).

**Reproducibility.** The number of training steps is *derived from the time budget* (``minutes``) with a
fixed reference speed per preset (:data:`PRESETS`, measured on 2 CPU cores), not measured at run time, so
the same seed and budget always train the same steps and give the same numbers (on the same hardware
and thread count; float results may differ across CPUs). A busier or slower machine takes longer
instead of training less.

**Sizes.** ``default`` on CPU: a 16-speaker, 12-minute synthetic corpus and a 256-channel encoder with a
256-unit GRU (K = 12) trained for about 6 minutes of the 10-minute budget; on a CUDA device the corpus,
the model and the number of steps grow (``default-gpu``). ``tiny``: a 4-speaker corpus and a small model
for tests (about a minute).
"""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from cpcaudio.errors import DataError, UsageError

PathLike = Union[str, os.PathLike]

SIZES = ("default", "tiny")
STATE_FILE = "demo.json"
STATE_FORMAT = "cpcaudio-demo"
STATE_FORMAT_VERSION = 1
DATA_DIR, RUN_DIR, FEATURES_DIR, FIGURES_DIR = "data", "run", "features", "figures"
REPORT_STEM = "report"
WINDOW_SECONDS = 1.28  # training window and speaker-probe window (20480 samples at 16 kHz)
FEATURE_NAMES = {"model": "CPC (trained)", "random": "CPC (random init)", "mfcc": "MFCC", "logmel": "log-mel"}


# ---- presets ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Preset:
    """What a demo size trains on and how long.

    Attributes:
        name: ``default``, ``default-gpu`` or ``tiny``.
        num_speakers: voices of the synthetic corpus.
        corpus_minutes: minutes of synthetic audio.
        config: overrides of :class:`cpcaudio.config.CPCConfig` (nested dict).
        seconds_per_step: reference wall time of one training step (2 CPU cores, or one GPU).
        other_seconds: reference wall time of everything but training (data, extraction, probes, report).
        min_steps, max_steps: bounds of the derived step count.
        default_minutes: the time budget when none is given.
        phone_train_seconds: audio of training utterances the phone probe fits on at most (a
            deterministic, speaker-balanced subset; every test utterance is always used).
    """

    name: str
    num_speakers: int
    corpus_minutes: float
    config: dict[str, Any]
    seconds_per_step: float
    other_seconds: float
    min_steps: int
    max_steps: int
    default_minutes: float
    phone_train_seconds: float

    def steps_for(self, minutes: float) -> int:
        """Training steps that fit ``minutes`` of wall time for the whole demo."""
        budget = minutes * 60.0 - self.other_seconds
        return int(min(self.max_steps, max(self.min_steps, math.floor(budget / self.seconds_per_step))))


def _model_config(encoder: int, context: int, steps: int, negatives: int, batch: int, window: int,
                  learning_rate: float, warmup: int, sampler: str) -> dict[str, Any]:
    return {
        "encoder": {"hidden_dim": encoder},
        "context": {"hidden_dim": context},
        "predictor": {"num_steps": steps, "num_negatives": negatives},
        "data": {"window_size": window, "batch_size": batch, "sampler": sampler},
        "optim": {"learning_rate": learning_rate, "warmup_steps": warmup, "schedule": "cosine", "grad_clip": 1.0},
        "train": {"log_every": 5, "validation_batches": 8},
    }


PRESETS: dict[str, Preset] = {
    "default": Preset(
        name="default",
        num_speakers=16,
        corpus_minutes=12.0,
        config=_model_config(256, 256, 12, 128, 8, 20480, 5e-4, 50, "uniform"),
        seconds_per_step=0.55,
        other_seconds=210.0,
        min_steps=50,
        max_steps=20000,
        default_minutes=10.0,
        phone_train_seconds=200.0,
    ),
    "default-gpu": Preset(
        name="default-gpu",
        num_speakers=24,
        corpus_minutes=40.0,
        config=_model_config(512, 256, 12, 128, 32, 20480, 5e-4, 100, "uniform"),
        seconds_per_step=0.05,
        other_seconds=150.0,
        min_steps=500,
        max_steps=20000,
        default_minutes=10.0,
        phone_train_seconds=1800.0,
    ),
    "tiny": Preset(
        name="tiny",
        num_speakers=4,
        corpus_minutes=1.5,
        config=_model_config(64, 64, 4, 16, 8, 5120, 1e-3, 5, "uniform"),
        seconds_per_step=0.1,
        other_seconds=40.0,
        min_steps=40,
        max_steps=40,
        default_minutes=1.0,
        phone_train_seconds=30.0,
    ),
}


# ---- plan, events, result --------------------------------------------------------------------------------


@dataclass
class DemoPlan:
    """Every setting that decides the demo's numbers; saved in ``demo.json`` and compared on a rerun.

    Attributes:
        preset: the :class:`Preset` name.
        seed: seed of the corpus, the model, the sampler and the probes.
        minutes: the time budget the step count was derived from.
        steps: training steps.
        device_kind: ``cpu``, ``cuda`` or ``mps`` (the preset depends on it).
        data: the prepared dataset given by the user, or None for the synthetic corpus.
        num_speakers, corpus_minutes: of the synthetic corpus (None with ``data``).
        config: the full training config (:meth:`CPCConfig.to_dict`).
        tasks: probe tasks run (``phone``, ``speaker``, ``class``).
        phone_train_seconds: see :class:`Preset`.
    """

    preset: str
    seed: int
    minutes: float
    steps: int
    device_kind: str
    data: Optional[str]
    num_speakers: Optional[int]
    corpus_minutes: Optional[float]
    config: dict[str, Any]
    tasks: list[str]
    phone_train_seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class DemoEvent:
    """What :func:`run_demo` reports to its ``progress`` callback.

    Attributes:
        stage: ``data``, ``train``, ``extract``, ``probe-<task>`` or ``report``.
        kind: ``start`` (message: what the stage does), ``progress`` (``done`` of ``total``; for training
            ``detail`` is the :class:`cpcaudio.train.TrainEvent`), ``message``, ``skip`` (already done) or
            ``end`` (message: a one-line summary; ``seconds``: the stage's wall time).
        index, count: position of the stage (1-based) and number of stages.
    """

    stage: str
    kind: str
    index: int = 0
    count: int = 0
    done: int = 0
    total: int = 0
    message: str = ""
    seconds: float = 0.0
    detail: Any = None


ProgressCallback = Callable[[DemoEvent], None]


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

    def table(self) -> str:
        """The accuracies as a plain-text table (features as rows, task/protocol as columns)."""
        columns = list(self.accuracy)
        features = [name for name in FEATURE_NAMES if any(name in self.accuracy[c] for c in columns)]
        width = max(len(FEATURE_NAMES[name]) for name in features) if features else 8
        lines = [f"{'features':<{width}}  " + "  ".join(f"{c:>16}" for c in columns)]
        for name in features:
            cells = [self.accuracy[c].get(name) for c in columns]
            lines.append(
                f"{FEATURE_NAMES[name]:<{width}}  "
                + "  ".join(f"{'-' if v is None else f'{100 * v:.1f}%':>16}" for v in cells)
            )
        return "\n".join(lines)


# ---- the pipeline ----------------------------------------------------------------------------------------


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
    """Run prepare -> train -> extract -> probe -> report into ``out_dir``; resume if interrupted.

    Args:
        out_dir: the demo folder (created; a finished or interrupted demo of the same settings is resumed).
        minutes: time budget of the whole demo in minutes; sets the number of training steps through the
            preset's reference speed (default: the preset's, 10 minutes for ``default``).
        data: a prepared dataset (``cpcaudio prepare ...``) to use instead of the synthetic corpus.
        device: ``cpu``, ``cuda``, ``cuda:N`` or ``mps`` (default: CUDA when available, else CPU). On CUDA
            the ``default`` size uses the larger ``default-gpu`` preset.
        seed: seed of everything (corpus, model initialisation, windows, negatives, probes).
        progress: called with a :class:`DemoEvent` at every stage start/end and as work advances.
        size: ``default`` or ``tiny`` (a reduced run for tests, about a minute on 2 CPU cores).
        steps: train exactly this many steps instead of deriving them from ``minutes``.
        threads: torch intra-op threads while the demo runs (restored afterwards). Default 1 on CPU: on a
            machine shared with other jobs, more threads than free cores slow the small sequential
            operations of training by an order of magnitude, and a fixed count keeps the numbers
            reproducible. Give the number of free cores on an idle machine to go faster.
        overrides: ``section.key=value`` changes of the preset's training config (as ``cpcaudio train
            --set``), e.g. ``["data.sampler=same-speaker"]``.
        overwrite: delete an earlier demo in ``out_dir`` and start over.
        command: the command line to record (default: ``sys.argv``).

    Returns:
        A :class:`DemoResult` (paths, accuracies, timings).

    Raises:
        UsageError: bad size/minutes/steps/device, or ``out_dir`` holds something else or a demo with
            other settings. DataError: ``data`` is not a usable prepared dataset.
    """
    import torch

    if size not in SIZES:
        raise UsageError(f"unknown demo size {size!r}; choose one of {', '.join(SIZES)}")
    if minutes is not None and not (isinstance(minutes, (int, float)) and 0 < minutes < math.inf):
        raise UsageError(f"--minutes must be a positive number, got {minutes!r}")
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
        raise UsageError(f"--steps must be a positive integer, got {steps!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise UsageError(f"--seed must be an integer >= 0, got {seed!r}")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise UsageError(f"--threads must be a positive integer, got {threads!r}")
    resolved_device = _resolve_device(device)
    previous_threads = torch.get_num_threads()
    if threads is None:
        threads = 1 if resolved_device.type == "cpu" else previous_threads
    torch.set_num_threads(threads)
    try:
        return _run(
            out_dir, minutes, data, resolved_device, seed, progress, size, steps, list(overrides), overwrite, command
        )
    finally:
        torch.set_num_threads(previous_threads)


def _run(
    out_dir: PathLike,
    minutes: Optional[float],
    data: Optional[PathLike],
    resolved_device: Any,
    seed: int,
    progress: Optional[ProgressCallback],
    size: str,
    steps: Optional[int],
    overrides: list[str],
    overwrite: bool,
    command: Optional[str],
) -> DemoResult:
    """The stages of :func:`run_demo`, arguments validated."""
    import torch

    out_dir = Path(out_dir)
    emit = _Emitter(progress)
    command = command if command is not None else " ".join(["cpcaudio", *sys.argv[1:]])

    dataset_info = _inspect_dataset(Path(data)) if data is not None else None
    plan = _make_plan(size, minutes, steps, seed, resolved_device.type, data, dataset_info, overrides)
    state = _open_state(out_dir, plan, overwrite)
    state["commands"] = [*state.get("commands", []), command]
    state["threads"] = torch.get_num_threads()
    _save_state(out_dir, state)

    stages = ["data", "train", "extract", *[f"probe-{task}" for task in plan.tasks], "report"]
    emit.count = len(stages)
    skipped: list[str] = []

    def finish(stage: str, began: float, message: str, was_skipped: bool) -> None:
        if was_skipped:
            skipped.append(stage)
            emit(DemoEvent(stage, "skip", message=message))
            return
        seconds = time.perf_counter() - began
        state["stages"][stage] = {"seconds": round(seconds, 2), "finished": _now()}
        _save_state(out_dir, state)
        emit(DemoEvent(stage, "end", message=message, seconds=seconds))

    # 1. data
    began = time.perf_counter()
    dataset_path, message, was_skipped = _stage_data(out_dir, plan, emit)
    finish("data", began, message, was_skipped)

    # 2. train
    began = time.perf_counter()
    checkpoint, message, was_skipped = _stage_train(out_dir, plan, dataset_path, resolved_device, emit, command)
    finish("train", began, message, was_skipped)

    # 3. extract
    began = time.perf_counter()
    message, was_skipped = _stage_extract(out_dir, checkpoint, dataset_path, resolved_device, emit)
    finish("extract", began, message, was_skipped)

    # 4. probes
    reports: dict[str, dict[str, Any]] = {}
    for task in plan.tasks:
        stage = f"probe-{task}"
        began = time.perf_counter()
        reports[task], message, was_skipped = _stage_probe(
            out_dir, plan, task, checkpoint, dataset_path, resolved_device, emit, stage
        )
        finish(stage, began, message, was_skipped)

    # 5. report
    began = time.perf_counter()
    emit(DemoEvent("report", "start", message="figures, report.md and report.html"))
    accuracy = _accuracy_table(reports)
    stage_seconds = {
        name: float(info.get("seconds", 0.0)) for name, info in state["stages"].items() if name != "report"
    }
    from cpcaudio.report_html import write_page

    figures, page = _build_report(out_dir, plan, dataset_path, checkpoint, reports, accuracy, stage_seconds, state)
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
    )


# ---- planning --------------------------------------------------------------------------------------------


def _resolve_device(device: Optional[str]) -> Any:
    import torch

    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise UsageError(f"unknown device {device!r}; use cpu, cuda, cuda:N or mps") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"device {device!r} requested but CUDA is not available here; use --device cpu")
    if resolved.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError(f"device {device!r} requested but MPS is not available here; use --device cpu")
    if resolved.type not in ("cpu", "cuda", "mps"):
        raise UsageError(f"unsupported device {device!r}; use cpu, cuda, cuda:N or mps")
    return resolved


@dataclass
class _DatasetInfo:
    path: Path
    sample_rate: int
    num_channels: int
    audio: bool
    tasks: list[str]


def _inspect_dataset(path: Path) -> _DatasetInfo:
    """Open a user's prepared dataset and decide which probe tasks it supports."""
    from cpcaudio.data import PreparedDataset
    from cpcaudio.probe import _is_audio

    dataset = PreparedDataset.open(path)
    for split in ("train", "test"):
        if len(dataset.indices(split)) == 0:
            raise DataError(
                f"dataset {path} has no '{split}' utterances; the demo trains on 'train' and probes on "
                "'train' vs 'test' (prepare it with a held-out split, e.g. --test-fraction 0.2)"
            )
    tasks = []
    if dataset.phone_vocabulary:
        tasks.append("phone")
    train_speakers = {dataset.speakers[i] for i in dataset.indices("train")}
    test_speakers = {dataset.speakers[i] for i in dataset.indices("test")}
    if len(train_speakers) >= 2 and train_speakers & test_speakers:
        tasks.append("speaker")
    if dataset.utterance_label_names:
        tasks.append("class")
    if not tasks:
        raise DataError(
            f"dataset {path} has no phone labels, no speakers shared by train and test and no utterance "
            "labels, so there is nothing to probe"
        )
    return _DatasetInfo(path, int(dataset.sample_rate), int(dataset.num_channels), _is_audio(dataset), tasks)


def _make_plan(
    size: str,
    minutes: Optional[float],
    steps: Optional[int],
    seed: int,
    device_kind: str,
    data: Optional[PathLike],
    dataset_info: Optional[_DatasetInfo],
    overrides: Sequence[str] = (),
) -> DemoPlan:
    from cpcaudio.config import CPCConfig

    preset = PRESETS["default-gpu" if size == "default" and device_kind == "cuda" else size]
    budget = float(minutes) if minutes is not None else preset.default_minutes
    fixed = [o for o in overrides if o.split("=", 1)[0].strip() in _DERIVED_KEYS]
    if fixed:
        raise UsageError(
            f"the demo sets {fixed[0].split('=', 1)[0].strip()} itself; use --steps, --seed or --data instead of --set"
        )
    config = CPCConfig.from_dict(preset.config).with_overrides([*overrides, f"train.seed={seed}"])
    tasks = ["phone", "speaker"]
    if dataset_info is not None:
        tasks = dataset_info.tasks
        window = _window_samples(dataset_info.sample_rate, config.encoder.strides)
        assignments = [
            f"data.sample_rate={dataset_info.sample_rate}",
            f"encoder.in_channels={dataset_info.num_channels}",
            f"data.window_size={window}",
        ]
        if not dataset_info.audio:
            raise UsageError(
                f"dataset {dataset_info.path} holds time series, not audio; the demo's encoder is the audio "
                "one (160 samples per frame). Train with 'cpcaudio train' and a stride-1 encoder and probe "
                "with 'cpcaudio probe --task class' (see the README's time-series section)"
            )
        config = config.with_overrides(assignments)
    train_steps = steps if steps is not None else preset.steps_for(budget)
    config = config.with_overrides(
        [f"train.max_steps={train_steps}", f"train.validate_every={_validate_every(train_steps)}",
         f"train.checkpoint_every={max(1, min(25, train_steps))}"]
    )
    return DemoPlan(
        preset=preset.name,
        seed=seed,
        minutes=budget,
        steps=train_steps,
        device_kind=device_kind,
        data=None if data is None else str(Path(data).resolve()),
        num_speakers=None if data is not None else preset.num_speakers,
        corpus_minutes=None if data is not None else preset.corpus_minutes,
        config=config.to_dict(),
        tasks=tasks,
        phone_train_seconds=preset.phone_train_seconds,
    )


# Config keys the demo derives itself (from --steps/--minutes, --seed and the dataset).
_DERIVED_KEYS = frozenset(
    {"train.max_steps", "train.seed", "train.validate_every", "train.checkpoint_every", "train.max_epochs",
     "data.sample_rate", "encoder.in_channels"}
)


def _window_samples(sample_rate: int, strides: tuple[int, ...]) -> int:
    """About :data:`WINDOW_SECONDS` of samples at ``sample_rate``, a multiple of the encoder's hop."""
    hop = int(np.prod(strides))
    return max(hop * 16, int(round(WINDOW_SECONDS * sample_rate / hop)) * hop)


def _validate_every(steps: int) -> int:
    """About 10 validations per run (validation loss and accuracy curves), at least every step."""
    return max(1, int(math.ceil(steps / 10)))


# ---- state -----------------------------------------------------------------------------------------------

_OWN_ENTRIES = {STATE_FILE, DATA_DIR, RUN_DIR, FEATURES_DIR, FIGURES_DIR, f"{REPORT_STEM}.md", f"{REPORT_STEM}.html"}


def _is_own_entry(name: str) -> bool:
    temporary_state = name.startswith(f".{STATE_FILE}.") and name.endswith(".tmp")
    return name in _OWN_ENTRIES or name.startswith("probe_") or temporary_state


def _open_state(out_dir: Path, plan: DemoPlan, overwrite: bool) -> dict[str, Any]:
    """The demo state in ``out_dir``: fresh, or the earlier one when its plan matches."""
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"{out_dir} exists and is not a folder; choose another --out")
    state_path = out_dir / STATE_FILE
    fresh = {"format": STATE_FORMAT, "format_version": STATE_FORMAT_VERSION, "plan": plan.to_dict(), "stages": {}}
    entries = list(out_dir.iterdir()) if out_dir.is_dir() else []
    if not entries:
        out_dir.mkdir(parents=True, exist_ok=True)
        return fresh
    if not state_path.is_file() and not all(_is_own_entry(p.name) for p in entries):
        raise UsageError(
            f"{out_dir} is not empty and holds no demo ({STATE_FILE} is missing); choose a new --out folder"
        )
    if overwrite:
        for entry in entries:
            if _is_own_entry(entry.name):
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


def _save_state(out_dir: Path, state: dict[str, Any]) -> None:
    from cpcaudio.checkpoint import atomic_write_bytes

    text = json.dumps(state, indent=1) + "\n"
    atomic_write_bytes(out_dir / STATE_FILE, lambda file: file.write(text.encode()))


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


class _Emitter:
    """Numbers the stages and forwards events to the user's callback."""

    def __init__(self, progress: Optional[ProgressCallback]) -> None:
        self.progress = progress
        self.count = 0
        self.order: list[str] = []

    def __call__(self, event: DemoEvent) -> None:
        if event.stage not in self.order:
            self.order.append(event.stage)
        event.index = self.order.index(event.stage) + 1
        event.count = self.count
        if self.progress is not None:
            self.progress(event)


# ---- stages ----------------------------------------------------------------------------------------------


def _stage_data(out_dir: Path, plan: DemoPlan, emit: _Emitter) -> tuple[Path, str, bool]:
    from cpcaudio.data import PreparedDataset, prepare

    if plan.data is not None:
        dataset = PreparedDataset.open(plan.data)
        hours = float(np.sum(dataset.lengths)) / dataset.sample_rate / 3600
        return Path(plan.data), f"using {plan.data}: {len(dataset)} utterances, {60 * hours:.1f} min", True
    path = out_dir / DATA_DIR
    if (path / "meta.json").is_file():
        dataset = PreparedDataset.open(path)
        return path, f"{path} is complete ({len(dataset)} utterances)", True
    emit(
        DemoEvent(
            "data", "start",
            message=f"generating and preparing the synthetic corpus: {plan.num_speakers} speakers, "
            f"{plan.corpus_minutes:g} minutes (seed {plan.seed})",
        )
    )
    result = prepare(
        "synthetic", None, path, overwrite=True, num_speakers=plan.num_speakers, minutes=plan.corpus_minutes,
        seed=plan.seed, progress=lambda done, total: emit(DemoEvent("data", "progress", done=done, total=total)),
    )
    counts = result.meta["counts"]
    return path, (
        f"{counts['utterances']} utterances, {counts['speakers']} speakers, {60 * counts['hours']:.1f} min of audio "
        f"in {path}"
    ), False


def _stage_train(
    out_dir: Path, plan: DemoPlan, dataset_path: Path, device: Any, emit: _Emitter, command: str
) -> tuple[Path, str, bool]:
    from cpcaudio.checkpoint import load_checkpoint
    from cpcaudio.config import CPCConfig
    from cpcaudio.train import LAST_CHECKPOINT, train

    run_dir = out_dir / RUN_DIR
    last = run_dir / LAST_CHECKPOINT
    if last.is_file():
        step = int(load_checkpoint(last).get("step", 0))
        if step >= plan.steps:
            return last, f"{last} is at step {step} of {plan.steps}", True
    config = CPCConfig.from_dict(plan.config)
    emit(
        DemoEvent(
            "train", "start",
            message=f"pretraining CPC for {plan.steps} steps on {device} (encoder {config.encoder.hidden_dim}, "
            f"GRU {config.context.hidden_dim}, K {config.predictor.num_steps}, batch {config.data.batch_size} x "
            f"{config.data.window_size / config.data.sample_rate:g} s)",
        )
    )

    def forward(event: Any) -> None:
        if event.kind in ("step", "validation", "message"):
            emit(DemoEvent("train", "progress", done=event.step, total=event.max_steps,
                           message=event.message, detail=event))

    summary = train(
        dataset_path, run_dir, config, resume=True, device=device, progress=forward, command=command,
        explicit_keys=set(),
    )
    validation = summary.last_validation or {}
    accuracy = validation.get("accuracy") or [float("nan")]
    return last, (
        f"{summary.steps} steps; validation loss {validation.get('loss', float('nan')):.3f}, step-1 accuracy "
        f"{accuracy[0]:.3f} ({summary.throughput:.1f} audio s/s)"
    ), False


def _stage_extract(
    out_dir: Path, checkpoint: Path, dataset_path: Path, device: Any, emit: _Emitter
) -> tuple[str, bool]:
    from cpcaudio.feature_store import FeatureStore, extract_to_store

    path = out_dir / FEATURES_DIR
    if (path / "meta.json").is_file():
        store = FeatureStore.open(path)
        return f"{path} is complete ({len(store)} utterances)", True
    emit(DemoEvent("extract", "start", message=f"context features of every utterance into {path}"))
    summary = extract_to_store(
        checkpoint, dataset_path, path, layer="context", device=device,
        progress=lambda done, total: emit(DemoEvent("extract", "progress", done=done, total=total)),
    )
    return f"{summary.num_utterances} utterances, {summary.total_frames} frames x {summary.dim}", False


def _stage_probe(
    out_dir: Path,
    plan: DemoPlan,
    task: str,
    checkpoint: Path,
    dataset_path: Path,
    device: Any,
    emit: _Emitter,
    stage: str,
) -> tuple[dict[str, Any], str, bool]:
    from cpcaudio.data import PreparedDataset
    from cpcaudio.probe import run_probe

    path = out_dir / f"probe_{task}"
    results = path / "results.json"
    if results.is_file():
        report = json.loads(results.read_text())
        return report, f"{results} is complete", True
    dataset = PreparedDataset.open(dataset_path)
    utterances = _probe_utterances(dataset, task, plan.phone_train_seconds)
    subset = "" if utterances is None else f" ({len(utterances)} of {len(dataset)} utterances)"
    emit(DemoEvent(stage, "start", message=f"{task} probe: CPC vs random init, MFCC, log-mel{subset}"))
    device_name = "cuda" if device.type == "cuda" else "cpu"  # the probes' own L-BFGS runs on CPU or CUDA

    def forward(what: str, done: int, total: int) -> None:
        emit(DemoEvent(stage, "progress", done=done, total=total, message=what))

    # Phone frames read the stored whole-utterance features (identical to encoding again). The speaker
    # windows are encoded alone, as for the random-init baseline, so that both follow CPC_audio's protocol.
    source = {"features": out_dir / FEATURES_DIR} if task == "phone" else {"checkpoint": checkpoint}
    report = run_probe(
        dataset, task, **source, seed=plan.seed, utterances=utterances, device=device_name, out=path,
        progress=forward,
    )
    model = [r for r in report["results"] if r["features"] == "model"]
    summary = ", ".join(f"{r['protocol']} {100 * r['accuracy']:.1f}%" for r in model)
    return report, f"CPC: {summary}", False


def _probe_utterances(dataset: Any, task: str, phone_train_seconds: float) -> Optional[list[int]]:
    """The utterances a probe uses: all, except for the phone task, whose frame-level probe fits on at
    most ``phone_train_seconds`` of training audio (every k-th training utterance, so every speaker is
    represented) and tests on every test utterance."""
    if task != "phone":
        return None
    train = np.asarray(dataset.indices("train"))
    seconds = float(np.sum(dataset.lengths[train])) / dataset.sample_rate
    if seconds <= phone_train_seconds:
        return None
    stride = int(math.ceil(seconds / phone_train_seconds))
    chosen = train[::stride]
    return sorted(int(i) for i in [*chosen, *dataset.indices("test")])


# ---- report ----------------------------------------------------------------------------------------------


def _accuracy_table(reports: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    table: dict[str, dict[str, float]] = {}
    for task, report in reports.items():
        for result in report["results"]:
            table.setdefault(f"{task}/{result['protocol']}", {})[result["features"]] = float(result["accuracy"])
    return table


def _build_report(
    out_dir: Path,
    plan: DemoPlan,
    dataset_path: Path,
    checkpoint: Path,
    reports: dict[str, dict[str, Any]],
    accuracy: dict[str, dict[str, float]],
    stage_seconds: dict[str, float],
    state: dict[str, Any],
) -> tuple[list[Path], Any]:
    from cpcaudio import report_html as page_writer
    from cpcaudio.data import PreparedDataset
    from cpcaudio.feature_store import FeatureStore
    from cpcaudio.train import read_metrics

    figures_dir = out_dir / FIGURES_DIR
    figures_dir.mkdir(parents=True, exist_ok=True)
    dataset = PreparedDataset.open(dataset_path)
    metrics = read_metrics(out_dir / RUN_DIR)
    figures = [
        page_writer.training_curves(metrics, figures_dir / "training_curves.png"),
        page_writer.accuracy_bars(accuracy, FEATURE_NAMES, _chance(reports), figures_dir / "probe_accuracy.png"),
    ]
    store = FeatureStore.open(out_dir / FEATURES_DIR)
    embedding_path, silhouette = page_writer.utterance_map(store, figures_dir / "utterance_map.png")
    figures.append(embedding_path)
    confusions = []
    for task, report in reports.items():
        for result in report["results"]:
            if result["features"] == "model":
                path = out_dir / f"probe_{task}" / f"confusion_{result['protocol']}.png"
                if path.is_file():
                    confusions.append((task, result["protocol"], path))
    page = _page(plan, dataset, dataset_path, checkpoint, reports, accuracy, stage_seconds, state, metrics,
                 silhouette, confusions, out_dir)
    return figures + [path for _, _, path in confusions], page


def _chance(reports: dict[str, dict[str, Any]]) -> dict[str, float]:
    chance = {}
    for task, report in reports.items():
        for result in report["results"]:
            chance[f"{task}/{result['protocol']}"] = float(result["majority_class_accuracy"])
    return chance


def _percent(value: Optional[float]) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{100 * value:.1f}%"


def _page(
    plan: DemoPlan,
    dataset: Any,
    dataset_path: Path,
    checkpoint: Path,
    reports: dict[str, dict[str, Any]],
    accuracy: dict[str, dict[str, float]],
    stage_seconds: dict[str, float],
    state: dict[str, Any],
    metrics: list[dict[str, Any]],
    silhouette: Optional[float],
    confusions: list[tuple[str, str, Path]],
    out_dir: Path,
) -> Any:
    from cpcaudio import __version__
    from cpcaudio import report_html as p
    from cpcaudio.config import CPCConfig

    config = CPCConfig.from_dict(plan.config)
    source = "the synthetic corpus" if plan.data is None else f"`{plan.data}`"
    page = p.Page(f"cpcaudio demo: CPC on {source if plan.data else 'a synthetic multi-speaker corpus'}")

    columns = list(accuracy)
    features = [name for name in FEATURE_NAMES if any(name in accuracy[c] for c in columns)]
    headline = []
    for column in columns:
        row = accuracy[column]
        if "model" in row:
            others = ", ".join(f"{FEATURE_NAMES[n]} {_percent(row[n])}" for n in features if n != "model" and n in row)
            headline.append(f"**{_column_title(column, config, reports)}**: CPC {_percent(row['model'])} ({others})")
    page.add(
        p.Paragraph(
            f"A CPC model was pretrained for {plan.steps} steps on {source}, its frozen context features were "
            "probed with a linear classifier, and the same probe was fitted on the same split to MFCC, log-mel "
            "and the same architecture with random weights. Test accuracy:"
        ),
        p.Bullets(headline),
        p.Heading("Results"),
        p.Table(
            ["features"] + [_column_title(c, config, reports) for c in columns],
            [[FEATURE_NAMES[n]] + [_percent(accuracy[c].get(n)) for c in columns] for n in features]
            + [["majority class"] + [_percent(_chance(reports).get(c)) for c in columns]],
        ),
        p.Paragraph(_counts_sentence(reports, dataset)),
        p.Paragraph(_reading_notes(plan, reports)),
        p.Image("figures/probe_accuracy.png", "Probe test accuracy: the CPC model next to its baselines "
                "(dashed: majority class of the training samples)."),
    )
    for task, protocol, path in confusions:
        page.add(p.Image(path.relative_to(out_dir).as_posix(),
                         f"Confusion matrix of the CPC features, {task} probe ({protocol}), rows normalised.",
                         width=640))
    page.add(
        p.Heading("Pretraining"),
        p.Image("figures/training_curves.png", "InfoNCE loss and per-step prediction accuracy (the positive "
                f"among {config.predictor.num_negatives} negatives) over training steps; lines: training "
                "batches, dots: validation windows."),
        p.Paragraph(_training_sentence(metrics, config)),
        p.Heading("Utterance embeddings"),
        p.Image("figures/utterance_map.png", "Utterances (mean of the CPC context features over time) projected "
                "on their first two principal components, coloured by speaker; circles: train, crosses: test."
                + ("" if silhouette is None else f" Silhouette score of the speakers in the full feature space: "
                   f"{silhouette:.2f}.")),
    )
    timings = [[name, f"{seconds:.0f} s"] for name, seconds in stage_seconds.items()]
    timings.append(["total (without this report)", f"{sum(stage_seconds.values()):.0f} s"])
    page.add(
        p.Heading("Setup"),
        p.Table(["", ""], _setup_rows(plan, dataset, dataset_path, checkpoint, config, __version__), align=["l", "l"]),
        p.Heading("Time per stage"),
        p.Table(["stage", "wall time"], timings),
        p.Paragraph("Times come from the invocation that ran each stage; a resumed demo keeps the earlier ones."),
        p.Heading("Files"),
        p.Code(_files_listing(plan, reports)),
        p.Heading("Reproduce"),
        p.Code("\n".join(state.get("commands", [])[:1]) or "cpcaudio demo"),
        p.Paragraph(
            "The same seed and time budget give the same numbers: the number of training steps is derived "
            "from the budget with a fixed reference speed, windows and negatives are drawn from seeded "
            "generators, and the probes are seeded."
        ),
    )
    return page


def _reading_notes(plan: DemoPlan, reports: dict[str, dict[str, Any]]) -> str:
    notes = ["How to read it: a linear probe measures what the frozen features make linearly separable."]
    if "speaker" in reports:
        notes.append(
            "The window-level speaker probe follows CPC_audio: each window is encoded alone and its **last** "
            "context frame is the window's vector (MFCC and log-mel are averaged over the window's frames), so it "
            "asks the context to carry the speaker at every instant; the utterance-level probe averages over time."
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
    titles = {
        "phone/frame": "phone (per frame)",
        "speaker/window": f"speaker (per {config.data.window_size / config.data.sample_rate:g} s window)",
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
    plan: DemoPlan, dataset: Any, dataset_path: Path, checkpoint: Path, config: Any, version: str
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


def _files_listing(plan: DemoPlan, reports: dict[str, dict[str, Any]]) -> str:
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
        lines.append(f"{'probe_' + task + '/':<22} results.json, results.md, accuracy.png, confusion_*.png")
    lines.append(f"{FIGURES_DIR + '/':<22} the figures of this page")
    return "\n".join(lines)
