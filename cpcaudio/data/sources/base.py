"""What a source reader hands to :func:`cpcaudio.data.prepare`: a plan of utterances to read.

A reader (one module per source kind) only looks at file names, label files and split lists; it never
decodes audio. The heavy work (reading, resampling, label alignment) happens in worker processes, one
:class:`UtteranceItem` at a time, so every item must be picklable and self-contained.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

import numpy as np

from cpcaudio.data.audio import AUDIO_EXTENSIONS
from cpcaudio.data.splits import SPLIT_NAMES, within_speaker_split
from cpcaudio.errors import DataError, UsageError


@dataclass
class LabelSource:
    """Where the frame labels of one utterance come from.

    Exactly one of ``path`` (a segment file: ``.phn``/``.lab`` text or a Praat TextGrid) and ``frames``
    (ready-made labels, one per 10 ms, as ids into the plan's vocabulary) is set.
    """

    path: Optional[Path] = None
    units: str = "seconds"  # text segment files: samples | seconds | htk
    tier: Optional[str] = None  # TextGrid: tier to read (None: the phone tier)
    frames: Optional[np.ndarray] = None  # int64 (num_frames,)


@dataclass
class UtteranceItem:
    """One utterance to prepare: where its signal and labels are, who spoke it, which split."""

    utterance_id: str
    speaker: str
    split: str
    audio_path: Optional[Path] = None  # audio file (audio sources)
    array: Optional[np.ndarray] = None  # float (channels, time) already in memory (time-series sources)
    labels: Optional[LabelSource] = None
    utterance_labels: dict[str, str] = field(default_factory=dict)

    @property
    def origin(self) -> str:
        """The file (or in-memory series) this utterance comes from, for messages."""
        return str(self.audio_path) if self.audio_path is not None else self.utterance_id


@dataclass
class SourcePlan:
    """Everything a reader found in a source corpus.

    Attributes:
        kind: the source kind (``timit``, ``fsdd``, ...).
        items: utterances to prepare, in a deterministic order.
        signal_kind: ``audio`` (stored as int16) or ``timeseries`` (stored as float32).
        has_frame_labels: whether the dataset gets ``frame_labels.bin``.
        phone_vocabulary: the fixed frame label set (index = id); ``None`` with frame labels means an open
            set collected from the data (stored sorted).
        symbol_map: source symbol -> stored symbol (``None`` = no label) for fixed sets that fold symbols
            (TIMIT 61 -> 39); symbols missing from it are unknown.
        utterance_label_names: utterance-level labels every item carries (``digit``, ``class``, ...).
        source: what to record as ``meta["source"]`` (kind, path, options).
        rejected: ``(file, problem)`` found while listing files (e.g. a name that does not parse);
            ``--on-error`` decides whether they stop preparation or go to the report.
        unmatched: named lists counted in ``meta["counts"]`` and listed in the report, e.g.
            ``labels_without_audio``.
        sample_rate: the series' rate when the source declares it (time series); ``None`` for audio, whose
            rate comes from the files.
        split_rule: how ``split`` was decided, in words (recorded in ``meta.json``).
    """

    kind: str
    items: list[UtteranceItem]
    signal_kind: Literal["audio", "timeseries"] = "audio"
    has_frame_labels: bool = False
    phone_vocabulary: Optional[list[str]] = None
    symbol_map: Optional[dict[str, Optional[str]]] = None
    utterance_label_names: tuple[str, ...] = ()
    source: dict = field(default_factory=dict)
    rejected: list[tuple[str, str]] = field(default_factory=list)
    unmatched: dict[str, list[str]] = field(default_factory=dict)
    sample_rate: Optional[int] = None
    split_rule: str = ""


def walk_files(root: Path) -> tuple[list[Path], list[Path], list[tuple[Path, str]]]:
    """Every file under ``root``, following symbolic links to folders (each real folder once, so a link
    back to a folder above cannot loop), sorted by relative path.

    Returns:
        ``(files, broken links, unreadable folders with the reason)``.
    """
    root = Path(root)
    files: list[Path] = []
    broken: list[Path] = []
    unreadable: list[tuple[Path, str]] = []
    seen: set[tuple[int, int]] = set()
    pending = [root]
    while pending:
        folder = pending.pop()
        try:
            status = folder.stat()
            if (status.st_dev, status.st_ino) in seen:
                continue  # reached before, through another link (or a link loop)
            seen.add((status.st_dev, status.st_ino))
            entries = sorted(os.scandir(folder), key=lambda entry: entry.name, reverse=True)
        except OSError as error:
            unreadable.append((folder, error.strerror or str(error)))
            continue
        for entry in entries:
            path = Path(entry.path)
            try:
                if entry.is_dir():  # follows links
                    pending.append(path)
                elif entry.is_file():
                    files.append(path)
                elif entry.is_symlink() and not path.exists():
                    broken.append(path)
            except OSError as error:
                unreadable.append((path, error.strerror or str(error)))
    order = lambda p: p.relative_to(root).as_posix()  # noqa: E731
    return sorted(files, key=order), sorted(broken, key=order), unreadable


def find_audio_files(
    root: Path, extensions: tuple[str, ...] = AUDIO_EXTENSIONS, plan: Optional[SourcePlan] = None
) -> list[Path]:
    """Audio files under ``root`` (recursively, following symlinked folders, case-insensitive
    extensions), sorted by relative path.

    With ``plan``, broken symbolic links that would have been audio files (or folders: the name has no
    extension) and folders that cannot be read go to ``plan.rejected``, so that ``prepare`` refuses
    them (``--on-error fail``) or lists them in ``report.json`` (``skip``) instead of leaving them out
    without a word.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: no such source directory")
    wanted = {e.lower() for e in extensions}
    files, broken, unreadable = walk_files(root)
    if plan is not None:
        for link in broken:
            if link.suffix.lower() in wanted or not link.suffix:
                target = os.readlink(link)
                plan.rejected.append(
                    (str(link), f"broken symbolic link (its target {target} does not exist); fix or remove the link")
                )
        for path, reason in unreadable:
            plan.rejected.append((str(path), f"cannot read this folder ({reason}); fix its permissions"))
    return [p for p in files if p.suffix.lower() in wanted]


def speaker_from_path(relative: Path, pattern: Optional[re.Pattern]) -> Optional[str]:
    """Speaker of a file: the ``speaker`` group of ``pattern`` searched in the relative POSIX path, or
    the parent folder's name (``unknown`` for files directly in the source folder). ``None``: no match."""
    if pattern is not None:
        match = pattern.search(relative.as_posix())
        return match.group("speaker") if match else None
    return relative.parent.name if relative.parent != Path(".") else "unknown"


def audio_files_by_speaker(
    plan: SourcePlan, root: Path, speaker_pattern: Optional[str]
) -> Iterator[tuple[Path, Path, str]]:
    """``(audio file, path relative to root, speaker)`` for the audio files under ``root``, in order.

    The speaker comes from ``speaker_pattern`` (see :func:`speaker_from_path`); a file the pattern does
    not match is recorded in ``plan.rejected`` and left out.
    """
    pattern = compile_speaker_pattern(speaker_pattern)
    for audio in find_audio_files(root, plan=plan):
        relative = audio.relative_to(root)
        speaker = speaker_from_path(relative, pattern)
        if speaker is None:
            reject_unmatched_speaker(plan, audio, speaker_pattern)
            continue
        yield audio, relative, speaker


def reject_unmatched_speaker(plan: SourcePlan, audio: Path, speaker_pattern: Optional[str]) -> None:
    """Record that ``speaker_pattern`` does not match ``audio``'s path."""
    plan.rejected.append((str(audio), f"speaker pattern {speaker_pattern!r} does not match"))


def compile_speaker_pattern(pattern: Optional[str]) -> Optional[re.Pattern]:
    """Compile ``--speaker-pattern``: a regular expression with a named group ``speaker``."""
    if pattern is None:
        return None
    try:
        compiled = re.compile(pattern)
    except re.error as error:
        raise UsageError(f"speaker pattern {pattern!r} is not a valid regular expression ({error})") from None
    if "speaker" not in compiled.groupindex:
        raise UsageError(
            f"speaker pattern {pattern!r} needs a named group 'speaker', e.g. '^(?P<speaker>[^/]+)/'"
        )
    return compiled


def utterance_id_from_path(relative: Path) -> str:
    """Utterance id of a file: its relative path without extension, e.g. ``spk1/chapter2/utt3``."""
    return relative.with_suffix("").as_posix()


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
