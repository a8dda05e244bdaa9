"""What a training run reports while it runs (:class:`TrainEvent`) and when it ends (:class:`TrainSummary`).

:func:`progress_event` turns a :class:`TrainEvent` into the :class:`cpcaudio.progress.Progress` that every
command draws the same way (``cpcaudio.cli.progress``); :func:`summary_text` is the closing report.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from cpcaudio.progress import Progress, ProgressCallback
from cpcaudio.train.budget import budget_line

STAGE = "train"  # the stage name of the Progress events (one bar)


@dataclass
class TrainEvent:
    """What :func:`cpcaudio.train.train` reports to its ``progress`` callback (on rank 0 only).

    Attributes:
        kind: ``start`` (metrics: run description), ``step`` (after every optimiser step; ``metrics`` is
            filled on logged steps, else empty), ``validation``, ``checkpoint`` (``message`` = path),
            ``message`` (a note for the user, e.g. resuming) or ``end`` (metrics: the summary as a dict).
        step: optimiser steps completed.
        max_steps: the step the run stops at.
        metrics: the record written to ``metrics.jsonl`` for this event, if any.
        message: human-readable text for ``checkpoint`` and ``message`` events.
    """

    kind: str
    step: int
    max_steps: int
    metrics: dict[str, Any] = field(default_factory=dict)
    message: str = ""


TrainEventCallback = Callable[[TrainEvent], None]


@dataclass
class TrainSummary:
    """What :func:`cpcaudio.train.train` returns.

    Attributes:
        out_dir: the run directory.
        start_step: step the run (re)started from (0 for a new run).
        steps: steps completed at the end.
        max_steps: the configured end.
        max_minutes: the wall-clock budget of this invocation (``train.max_minutes``; 0: none).
        budget_reached: True when the budget ended the run before ``max_steps``.
        final_loss: training loss of the last logged step (None if nothing was logged).
        final_accuracy: per-step (k = 1..K) training accuracy of the last logged step.
        last_validation: the last validation record (``loss``, ``accuracy``, ``step``), or None.
        best_step: step of ``best.pt`` (lowest validation loss), or None.
        best_validation_loss: its validation loss.
        best_validation_accuracy: its per-step validation accuracy.
        audio_seconds: seconds of audio trained on in this invocation (all ranks).
        train_seconds: wall seconds spent in training steps (without validation and checkpoints).
        throughput: ``audio_seconds / train_seconds``.
        last_checkpoint / best_checkpoint: paths (None if not written).
        world_size: number of processes; device: this process's device.
        is_main: True on rank 0 (the only rank whose summary should be printed).
    """

    out_dir: Path
    start_step: int
    steps: int
    max_steps: int
    max_minutes: float = 0.0
    budget_reached: bool = False
    final_loss: Optional[float] = None
    final_accuracy: list[float] = field(default_factory=list)
    last_validation: Optional[dict[str, Any]] = None
    best_step: Optional[int] = None
    best_validation_loss: Optional[float] = None
    best_validation_accuracy: list[float] = field(default_factory=list)
    audio_seconds: float = 0.0
    train_seconds: float = 0.0
    throughput: float = 0.0
    last_checkpoint: Optional[Path] = None
    best_checkpoint: Optional[Path] = None
    world_size: int = 1
    device: str = "cpu"
    is_main: bool = True

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (paths as strings)."""
        out = dict(self.__dict__)
        for key in ("out_dir", "last_checkpoint", "best_checkpoint"):
            out[key] = None if out[key] is None else str(out[key])
        return out


def progress_event(event: TrainEvent) -> Optional[Progress]:
    """The :class:`Progress` to draw for ``event``: a bar position (with the logged metrics as fields) for a
    step, a line for the start, a validation and a note; None for checkpoints and the end."""
    if event.kind == "step":
        fields = _step_fields(event.metrics) if event.metrics else {}
        # In a log: one line per logged step (every train.log_every steps), nothing for the others.
        line = _step_line(event.step, event.max_steps, event.metrics) if event.metrics else ""
        return Progress(STAGE, done=event.step, total=event.max_steps, unit="step", fields=fields, line=line)
    if event.kind == "start":
        return Progress(STAGE, message=_start_line(event.metrics))
    if event.kind == "validation":
        return Progress(STAGE, message=_validation_line(event.step, event.metrics))
    if event.kind == "message":
        return Progress(STAGE, message=event.message)
    return None


def forward_progress(progress: Optional[ProgressCallback]) -> Optional[TrainEventCallback]:
    """A ``train(progress=...)`` callback that sends :func:`progress_event` of every event to ``progress``."""
    if progress is None:
        return None

    def forward(event: TrainEvent) -> None:
        converted = progress_event(event)
        if converted is not None:
            progress(converted)

    return forward


def summary_text(summary: TrainSummary) -> str:
    """The closing report of a run: steps, last losses and accuracies, best checkpoint, throughput."""
    lines = [f"trained steps {summary.start_step} -> {summary.steps} in {summary.out_dir}"]
    if summary.budget_reached:
        lines.append(f"  {budget_line(summary.max_minutes, summary.steps - summary.start_step)}")
    if summary.final_loss is not None:
        accuracy = summary.final_accuracy
        lines.append(
            f"  last training loss {summary.final_loss:.4f}, step-1 accuracy {accuracy[0]:.3f}, "
            f"step-{len(accuracy)} accuracy {accuracy[-1]:.3f}"
        )
    if summary.last_validation is not None:
        record = summary.last_validation
        lines.append(
            f"  last validation (step {record['step']}): loss {record['loss']:.4f}, "
            f"step-1 accuracy {record['accuracy'][0]:.3f}"
        )
    if summary.best_step is not None:
        lines.append(
            f"  best validation loss {summary.best_validation_loss:.4f} at step {summary.best_step} "
            f"(step-1 accuracy {summary.best_validation_accuracy[0]:.3f}): {summary.best_checkpoint}"
        )
    if summary.train_seconds > 0:
        lines.append(
            f"  {summary.audio_seconds:.0f} s of audio in {summary.train_seconds:.1f} s of training: "
            f"{summary.throughput:.1f} audio seconds per second"
        )
    lines.append(f"  checkpoint: {summary.last_checkpoint}")
    return "\n".join(lines)


def _start_line(info: dict[str, Any]) -> str:
    return (
        f"training {info['parameters']:,} parameters on {info['device']} x {info['world_size']} "
        f"({info['precision']}), {info['train_utterances']} training utterances, validation on "
        f"'{info['validation_split']}' ({info['validation_utterances']}); steps "
        f"{info['start_step']} -> {info['max_steps']}"
        + (f" or {info['max_minutes']:g} min, whichever comes first" if info.get("max_minutes", 0) > 0 else "")
        + f", {info['audio_seconds_per_step']:.1f} s of audio per step"
        + (f" ({info['padding']:.0%} of the window samples are padding)" if info.get("padding", 0) >= 0.005 else "")
    )


def _step_fields(metrics: dict[str, Any]) -> dict[str, str]:
    accuracy = metrics["accuracy"]
    return {
        "loss": f"{metrics['loss']:.4f}",
        "acc1": f"{accuracy[0]:.3f}",
        f"acc{len(accuracy)}": f"{accuracy[-1]:.3f}",
        "throughput": f"{metrics['throughput']:.1f} audio s/s",
        "lr": f"{metrics['lr']:.2e}",
    }


def _step_line(step: int, max_steps: int, metrics: dict[str, Any]) -> str:
    accuracy = metrics["accuracy"]
    return (
        f"step {step}/{max_steps}  loss {metrics['loss']:.4f}  acc1 {accuracy[0]:.3f}  "
        f"acc{len(accuracy)} {accuracy[-1]:.3f}  {metrics['throughput']:.1f} audio s/s  lr {metrics['lr']:.2e}"
    )


def _validation_line(step: int, record: dict[str, Any]) -> str:
    accuracy = record["accuracy"]
    return (
        f"step {step} validation: loss {record['loss']:.4f}  acc1 {accuracy[0]:.3f}  "
        f"acc{len(accuracy)} {accuracy[-1]:.3f}" + ("  (best)" if record.get("best") else "")
    )
