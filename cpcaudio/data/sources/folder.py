"""``folder``: any folder of audio files (wav, flac, ogg, mp3), searched recursively.

Speakers come from, in order of preference:

1. a list file (``file_list``, CSV or TSV with a header row): column ``path`` (relative to the source
   folder) is required; ``id``, ``speaker`` and ``split`` are optional; every other column becomes an
   utterance-level label. With a ``speaker`` column every row must fill it in (an empty cell is refused,
   naming the row: it would otherwise fall back to the folder name and split a speaker in two). The
   list may start with a UTF-8 byte-order mark (Excel's "CSV UTF-8"). Only the listed files are
   prepared; listed files that do not exist are counted as ``listed_without_audio`` (a listed broken
   symbolic link is a bad file: refused, or left out and reported with ``--on-error skip``).
2. ``speaker_pattern``: a regular expression with a named group ``speaker`` searched in each file's
   relative path, e.g. ``'^(?P<speaker>[^/]+)/'`` or ``'_(?P<speaker>[a-z]+)_\\d+\\.wav$'``.
3. otherwise the name of the folder holding the file (``unknown`` for files at the top level).

Utterance ids are relative paths without extension. Splits come from the list's ``split`` column, or
else from the within-speaker hold-out rule of :mod:`cpcaudio.data.splits` (``test_fraction``).
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Optional

from cpcaudio.data.sources import base
from cpcaudio.data.sources.base import SourcePlan, UtteranceItem, assign_missing_splits, utterance_id_from_path
from cpcaudio.data.sources.spec import SPEAKER_PATTERN, TEST_FRACTION, SourceKind, SourceOption
from cpcaudio.data.splits import DEFAULT_TEST_FRACTION
from cpcaudio.errors import DataError

_RESERVED = {"path", "id", "speaker", "split"}

SUMMARY = "any folder of audio files; speakers from folder names, a path pattern or a CSV/TSV list"
OPTIONS: tuple[SourceOption, ...] = (
    SPEAKER_PATTERN,
    SourceOption(
        "file_list", Path, None,
        "CSV/TSV with a 'path' column, optional id, speaker, split and label columns.",
    ),
    TEST_FRACTION,
)
"""The options of :func:`discover` that users set (``cpcaudio prepare --help``)."""


def discover(
    src: Path,
    *,
    speaker_pattern: Optional[str] = None,
    file_list: Optional[Path] = None,
    test_fraction: float = DEFAULT_TEST_FRACTION,
) -> SourcePlan:
    """List the utterances of an audio folder (see the module docstring for the rules).

    Args:
        src: the folder.
        speaker_pattern: regex with a named group ``speaker`` (ignored for files with a listed speaker).
        file_list: CSV/TSV list of files with optional speaker, split and label columns.
        test_fraction: share of each speaker held out as ``test`` when no split column is given.

    Returns:
        The plan (no frame labels; utterance labels from the list's extra columns).
    """
    src = Path(src)
    pattern = base.compile_speaker_pattern(speaker_pattern)
    plan = SourcePlan(
        kind="folder",
        items=[],
        source={"speaker_pattern": speaker_pattern, "file_list": str(file_list) if file_list else None},
    )
    if file_list is not None:
        rows, label_names = _read_file_list(Path(file_list))
        plan.utterance_label_names = label_names
        missing = []
        for line, row in rows:
            if "speaker" in row and not row["speaker"]:
                raise DataError(
                    f"{file_list}:{line}: the speaker cell of {row['path']} is empty; fill it in (or leave "
                    "out the speaker column to take every speaker from its folder name or --speaker-pattern)"
                )
            audio = Path(row["path"]) if Path(row["path"]).is_absolute() else src / row["path"]
            if not audio.is_file():
                if audio.is_symlink():
                    plan.rejected.append(
                        (str(audio), f"broken symbolic link (its target {os.readlink(audio)} does not exist); "
                         "fix or remove the link")
                    )
                else:
                    missing.append(row["path"])
                continue
            relative = Path(row["path"])
            speaker = row.get("speaker") or base.speaker_from_path(relative, pattern)
            if speaker is None:
                base.reject_unmatched_speaker(plan, audio, speaker_pattern)
                continue
            plan.items.append(
                UtteranceItem(
                    utterance_id=row.get("id") or utterance_id_from_path(relative),
                    speaker=speaker,
                    split=row.get("split", ""),
                    audio_path=audio,
                    utterance_labels={name: row[name] for name in label_names},
                )
            )
        plan.unmatched["listed_without_audio"] = missing
    else:
        for audio, relative, speaker in base.audio_files_by_speaker(plan, src, speaker_pattern):
            plan.items.append(UtteranceItem(utterance_id_from_path(relative), speaker, "", audio_path=audio))
    assign_missing_splits(plan, test_fraction)
    return plan


def _read_file_list(path: Path) -> tuple[list[tuple[int, dict[str, str]]], tuple[str, ...]]:
    """``[(line number, row)]`` of a CSV/TSV file list (UTF-8, with or without a BOM) and its label columns."""
    delimiter = "\t" if path.suffix.lower() in (".tsv", ".tab") else ","
    rows = []
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:  # Excel writes a BOM
            reader = csv.DictReader(handle, delimiter=delimiter)
            fields = [name.strip() for name in reader.fieldnames or []]
            reader.fieldnames = fields
            if "path" not in fields:
                raise DataError(
                    f"{path}: a file list needs a header row with a 'path' column (found: {', '.join(fields)})"
                )
            for row in reader:
                if None in row:
                    raise DataError(
                        f"{path}:{reader.line_num}: {len(fields) + len(row[None])} fields, the header has "
                        f"{len(fields)}; correct the row (quote fields that hold a '{delimiter}')"
                    )
                values = {k: (v or "").strip() for k, v in row.items()}
                if not values["path"]:
                    raise DataError(f"{path}:{reader.line_num}: the path cell is empty; fill it in or remove the row")
                rows.append((reader.line_num, values))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise DataError(
            f"{path}: cannot read file list ({error}); give a UTF-8 CSV/TSV file with a header row"
        ) from None
    return rows, tuple(f for f in fields if f not in _RESERVED)


KIND = SourceKind("folder", discover, SUMMARY, OPTIONS)
