"""``cpcaudio demo``: the main job. For now a short training on a generated signal (loss going down)."""

from __future__ import annotations

import typer

from cpcaudio.cli.common import user_errors


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)


def demo(
    ctx: typer.Context,
    steps: int = typer.Option(60, "--steps", help="Optimisation steps of the toy training."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
) -> None:
    """Train a small CPC model on a generated signal and print the loss going down."""
    from cpcaudio.toy import train_on_generated_signal

    with user_errors(ctx):
        for step, loss, accuracy in train_on_generated_signal(steps=steps, seed=seed):
            typer.echo(f"step {step:4d}  loss {loss:.4f}  step-1 accuracy {accuracy:.3f}")
