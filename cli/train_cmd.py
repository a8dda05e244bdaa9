"""``cpcaudio train DATASET OUT``: pretrain a CPC model on a prepared dataset (one library call).

Multi-process: ``torchrun --nproc_per_node N -m cpcaudio.cli.main train DATASET OUT ...``; only rank 0
prints.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Any, Optional

import typer
import yaml

from cpcaudio.runtime import keep_freed_memory
from cpcaudio.cli.common import echo, stderr_is_terminal, user_errors


def register(app: typer.Typer) -> None:
    app.command("train")(train)


def train(
    ctx: typer.Context,
    dataset: Path = typer.Argument(..., help="Prepared dataset directory (from 'cpcaudio prepare')."),
    out: Path = typer.Argument(..., help="Run directory: checkpoints, metrics.jsonl, TensorBoard events."),
    config_file: Optional[Path] = typer.Option(
        None, "--config", help="YAML/JSON config file (sections encoder, context, predictor, optim, data, train)."
    ),
    assignments: list[str] = typer.Option(
        [], "--set", help="Override one config key, e.g. --set optim.learning_rate=1e-3 (repeatable)."
    ),
    steps: Optional[int] = typer.Option(None, "--steps", help="Optimiser steps (sets train.max_steps)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in OUT from its last.pt."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda, cuda:N or mps (default: best available)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Random seed (sets train.seed)."),
    quiet: bool = typer.Option(False, "--quiet", help="Print nothing but errors."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Delete an existing run in OUT and start over."),
) -> None:
    """Pretrain a CPC model on a prepared dataset, writing checkpoints (last.pt, best.pt) and logs to OUT."""
    from cpcaudio.train import train as train_model

    # glibc: reuse freed memory instead of page-faulting it back in every step (docs/performance.md).
    # Only for training, whose allocations repeat exactly; extraction and probes see varied sizes.
    keep_freed_memory()
    with user_errors(ctx):
        config, explicit_keys = _build_config(out, config_file, assignments, steps, seed, resume)
        printer = None if quiet else _ProgressPrinter(line_mode=not stderr_is_terminal())
        try:
            summary = train_model(
                dataset,
                out,
                config,
                resume=resume,
                device=device,
                progress=printer,
                overwrite=overwrite,
                command=shlex.join(["cpcaudio", *sys.argv[1:]]),
                explicit_keys=explicit_keys,
            )
        finally:
            if printer is not None:
                printer.close()
    if summary.is_main:
        echo(_summary_text(summary), quiet)


def _build_config(
    out: Path,
    config_file: Optional[Path],
    assignments: list[str],
    steps: Optional[int],
    seed: Optional[int],
    resume: bool,
) -> tuple[Any, set[str]]:
    """The requested config and the keys the user set explicitly.

    On ``--resume`` the base is the checkpoint's config (the file and ``--set`` are applied over it).
    """
    from cpcaudio.checkpoint import config_from_checkpoint, load_checkpoint
    from cpcaudio.config import CPCConfig
    from cpcaudio.errors import ConfigError
    from cpcaudio.train import LAST_CHECKPOINT

    last = out / LAST_CHECKPOINT
    base = CPCConfig()
    if resume and last.is_file():
        base = config_from_checkpoint(load_checkpoint(last), last)
    explicit: set[str] = set()
    if config_file is not None:
        loaded = CPCConfig.load(config_file)  # validates the file, with a clear error
        raw = yaml.safe_load(config_file.read_text()) or {}
        data = base.to_dict()
        for section, values in raw.items():
            for key in values or {}:
                explicit.add(f"{section}.{key}")
                data[section][key] = loaded.to_dict()[section][key]
        base = CPCConfig.from_dict(data)
    extra = list(assignments)
    if steps is not None:
        extra.append(f"train.max_steps={steps}")
    if seed is not None:
        extra.append(f"train.seed={seed}")
    for assignment in extra:
        if "=" not in assignment:
            raise ConfigError(
                f"override '{assignment}' must look like section.key=value, e.g. optim.learning_rate=1e-3"
            )
        explicit.add(assignment.split("=", 1)[0].strip())
    return base.with_overrides(extra), explicit


class _ProgressPrinter:
    """Turns :class:`cpcaudio.train.TrainEvent` s into a tqdm bar (or plain lines when not on a terminal)."""

    def __init__(self, line_mode: bool) -> None:
        self.line_mode = line_mode
        self.bar: Any = None

    def __call__(self, event: Any) -> None:
        from tqdm import tqdm

        if event.kind == "start":
            info = event.metrics
            self._write(
                f"training {info['parameters']:,} parameters on {info['device']} x {info['world_size']} "
                f"({info['precision']}), {info['train_utterances']} training utterances, validation on "
                f"'{info['validation_split']}' ({info['validation_utterances']}); steps "
                f"{info['start_step']} -> {info['max_steps']}, {info['audio_seconds_per_step']:.1f} s of audio per step"
            )
            if not self.line_mode:
                self.bar = tqdm(total=event.max_steps, initial=event.step, unit="step", dynamic_ncols=True)
        elif event.kind == "step":
            if self.bar is not None:
                self.bar.update(1)
            if event.metrics:
                fields = _train_fields(event.metrics)
                if self.bar is not None:
                    self.bar.set_postfix_str(fields, refresh=False)
                else:
                    self._write(f"step {event.step}/{event.max_steps}  {fields}")
        elif event.kind == "validation":
            record = event.metrics
            accuracy = record["accuracy"]
            self._write(
                f"step {event.step} validation: loss {record['loss']:.4f}  acc1 {accuracy[0]:.3f}  "
                f"acc{len(accuracy)} {accuracy[-1]:.3f}" + ("  (best)" if record.get("best") else "")
            )
        elif event.kind == "message":
            self._write(event.message)

    def _write(self, text: str) -> None:
        from tqdm import tqdm

        if self.bar is not None:
            tqdm.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _train_fields(metrics: dict[str, Any]) -> str:
    accuracy = metrics["accuracy"]
    return (
        f"loss {metrics['loss']:.4f}  acc1 {accuracy[0]:.3f}  acc{len(accuracy)} {accuracy[-1]:.3f}  "
        f"{metrics['throughput']:.1f} audio s/s  lr {metrics['lr']:.2e}"
    )


def _summary_text(summary: Any) -> str:
    lines = [f"trained steps {summary.start_step} -> {summary.steps} in {summary.out_dir}"]
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
