"""Checks made when a prepared dataset is opened: ``meta.json`` well-formed, ``utterances.tsv`` consistent.

A dataset is written by ``prepare`` alone, but it is a folder of plain files that can be edited, copied
half-way or come from elsewhere. :class:`~cpcaudio.data.dataset.PreparedDataset` therefore checks, in
O(rows) vectorised numpy and before any sample is read:

- ``meta.json`` is a JSON object whose keys have the right types (positive integer rates and sizes, a
  known signal dtype, file names inside the folder, vocabularies as lists of strings);
- ``utterances.tsv`` has the columns ``meta.json`` declares, non-empty unique ids, integer offsets and
  lengths; lengths are positive; every utterance starts where the previous one ends (offsets contiguous
  and in order, from 0), and they add up to ``meta.json``'s signal shape (and so to ``signal.bin``'s size);
- with frame labels, likewise for the label offsets, and every utterance has ``ceil(length / label_hop)``
  labels; speakers are in the speaker vocabulary, splits are ``train``/``valid``/``test``, and utterance
  label values are in their vocabularies (or empty: no label).

Each failure is one :class:`~cpcaudio.errors.DataError` line naming the file (and the row, as
``FILE:LINE``) and ending with "prepare the dataset again".
"""

from __future__ import annotations

import csv
import gc
from operator import itemgetter
from pathlib import Path
from typing import Any

import numpy as np

from cpcaudio.data.format import INDEX_COLUMNS
from cpcaudio.data.splits import SPLIT_NAMES
from cpcaudio.errors import DataError

DTYPES = {"int16": np.dtype("<i2"), "float32": np.dtype("<f4")}
INTEGER_COLUMNS = ("offset", "length", "label_offset", "label_frames")
AGAIN = "prepare the dataset again"


def check_meta(meta: Any, path: Path) -> None:
    """Refuse a ``meta.json`` that is not an object or whose keys have the wrong types."""
    if not isinstance(meta, dict):
        raise DataError(f"{path}: holds a JSON {_json_type(meta)}, not an object; {AGAIN}")
    for key in ("sample_rate", "num_channels", "label_hop", "signal", "index"):
        if key not in meta:
            raise DataError(f"{path}: missing key {key!r}; {AGAIN}")
    for key in ("sample_rate", "num_channels", "label_hop"):
        _positive_int(meta[key], path, key)
    signal = meta["signal"]
    if not isinstance(signal, dict):
        raise DataError(f"{path}: 'signal' must be an object, got {signal!r}; {AGAIN}")
    _file_name(signal.get("file"), path, "signal.file")
    if signal.get("dtype") not in DTYPES:
        raise DataError(
            f"{path}: signal.dtype {signal.get('dtype')!r} is not one of {', '.join(DTYPES)}; {AGAIN}"
        )
    _shape(signal.get("shape"), 2, path, "signal.shape")
    labels = meta.get("frame_labels")
    if labels is not None:
        if not isinstance(labels, dict):
            raise DataError(f"{path}: 'frame_labels' must be an object or null, got {labels!r}; {AGAIN}")
        _file_name(labels.get("file"), path, "frame_labels.file")
        if labels.get("dtype", "int16") != "int16":
            raise DataError(f"{path}: frame_labels.dtype {labels.get('dtype')!r} is not int16; {AGAIN}")
        _shape(labels.get("shape"), 1, path, "frame_labels.shape")
    _file_name(meta["index"], path, "index")
    vocabularies = meta.get("vocabularies", {})
    if not isinstance(vocabularies, dict) or not all(
        isinstance(v, list) and all(isinstance(s, str) for s in v) for v in vocabularies.values()
    ):
        raise DataError(f"{path}: 'vocabularies' must map names to lists of strings; {AGAIN}")
    names = meta.get("utterance_labels", [])
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise DataError(f"{path}: 'utterance_labels' must be a list of names, got {names!r}; {AGAIN}")
    for key in ("source", "counts", "preparation"):
        if not isinstance(meta.get(key, {}), dict):
            raise DataError(f"{path}: {key!r} must be an object, got {meta[key]!r}; {AGAIN}")


def read_index(path: Path, label_names: list[str]) -> dict[str, Any]:
    """Read ``utterances.tsv``: text columns as lists, the integer columns as int64 arrays.

    Raises:
        DataError: unreadable, a wrong header, a row with the wrong number of fields, a non-integer
            offset or length (naming the line), or a label column ``meta.json`` declares but the index lacks.
    """
    try:
        handle = open(path, encoding="utf-8-sig", newline="")
    except OSError as error:
        raise DataError(f"{path}: cannot read the utterance index ({error}); {AGAIN}") from None
    collecting = gc.isenabled()
    gc.disable()  # one list per row: the cyclic collector would rescan them all, again and again
    try:
        with handle:
            reader = csv.reader(handle, delimiter="\t")
            try:
                header = next(reader, None)
                if header is None or tuple(header[: len(INDEX_COLUMNS)]) != INDEX_COLUMNS:
                    raise DataError(f"{path}: not an utterance index (header {header}); {AGAIN}")
                rows = list(reader)
            except (UnicodeDecodeError, csv.Error) as error:
                raise DataError(f"{path}: cannot read the utterance index ({error}); {AGAIN}") from None
        return _columns(path, header, rows, label_names)
    finally:
        if collecting:
            gc.enable()


def _columns(path: Path, header: list[str], rows: list[list[str]], label_names: list[str]) -> dict[str, Any]:
    for name in label_names:
        if name not in header:
            raise DataError(f"{path}: no column {name!r}, which meta.json lists as an utterance label; {AGAIN}")
    width = len(header)
    if rows and set(map(len, rows)) != {width}:
        line = next(i for i, row in enumerate(rows) if len(row) != width) + 2
        raise DataError(f"{path}:{line}: expected {width} columns, got {len(rows[line - 2])}; {AGAIN}")
    columns: dict[str, Any] = {}
    for number, name in enumerate(header):
        values = list(map(itemgetter(number), rows))
        columns[name] = _integers(values, path, name) if name in INTEGER_COLUMNS else values
    return columns


def check_index(columns: dict[str, Any], meta: dict, path: Path, has_labels: bool) -> None:
    """Refuse an index whose rows disagree with each other or with ``meta.json`` (see the module doc)."""
    ids = columns["id"]
    if not ids:
        raise DataError(f"{path}: lists no utterances; {AGAIN}")
    distinct = set(ids)
    if "" in distinct:
        raise DataError(f"{path}:{ids.index('') + 2}: empty utterance id; {AGAIN}")
    if len(distinct) != len(ids):
        seen: set[str] = set()
        for row, value in enumerate(ids):
            if value in seen:
                raise DataError(f"{path}:{row + 2}: utterance id {value!r} occurs twice; {AGAIN}")
            seen.add(value)
    lengths, offsets = columns["length"], columns["offset"]
    _first_bad(path, lengths <= 0, lambda i: f"length {lengths[i]} is not a positive number of samples")
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    _first_bad(
        path, offsets != starts,
        lambda i: f"offset {offsets[i]} of {ids[i]!r} is not where the previous utterance ends ({starts[i]}); "
        "offsets must be contiguous and in order",
    )
    total = int(lengths.sum())
    declared = meta["signal"]["shape"]
    if declared[0] != total or declared[1] != int(meta["num_channels"]):
        raise DataError(
            f"{path}: the utterances add up to {total} samples x {meta['num_channels']} channel(s), meta.json "
            f"declares a signal of {declared[0]} x {declared[1]}; {AGAIN}"
        )
    if has_labels:
        _check_label_columns(columns, meta, path, ids)
    _check_names(columns, meta, path)


def _check_label_columns(columns: dict[str, Any], meta: dict, path: Path, ids: list[str]) -> None:
    counts, offsets = columns["label_frames"], columns["label_offset"]
    hop = int(meta["label_hop"])
    expected = -(-columns["length"] // hop)
    _first_bad(
        path, counts != expected,
        lambda i: f"{ids[i]!r} has {counts[i]} frame labels, its {columns['length'][i]} samples need "
        f"{expected[i]} (one per {hop})",
    )
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    _first_bad(
        path, offsets != starts,
        lambda i: f"label_offset {offsets[i]} of {ids[i]!r} is not where the previous utterance's labels end "
        f"({starts[i]}); label offsets must be contiguous and in order",
    )
    declared = meta["frame_labels"]["shape"][0]
    if declared != int(counts.sum()):
        raise DataError(
            f"{path}: the utterances have {int(counts.sum())} frame labels, meta.json declares {declared}; {AGAIN}"
        )


def _check_names(columns: dict[str, Any], meta: dict, path: Path) -> None:
    vocabularies = meta.get("vocabularies", {})
    known_speakers = vocabularies.get("speaker")
    if known_speakers is not None:
        _first_unknown(path, columns["speaker"], set(known_speakers), "speaker", "is not in meta.json's speaker vocabulary")
    _first_unknown(path, columns["split"], set(SPLIT_NAMES), "split", f"is not one of {', '.join(SPLIT_NAMES)}")
    for name in meta.get("utterance_labels", []):
        known = set(vocabularies.get(name, [])) | {""}
        _first_unknown(path, columns[name], known, name, f"is not in meta.json's {name} vocabulary")


def _first_unknown(path: Path, values: list[str], known: set[str], what: str, problem: str) -> None:
    unknown = set(values) - known
    if unknown:
        row = next(i for i, value in enumerate(values) if value in unknown)
        raise DataError(f"{path}:{row + 2}: {what} {values[row]!r} {problem}; {AGAIN}")


def _integers(values: list[str], path: Path, name: str) -> np.ndarray:
    """A column of integers (``int`` on each value, in C); a value that is not one is named with its line."""
    try:
        return np.fromiter(map(int, values), dtype=np.int64, count=len(values))
    except (ValueError, OverflowError):
        for row, value in enumerate(values):
            try:
                if -(2**63) <= int(value) < 2**63:
                    continue
            except ValueError:
                pass
            raise DataError(f"{path}:{row + 2}: {name} {value!r} is not an integer; {AGAIN}") from None
        raise


def _first_bad(path: Path, bad: np.ndarray, describe) -> None:
    rows = np.flatnonzero(bad)
    if rows.size:
        row = int(rows[0])
        raise DataError(f"{path}:{row + 2}: {describe(row)}; {AGAIN}")


def _positive_int(value: Any, path: Path, key: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise DataError(f"{path}: {key} must be a positive integer, got {value!r}; {AGAIN}")


def _shape(value: Any, size: int, path: Path, key: str) -> None:
    if (
        not isinstance(value, list) or len(value) != size
        or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value)
    ):
        raise DataError(f"{path}: {key} must be a list of {size} non-negative integers, got {value!r}; {AGAIN}")


def _file_name(value: Any, path: Path, key: str) -> None:
    if not isinstance(value, str) or not value or Path(value).name != value or value in (".", ".."):
        raise DataError(f"{path}: {key} must name a file in the dataset folder, got {value!r}; {AGAIN}")


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    return {list: "list", str: "string", int: "number", float: "number", bool: "boolean"}.get(type(value), "value")
