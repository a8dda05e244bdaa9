"""``cpcaudio demo``: the main job. Prepare -> train -> extract -> probe -> report, in one command.

A thin translation of :func:`cpcaudio.demo.run_demo`: options in, progress lines and bars out, the
results table and the report's path at the end.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Any, Optional

import typer

from cpcaudio.cli.common import stderr_is_terminal, user_errors


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
    device: Optional[str] = typer.Option(
        None, "--device", help="cpu, cuda, cuda:N or mps (default: cuda when available; a GPU gets a bigger model)."
    ),
    data: Optional[Path] = typer.Option(
        None, "--data", help="A prepared dataset (from 'cpcaudio prepare') to use instead of the synthetic corpus."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the corpus, the model, the windows and the probes."),
    tiny: bool = typer.Option(False, "--tiny", help="A reduced run (tiny corpus and model, about a minute) for tests."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Train exactly this many steps (overrides --minutes)."),
    assignments: list[str] = typer.Option(
        [], "--set", help="Change the training config, e.g. --set data.sampler=same-speaker (repeatable)."
    ),
    threads: Optional[int] = typer.Option(
        None, "--threads", help="torch CPU threads (default 1: robust on a shared machine, reproducible)."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Delete an earlier demo in --out and start over."),
    quiet: bool = typer.Option(False, "--quiet", help="Print only the results table and the report's path."),
) -> None:
    """Run the whole pipeline on an embedded synthetic corpus (or --data) and write report.md and report.html.

    Generates a multi-speaker, phone-aligned speech corpus, pretrains a CPC model sized for the time
    budget, extracts its features and probes them for phones (per frame) and speakers (per 1.28 s window),
    next to MFCC, log-mel and the same model with random weights.

    Interrupted? Run the same command again: finished stages are skipped and training resumes.
    """
    from cpcaudio.demo import run_demo

    with user_errors(ctx):
        printer = _Printer(quiet=quiet, bars=stderr_is_terminal())
        try:
            result = run_demo(
                out,
                minutes=minutes,
                data=data,
                device=device,
                seed=seed,
                progress=printer,
                size="tiny" if tiny else "default",
                steps=steps,
                threads=threads,
                overrides=assignments,
                overwrite=overwrite,
                command=shlex.join(["cpcaudio", *sys.argv[1:]]),
            )
        finally:
            printer.close()
    typer.echo("")
    typer.echo(result.table())
    total = sum(result.stage_seconds.values())
    typer.echo("")
    typer.echo(f"report: {result.report_html}  (and {result.report_markdown.name}); stages took {total:.0f} s in all")


class _Printer:
    """Turns :class:`cpcaudio.demo.DemoEvent` s into stage lines and one tqdm bar per stage (on a terminal)
    or occasional plain lines (in logs)."""

    def __init__(self, quiet: bool, bars: bool) -> None:
        self.quiet = quiet
        self.bars = bars
        self.bar: Any = None
        self.stage = ""
        self.last_line_step = -1

    def __call__(self, event: Any) -> None:
        if self.quiet:
            return
        prefix = f"[{event.index}/{event.count}] {event.stage}"
        if event.kind == "start":
            self._close_bar()
            self._write(f"{prefix}: {event.message}")
        elif event.kind == "skip":
            self._close_bar()
            self._write(f"{prefix}: skipped, {event.message}")
        elif event.kind == "end":
            self._close_bar()
            self._write(f"{prefix}: done in {event.seconds:.0f} s: {event.message}")
        elif event.kind == "progress":
            self._progress(event)

    def _progress(self, event: Any) -> None:
        detail = event.detail
        if detail is not None and detail.kind == "validation":
            accuracy = detail.metrics["accuracy"]
            self._write(
                f"  step {detail.step} validation: loss {detail.metrics['loss']:.3f}, step-1 accuracy {accuracy[0]:.3f}"
            )
            return
        if detail is not None and detail.kind == "message":
            self._write(f"  {detail.message}")
            return
        if self.bars:
            from tqdm import tqdm

            if self.bar is None or self.stage != event.stage:
                self._close_bar()
                unit = "step" if event.stage == "train" else "it"
                self.bar = tqdm(total=event.total, unit=unit, desc=f"  {event.stage}", leave=False, dynamic_ncols=True)
                self.stage = event.stage
            if self.bar.total != event.total:
                self.bar.reset(total=event.total)
            self.bar.n = event.done
            if detail is not None and detail.metrics:
                self.bar.set_postfix_str(_train_fields(detail.metrics), refresh=False)
            elif event.message:
                self.bar.set_description_str(f"  {event.message}", refresh=False)
            self.bar.refresh()
        elif detail is not None and detail.metrics and self._new_tenth(detail.step, detail.max_steps):
            self._write(f"  step {detail.step}/{detail.max_steps}  {_train_fields(detail.metrics)}")

    def _new_tenth(self, step: int, max_steps: int) -> bool:
        """True once per tenth of the run (plain-line mode prints about ten training lines)."""
        tenth = step // max(1, max_steps // 10)
        if tenth == self.last_line_step:
            return False
        self.last_line_step = tenth
        return True

    def _write(self, text: str) -> None:
        if self.bar is not None:
            from tqdm import tqdm

            tqdm.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr, flush=True)

    def _close_bar(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def close(self) -> None:
        self._close_bar()


def _train_fields(metrics: dict[str, Any]) -> str:
    accuracy = metrics["accuracy"]
    return f"loss {metrics['loss']:.3f}  acc1 {accuracy[0]:.3f}  {metrics['throughput']:.1f} audio s/s"
