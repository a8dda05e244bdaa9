"""Readers for label files: phone segments (``.phn``/``.lab``/TextGrid), CPC frame labels, id lists.

Every reader raises :class:`cpcaudio.errors.DataError` with the file (and line) and the problem. Text is
read as UTF-8 with or without a byte-order mark (``utf-8-sig``: Excel and Windows editors write one).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

import numpy as np

from cpcaudio.errors import DataError

SegmentUnits = Literal["samples", "seconds", "htk"]
SEGMENT_UNITS: tuple[str, ...] = ("samples", "seconds", "htk")


@dataclass(frozen=True)
class Segment:
    """One labelled span of an utterance, in seconds: ``[start, end)``."""

    start: float
    end: float
    symbol: str


def read_segment_file(
    path: Path, units: SegmentUnits, sample_rate: Optional[int] = None
) -> list[Segment]:
    """Read a ``start end symbol`` file (TIMIT ``.phn``, festival ``.phn``, HTK ``.lab``).

    Args:
        path: the label file, one segment per line; blank lines are ignored.
        units: unit of ``start`` and ``end``: ``samples`` (TIMIT; needs ``sample_rate``), ``seconds``
            (festival, Audacity), or ``htk`` (100 ns ticks).
        sample_rate: sample rate of the audio the file describes, for ``units="samples"``.

    Returns:
        The segments in file order, times in seconds.
    """
    if units not in SEGMENT_UNITS:
        raise DataError(f"unknown label units {units!r}; choose one of {', '.join(SEGMENT_UNITS)}")
    if units == "samples" and not sample_rate:
        raise DataError(f"{path}: label times in samples need the audio's sample rate")
    scale = {"samples": 1.0 / sample_rate if sample_rate else 0.0, "seconds": 1.0, "htk": 1e-7}[units]
    try:
        text = Path(path).read_text(encoding="utf-8-sig", errors="strict")  # a BOM is not a character
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: cannot read label file ({error})") from None
    segments = []
    for line_number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 3:
            raise DataError(f"{path}:{line_number}: expected 'start end phone', got {line.strip()!r}")
        try:
            start, end = float(fields[0]) * scale, float(fields[1]) * scale
        except ValueError:
            raise DataError(
                f"{path}:{line_number}: start and end must be numbers, got {line.strip()!r}"
            ) from None
        if not (math.isfinite(start) and math.isfinite(end)):
            raise DataError(f"{path}:{line_number}: start and end must be finite numbers, got {line.strip()!r}")
        if start < 0:
            raise DataError(
                f"{path}:{line_number}: segment starts at {fields[0]}, before the audio begins; label times "
                "must be >= 0, correct the line"
            )
        segments.append(Segment(start, end, fields[2]))
    _check_segments(path, segments)
    return segments


def read_textgrid(path: Path, tier: Optional[str] = None, empty_label: str = "sil") -> list[Segment]:
    """Read the phone tier of a Praat TextGrid (e.g. Montreal Forced Aligner output) with praatio.

    Args:
        path: the ``.TextGrid`` file.
        tier: name of the interval tier to read; ``None`` picks ``phones`` (MFA's name) or else the only
            interval tier whose name contains ``phone``.
        empty_label: symbol given to empty intervals (MFA leaves silences unlabelled).

    Returns:
        The intervals of the tier in time order, times in seconds.
    """
    from praatio import textgrid

    try:
        grid = textgrid.openTextgrid(str(path), includeEmptyIntervals=True)
    except Exception as error:  # praatio raises several unrelated types on malformed files
        raise DataError(f"{path}: cannot read TextGrid ({type(error).__name__}: {error})") from None
    names = list(grid.tierNames)
    if tier is None:
        candidates = [n for n in names if n.lower() == "phones"] or [n for n in names if "phone" in n.lower()]
        if len(candidates) != 1:
            raise DataError(
                f"{path}: cannot tell which tier holds the phones (tiers: {', '.join(names) or 'none'}); "
                "pass --tier NAME"
            )
        tier = candidates[0]
    if tier not in names:
        raise DataError(f"{path}: no tier named {tier!r} (tiers: {', '.join(names)}); pass --tier NAME")
    entries = grid.getTier(tier).entries
    segments = [
        Segment(float(e.start), float(e.end), e.label.strip() or empty_label) for e in entries
    ]
    _check_segments(path, segments)
    return segments


def _check_segments(path: Path, segments: list[Segment]) -> None:
    if not segments:
        raise DataError(f"{path}: label file has no segments")
    previous_end = -np.inf
    for number, segment in enumerate(segments, start=1):
        if segment.start < 0:
            raise DataError(
                f"{path}: segment {number} ({segment.symbol!r}) starts at {segment.start:.4f} s, before the "
                "audio begins; label times must be >= 0"
            )
        if not segment.end > segment.start:
            raise DataError(
                f"{path}: segment {number} ({segment.symbol!r}) ends at {segment.end:.4f} s, not after its "
                f"start {segment.start:.4f} s"
            )
        if segment.start < previous_end - 1e-6:
            raise DataError(
                f"{path}: segment {number} ({segment.symbol!r}) starts at {segment.start:.4f} s, before "
                f"the previous one ends ({previous_end:.4f} s); segments must be in time order"
            )
        previous_end = segment.end


def read_frame_label_file(path: Path) -> dict[str, np.ndarray]:
    """Read the CPC paper's frame label file: ``<utterance-id> <label> <label> ...`` per line.

    This is the format of ``converted_aligned_phones.txt`` (LibriSpeech-100, 41 classes): one integer
    per 10 ms frame.

    Returns:
        ``{utterance_id: labels}`` with labels an int64 array ``(num_frames,)``.
    """
    labels: dict[str, np.ndarray] = {}
    try:
        handle = open(path, encoding="utf-8-sig")
    except OSError as error:
        raise DataError(f"{path}: cannot read label file ({error})") from None
    line_number = 0
    with handle:
        try:
            for line_number, line in enumerate(handle, start=1):
                fields = line.split()
                if not fields:
                    continue
                try:
                    values = np.array([int(v) for v in fields[1:]], dtype=np.int64)
                except ValueError:
                    raise DataError(
                        f"{path}:{line_number}: labels of {fields[0]!r} must be integers (one per frame)"
                    ) from None
                if fields[0] in labels:
                    raise DataError(
                        f"{path}:{line_number}: utterance {fields[0]!r} is listed twice; keep one line per utterance"
                    )
                labels[fields[0]] = values
        except UnicodeDecodeError:
            raise DataError(
                f"{path}:{line_number + 1}: not UTF-8 text; is this the frame label file (one "
                "'<utterance-id> <label> <label> ...' line per utterance)?"
            ) from None
    if not labels:
        raise DataError(f"{path}: label file is empty")
    return labels


def read_id_list(path: Path) -> list[str]:
    """Read a split list: one utterance id per line (blank lines ignored)."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: cannot read split list ({error})") from None
    return [line.split()[0] for line in text.splitlines() if line.strip()]
