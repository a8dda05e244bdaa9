"""``cpcaudio extract``: frozen features of a corpus into a resumable, memory-mapped feature store."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Optional

import typer

from cpcaudio.cli.common import user_errors
from cpcaudio.cli.options import DeviceOption, OverwriteOption, QuietOption
from cpcaudio.cli.progress import ProgressPrinter


def register(app: typer.Typer) -> None:
    app.command("extract")(extract)


def extract(
    ctx: typer.Context,
    checkpoint: Path = typer.Argument(..., help="Checkpoint written by 'cpcaudio train' (e.g. run/last.pt)."),
    input: Path = typer.Argument(
        ..., help="A prepared dataset directory, a folder of audio files, or a text file with one audio path per line."
    ),
    out: Path = typer.Argument(..., help="Directory of the feature store to write (an unfinished one is resumed)."),
    layer: str = typer.Option("context", "--layer", help="context (c), encoder (z) or all (z and c concatenated)."),
    device: DeviceOption = None,
    batch_size: int = typer.Option(8, "--batch-size", help="Utterances per batch (grouped by similar length)."),
    npy: bool = typer.Option(False, "--npy", help="Also write one .npy file per utterance under OUT/npy/."),
    overwrite: OverwriteOption = False,
    chunk_seconds: Optional[float] = typer.Option(
        None, "--chunk-seconds", help="Seconds of signal per chunk for long utterances (default 10; same result)."
    ),
    quiet: QuietOption = False,
) -> None:
    """Extract frozen CPC features of every utterance of INPUT into the feature store OUT.

    OUT gets features.npy (total_frames, dim) float32, utterances.json (ids, speakers, splits, frame offsets
    and lengths) and meta.json (checkpoint and its sha256, layer, config, frame rate).

    An interrupted run continues where it stopped when the same command is run again. One extraction at a
    time writes into OUT (a second one is refused, naming the first one's pid). Files longer than a minute
    are read and extracted in blocks, in constant memory, with the same result.
    """
    from cpcaudio.extract import extract_to_store
    from cpcaudio.runtime import keep_freed_memory

    # glibc: reuse freed memory instead of page-faulting fresh blocks in for every chunk. Extraction works
    # in chunks and blocks of bounded size, so the heap settles at the largest chunk's peak
    # (benchmarks/extract_memory.py --malloc system keep: the same peak resident memory).
    keep_freed_memory()
    with user_errors(ctx):
        with ProgressPrinter(quiet=quiet) as printer:
            summary = extract_to_store(
                checkpoint,
                input,
                out,
                layer=layer,
                device=device,
                batch_size=batch_size,
                npy=npy,
                overwrite=overwrite,
                chunk_seconds=chunk_seconds,
                progress=printer,
                command=shlex.join(["cpcaudio", *sys.argv[1:]]),
            )
        if quiet:
            return
        if summary.already_complete:
            npy_note = f"; wrote {summary.npy_files_written} .npy files" if summary.npy_files_written else "; nothing to do"
            typer.echo(f"{out} is already complete ({summary.num_utterances} utterances){npy_note}")
            return
        speed = summary.audio_seconds / summary.seconds if summary.seconds > 0 else float("inf")
        resumed = f", resumed after {summary.resumed_from}" if summary.resumed_from else ""
        typer.echo(
            f"wrote {summary.num_utterances} utterances, {summary.total_frames} frames x {summary.dim} ({layer}) "
            f"to {out}{resumed}; {summary.processed} extracted in {summary.seconds:.1f} s"
            + (f" ({speed:.1f}x real time)" if summary.resumed_from == 0 else "")
        )
