"""``cpcaudio prepare KIND SRC OUT`` and ``cpcaudio info DATASET``: make and describe prepared datasets."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any, Optional

import typer

from cpcaudio.cli.common import echo, user_errors
from cpcaudio.errors import UsageError

_KIND_HELP = "Source kind: folder, librispeech, timit, textgrid, fsdd, uea or synthetic."


def register(app: typer.Typer) -> None:
    app.command("prepare")(prepare)
    app.command("info")(info)


def prepare(
    ctx: typer.Context,
    kind: str = typer.Argument(..., help=_KIND_HELP),
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
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a dataset already in OUT."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Prepare only the first N utterances (trials)."),
    label_tolerance: int = typer.Option(
        2, "--label-tolerance", help="Allowed label/audio length mismatch, in label frames (10 ms for audio)."
    ),
    fold_39: bool = typer.Option(False, "--fold-39", help="timit: fold the 61 phones into Lee & Hon's 39."),
    split: Optional[str] = typer.Option(None, "--split", help="timit: official or within-speaker."),
    test_fraction: Optional[float] = typer.Option(
        None, "--test-fraction", help="Share of each speaker's utterances held out as test (default 0.2)."
    ),
    labels: Optional[Path] = typer.Option(None, "--labels", help="librispeech: the CPC frame label file."),
    split_list: Optional[list[str]] = typer.Option(
        None, "--split-list", help="librispeech: NAME=FILE, one utterance id per line (repeatable)."
    ),
    num_classes: Optional[int] = typer.Option(None, "--num-classes", help="librispeech: label classes (41)."),
    speaker_pattern: Optional[str] = typer.Option(
        None, "--speaker-pattern", help="folder/textgrid: regex with a group (?P<speaker>...) on the relative path."
    ),
    file_list: Optional[Path] = typer.Option(
        None, "--file-list", help="folder: CSV/TSV with a 'path' column, optional id, speaker, split, labels."
    ),
    label_ext: Optional[str] = typer.Option(
        None, "--label-ext", help="textgrid: label file extensions, e.g. .TextGrid,.phn,.lab"
    ),
    label_units: Optional[str] = typer.Option(
        None, "--label-units", help="textgrid: seconds, samples or htk (times in text label files)."
    ),
    tier: Optional[str] = typer.Option(None, "--tier", help="textgrid: TextGrid tier with the phones."),
    labels_dir: Optional[Path] = typer.Option(
        None, "--labels-dir", help="textgrid: folder mirroring SRC that holds the label files."
    ),
    phone_set: Optional[str] = typer.Option(
        None, "--phone-set", help="textgrid: fixed phone set, a file (one per line) or a comma list."
    ),
    num_speakers: Optional[int] = typer.Option(None, "--num-speakers", help="synthetic: voices (default 8)."),
    minutes: Optional[float] = typer.Option(None, "--minutes", help="synthetic: minutes of audio (default 10)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="synthetic: random seed (default 0)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or summary."),
) -> None:
    """Prepare a source corpus into a memory-mapped dataset directory that train/extract/probe read.

    Examples: `cpcaudio prepare timit TIMIT/ data/timit --fold-39`, `cpcaudio prepare fsdd fsdd/ data/fsdd
    --sample-rate 16000`, `cpcaudio prepare uea BasicMotions data/basicmotions`, `cpcaudio prepare
    synthetic data/synthetic`.
    """
    from cpcaudio.data import prepare as prepare_dataset

    with user_errors(ctx):
        if out is None:
            if kind != "synthetic":
                raise UsageError(f"missing OUT: cpcaudio prepare {kind} SRC OUT")
            src, out = "", Path(src)
        options: dict[str, Any] = {
            "fold_39": fold_39 or None,
            "split": split,
            "test_fraction": test_fraction,
            "labels": labels,
            "split_lists": _split_lists(split_list) if split_list else None,
            "num_classes": num_classes,
            "speaker_pattern": speaker_pattern,
            "file_list": file_list,
            "label_ext": label_ext,
            "label_units": label_units,
            "tier": tier,
            "labels_dir": labels_dir,
            "phone_set": phone_set,
            "num_speakers": num_speakers,
            "minutes": minutes,
            "seed": seed,
        }
        options = {name: value for name, value in options.items() if value is not None}
        with _ProgressBar(disable=quiet) as bar:
            result = prepare_dataset(
                kind,
                src or None,
                out,
                sample_rate=sample_rate,
                mono=mono,
                workers=workers,
                on_error=on_error,
                overwrite=overwrite,
                progress=bar.update,
                limit=limit,
                label_tolerance=label_tolerance,
                command=_command_line(ctx),
                **options,
            )
        counts = result.meta["counts"]
        seconds_of_audio = counts["total_samples"] / result.meta["sample_rate"]
        echo(
            f"prepared {counts['utterances']} utterances, {counts['speakers']} speakers, "
            f"{counts['hours'] * 60:.1f} min into {result.path} in {result.seconds:.1f} s "
            f"({seconds_of_audio / max(result.seconds, 1e-9):.0f}x real time)",
            quiet,
        )
        for name, values in result.unmatched.items():
            if values:
                echo(f"  {name}: {len(values)} (listed in {result.path / 'report.json'})", quiet)
        if result.skipped:
            echo(f"  skipped: {len(result.skipped)} file(s) (listed in {result.path / 'report.json'})", quiet)
            for entry in result.skipped[:5]:
                echo(f"    {entry['problem']}", quiet)


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


def _split_lists(values: list[str]) -> dict[str, Path]:
    lists = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not name or not path:
            raise UsageError(f"--split-list expects NAME=FILE (e.g. train=train_split.txt), got {value!r}")
        lists[name] = Path(path)
    return lists


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


class _ProgressBar:
    """A tqdm bar on stderr driven by the library's ``progress(done, total)`` callback."""

    def __init__(self, disable: bool) -> None:
        self.disable = disable
        self._bar = None

    def __enter__(self) -> "_ProgressBar":
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.close()

    def update(self, done: int, total: int) -> None:
        if self.disable:
            return
        if self._bar is None:
            from tqdm import tqdm

            self._bar = tqdm(total=total, unit="utt", desc="prepare", leave=False)
        self._bar.update(done - self._bar.n)
