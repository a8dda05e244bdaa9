"""Entry point of the ``cpcaudio`` command: one sub-command per pipeline stage.

prepare -> train -> extract -> probe / abx / units, plus ``info``, ``demo`` (the whole pipeline),
``convert`` (CPC_audio checkpoints) and ``export`` (ONNX).
Each command lives in its own module and only translates options into one library call.
"""

from __future__ import annotations

import typer

from cpcaudio import __version__

app = typer.Typer(
    name="cpcaudio",
    help="Contrastive Predictive Coding for audio and time series: prepare, train, extract, probe.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"cpcaudio {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks instead of one-line errors."),
    version: bool = typer.Option(
        False, "--version", callback=_version_callback, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Contrastive Predictive Coding for audio and time series."""
    ctx.obj = {"debug": debug}


def main() -> None:
    """Console-script entry point."""
    app()


# Each command module exposes ``register(app)``; the order here is the order in ``--help``.
from cpcaudio.cli import demo_cmd  # noqa: E402
from cpcaudio.cli import prepare_cmd  # noqa: E402
from cpcaudio.cli import info_cmd  # noqa: E402
from cpcaudio.cli import train_cmd  # noqa: E402
from cpcaudio.cli import extract_cmd  # noqa: E402
from cpcaudio.cli import probe_cmd  # noqa: E402
from cpcaudio.cli import convert_cmd, export_cmd  # noqa: E402
from cpcaudio.cli import abx_cmd, units_cmd  # noqa: E402

for _module in (prepare_cmd, info_cmd, train_cmd, extract_cmd, probe_cmd, abx_cmd, units_cmd, demo_cmd, convert_cmd, export_cmd):
    _module.register(app)

if __name__ == "__main__":
    main()
