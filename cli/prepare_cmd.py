"""``cpcaudio prepare KIND SRC OUT``: make a prepared dataset from a source corpus.

The kinds and their options are not written here: every reader in :mod:`cpcaudio.data.sources`
declares its options (:class:`~cpcaudio.data.sources.SourceOption`), and this module turns each into a
flag, grouped by kind in ``--help``. A kind's options reach the library only when given on the command
line, and the library refuses one that does not apply to the chosen kind.
"""

from __future__ import annotations

import copy
import inspect
import shlex
from pathlib import Path
from typing import Annotated, Any, Optional, get_args

import typer

from cpcaudio.cli.common import echo, user_errors
from cpcaudio.cli.options import OverwriteOption, QuietOption, SeedOption
from cpcaudio.cli.progress import ProgressPrinter
from cpcaudio.data.sources import SOURCE_KINDS, SourceOption, source_kind
from cpcaudio.errors import UsageError

# Declared options whose flag is one of the options every command shares take that shared definition.
_SHARED_OPTIONS: dict[str, Any] = {"--seed": SeedOption}


def register(app: typer.Typer) -> None:
    app.command("prepare", help=_command_help())(_prepare_command())


def prepare(
    ctx: typer.Context,
    kind: str = typer.Argument(..., help=f"Source kind: {', '.join(SOURCE_KINDS)}."),
    src: str = typer.Argument(
        ..., help="Source corpus folder (uea: also a bundled set name or a .ts file). For synthetic give only OUT."
    ),
    out: Optional[Path] = typer.Argument(None, help="Dataset directory to create (new or empty)."),
    sample_rate: Optional[int] = typer.Option(
        None, "--sample-rate", help="Resample every file to this rate (soxr). Default: keep the files' rate."
    ),
    mono: bool = typer.Option(True, "--mono/--keep-channels", help="Mix down to one channel, or keep channels."),
    workers: int = typer.Option(0, "--workers", help="Worker processes (0: one per CPU, at most 8)."),
    on_error: str = typer.Option(
        "fail",
        "--on-error",
        help="fail: stop at the first bad file; skip: leave bad files out and list them in the report.",
    ),
    overwrite: OverwriteOption = False,
    limit: Optional[int] = typer.Option(None, "--limit", help="Prepare only the first N utterances (trials)."),
    label_tolerance: int = typer.Option(
        2, "--label-tolerance", help="Allowed label/audio length mismatch, in label frames (10 ms for audio)."
    ),
    clipping: str = typer.Option(
        "clip",
        "--clipping",
        help="Samples beyond full scale (float WAVs above 0 dBFS): clip them, scale the file down by its peak, "
        "or fail (refuse the file). Every such file is listed in report.json.",
    ),
    quiet: QuietOption = False,
    **kind_values: Any,
) -> None:
    """Prepare a source corpus into a memory-mapped dataset directory that train/extract/probe read."""
    from cpcaudio.data import prepare as prepare_dataset

    with user_errors(ctx):
        if out is None:
            if source_kind(kind).source != "none":
                raise UsageError(f"missing OUT: cpcaudio prepare {kind} SRC OUT")
            src, out = "", Path(src)
        with ProgressPrinter(quiet=quiet) as printer:
            result = prepare_dataset(
                kind,
                src or None,
                out,
                sample_rate=sample_rate,
                mono=mono,
                workers=workers,
                on_error=on_error,
                overwrite=overwrite,
                progress=printer,
                limit=limit,
                label_tolerance=label_tolerance,
                clipping=clipping,
                command=_command_line(ctx),
                **_given_kind_options(kind_values),
            )
        warning = _clipping_warning(result)
        if warning:
            typer.echo(warning, err=True)  # also with --quiet: the stored audio differs from the source
        for line in _summary(result):
            echo(line, quiet)


def _summary(result: Any) -> list[str]:
    """What ``prepare`` prints on stdout: the totals, then what went unmatched or was skipped."""
    counts = result.meta["counts"]
    seconds_of_audio = counts["total_samples"] / result.meta["sample_rate"]
    report = result.path / "report.json"
    lines = [
        f"prepared {counts['utterances']} utterances, {counts['speakers']} speakers, "
        f"{counts['hours'] * 60:.1f} min into {result.path} in {result.seconds:.1f} s "
        f"({seconds_of_audio / max(result.seconds, 1e-9):.0f}x real time)"
    ]
    lines += [f"  {name}: {len(values)} (listed in {report})" for name, values in result.unmatched.items() if values]
    if result.clipped:
        lines.append(f"  beyond full scale: {len(result.clipped)} file(s) (listed under 'clipped' in {report})")
    if result.skipped:
        lines.append(f"  skipped: {len(result.skipped)} file(s) (listed in {report})")
        lines += [f"    {entry['problem']}" for entry in result.skipped[:5]]
    return lines


def _clipping_warning(result: Any) -> str:
    """One stderr line when files had samples beyond full scale (empty when none had)."""
    if not result.clipped:
        return ""
    worst = max(result.clipped, key=lambda entry: entry["fraction"])
    clipped = worst["action"] == "clipped"
    done = "clipped" if clipped else "scaled down to full scale (by their peak)"
    other = "--clipping scale scales such files down instead" if clipped else "--clipping clip clips them instead"
    return (
        f"warning: {len(result.clipped)} file(s) had samples beyond full scale and were {done}; most: "
        f"{worst['file']} ({100 * worst['fraction']:.3g}% of its samples, peak {worst['peak']:.3g}); listed "
        f"under 'clipped' in {result.path / 'report.json'} ({other}, --clipping fail refuses them)"
    )


# ---- kind options: from the readers' declarations to typer parameters ------------------------------------


def _declared_options() -> dict[str, tuple[SourceOption, list[str]]]:
    """Every declared option once (by keyword name) with the kinds that declare it: each kind's own
    options in kind order, then the options several kinds share."""
    options: dict[str, tuple[SourceOption, list[str]]] = {}
    for kind in SOURCE_KINDS.values():
        for option in kind.options:
            if option.name in options:
                first = options[option.name][0]
                if (first.cli_flag, first.type, first.multiple) != (option.cli_flag, option.type, option.multiple):
                    raise AssertionError(f"kinds declare the option {option.name!r} in two different ways")
                options[option.name][1].append(kind.name)
            else:
                options[option.name] = (option, [kind.name])
    return dict(sorted(options.items(), key=lambda entry: len(entry[1][1]) > 1))  # stable: kind order kept


def _kind_parameter(option: SourceOption, kinds: list[str]) -> inspect.Parameter:
    """The typer parameter of one declared option (default: not given, so the reader's own applies)."""
    panel = f"Options of {', '.join(kinds)}"
    if option.cli_flag in _SHARED_OPTIONS:
        shared = _SHARED_OPTIONS[option.cli_flag]
        value_type, info = get_args(shared)
        info = copy.copy(info)
        info.rich_help_panel = panel
        annotation: Any = Annotated[value_type, info]
        default: Any = None
    elif option.type is bool:
        annotation = Annotated[bool, typer.Option(option.cli_flag, help=option.help, rich_help_panel=panel)]
        default = False
    else:
        value_type = list[option.type] if option.multiple else option.type  # type: ignore[name-defined]
        text = option.help if option.default is None else f"{option.help} Default: {option.default}."
        annotation = Annotated[
            Optional[value_type],
            typer.Option(option.cli_flag, help=text, show_default=False, rich_help_panel=panel),
        ]
        default = None
    return inspect.Parameter(option.name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)


def _given_kind_options(values: dict[str, Any]) -> dict[str, Any]:
    """The kind options given on the command line, as the reader's keywords."""
    declared = _declared_options()
    given = {}
    for name, value in values.items():
        if value is None or value is False or value == []:
            continue
        given[name] = declared[name][0].from_cli(value)
    return given


def _prepare_command() -> Any:
    """:func:`prepare` with one keyword parameter per declared kind option, for typer to read."""
    signature = inspect.signature(prepare, eval_str=True)
    fixed = [p for p in signature.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    # --quiet last, after the kind options (as in --help and the command recorded in meta.json)
    quiet = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in fixed if p.name == "quiet"]
    fixed = [p for p in fixed if p.name != "quiet"]
    extra = [_kind_parameter(option, kinds) for option, kinds in _declared_options().values()] + quiet

    def command(**values: Any) -> None:
        prepare(**values)

    command.__doc__ = prepare.__doc__
    command.__signature__ = signature.replace(parameters=fixed + extra)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in fixed + extra}
    return command


def _command_help() -> str:
    lines = [
        "Prepare a source corpus into a memory-mapped dataset directory that train/extract/probe read.",
        "",
        "Kinds:",
        "",
    ]
    lines += [f"- {kind.name}: {kind.summary}" for kind in SOURCE_KINDS.values()]
    lines += [
        "",
        "Examples: `cpcaudio prepare timit TIMIT/ data/timit --fold-39`, `cpcaudio prepare fsdd fsdd/ data/fsdd "
        "--sample-rate 16000`, `cpcaudio prepare uea BasicMotions data/basicmotions`, `cpcaudio prepare "
        "synthetic data/synthetic`.",
    ]
    return "\n".join(lines)


def _command_line(ctx: typer.Context) -> str:
    """The command as typed, rebuilt from the parameters the user gave (not their defaults)."""
    parts = ["cpcaudio", ctx.info_name or "prepare"]
    for parameter in ctx.command.params:
        value = ctx.params.get(parameter.name)
        if getattr(parameter, "param_type_name", "") == "argument":
            if value not in (None, ""):
                parts.append(str(value))
            continue
        source = ctx.get_parameter_source(parameter.name)
        if source is None or source.name == "DEFAULT":
            continue
        flag = parameter.opts[0]
        if getattr(parameter, "is_flag", False):
            off = parameter.secondary_opts[0] if parameter.secondary_opts else flag
            parts.append(flag if value else off)
        elif isinstance(value, (list, tuple)):
            for item in value:
                parts += [flag, str(item)]
        else:
            parts += [flag, str(value)]
    return shlex.join(parts)

