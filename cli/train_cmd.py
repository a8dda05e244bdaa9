"""``cpcaudio train DATASET OUT``: pretrain a CPC model on a prepared dataset (one library call).

Multi-process: ``torchrun --nproc_per_node N -m cpcaudio.cli.main train DATASET OUT ...``; only rank 0
prints.

SIGINT (Ctrl-C) and SIGTERM stop the run after the current step, with ``last.pt`` saved at that step and
the command that continues it printed (exit 130 / 143; see :mod:`cpcaudio.train.guards`). Signals that
arrive while the command is still starting are held until the run can act on them.
"""

from __future__ import annotations

import shlex
import signal
import sys
import threading
from pathlib import Path
from typing import Any, Optional

import typer

from cpcaudio.cli.common import echo, user_errors
from cpcaudio.cli.options import DeviceOption, OverwriteOption, QuietOption, SeedOption, SetOption
from cpcaudio.cli.progress import ProgressPrinter
from cpcaudio.presets import available_presets
from cpcaudio.runtime import keep_freed_memory


def register(app: typer.Typer) -> None:
    app.command("train")(train)


def train(
    ctx: typer.Context,
    dataset: Path = typer.Argument(..., help="Prepared dataset directory (from 'cpcaudio prepare')."),
    out: Path = typer.Argument(..., help="Run directory: checkpoints, metrics.jsonl, TensorBoard events."),
    config_file: Optional[Path] = typer.Option(
        None,
        "--config",
        help="YAML/JSON config file (sections encoder, context, predictor, optim, data, train, augment), or the "
        f"name of a preset shipped with cpcaudio: {', '.join(available_presets())} (paper: the CPC paper's "
        "configuration, whatever the defaults become; timeseries: taken by itself for a non-audio dataset when no "
        "encoder key is set).",
        metavar="FILE|PRESET",
    ),
    assignments: SetOption = None,
    steps: Optional[int] = typer.Option(None, "--steps", help="Optimiser steps (sets train.max_steps)."),
    minutes: Optional[float] = typer.Option(
        None,
        "--minutes",
        help="Wall-clock budget (sets train.max_minutes; 0: none): stop after the first step at which this "
        "invocation has trained M minutes, then validate and save last.pt. Per invocation (a --resume gets the "
        "budget again); --steps still caps the run, and the learning-rate schedule stays step-based (a cosine "
        "schedule over train.max_steps barely decays if the budget ends the run early).",
        metavar="M",
    ),
    resume: bool = typer.Option(
        False, "--resume", help="Continue the run in OUT from its last.pt (starts one, and says so, if OUT has none)."
    ),
    device: DeviceOption = None,
    seed: SeedOption = None,
    quiet: QuietOption = False,
    overwrite: OverwriteOption = False,
) -> None:
    """Pretrain a CPC model on a prepared dataset, writing checkpoints (last.pt, best.pt) and logs to OUT.

    --minutes M ends the run at the first step M minutes after its start (or at --steps) and says how many fit.
    """
    early: list[int] = []
    previous = _hold_signals(early)  # torch takes seconds to import: keep a Ctrl-C / SIGTERM meanwhile
    try:
        from cpcaudio.train import assemble_run_config, forward_progress, summary_text
        from cpcaudio.train import train as train_model
        from cpcaudio.train.guards import continue_hint, stop_request

        command = shlex.join(["cpcaudio", *sys.argv[1:]])
        at_once = (
            f"stopped at once on a second signal, without saving the current step ({out / 'last.pt'}, if it "
            f"exists, holds the last step saved); {continue_hint(command)}"
        )
        # glibc: reuse freed memory instead of page-faulting it back in every step (docs/performance.md).
        # Training's allocations repeat exactly; cpcaudio extract does the same (its chunks bound them).
        keep_freed_memory()
        with user_errors(ctx, interrupted=at_once), stop_request() as stop:
            for number in early:
                stop.request(number)
            run = assemble_run_config(out, config_file, assignments or [], steps, seed, resume, minutes, dataset)
            with ProgressPrinter(quiet=quiet) as printer:
                if run.note is not None:
                    printer.write(run.note)  # the preset chosen for a time-series dataset
                summary = train_model(
                    dataset,
                    out,
                    run.config,
                    resume=resume,
                    device=device,
                    progress=forward_progress(printer),
                    overwrite=overwrite,
                    command=command,
                    explicit_keys=run.explicit_keys,
                    resume_record=run.resume_record,
                )
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
    if summary.is_main:
        echo(summary_text(summary), quiet)


def _hold_signals(received: list[int]) -> dict[int, Any]:
    """Until restored, SIGINT and SIGTERM are appended to ``received`` (main thread only); returns the
    previous handlers."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    previous = {}
    for number in (signal.SIGINT, signal.SIGTERM):
        handler = signal.signal(number, lambda signum, frame: received.append(signum))
        previous[number] = handler if handler is not None else signal.SIG_DFL
    return previous
