"""``cpcaudio export``: a checkpoint's encoder and context network as an ONNX file, checked numerically."""

from __future__ import annotations

from pathlib import Path

import typer

from cpcaudio.cli.common import user_errors
from cpcaudio.cli.options import OverwriteOption, QuietOption


def register(app: typer.Typer) -> None:
    app.command("export")(export)


def export(
    ctx: typer.Context,
    checkpoint: Path = typer.Argument(
        ..., help="Any checkpoint 'cpcaudio extract' reads: cpcaudio's, CPC_audio's or libri-light's."
    ),
    out: Path = typer.Argument(..., help="The ONNX file to write (.onnx)."),
    opset: int = typer.Option(17, "--opset", help="ONNX opset version (17 to 21)."),
    check: bool = typer.Option(
        True, "--check/--no-check", help="Run the file with onnxruntime and compare with extract (1e-4)."
    ),
    overwrite: OverwriteOption = False,
    quiet: QuietOption = False,
) -> None:
    """Export the encoder and context network of CHECKPOINT to OUT (ONNX).

    Input 'signal' (batch, channels, samples) float32 at the model's sample rate; outputs 'context'
    (batch, frames, context dim) and 'latents' (batch, frames, encoder dim); batch and samples are
    dynamic. The file's metadata holds sample_rate, hop, receptive_field and offset.
    """
    from cpcaudio.export import export_onnx
    from cpcaudio.interop import load_model

    with user_errors(ctx):
        model = load_model(checkpoint, device="cpu")
        result = export_onnx(model, out, opset=opset, overwrite=overwrite, check=check)
        if quiet:
            return
        checked = (
            f"; onnxruntime matches extract to {result.max_difference:.1e} (relative)"
            if result.max_difference is not None
            else ""
        )
        typer.echo(
            f"wrote {out} (opset {result.opset}): signal (batch, {model.config.encoder.in_channels}, samples) at "
            f"{result.sample_rate} Hz -> context, latents (batch, frames, dim), one frame per {result.hop} "
            f"samples{checked}"
        )
