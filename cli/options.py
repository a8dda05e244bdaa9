"""Options that several commands share, defined once: same flag, same short name, same help.

Use them as parameter annotations::

    def extract(..., device: DeviceOption = None, quiet: QuietOption = False) -> None: ...

A command that evaluates a model takes the model's six options (``--checkpoint``, ``--features``,
``--layer``, ``--baselines``, ``--seed``, ``--device``) as one
:class:`~cpcaudio.evaluate.feature_sets.FeatureSetOptions`, with :func:`feature_set_options`.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Optional, TypeVar

import typer

Command = TypeVar("Command", bound=Callable[..., Any])

DeviceOption = Annotated[
    Optional[str],
    typer.Option("--device", help="cpu, cuda, cuda:N or mps (default: CUDA if available, else MPS, else CPU)."),
]
QuietOption = Annotated[bool, typer.Option("--quiet", "-q", help="No progress and no summary; errors only.")]
OverwriteOption = Annotated[
    bool, typer.Option("--overwrite", help="Replace what an earlier run left in the output directory.")
]
SeedOption = Annotated[Optional[int], typer.Option("--seed", help="Random seed (default: the command's own, 0).")]
SetOption = Annotated[
    Optional[list[str]],
    typer.Option("--set", help="Override one config value, e.g. --set optim.learning_rate=1e-3 (repeatable)."),
]
# The model of an evaluation ('cpcaudio abx', 'cpcaudio units'; the same flags as 'cpcaudio probe').
CheckpointOption = Annotated[
    Optional[Path],
    typer.Option("--checkpoint", help="Checkpoint from 'cpcaudio train'. Without it or --features: random weights."),
]
FeaturesOption = Annotated[
    Optional[Path],
    typer.Option("--features", help="Feature store from 'cpcaudio extract' of this dataset (instead of --checkpoint)."),
]

_SHARED = ("checkpoint", "features", "layer", "baselines", "seed", "device")


def feature_set_options(layer_help: str, baselines_help: str) -> Callable[[Command], Command]:
    """Give a command the options of the model it evaluates, and hand them to it as one object.

    The decorated command declares a parameter ``sources: Optional[FeatureSetOptions] = None``; in its
    place the command line gets ``--checkpoint``, ``--features``, ``--layer`` (default ``context``),
    ``--baselines``, ``--seed`` and ``--device``, and the command receives them as a
    :class:`~cpcaudio.evaluate.feature_sets.FeatureSetOptions` (seed 0 when none is given)::

        @feature_set_options(layer_help="context (c) or encoder (z).", baselines_help="mfcc, logmel or none.")
        def score(ctx: typer.Context, dataset: Path = typer.Argument(...),
                  sources: Optional[FeatureSetOptions] = None) -> None: ...

    Args:
        layer_help, baselines_help: the help of ``--layer`` and ``--baselines`` (the choices differ
            between commands).
    """

    def decorate(command: Command) -> Command:
        signature = inspect.signature(command, eval_str=True)
        if "sources" not in signature.parameters:
            raise TypeError(f"{command.__name__} has no 'sources' parameter to receive the feature-set options")
        options = {
            "checkpoint": (CheckpointOption, None),
            "features": (FeaturesOption, None),
            "layer": (Annotated[str, typer.Option("--layer", help=layer_help)], "context"),
            "baselines": (Annotated[Optional[str], typer.Option("--baselines", help=baselines_help)], None),
            "seed": (SeedOption, None),
            "device": (DeviceOption, None),
        }
        shared = [inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=default,
                                    annotation=annotation) for name, (annotation, default) in options.items()]
        parameters = []
        for parameter in signature.parameters.values():
            parameters.extend(shared if parameter.name == "sources" else [parameter])

        @functools.wraps(command)
        def run(**arguments: Any) -> Any:
            from cpcaudio.evaluate.feature_sets import FeatureSetOptions

            values = {name: arguments.pop(name) for name in _SHARED}
            values["seed"] = 0 if values["seed"] is None else values["seed"]
            return command(**arguments, sources=FeatureSetOptions(**values))

        run.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
        run.__annotations__ = {p.name: p.annotation for p in parameters}  # evaluated, as typer reads them
        return run  # type: ignore[return-value]

    return decorate
