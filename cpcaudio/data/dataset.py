"""Reading a prepared dataset: constant memory, O(1) random access to any window.

Samples are never loaded as a whole. Windows are read with ``os.pread`` straight from ``signal.bin``
(the page cache does the caching), so a process that draws windows from a 10-hour corpus holds no more
memory than one drawing from a 1-hour corpus; only the utterance index (a few numbers per utterance)
lives in RAM. :meth:`PreparedDataset.memmap` gives a read-only ``np.memmap`` of the whole array for
code that prefers one. Opening checks ``meta.json`` and the index against each other and against the
array files (:mod:`cpcaudio.data.dataset_checks`), so an edited or damaged dataset is refused with one
line instead of reading another utterance's samples.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional

import numpy as np

from cpcaudio.data.alignment import NO_LABEL
from cpcaudio.data.audio import INT16_SCALE
from cpcaudio.data.dataset_checks import AGAIN, DTYPES, check_index, check_meta, read_index
from cpcaudio.data.format import FORMAT_VERSION, META_FILE
from cpcaudio.errors import DataError

_DTYPES = DTYPES


class PreparedDataset:
    """A prepared dataset directory opened for reading (see :mod:`cpcaudio.data.format`).

    Use :meth:`open`. Safe to pass to worker processes (file handles are reopened after pickling).

    Attributes:
        path: the dataset directory.
        meta: ``meta.json`` as a dict.
        sample_rate: samples per second of the stored signal.
        num_channels: channels of every utterance.
        label_hop: samples per frame label (160 for 16 kHz audio: 10 ms).
        utterance_ids, speakers, splits: one entry per utterance.
        lengths, offsets: int64 ``(num_utterances,)``, in samples.
        speaker_vocabulary: sorted speaker names; ``speaker_indices`` int64 ``(num_utterances,)`` into it.
        vocabularies: label name -> list of symbols (``phone``, ``speaker``, ``digit``, ``class``, ...).
        utterance_label_names: names of the utterance-level labels.
    """

    def __init__(self, path: Path, meta: dict, index: dict[str, Any]) -> None:
        self.path = Path(path)
        self.meta = meta
        self.sample_rate = int(meta["sample_rate"])
        self.num_channels = int(meta["num_channels"])
        self.label_hop = int(meta["label_hop"])
        self.vocabularies: dict[str, list[str]] = {k: list(v) for k, v in meta.get("vocabularies", {}).items()}
        self.utterance_ids: list[str] = index["id"]
        self.speakers: list[str] = index["speaker"]
        self.splits: list[str] = index["split"]
        self.offsets = np.asarray(index["offset"], dtype=np.int64)
        self.lengths = np.asarray(index["length"], dtype=np.int64)
        self.label_offsets = np.asarray(index["label_offset"], dtype=np.int64)
        self.label_counts = np.asarray(index["label_frames"], dtype=np.int64)
        self.speaker_vocabulary: list[str] = self.vocabularies.get("speaker") or sorted(set(self.speakers))
        speaker_ids = {name: i for i, name in enumerate(self.speaker_vocabulary)}
        self.speaker_indices = np.asarray([speaker_ids[s] for s in self.speakers], dtype=np.int64)
        self.utterance_label_names: list[str] = list(meta.get("utterance_labels", []))
        self._utterance_labels: dict[str, np.ndarray] = {}
        for name in self.utterance_label_names:
            vocabulary = {symbol: i for i, symbol in enumerate(self.vocabularies.get(name, []))}
            self._utterance_labels[name] = np.asarray(
                [vocabulary.get(value, NO_LABEL) for value in index[name]], dtype=np.int64
            )
        signal = meta["signal"]
        self.signal_dtype = _DTYPES[signal["dtype"]]
        self._signal_file = self.path / signal["file"]
        labels = meta.get("frame_labels")
        self._labels_file = self.path / labels["file"] if labels else None
        self._check_sizes()
        self._fds: dict[str, int] = {}
        self._pid = os.getpid()

    # ---- opening ----------------------------------------------------------------------------------

    @classmethod
    def open(cls, path: str | os.PathLike) -> "PreparedDataset":
        """Open a prepared dataset directory (reads ``meta.json`` and the utterance index only).

        Raises:
            DataError: not a dataset, an incomplete one, an unknown format version, or truncated arrays.
        """
        path = Path(path)
        if not path.is_dir():
            raise DataError(f"{path}: no such dataset directory; make one with `cpcaudio prepare`")
        meta_path = path / META_FILE
        if not meta_path.exists():
            raise DataError(
                f"{path}: not a prepared dataset (no {META_FILE}); it is missing or its preparation did "
                "not finish; run `cpcaudio prepare` again"
            )
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8-sig"))
        except (OSError, ValueError) as error:
            raise DataError(f"{meta_path}: unreadable ({error}); {AGAIN}") from None
        version = meta.get("format_version") if isinstance(meta, dict) else None
        if isinstance(meta, dict) and version != FORMAT_VERSION:
            raise DataError(
                f"{meta_path}: format_version {version!r} is not supported (this cpcaudio reads "
                f"{FORMAT_VERSION}); prepare the dataset again with this version"
            )
        check_meta(meta, meta_path)
        index_path = path / meta["index"]
        index = read_index(index_path, list(meta.get("utterance_labels", [])))
        check_index(index, meta, index_path, has_labels=meta.get("frame_labels") is not None)
        return cls(path, meta, index)

    def _check_sizes(self) -> None:
        expected = int(self.lengths.sum()) * self.num_channels * self.signal_dtype.itemsize
        declared = self.meta["signal"]["shape"]
        if declared[0] != int(self.lengths.sum()) or declared[1] != self.num_channels:
            raise DataError(f"{self.path}: index and {META_FILE} disagree on the signal shape; {AGAIN}")
        _check_file_size(self._signal_file, expected)
        if self._labels_file is not None:
            _check_file_size(self._labels_file, int(self.label_counts.sum()) * 2)

    # ---- pickling (DataLoader workers) ---------------------------------------------------------------

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_fds"] = {}
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._pid = os.getpid()

    def close(self) -> None:
        """Close the open file descriptors (reopened on the next read)."""
        for fd in self._fds.values():
            os.close(fd)
        self._fds = {}

    def __del__(self) -> None:
        try:
            if getattr(self, "_pid", None) == os.getpid():
                self.close()
        except Exception:
            pass

    def _fd(self, path: Path) -> int:
        if self._pid != os.getpid():  # forked: descriptors are shared; pread is still safe, keep them
            self._pid = os.getpid()
        key = str(path)
        if key not in self._fds:
            self._fds[key] = os.open(path, os.O_RDONLY)
        return self._fds[key]

    # ---- sizes and names -------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.utterance_ids)

    def __repr__(self) -> str:
        return (
            f"PreparedDataset({str(self.path)!r}, utterances={len(self)}, hours={self.hours:.3f}, "
            f"sample_rate={self.sample_rate}, channels={self.num_channels})"
        )

    @property
    def total_samples(self) -> int:
        return int(self.lengths.sum())

    @property
    def hours(self) -> float:
        """Total duration in hours (samples / sample_rate / 3600)."""
        return self.total_samples / self.sample_rate / 3600.0

    @property
    def phone_vocabulary(self) -> Optional[list[str]]:
        """Frame label symbols (index = label id), or ``None`` when the dataset has no frame labels."""
        if self._labels_file is None:
            return None
        return self.vocabularies.get("phone")

    @property
    def has_frame_labels(self) -> bool:
        return self._labels_file is not None

    def indices(self, split: str) -> np.ndarray:
        """Utterance indices in ``split`` (``train``, ``valid``, ``test``). Returns int64 ``(count,)``."""
        return np.asarray([i for i, s in enumerate(self.splits) if s == split], dtype=np.int64)

    def utterance_label(self, index: int, name: str) -> int:
        """Utterance-level label ``name`` of utterance ``index`` as an id into ``vocabularies[name]``."""
        return int(self.utterance_labels(name)[index])

    def utterance_labels(self, name: str) -> np.ndarray:
        """Label ``name`` of every utterance: int64 ``(num_utterances,)`` ids into ``vocabularies[name]``."""
        if name not in self._utterance_labels:
            available = ", ".join(self.utterance_label_names) or "none"
            raise DataError(f"{self.path}: no utterance label {name!r} (available: {available})")
        return self._utterance_labels[name]

    # ---- reading ---------------------------------------------------------------------------------

    def read_raw(self, index: int, start: int = 0, length: Optional[int] = None) -> np.ndarray:
        """Stored samples of part of an utterance, as stored. Returns ``(length, channels)`` int16/float32."""
        utterance_length = int(self.lengths[index])
        if length is None:
            length = utterance_length - start
        if start < 0 or length < 0 or start + length > utterance_length:
            raise IndexError(
                f"samples [{start}, {start + length}) are outside utterance {index} "
                f"({self.utterance_ids[index]!r}, {utterance_length} samples)"
            )
        frame_bytes = self.num_channels * self.signal_dtype.itemsize
        byte_offset = (int(self.offsets[index]) + start) * frame_bytes
        data = _pread_exact(self._fd(self._signal_file), length * frame_bytes, byte_offset, self._signal_file)
        return np.frombuffer(data, dtype=self.signal_dtype).reshape(length, self.num_channels)

    def read(self, index: int, start: int = 0, length: Optional[int] = None) -> np.ndarray:
        """Part of an utterance as float32 ``(channels, length)`` (int16 audio scaled by 1/32768)."""
        raw = self.read_raw(index, start, length)
        out = raw.T.astype(np.float32)  # (C, T)
        if self.signal_dtype == _DTYPES["int16"]:
            out *= 1.0 / INT16_SCALE
        return out

    def signal(self, index: int) -> np.ndarray:
        """Whole utterance ``index`` as float32 ``(channels, time)``."""
        return self.read(index)

    def frame_labels(self, index: int) -> Optional[np.ndarray]:
        """Frame labels of utterance ``index``: int64 ``(ceil(length / label_hop),)``, -1 = none.

        ``None`` when the dataset has no frame labels.
        """
        if self._labels_file is None:
            return None
        count = int(self.label_counts[index])
        data = _pread_exact(
            self._fd(self._labels_file), count * 2, int(self.label_offsets[index]) * 2, self._labels_file
        )
        return np.frombuffer(data, dtype="<i2").astype(np.int64)

    def memmap(self) -> np.memmap:
        """The whole signal array, read-only and memory-mapped: ``(total_samples, channels)``."""
        return np.memmap(
            self._signal_file, dtype=self.signal_dtype, mode="r", shape=(self.total_samples, self.num_channels)
        )

    def all_frame_labels(self) -> Optional[np.memmap]:
        """Every frame label of the dataset, memory-mapped: int16 ``(total_label_frames,)``."""
        if self._labels_file is None:
            return None
        total = int(self.label_counts.sum())
        if total == 0:
            return np.zeros(0, dtype="<i2")  # type: ignore[return-value]
        return np.memmap(self._labels_file, dtype="<i2", mode="r", shape=(total,))

    def source_info(self) -> dict[str, Any]:
        """Where the dataset came from (``meta["source"]``)."""
        return dict(self.meta.get("source", {}))


def _check_file_size(path: Path, expected: int) -> None:
    try:
        size = path.stat().st_size
    except OSError:
        raise DataError(f"{path}: missing; the dataset is incomplete, prepare it again") from None
    if size != expected:
        raise DataError(
            f"{path}: {size} bytes, expected {expected}; the file is truncated or altered, prepare it again"
        )


def _pread_exact(fd: int, size: int, offset: int, path: Path) -> bytes:
    chunks = []
    remaining, position = size, offset
    while remaining > 0:
        chunk = os.pread(fd, remaining, position)
        if not chunk:
            raise DataError(f"{path}: unexpected end of file at byte {position}; the dataset is truncated")
        chunks.append(chunk)
        remaining -= len(chunk)
        position += len(chunk)
    if len(chunks) == 1:
        return chunks[0]
    return b"".join(chunks)
