"""ABX item lists: one item per phone occurrence, with its context and speaker.

An item is ``file onset offset phone previous-phone next-phone speaker`` (times in seconds), the rows of
a libri-light / ZeroSpeech ``.item`` file. Item lists come from two places:

* :func:`items_from_dataset`: every phone occurrence of a prepared dataset with frame labels (TIMIT,
  TextGrid/MFA, synthetic, LibriSpeech CPC labels): the runs of equal frame labels (10 ms for audio), the
  runs before and after giving the context. Two occurrences of the same phone back to back are one run
  (frame labels cannot tell them apart). Silences (``sil``, ``h#``, ``pau``, ``SIL``, ...) are never the
  central phone but are context; frames without a label (-1) are skipped, the phones on either side of
  them being neighbours. At the edges of an utterance the missing neighbour is ``#``.
* :func:`read_item_file`: a ``.item`` file (header line skipped, seven whitespace-separated columns).

:func:`frame_spans` turns onsets and offsets into frame ranges of a feature sequence (see its
``slicing`` rule).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from cpcaudio.errors import DataError, UsageError

SILENCES = frozenset({"sil", "SIL", "h#", "pau", "epi", "sp", "spn", "<sil>", "<SIL>", "silence", "_"})
EDGE = "#"  # the neighbour of a phone at the start or end of an utterance
ITEM_HEADER = "#file onset offset #phone prev-phone next-phone speaker"
SLICINGS = ("center", "librilight")
TIME_TOLERANCE = 1e-6  # seconds: a frame centre this close to an onset counts as inside


@dataclass
class ItemList:
    """Phone occurrences to discriminate: parallel lists, one entry per item.

    Attributes:
        files: file / utterance id of each item.
        onsets, offsets: float64 ``(items,)`` start and end in seconds.
        phones, previous, following: the central phone and its neighbours.
        speakers: speaker of each item.
    """

    files: list[str]
    onsets: np.ndarray
    offsets: np.ndarray
    phones: list[str]
    previous: list[str]
    following: list[str]
    speakers: list[str]

    def __len__(self) -> int:
        return len(self.files)

    def select(self, keep: np.ndarray) -> "ItemList":
        """The items where the boolean ``(items,)`` mask ``keep`` is true, in order."""
        index = np.flatnonzero(keep)
        pick = lambda values: [values[i] for i in index]  # noqa: E731
        return ItemList(
            pick(self.files), self.onsets[index], self.offsets[index], pick(self.phones), pick(self.previous),
            pick(self.following), pick(self.speakers),
        )

    def file_ids(self) -> list[str]:
        """The distinct files, in order of first appearance."""
        return list(dict.fromkeys(self.files))


def _encode(values: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """Integer codes ``(n,)`` int64 into the sorted vocabulary, and the vocabulary."""
    vocabulary = sorted(set(values))
    lookup = {value: code for code, value in enumerate(vocabulary)}
    return np.asarray([lookup[v] for v in values], dtype=np.int64), vocabulary


@dataclass
class ItemCodes:
    """Integer codes of an item list for scoring.

    Attributes:
        phone, context, speaker: int64 ``(items,)`` codes (context: the previous+next pair, or 0 for
            every item in the ``any`` context mode).
        phones, contexts, speakers_vocabulary: the names behind the codes.
    """

    phone: np.ndarray
    context: np.ndarray
    speaker: np.ndarray
    phones: list[str]
    contexts: list[str]
    speakers_vocabulary: list[str]


def item_codes(items: ItemList, context_mode: str) -> ItemCodes:
    """Codes of ``items``; ``context_mode`` ``within`` (triphone context) or ``any`` (no context)."""
    phone, phones = _encode(items.phones)
    speaker, speakers = _encode(items.speakers)
    if context_mode == "within":
        context, contexts = _encode([f"{p}+{n}" for p, n in zip(items.previous, items.following)])
    elif context_mode == "any":
        context, contexts = np.zeros(len(items), dtype=np.int64), ["any"]
    else:
        raise UsageError(f"unknown context mode {context_mode!r}; choose within or any")
    return ItemCodes(phone, context, speaker, phones, contexts, speakers)


# ---- item lists from a prepared dataset ----------------------------------------------------------------


def _runs(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Runs of equal labels: ``(starts, stops, values)``, each int64 ``(runs,)``, stops exclusive."""
    if labels.size == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    change = np.flatnonzero(labels[1:] != labels[:-1]) + 1
    starts = np.concatenate([[0], change]).astype(np.int64)
    stops = np.concatenate([change, [labels.size]]).astype(np.int64)
    return starts, stops, labels[starts].astype(np.int64)


def items_from_dataset(
    dataset: Any,
    utterances: Optional[Iterable[int]] = None,
    silences: Iterable[str] = SILENCES,
) -> ItemList:
    """Every phone occurrence of a prepared dataset's frame labels.

    Args:
        dataset: a :class:`cpcaudio.data.PreparedDataset` with frame labels.
        utterances: utterance indices to take (default: all).
        silences: symbols that are context only, never an item.

    Returns:
        The :class:`ItemList`; files are utterance ids, times are label-frame bounds in seconds (the
        last frame of an utterance clipped to its length).

    Raises:
        DataError: the dataset has no frame labels.
    """
    names = dataset.phone_vocabulary
    if names is None or not dataset.has_frame_labels:
        raise DataError(
            f"dataset {dataset.path} has no frame labels; ABX needs phone alignments (TIMIT .phn, TextGrid, "
            "LibriSpeech phone_labels, synthetic) or an .item file (--items)"
        )
    silences = set(silences)
    hop, rate = int(dataset.label_hop), float(dataset.sample_rate)
    rows: dict[str, list] = {key: [] for key in ("files", "onsets", "offsets", "phones", "prev", "next", "spk")}
    indices = range(len(dataset.utterance_ids)) if utterances is None else utterances
    for index in indices:
        index = int(index)
        starts, stops, values = _runs(np.asarray(dataset.frame_labels(index)))
        labelled = values >= 0  # -1 runs are gaps: the phones around them are neighbours
        starts, stops, values = starts[labelled], stops[labelled], values[labelled]
        symbols = [names[v] for v in values]
        length = int(dataset.lengths[index])
        for k, symbol in enumerate(symbols):
            if symbol in silences:
                continue
            rows["files"].append(dataset.utterance_ids[index])
            rows["onsets"].append(starts[k] * hop / rate)
            rows["offsets"].append(min(int(stops[k]) * hop, length) / rate)
            rows["phones"].append(symbol)
            rows["prev"].append(symbols[k - 1] if k > 0 else EDGE)
            rows["next"].append(symbols[k + 1] if k + 1 < len(symbols) else EDGE)
            rows["spk"].append(dataset.speakers[index])
    return ItemList(
        rows["files"], np.asarray(rows["onsets"], dtype=np.float64), np.asarray(rows["offsets"], dtype=np.float64),
        rows["phones"], rows["prev"], rows["next"], rows["spk"],
    )


# ---- .item files -----------------------------------------------------------------------------------------


def read_item_file(path: Union[str, Path]) -> ItemList:
    """Read a libri-light / ZeroSpeech ``.item`` file.

    The first line is a header and is skipped; every other non-empty line is
    ``file onset offset phone previous-phone next-phone speaker`` (onset and offset in seconds).

    Raises:
        DataError: unreadable file, a line without 7 columns, or a bad time.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: cannot read the item file ({error})") from None
    files, onsets, offsets, phones, previous, following, speakers = [], [], [], [], [], [], []
    for number, line in enumerate(lines[1:], start=2):
        columns = line.split()
        if not columns:
            continue
        if len(columns) != 7:
            raise DataError(
                f"{path}:{number}: expected 7 columns (file onset offset phone prev next speaker), got {len(columns)}"
            )
        try:
            onset, offset = float(columns[1]), float(columns[2])
        except ValueError:
            raise DataError(
                f"{path}:{number}: onset and offset must be seconds, got {columns[1]!r} {columns[2]!r}"
            ) from None
        if not (np.isfinite(onset) and np.isfinite(offset)) or offset <= onset:
            raise DataError(f"{path}:{number}: offset {offset} must come after onset {onset}")
        files.append(columns[0])
        onsets.append(onset)
        offsets.append(offset)
        phones.append(columns[3])
        previous.append(columns[4])
        following.append(columns[5])
        speakers.append(columns[6])
    if not files:
        raise DataError(f"{path}: the item file lists no items")
    return ItemList(
        files, np.asarray(onsets, dtype=np.float64), np.asarray(offsets, dtype=np.float64), phones, previous,
        following, speakers,
    )


def write_item_file(items: ItemList, path: Union[str, Path]) -> None:
    """Write ``items`` as a libri-light ``.item`` file (times with 4 decimals, as libri-light's)."""
    lines = [ITEM_HEADER]
    for k in range(len(items)):
        lines.append(
            f"{items.files[k]} {items.onsets[k]:.4f} {items.offsets[k]:.4f} {items.phones[k]} "
            f"{items.previous[k]} {items.following[k]} {items.speakers[k]}"
        )
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")


# ---- frames of each item ---------------------------------------------------------------------------------


def frame_spans(
    onsets: np.ndarray,
    offsets: np.ndarray,
    centers: np.ndarray,
    hop_seconds: float,
    slicing: str = "center",
) -> tuple[np.ndarray, np.ndarray]:
    """Which frames of one file's feature sequence belong to each item.

    Two rules:

    * ``center`` (the default): every frame whose centre lies in ``[onset, offset)``, with the frames'
      true centres (``centers``, from the feature source's :class:`~cpcaudio.geometry.FrameGeometry`).
    * ``librilight``: libri-light's ``ABXFeatureLoader`` rule, which assumes frame ``i`` is centred at
      ``(i + 1/2) * hop`` and takes ``ceil(onset / hop - 1/2) .. floor(offset / hop - 1/2)`` with the end
      *exclusive*: one frame fewer than the centres inside the segment (bootphon/fastabx documents it), so
      one-frame segments vanish. Offered to reproduce published libri-light / CPC_audio figures.

    Args:
        onsets, offsets: float64 ``(items,)`` seconds.
        centers: float64 ``(frames,)`` centre of each frame in seconds.
        hop_seconds: seconds between frames (``librilight`` rule).
        slicing: ``center`` or ``librilight``.

    Returns:
        ``(starts, stops)`` int64 ``(items,)``, a frame range each (``stops <= starts``: no frame).
    """
    num_frames = centers.shape[0]
    if slicing == "center":
        shifted = centers + TIME_TOLERANCE
        starts = np.searchsorted(shifted, onsets, side="left")
        stops = np.searchsorted(shifted, offsets, side="left")
    elif slicing == "librilight":
        starts = np.maximum(0, np.ceil(onsets / hop_seconds - 0.5)).astype(np.int64)
        stops = np.minimum(num_frames, np.floor(offsets / hop_seconds - 0.5)).astype(np.int64)
    else:
        raise UsageError(f"unknown slicing {slicing!r}; choose one of {', '.join(SLICINGS)}")
    return np.asarray(starts, dtype=np.int64), np.asarray(stops, dtype=np.int64)
