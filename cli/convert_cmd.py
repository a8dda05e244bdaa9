"""``cpcaudio convert``: a CPC_audio or libri-light checkpoint into a native cpcaudio checkpoint."""

from __future__ import annotations

from pathlib import Path

import typer

from cpcaudio.cli.common import user_errors
from cpcaudio.cli.options import OverwriteOption, QuietOption


def register(app: typer.Typer) -> None:
    app.command("convert")(convert)


def convert(
    ctx: typer.Context,
    source: Path = typer.Argument(
        ...,
        help="CPC_audio checkpoint_N.pt (with checkpoint_args.json beside it), its run folder (the latest "
        "checkpoint), or a libri-light / torch.hub file {config, weights}.",
    ),
    out: Path = typer.Argument(..., help="The native cpcaudio checkpoint to write (.pt)."),
    overwrite: OverwriteOption = False,
    quiet: QuietOption = False,
) -> None:
    """Convert a CPC_audio / libri-light checkpoint into a cpcaudio checkpoint that every command reads.

    The encoder and context network give the same features as in CPC_audio. Linear (and ffd) prediction
    heads are converted too; other heads (CPC_audio's default transformer) are not, and training cannot
    continue from the converted file.
    """
    from cpcaudio.interop import convert_checkpoint

    with user_errors(ctx):
        info = convert_checkpoint(source, out, overwrite=overwrite)
        if quiet:
            return
        options = info["cpc_audio_options"]
        typer.echo(
            f"wrote {out} from {info['source']} ({info['format']}): encoder {options['hiddenEncoder']} "
            f"({options['normMode']}), {options['arMode']} {options['hiddenGar']} x {options['nLevelsGRU']}"
        )
        if info["trainable"]:
            typer.echo(f"prediction heads converted ({options['nPredicts']} {info['cpc_audio_heads']} heads)")
        else:
            typer.echo(f"features only: {info['training_refused']}")
        for note in info["notes"]:
            typer.echo(f"note: {note}")
