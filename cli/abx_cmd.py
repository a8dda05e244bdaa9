"""``cpcaudio abx``: ABX discriminability of frozen features, next to MFCC / log-mel / random baselines."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from cpcaudio.cli.common import user_errors
from cpcaudio.cli.options import OverwriteOption, QuietOption, feature_set_options
from cpcaudio.cli.progress import ProgressPrinter
from cpcaudio.evaluate.feature_sets import FeatureSetOptions

# What 'cpcaudio units' shares: the model's options (cli.options.feature_set_options) and the ABX ones.
model_options = feature_set_options(
    layer_help="context (c), encoder (z) or all (both, one row group each).",
    baselines_help="Comma-separated: mfcc, logmel, random, or none (default: all three).",
)
SpeakerModesOption = Annotated[
    Optional[str], typer.Option("--speaker-modes", help="Comma-separated: within, across (default: both).")
]
ContextModesOption = Annotated[
    Optional[str],
    typer.Option(
        "--context-modes",
        help="Comma-separated: within (triphone; libri-light, ZeroSpeech 2021), any (phoneme; ZeroSpeech 2024). "
        "Default: both.",
    ),
]
SlicingOption = Annotated[
    str,
    typer.Option(
        "--slicing",
        help="Frames of an item: center (frames whose centre lies in the segment) or librilight (its formula: "
        "one frame fewer per segment).",
    ),
]
ItemsOption = Annotated[
    Optional[Path],
    typer.Option("--items", help="A libri-light / ZeroSpeech .item file (instead of the dataset's alignments)."),
]
SplitOption = Annotated[
    Optional[str], typer.Option("--split", help="Only the items of this split (default: every utterance).")
]


def register(app: typer.Typer) -> None:
    app.command("abx")(abx)


@model_options
def abx(
    ctx: typer.Context,
    dataset: Path = typer.Argument(
        ..., help="Prepared dataset with phone alignments, or (with --items) a folder of audio or of .npy features."
    ),
    out: Path = typer.Option(..., "--out", help="Directory for results.json, results.md and abx.png."),
    sources: Optional[FeatureSetOptions] = None,
    items: ItemsOption = None,
    split: SplitOption = None,
    speaker_modes: SpeakerModesOption = None,
    context_modes: ContextModesOption = None,
    max_size_group: int = typer.Option(10, "--max-size-group", help="Items kept per (context, speaker, phone) cell."),
    max_x_across: int = typer.Option(5, "--max-x-across", help="X speakers drawn per A cell (across speakers)."),
    slicing: SlicingOption = "center",
    frame_hop: float = typer.Option(0.01, "--frame-hop", help="Seconds per frame of .npy feature files."),
    quiet: QuietOption = False,
    overwrite: OverwriteOption = False,
) -> None:
    """ABX error rates of a model's features and of its baselines on the same phone items.

    Items are the phone occurrences of DATASET (or of --items); frames are compared with the angular
    distance and DTW normalised by the path length; errors are averaged over contexts, then speakers, then
    phone pairs, as libri-light does. One row per features x speaker mode x context mode.
    """
    from cpcaudio.evaluate.abx import AbxSettings, run_abx
    from cpcaudio.evaluate.abx.report import markdown_table

    with user_errors(ctx):
        settings = AbxSettings(speaker_modes, context_modes, max_size_group, max_x_across, slicing)
        with ProgressPrinter(quiet=quiet) as printer:
            report = run_abx(dataset, sources, settings, items_file=items, split=split, frame_hop=frame_hop, out=out,
                             progress=printer, overwrite=overwrite)
        if not quiet:
            typer.echo(markdown_table(report))
            typer.echo(f"wrote {out / 'results.json'}, {out / 'results.md'} and {out / 'abx.png'}")
