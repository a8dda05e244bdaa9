"""``cpcaudio info DATASET``: describe a prepared dataset."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from cpcaudio.cli.common import user_errors


def register(app: typer.Typer) -> None:
    app.command("info")(info)


def info(
    ctx: typer.Context,
    dataset: Path = typer.Argument(..., help="A prepared dataset directory."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as one JSON object."),
) -> None:
    """Describe a prepared dataset: hours, utterances, speakers, splits, label sets with counts."""
    from cpcaudio.data import PreparedDataset, dataset_summary, format_summary

    with user_errors(ctx):
        summary = dataset_summary(PreparedDataset.open(dataset))
        typer.echo(json.dumps(summary) if as_json else format_summary(summary))
