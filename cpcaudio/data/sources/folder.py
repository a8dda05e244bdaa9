"""``folder``: any folder of audio files (wav, flac, ogg, mp3), searched recursively.

Speakers come from, in order of preference:

1. a list file (``file_list``, CSV or TSV with a header row): column ``path`` (relative to the source
   folder) is required; ``id``, ``speaker`` and ``split`` are optional; every other column becomes an
   utterance-level label. Only the listed files are prepared; listed files that do not exist are
   counted as ``listed_without_audio``.
2. ``speaker_pattern``: a regular expression with a named group ``speaker`` searched in each file's
   relative path, e.g. ``'^(?P<speaker>[^/]+)/'`` or ``'_(?P<speaker>[a-z]+)_\\d+\\.wav$'``.
3. otherwise the name of the folder holding the file (``unknown`` for files at the top level).

Utterance ids are relative paths without extension. Splits come from the list's ``split`` column, or
else from the within-speaker hold-out rule of :mod:`cpcaudio.data.splits` (``test_fraction``).
"""

from __future__ import annotations

import csv
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
        for row in rows:
            audio = Path(row["path"]) if Path(row["path"]).is_absolute() else src / row["path"]
            if not audio.is_file():
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


def _read_file_list(path: Path) -> tuple[list[dict[str, str]], tuple[str, ...]]:
    delimiter = "\t" if path.suffix.lower() in (".tsv", ".tab") else ","
    try:
        with open(path, encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(handle, delimiter=delimiter)
            fields = reader.fieldnames or []
            if "path" not in fields:
                raise DataError(
                    f"{path}: a file list needs a header row with a 'path' column (found: {', '.join(fields)})"
                )
            rows = [{k: (v or "").strip() for k, v in row.items()} for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise DataError(
            f"{path}: cannot read file list ({error}); give a UTF-8 CSV/TSV file with a header row"
        ) from None
    return rows, tuple(f for f in fields if f not in _RESERVED)


KIND = SourceKind("folder", discover, SUMMARY, OPTIONS)
