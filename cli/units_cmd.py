"""``cpcaudio units``: k-means units of frozen features, their PNMI / purity, and ABX on the units."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from cpcaudio.cli.abx_cmd import ContextModesOption, SlicingOption, SpeakerModesOption, model_options
from cpcaudio.cli.common import user_errors
from cpcaudio.cli.options import OverwriteOption, QuietOption
from cpcaudio.cli.progress import ProgressPrinter
from cpcaudio.evaluate.feature_sets import FeatureSetOptions


def register(app: typer.Typer) -> None:
    app.command("units")(units)


@model_options
def units(
    ctx: typer.Context,
    dataset: Path = typer.Argument(..., help="Prepared dataset (k-means is fitted on its train split)."),
    out: Path = typer.Option(
        ..., "--out", help="Directory for the report and, per feature set, the k-means and units."
    ),
    clusters: int = typer.Option(50, "--clusters", help="Number of k-means units K."),
    sources: Optional[FeatureSetOptions] = None,
    max_fit_frames: Optional[int] = typer.Option(
        None, "--max-fit-frames", help="Fit on at most this many train frames (seeded draw; default all)."
    ),
    abx: bool = typer.Option(True, "--abx/--no-abx", help="Also score the one-hot units with ABX (needs phones)."),
    speaker_modes: SpeakerModesOption = None,
    context_modes: ContextModesOption = None,
    slicing: SlicingOption = "center",
    quiet: QuietOption = False,
    overwrite: OverwriteOption = False,
) -> None:
    """k-means units of a model's features and of its baselines, and how phone-like they are.

    k-means (MiniBatchKMeans, k-means++, GSLM's settings) is fitted on each feature set's train frames; the
    units of every utterance (raw and de-duplicated) and the codebook (kmeans.npz + kmeans.json) are written.

    Where DATASET has phone labels: PNMI, phone purity, cluster purity and segment lengths (as fairseq's
    HuBERT measures them) per split, and the ABX error of the one-hot units.
    """
    from cpcaudio.evaluate.abx import AbxSettings
    from cpcaudio.evaluate.units_runner import run_units, units_table

    with user_errors(ctx):
        settings = AbxSettings(speaker_modes, context_modes, slicing=slicing) if abx else None
        with ProgressPrinter(quiet=quiet) as printer:
            report = run_units(dataset, sources, clusters=clusters, max_fit_frames=max_fit_frames, abx=settings,
                               out=out, progress=printer, overwrite=overwrite)
        if not quiet:
            typer.echo(units_table(report))
            written = f"{out / 'results.json'}, {out / 'results.md'}, {out / 'pnmi.png'}"
            typer.echo(f"wrote {written} and one folder of k-means and units per features")
