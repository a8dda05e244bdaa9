"""What every data script shares: a command line built from the corpus kind's declared options, the
``prepare`` call and the summary line. Each ``data_scripts/<corpus>.py`` holds the recipe (where to get
the data, the options that reproduce it) and calls :func:`run`.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from cpcaudio.data import PrepareResult, prepare
from cpcaudio.data.sources import source_kind
from cpcaudio.errors import CPCAudioError


def parser(kind: str, doc: str, src_help: str = "", sample_rate_help: str = "resample to this rate (soxr)",
           on_error: str = "fail") -> argparse.ArgumentParser:
    """The script's arguments: SRC (unless the kind generates its corpus) and OUT, the general options of
    ``prepare``, then every option the kind's reader declares (``cpcaudio prepare --help`` shows the same)."""
    declared = source_kind(kind)
    arguments = argparse.ArgumentParser(
        description=doc.splitlines()[0],
        epilog="\n".join(doc.splitlines()[1:]).strip(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    if declared.source != "none":
        arguments.add_argument("src", help=src_help)
    arguments.add_argument("out", help="dataset directory to create")
    arguments.add_argument("--sample-rate", type=int, default=None, help=sample_rate_help)
    arguments.add_argument("--keep-channels", action="store_true", help="keep channels instead of mixing down")
    arguments.add_argument("--workers", type=int, default=0, help="worker processes (0: one per CPU)")
    arguments.add_argument("--on-error", default=on_error, choices=["fail", "skip"], help=f"default: {on_error}")
    arguments.add_argument("--overwrite", action="store_true", help="replace a dataset already in OUT")
    for option in declared.options:
        if option.type is bool:
            arguments.add_argument(option.cli_flag, dest=option.name, action="store_true", help=option.help)
        else:
            arguments.add_argument(
                option.cli_flag, dest=option.name, type=option.type, default=None, help=option.help,
                action="append" if option.multiple else "store",
            )
    return arguments


def run(kind: str, args: argparse.Namespace, **options: Any) -> PrepareResult:
    """Prepare with the parsed ``args`` (declared options only when given) plus ``options``; print the
    counts. A library error is printed as one line and exits with its code."""
    given = {}
    for option in source_kind(kind).options:
        value = getattr(args, option.name)
        if value is not None and value is not False:
            given[option.name] = option.from_cli(value)
    try:
        result = prepare(
            kind,
            getattr(args, "src", None),
            args.out,
            sample_rate=args.sample_rate,
            mono=not args.keep_channels,
            workers=args.workers,
            on_error=args.on_error,
            overwrite=args.overwrite,
            **{**given, **options},
        )
    except CPCAudioError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(error.exit_code) from None
    print(f"{result.meta['counts']} -> {result.path} (skipped {len(result.skipped)})")
    return result
