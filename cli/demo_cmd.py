"""``cpcaudio demo``: the main job. Prepare -> train -> extract -> probe -> abx -> report, in one command.

A thin translation of :func:`cpcaudio.demo.run_demo`: options in, stage lines and progress (drawn by
:class:`cpcaudio.cli.progress.ProgressPrinter`) out, the results table and the report's path at the end.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Any, Optional

import typer

from cpcaudio.cli.common import stderr_is_terminal, user_errors
from cpcaudio.cli.options import DeviceOption, OverwriteOption, QuietOption, SeedOption, SetOption
from cpcaudio.cli.progress import ProgressPrinter
from cpcaudio.progress import Progress


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)


def demo(
    ctx: typer.Context,
    out: Path = typer.Option(
        Path("demo_out"), "--out", help="Folder of the demo: dataset, run, features, probes, report."
    ),
    minutes: Optional[float] = typer.Option(
        None, "--minutes", help="Time budget of the whole demo in minutes; sets the training steps (default 10)."
    ),
    device: DeviceOption = None,
    data: Optional[Path] = typer.Option(
        None, "--data", help="A prepared dataset (from 'cpcaudio prepare') to use instead of the synthetic corpus."
    ),
    seed: SeedOption = None,
    tiny: bool = typer.Option(False, "--tiny", help="A reduced run (tiny corpus and model, about a minute) for tests."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Train exactly this many steps (overrides --minutes)."),
    assignments: SetOption = None,
    threads: Optional[int] = typer.Option(
        None, "--threads", help="torch CPU threads (default 1: robust on a shared machine, reproducible)."
    ),
    overwrite: OverwriteOption = False,
    quiet: QuietOption = False,
) -> None:
    """Run the whole pipeline on an embedded synthetic corpus (or --data) and write report.md and report.html.

    Generates a multi-speaker, phone-aligned speech corpus, pretrains a CPC model sized for the time
    budget (a bigger one on a GPU), extracts its features and probes them for phones (per frame) and
    speakers (per 1.28 s window), then scores their ABX error and the PNMI of their k-means units, next
    to MFCC, log-mel and the same model with random weights. The seed seeds the corpus, the model, the
    windows, the probes and the k-means. With --quiet only the results table
    and the report's path are printed.

    Interrupted? Run the same command again: finished stages are skipped and training resumes.
    """
    from cpcaudio.demo import run_demo

    with user_errors(ctx), _StagePrinter(ProgressPrinter(quiet=quiet, bars=stderr_is_terminal())) as printer:
        result = run_demo(
            out,
            minutes=minutes,
            data=data,
            device=device,
            seed=0 if seed is None else seed,
            progress=printer,
            size="tiny" if tiny else "default",
            steps=steps,
            threads=threads,
            overrides=assignments or [],
            overwrite=overwrite,
            command=shlex.join(["cpcaudio", *sys.argv[1:]]),
        )
    typer.echo("")
    typer.echo(result.table())
    total = sum(result.stage_seconds.values())
    typer.echo("")
    typer.echo(f"report: {result.report_html}  (and {result.report_markdown.name}); stages took {total:.0f} s in all")


class _StagePrinter:
    """Turns :class:`cpcaudio.demo.DemoEvent` s into stage lines (``[4/6] probe-phone: done in 4 s: ...``)
    and progress: a bar per stage on a terminal; in a log, about ten training lines per run."""

    def __init__(self, printer: ProgressPrinter) -> None:
        self.printer = printer
        self.last_tenth = -1

    def __enter__(self) -> "_StagePrinter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.printer.close()

    def __call__(self, event: Any) -> None:
        prefix = f"[{event.index}/{event.count}] {event.stage}"
        if event.kind == "start":
            self._line(f"{prefix}: {event.message}")
        elif event.kind == "skip":
            self._line(f"{prefix}: skipped, {event.message}")
        elif event.kind == "end":
            self._line(f"{prefix}: done in {event.seconds:.0f} s: {event.message}")
        elif event.kind == "progress":
            self._progress(event)

    def _line(self, text: str) -> None:
        self.printer.close()
        self.printer.write(text)

    def _progress(self, event: Any) -> None:
        detail = event.detail  # a cpcaudio.train.TrainEvent during training, else None
        if detail is not None and detail.kind == "validation":
            accuracy = detail.metrics["accuracy"]
            self.printer.write(
                f"  step {detail.step} validation: loss {detail.metrics['loss']:.3f}, step-1 accuracy {accuracy[0]:.3f}"
            )
        elif detail is not None and detail.kind == "message":
            self.printer.write(f"  {detail.message}")
        elif self.printer.bars:
            fields = {"": _train_fields(detail.metrics)} if detail is not None and detail.metrics else {}
            if detail is None and event.message:
                fields = {"": event.message}
            unit = "step" if event.stage == "train" else "it"
            self.printer(Progress(f"  {event.stage}", event.done, event.total, unit, fields))
        elif detail is not None and detail.metrics and self._new_tenth(detail.step, detail.max_steps):
            self.printer.write(f"  step {detail.step}/{detail.max_steps}  {_train_fields(detail.metrics)}")

    def _new_tenth(self, step: int, max_steps: int) -> bool:
        """True once per tenth of the run (plain-line mode prints about ten training lines)."""
        tenth = step // max(1, max_steps // 10)
        if tenth == self.last_tenth:
            return False
        self.last_tenth = tenth
        return True


def _train_fields(metrics: dict[str, Any]) -> str:
    accuracy = metrics["accuracy"]
    return f"loss {metrics['loss']:.3f}  acc1 {accuracy[0]:.3f}  {metrics['throughput']:.1f} audio s/s"
