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

from cpcaudio.data.sources.base import (
    SourcePlan,
    UtteranceItem,
    compile_speaker_pattern,
    find_audio_files,
    speaker_from_path,
    utterance_id_from_path,
)
from cpcaudio.data.splits import DEFAULT_TEST_FRACTION, SPLIT_NAMES, within_speaker_split
from cpcaudio.errors import DataError

_RESERVED = {"path", "id", "speaker", "split"}


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
    pattern = compile_speaker_pattern(speaker_pattern)
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
            speaker = row.get("speaker") or speaker_from_path(relative, pattern)
            if speaker is None:
                plan.rejected.append((str(audio), f"speaker pattern {speaker_pattern!r} does not match"))
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
        for audio in find_audio_files(src):
            relative = audio.relative_to(src)
            speaker = speaker_from_path(relative, pattern)
            if speaker is None:
                plan.rejected.append((str(audio), f"speaker pattern {speaker_pattern!r} does not match"))
                continue
            plan.items.append(UtteranceItem(utterance_id_from_path(relative), speaker, "", audio_path=audio))
    assign_missing_splits(plan, test_fraction)
    return plan


def assign_missing_splits(plan: SourcePlan, test_fraction: float) -> None:
    """Give items without a split one by the within-speaker hold-out rule; record the rule used."""
    for item in plan.items:
        if item.split and item.split not in SPLIT_NAMES:
            raise DataError(
                f"{item.origin}: split {item.split!r} is not one of {', '.join(SPLIT_NAMES)}"
            )
    todo = [item for item in plan.items if not item.split]
    if todo:
        splits = within_speaker_split(
            [i.utterance_id for i in todo], [i.speaker for i in todo], test_fraction
        )
        for item, split in zip(todo, splits):
            item.split = split
        plan.split_rule = plan.split_rule or (
            f"within-speaker hold-out: round({test_fraction} x n) utterances of every speaker in test, "
            "chosen by SHA-1 of the utterance id"
        )
    else:
        plan.split_rule = plan.split_rule or "given by the source"


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
