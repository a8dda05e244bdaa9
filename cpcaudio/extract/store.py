"""The feature store on disk: its layout, and :class:`FeatureStore`, the memory-mapped reader.

Layout of a store directory (``cpcaudio extract`` writes it, :class:`FeatureStore` reads it)::

    meta.json           written last: its presence means the store is complete (format, checkpoint and
                        its sha256, layer, model config, frame rate, dim, source, command)
    utterances.json     the utterance index: ids, speakers, splits, frame offsets and lengths, utterance
                        labels, phone vocabulary; in the order of the rows of features.npy
    features.npy        float32 (total_frames, dim), utterance i is rows offsets[i] : offsets[i] + lengths[i]
    frame_labels.npy    int64 (total_frames,), one label per feature frame (-1: none); only when the
                        source has frame labels (e.g. phones of a prepared TIMIT dataset)
    npy/<id>.npy        with ``npy=True``: float32 (frames, dim) per utterance
    .lock               the writer's lock (:func:`cpcaudio.locks.output_lock`): one extraction per store

While a run is in progress the features live in ``features.npy.partial`` and ``progress.json`` records
how many utterances (in the run's fixed processing order, kept in ``plan.json``) have been flushed to it
(:mod:`cpcaudio.extract.writer`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from cpcaudio.errors import DataError
from cpcaudio.locks import LOCK_FILE

PathLike = Union[str, os.PathLike]

STORE_FORMAT = "cpcaudio-features"
STORE_FORMAT_VERSION = 1

META, INDEX, PLAN, PROGRESS = "meta.json", "utterances.json", "plan.json", "progress.json"
FEATURES, PARTIAL, LABELS, NPY_DIR = "features.npy", "features.npy.partial", "frame_labels.npy", "npy"
OWN_NAMES = {META, INDEX, PLAN, PROGRESS, FEATURES, PARTIAL, LABELS, NPY_DIR, LOCK_FILE}  # .lock: one writer


def read_json(path: Path) -> Any:
    """A JSON file of a store, or a DataError that says how to start again."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise DataError(f"cannot read {path} ({error}); pass --overwrite to start the extraction again") from None


def npy_path(out: PathLike, utterance_id: str) -> Path:
    """Where ``--npy`` puts utterance ``utterance_id``: ``out/npy/<id>.npy`` (``..`` parts become ``_``)."""
    parts = [part if part not in ("", ".", "..") else "_" for part in utterance_id.split("/")]
    return Path(out) / NPY_DIR / ("/".join(parts) + ".npy")


class FeatureStore:
    """Read a store written by :func:`cpcaudio.extract.extract_to_store`, in constant memory (``np.memmap``).

    Example::

        store = FeatureStore.open("features/timit_context")
        x = store.features(0)              # float32 (frames, dim), a memory-mapped view
        y = store.frame_labels(0)          # int64 (frames,) or None; -1 = no label
        train = store.indices("train")

    Attributes:
        dim: feature dimension.
        layer: ``context``, ``encoder`` or ``all``.
        frame_rate: feature frames per second.
        downsample_rate: samples (at ``meta['sample_rate']``) per feature frame.
    """

    def __init__(self, path: Path, meta: dict[str, Any], index: dict[str, Any]) -> None:
        self.path = path
        self.meta = meta
        self.dim = int(meta["dim"])
        self.layer = str(meta["layer"])
        self.frame_rate = float(meta["frame_rate"])
        self.downsample_rate = int(meta["downsample_rate"])
        self.utterance_ids: list[str] = list(index["utterance_ids"])
        self.speakers: list[str] = list(index["speakers"])
        self.splits: list[str] = list(index["splits"])
        self.frame_offsets = np.asarray(index["frame_offsets"], dtype=np.int64)
        self.frame_lengths = np.asarray(index["frame_lengths"], dtype=np.int64)
        self.phone_vocabulary: Optional[list[str]] = index.get("phone_vocabulary")
        self.vocabularies: dict[str, list[str]] = dict(index.get("vocabularies") or {})
        self.speaker_vocabulary: list[str] = self.vocabularies.get("speaker") or sorted(set(self.speakers))
        speaker_ids = {name: i for i, name in enumerate(self.speaker_vocabulary)}
        self.speaker_indices = np.asarray([speaker_ids.get(s, -1) for s in self.speakers], dtype=np.int64)
        self._utterance_labels: dict[str, list[Any]] = dict(index.get("utterance_labels") or {})
        total = int(meta["total_frames"])
        if total:
            self.all_features = np.load(path / FEATURES, mmap_mode="r")
        else:
            self.all_features = np.zeros((0, self.dim), dtype=np.float32)
        if self.all_features.shape != (total, self.dim) or self.all_features.dtype != np.float32:
            raise DataError(
                f"{path / FEATURES} has shape {self.all_features.shape} {self.all_features.dtype}, meta.json "
                f"says ({total}, {self.dim}) float32; extract again with --overwrite"
            )
        labels_path = path / LABELS
        self.all_frame_labels: Optional[np.ndarray] = np.load(labels_path, mmap_mode="r") if labels_path.is_file() else None

    @classmethod
    def open(cls, path: PathLike) -> FeatureStore:
        """Open a complete store.

        Raises:
            DataError: ``path`` is not a feature store, is unfinished, or its files disagree.
        """
        path = Path(path)
        if not (path / META).is_file():
            if (path / PLAN).is_file():
                raise DataError(f"{path} is an unfinished extraction; rerun the same 'cpcaudio extract' command to finish it")
            raise DataError(f"{path} is not a feature store (no {META}); create one with 'cpcaudio extract'")
        meta = read_json(path / META)
        if meta.get("format") != STORE_FORMAT:
            raise DataError(f"{path} is not a feature store ({META} has format {meta.get('format')!r})")
        if meta.get("format_version") != STORE_FORMAT_VERSION:
            raise DataError(
                f"feature store {path} has format version {meta.get('format_version')}, this cpcaudio reads "
                f"{STORE_FORMAT_VERSION}; extract again"
            )
        return cls(path, meta, read_json(path / INDEX))

    def __len__(self) -> int:
        return len(self.utterance_ids)

    @property
    def utterance_label_names(self) -> list[str]:
        """Names of per-utterance labels carried over from the dataset (e.g. ``digit``, ``class``)."""
        return list(self._utterance_labels)

    def features(self, i: int) -> np.ndarray:
        """float32 (frames, dim) of utterance ``i`` (a read-only memory-mapped view)."""
        offset, count = int(self.frame_offsets[i]), int(self.frame_lengths[i])
        return self.all_features[offset : offset + count]

    def frame_labels(self, i: int) -> Optional[np.ndarray]:
        """int64 (frames,) label of each feature frame (-1: none), or None when the source had none."""
        if self.all_frame_labels is None:
            return None
        offset, count = int(self.frame_offsets[i]), int(self.frame_lengths[i])
        return np.asarray(self.all_frame_labels[offset : offset + count])

    def utterance_label(self, i: int, name: str) -> int:
        """The per-utterance label ``name`` of utterance ``i`` (an id into ``vocabularies[name]``)."""
        return int(self.utterance_labels(name)[i])

    def utterance_labels(self, name: str) -> np.ndarray:
        """Label ``name`` of every utterance: int64 (num_utterances,) ids into ``vocabularies[name]``."""
        if name not in self._utterance_labels:
            raise DataError(
                f"feature store {self.path} has no utterance label {name!r}; it has: "
                f"{', '.join(self._utterance_labels) or 'none'}"
            )
        return np.asarray(self._utterance_labels[name], dtype=np.int64)

    def indices(self, split: str) -> np.ndarray:
        """int64 indices of the utterances in ``split`` (``train``, ``valid``, ``test``)."""
        return np.array([i for i, s in enumerate(self.splits) if s == split], dtype=np.int64)
