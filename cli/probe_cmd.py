"""``cpcaudio probe``: linear probes on frozen features, with MFCC / log-mel / random / raw baselines."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from cpcaudio.cli.common import user_errors
from cpcaudio.cli.options import DeviceOption, OverwriteOption, QuietOption, SeedOption
from cpcaudio.cli.progress import ProgressPrinter
from cpcaudio.evaluate.sources import AUDIO_BASELINES, BASELINES, LAYERS, TIMESERIES_BASELINES
from cpcaudio.evaluate.tasks import task_help


def register(app: typer.Typer) -> None:
    app.command("probe")(probe)


def probe(
    ctx: typer.Context,
    dataset: Path = typer.Argument(..., help="Prepared dataset directory (from 'cpcaudio prepare')."),
    task: str = typer.Option(..., "--task", help=f"{task_help()}."),
    out: Path = typer.Option(..., "--out", help="Directory for results.json, results.md and the PNG plots."),
    checkpoint: Optional[Path] = typer.Option(
        None, "--checkpoint", help="Checkpoint from 'cpcaudio train'. Without it or --features: random weights."
    ),
    features: Optional[Path] = typer.Option(
        None, "--features", help="Feature store from 'cpcaudio extract' of this dataset (instead of --checkpoint)."
    ),
    layer: str = typer.Option("context", "--layer", help=f"{' or '.join(LAYERS)} features of the model."),
    baselines: Optional[str] = typer.Option(
        None,
        "--baselines",
        help=f"Comma-separated: {', '.join(BASELINES)}, or none (default: {','.join(AUDIO_BASELINES)} for audio; "
        f"{','.join(TIMESERIES_BASELINES)} for time series).",
    ),
    label: Optional[str] = typer.Option(
        None, "--label", help="Utterance label for --task class (default: the first, e.g. digit)."
    ),
    max_train_frames: Optional[int] = typer.Option(
        None, "--max-train-frames", help="Phone task: train on at most this many frames (seeded uniform draw; default all)."
    ),
    test_window_offsets: int = typer.Option(
        1, "--test-window-offsets", min=1,
        help="--task speaker: test windows every 1/N window (1: consecutive, CPC_audio's; 8: each test "
        "utterance at 8 shifts, a less noisy window accuracy on a small test set).",
    ),
    seed: SeedOption = None,
    device: DeviceOption = None,
    quiet: QuietOption = False,
    overwrite: OverwriteOption = False,
) -> None:
    """Train linear probes on frozen features of DATASET and print the model next to its baselines.

    Features are computed once per feature set and cached in memory; every probe (standardised
    multinomial logistic regression, L2 penalty chosen on a validation part of train; for --task class
    also TS2Vec's RBF-SVM) trains on the dataset's train split and is scored on its test split. The seed
    draws the random-weight model, the validation split and the SVM subsample. --task speaker scores
    windows twice: by the last context frame (window, CPC_audio's protocol) and by the mean over the
    window's frames (window-mean, SUPERB's pooling; for MFCC, log-mel and encoder features both are the
    same probe, fitted once); test utterances give consecutive windows (--test-window-offsets N: every
    1/N window), training utterances windows every 1/8 window (CPC_audio trains on windows at a random
    offset every epoch). It also scores speaker verification without training: cosine scores of
    utterance embeddings (mean over frames, centred by the train mean) on every same-speaker pair of test
    utterances and as many seeded different-speaker pairs, reported as EER and minDCF (P_target 0.01)
    with a DET plot (det.png).
    """
    from cpcaudio.evaluate.runner import run_probe
    from cpcaudio.report.tables import markdown_table

    with user_errors(ctx), ProgressPrinter(quiet=quiet) as progress:
        report = run_probe(
            dataset,
            task,
            checkpoint=checkpoint,
            features=features,
            layer=layer,
            baselines_requested=baselines,
            seed=0 if seed is None else seed,
            label=label,
            max_train_frames=max_train_frames,
            device=device,
            out=out,
            progress=progress,
            test_window_offsets=test_window_offsets,
            overwrite=overwrite,
        )
        progress.close()
        if not quiet:
            typer.echo(markdown_table(report))
            typer.echo(f"wrote {out / 'results.json'}, {out / 'results.md'} and plots to {out}")
