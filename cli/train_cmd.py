"""``cpcaudio train DATASET OUT``: pretrain a CPC model on a prepared dataset (one library call).

Multi-process: ``torchrun --nproc_per_node N -m cpcaudio.cli.main train DATASET OUT ...``; only rank 0
prints.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Optional

import typer

from cpcaudio.cli.common import echo, user_errors
from cpcaudio.cli.options import DeviceOption, OverwriteOption, QuietOption, SeedOption, SetOption
from cpcaudio.cli.progress import ProgressPrinter
from cpcaudio.runtime import keep_freed_memory


def register(app: typer.Typer) -> None:
    app.command("train")(train)


def train(
    ctx: typer.Context,
    dataset: Path = typer.Argument(..., help="Prepared dataset directory (from 'cpcaudio prepare')."),
    out: Path = typer.Argument(..., help="Run directory: checkpoints, metrics.jsonl, TensorBoard events."),
    config_file: Optional[Path] = typer.Option(
        None, "--config", help="YAML/JSON config file (sections encoder, context, predictor, optim, data, train)."
    ),
    assignments: SetOption = None,
    steps: Optional[int] = typer.Option(None, "--steps", help="Optimiser steps (sets train.max_steps)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in OUT from its last.pt."),
    device: DeviceOption = None,
    seed: SeedOption = None,
    quiet: QuietOption = False,
    overwrite: OverwriteOption = False,
) -> None:
    """Pretrain a CPC model on a prepared dataset, writing checkpoints (last.pt, best.pt) and logs to OUT."""
    from cpcaudio.train import assemble_run_config, forward_progress, summary_text
    from cpcaudio.train import train as train_model

    # glibc: reuse freed memory instead of page-faulting it back in every step (docs/performance.md).
    # Only for training, whose allocations repeat exactly; extraction and probes see varied sizes.
    keep_freed_memory()
    with user_errors(ctx):
        run = assemble_run_config(out, config_file, assignments or [], steps, seed, resume)
        with ProgressPrinter(quiet=quiet) as printer:
            summary = train_model(
                dataset,
                out,
                run.config,
                resume=resume,
                device=device,
                progress=forward_progress(printer),
                overwrite=overwrite,
                command=shlex.join(["cpcaudio", *sys.argv[1:]]),
                explicit_keys=run.explicit_keys,
                resume_record=run.resume_record,
            )
    if summary.is_main:
        echo(summary_text(summary), quiet)
