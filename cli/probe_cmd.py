"""``cpcaudio probe``: linear probes on frozen features, with MFCC / log-mel / random / raw baselines."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from cpcaudio.cli.common import stderr_is_terminal, user_errors


def register(app: typer.Typer) -> None:
    app.command("probe")(probe)


def probe(
    ctx: typer.Context,
    dataset: Path = typer.Argument(..., help="Prepared dataset directory (from 'cpcaudio prepare')."),
    task: str = typer.Option(..., "--task", help="phone (per frame), speaker (per utterance and per window) or class."),
    out: Path = typer.Option(..., "--out", help="Directory for results.json, results.md and the PNG plots."),
    checkpoint: Optional[Path] = typer.Option(
        None, "--checkpoint", help="Checkpoint from 'cpcaudio train'. Without it or --features: random weights."
    ),
    features: Optional[Path] = typer.Option(
        None, "--features", help="Feature store from 'cpcaudio extract' of this dataset (instead of --checkpoint)."
    ),
    layer: str = typer.Option("context", "--layer", help="context (c) or encoder (z) features of the model."),
    baselines: Optional[str] = typer.Option(
        None,
        "--baselines",
        help="Comma-separated: mfcc, logmel, random, raw, or none (default: mfcc,logmel,random for audio; "
        "raw,random for time series).",
    ),
    label: Optional[str] = typer.Option(
        None, "--label", help="Utterance label for --task class (default: the first, e.g. digit)."
    ),
    max_train_frames: Optional[int] = typer.Option(
        None, "--max-train-frames", help="Phone task: train on at most this many frames (seeded uniform draw; default all)."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the random-weight model, the validation split and the SVM subsample."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda, cuda:1 ... (default: cuda if available)."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars and no table on stdout."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a report already in --out."),
) -> None:
    """Train linear probes on frozen features of DATASET and print the model next to its baselines.

    Features are computed once per feature set and cached in memory; every probe (standardised
    multinomial logistic regression, L2 penalty chosen on a validation part of train; for --task class
    also TS2Vec's RBF-SVM) trains on the dataset's train split and is scored on its test split.
    """
    from cpcaudio.probe import run_probe

    with user_errors(ctx):
        bars: dict = {}

        def progress(stage: str, done: int, total: int) -> None:
            if quiet:
                return
            from tqdm import tqdm

            bar = bars.get(stage)
            if bar is None:
                bar = bars[stage] = tqdm(total=total, desc=stage, disable=not stderr_is_terminal(), leave=False)
            bar.n = done
            bar.refresh()
            if done >= total:
                bar.close()

        try:
            report = run_probe(
                dataset,
                task,
                checkpoint=checkpoint,
                features=features,
                layer=layer,
                baselines_requested=baselines,
                seed=seed,
                label=label,
                max_train_frames=max_train_frames,
                device=device,
                out=out,
                progress=progress,
                overwrite=overwrite,
            )
        finally:
            for bar in bars.values():
                bar.close()
        if quiet:
            return
        from cpcaudio.report import markdown_table

        typer.echo(markdown_table(report))
        typer.echo(f"wrote {out / 'results.json'}, {out / 'results.md'} and plots to {out}")
