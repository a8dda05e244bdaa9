"""The prepared-dataset directory: file names, and the writer that makes one atomically.

A prepared dataset is a directory::

    meta.json          format_version, sample_rate, num_channels, label_hop, vocabularies, source,
                       command, counts, and the dtype/shape of the arrays below. Written last: a
                       directory without it is not a (complete) dataset.
    signal.bin         every utterance's samples back to back, raw little-endian, shape
                       (total_samples, num_channels): int16 for audio (value / 32768 = signal),
                       float32 for other time series. One utterance is one contiguous block.
    frame_labels.bin   (only with frame labels) int16, one label per ``label_hop`` samples of every
                       utterance back to back (``ceil(length / label_hop)`` per utterance), -1 = none.
    utterances.tsv     the utterance index, one row per utterance: id, offset, length (in samples),
                       speaker, split, label_offset, label_frames, then one column per utterance-level
                       label (digit, class, ...).
    report.json        what preparation skipped or could not match, and why (one entry per file), and
                       the files with samples beyond full scale (``clipped``).

While ``prepare`` runs it holds the writer's lock of the directory (``.lock``, :func:`dataset_lock`), so a
second ``prepare`` into it is refused before it looks at or deletes anything; the lock file is removed
when the preparation ends (a killed one leaves it behind, unlocked, and it counts as a dataset file).

Every file is written under a temporary name and renamed when complete; ``meta.json`` comes last, so an
interrupted or failed preparation never leaves something that opens as a dataset.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from cpcaudio.data.stream import Spooled
from cpcaudio.errors import DataError, UsageError
from cpcaudio.locks import LOCK_FILE, OutputLockedError, output_lock

try:
    import fcntl
except ImportError:  # pragma: no cover - not on the platforms CI runs
    fcntl = None  # type: ignore[assignment]

FORMAT_VERSION = 1
META_FILE = "meta.json"
SIGNAL_FILE = "signal.bin"
LABELS_FILE = "frame_labels.bin"
INDEX_FILE = "utterances.tsv"
REPORT_FILE = "report.json"
PARTIAL_PREFIX = "."
PARTIAL_SUFFIX = ".partial"
SCRATCH_DIR = ".source.partial"  # generated source audio (synthetic kind), removed when done
SPOOL_DIR = ".spool.partial"  # samples of long files on their way to signal.bin, removed when done
INDEX_COLUMNS: tuple[str, ...] = ("id", "offset", "length", "speaker", "split", "label_offset", "label_frames")
DATASET_FILES: tuple[str, ...] = (META_FILE, SIGNAL_FILE, LABELS_FILE, INDEX_FILE, REPORT_FILE)


def partial_name(name: str) -> str:
    """Temporary name of a dataset file while it is being written."""
    return f"{PARTIAL_PREFIX}{name}{PARTIAL_SUFFIX}"


def _known_entries() -> set[str]:
    return set(DATASET_FILES) | {partial_name(n) for n in DATASET_FILES} | {SCRATCH_DIR, SPOOL_DIR, LOCK_FILE}


def is_unfinished_dataset(out: Path) -> bool:
    """Whether ``out`` holds only what an interrupted preparation leaves: dataset files and their
    temporary names, but no ``meta.json`` (so it never opened as a dataset). Running ``prepare`` again
    replaces it without ``--overwrite``."""
    out = Path(out)
    if not out.is_dir():
        return False
    entries = {p.name for p in out.iterdir()}
    return bool(entries) and META_FILE not in entries and entries <= _known_entries()


def prepare_output_dir(out: Path, overwrite: bool) -> None:
    """Make ``out`` ready for a new dataset: create it, or clear a previous dataset when ``overwrite``
    (or the remains of an interrupted preparation, see :func:`is_unfinished_dataset`).

    Only files a dataset consists of are ever removed: a directory holding anything else is refused,
    so ``--overwrite`` pointed at the wrong folder cannot delete unrelated data. The lock file is kept
    (the caller holds it, see :func:`dataset_lock`).
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out} exists and is not a directory; choose another output path")
    entries = sorted(p.name for p in out.iterdir()) if out.exists() else []
    if entries:
        if not overwrite and not is_unfinished_dataset(out):
            raise UsageError(f"{out} is not empty; pass --overwrite to replace the dataset there")
        foreign = [name for name in entries if name not in _known_entries()]
        if foreign:
            raise UsageError(
                f"{out} holds {foreign[0]!r}, which is not part of a prepared dataset; refusing to "
                "overwrite it (choose an empty or new output directory)"
            )
        # meta.json first: from here on the directory no longer looks like a complete dataset.
        for name in [META_FILE] + [n for n in entries if n not in (META_FILE, LOCK_FILE)]:
            path = out / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
    out.mkdir(parents=True, exist_ok=True)


@contextlib.contextmanager
def dataset_lock(out: Path) -> Iterator[None]:
    """Hold the writer's lock of the dataset directory ``out`` (created if missing) for a whole preparation.

    :func:`cpcaudio.locks.output_lock` on ``out/.lock``; the lock file is removed when the block ends, so
    a finished dataset holds only its own files. Because of that removal, a lock taken on a file that its
    previous holder had just removed is noticed (the file at ``.lock`` is no longer the one locked) and the
    lock is taken again on the new one.

    Raises:
        OutputLockedError: another ``prepare`` is writing into ``out`` (the message names its pid).
    """
    out = Path(out)
    for _ in range(10):
        with output_lock(out, "prepare") as path:
            if not _holds(path):
                continue  # the previous holder removed the file we locked: lock the new one
            try:
                yield
            finally:
                if _holds(path):
                    path.unlink(missing_ok=True)
            return
    raise OutputLockedError(f"{out} is being written by another prepare; wait for it to finish, or choose another folder")


def _holds(path: Path) -> bool:
    """Whether the file now at ``path`` is the lock this process holds (its pid, and locked)."""
    if fcntl is None:  # pragma: no cover
        return True
    try:
        handle = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        if os.pread(handle, 32, 0).decode("ascii", "replace").strip() != str(os.getpid()):
            return False
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return True  # locked, and it holds our pid: ours
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False
    finally:
        os.close(handle)


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write JSON to a temporary name, flush it to disk, and rename it into place."""
    temporary = path.with_name(partial_name(path.name))
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump(payload, handle, indent=2, sort_keys=False)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


class DatasetWriter:
    """Append utterances to a new prepared dataset, then publish it atomically with :meth:`finish`.

    Args:
        out: the (empty) output directory, see :func:`prepare_output_dir`.
        signal_dtype: ``int16`` (audio) or ``float32`` (other series).
        num_channels: channels of every utterance.
        with_frame_labels: whether ``frame_labels.bin`` is written.
        utterance_label_names: names of the utterance-level label columns.
    """

    def __init__(
        self,
        out: Path,
        *,
        signal_dtype: str,
        num_channels: int,
        with_frame_labels: bool,
        utterance_label_names: tuple[str, ...] = (),
    ) -> None:
        if signal_dtype not in ("int16", "float32"):
            raise ValueError(f"signal_dtype must be int16 or float32, got {signal_dtype!r}")
        self.out = Path(out)
        self.signal_dtype = np.dtype(signal_dtype).newbyteorder("<")
        self.num_channels = num_channels
        self.with_frame_labels = with_frame_labels
        self.utterance_label_names = tuple(utterance_label_names)
        self.total_samples = 0
        self.total_label_frames = 0
        self.num_utterances = 0
        self._ids: set[str] = set()
        self._signal = open(self.out / partial_name(SIGNAL_FILE), "wb")
        self._labels = open(self.out / partial_name(LABELS_FILE), "wb") if with_frame_labels else None
        self._index_handle = open(self.out / partial_name(INDEX_FILE), "w", encoding="utf-8", newline="")
        self._index = csv.writer(self._index_handle, delimiter="\t", lineterminator="\n")
        self._index.writerow(INDEX_COLUMNS + self.utterance_label_names)

    def add(
        self,
        utterance_id: str,
        speaker: str,
        split: str,
        signal: Union[np.ndarray, Spooled],
        frame_labels: Optional[np.ndarray] = None,
        utterance_labels: Optional[dict[str, str]] = None,
    ) -> None:
        """Append one utterance.

        Args:
            utterance_id: unique id.
            speaker: speaker name.
            split: ``train``, ``valid`` or ``test``.
            signal: ``(time, channels)`` in the dataset's dtype, or a spool file of int16 samples (copied
                in chunks, then deleted).
            frame_labels: int ``(ceil(time / label_hop),)`` label ids, -1 = none (datasets with labels).
            utterance_labels: value of every utterance-level label column.
        """
        for name, value in (("id", utterance_id), ("speaker", speaker)):
            if not value or any(c in value for c in "\t\n\r"):
                raise DataError(f"utterance {utterance_id!r}: {name} {value!r} is empty or has tabs/newlines")
        if utterance_id in self._ids:
            raise DataError(f"utterance id {utterance_id!r} occurs twice; ids must be unique")
        shape = (signal.length, signal.num_channels) if isinstance(signal, Spooled) else signal.shape
        if len(shape) != 2 or shape[1] != self.num_channels:
            raise DataError(f"utterance {utterance_id!r} has shape {shape}; expected (time, {self.num_channels})")
        self._ids.add(utterance_id)
        length = int(shape[0])
        if isinstance(signal, Spooled):
            self._append_spooled(utterance_id, signal)
        else:
            self._signal.write(np.ascontiguousarray(signal, dtype=self.signal_dtype).tobytes())
        label_offset, label_frames = self.total_label_frames, 0
        if self._labels is not None:
            labels = np.asarray(frame_labels, dtype="<i2")
            label_frames = int(labels.shape[0])
            self._labels.write(labels.tobytes())
            self.total_label_frames += label_frames
        values = utterance_labels or {}
        row = [utterance_id, self.total_samples, length, speaker, split, label_offset, label_frames]
        self._index.writerow(row + [values.get(name, "") for name in self.utterance_label_names])
        self.total_samples += length
        self.num_utterances += 1

    def _append_spooled(self, utterance_id: str, signal: Spooled) -> None:
        expected = signal.length * signal.num_channels * 2
        if self.signal_dtype.itemsize != 2 or os.path.getsize(signal.path) != expected:
            raise DataError(f"utterance {utterance_id!r}: its spooled samples are incomplete; prepare again")
        with open(signal.path, "rb") as source:
            shutil.copyfileobj(source, self._signal, 1 << 20)
        os.unlink(signal.path)

    def remap_frame_labels(self, table: np.ndarray) -> None:
        """Replace every stored label id ``i`` by ``table[i + 1]`` (``-1`` maps through ``table[0]``)."""
        if self._labels is None or self.total_label_frames == 0:
            return
        self._labels.flush()
        labels = np.memmap(self.out / partial_name(LABELS_FILE), dtype="<i2", mode="r+")
        chunk = 1 << 22
        for start in range(0, labels.shape[0], chunk):
            part = labels[start : start + chunk]
            part[:] = table[part.astype(np.int64) + 1]
        labels.flush()
        del labels

    def finish(self, meta: dict, report: dict) -> None:
        """Flush the arrays, rename every file into place, and write ``meta.json`` last."""
        meta = dict(meta)
        meta["signal"] = {
            "file": SIGNAL_FILE,
            "dtype": self.signal_dtype.name,
            "shape": [self.total_samples, self.num_channels],
        }
        meta["frame_labels"] = (
            {"file": LABELS_FILE, "dtype": "int16", "shape": [self.total_label_frames]}
            if self._labels is not None
            else None
        )
        meta["index"] = INDEX_FILE
        meta["report"] = REPORT_FILE
        names = [SIGNAL_FILE, INDEX_FILE] + ([LABELS_FILE] if self._labels is not None else [])
        for handle in self._handles():
            handle.flush()
            os.fsync(handle.fileno())
        self._close()
        for name in names:
            os.replace(self.out / partial_name(name), self.out / name)
        write_json_atomic(self.out / REPORT_FILE, report)
        write_json_atomic(self.out / META_FILE, meta)

    def abort(self) -> None:
        """Close and delete everything written so far (nothing that looks like a dataset remains)."""
        self._close()
        for name in DATASET_FILES:
            path = self.out / partial_name(name)
            if path.exists():
                path.unlink()

    def _handles(self) -> list:
        return [h for h in (self._signal, self._labels, self._index_handle) if h is not None]

    def _close(self) -> None:
        for handle in self._handles():
            if not handle.closed:
                handle.close()
