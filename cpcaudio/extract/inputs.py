"""What to extract from: a prepared dataset, a folder of audio files or a text list of them, as a
:class:`Source` of :class:`Utterance` items that the writer reads one by one."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from cpcaudio.data.audio import AUDIO_EXTENSIONS
from cpcaudio.errors import DataError

PathLike = Union[str, os.PathLike]


@dataclass
class Utterance:
    """One input utterance: ``num_samples`` at ``sample_rate`` with ``num_channels`` channels."""

    id: str
    num_samples: int
    sample_rate: int
    num_channels: int
    speaker: str = ""
    split: str = ""


@dataclass
class Source:
    """A list of utterances and how to read them (a prepared dataset, a folder or a list of audio files).

    Attributes:
        kind: ``prepared``, ``folder`` or ``list``.
        path: the INPUT given by the user.
        utterances: one :class:`Utterance` per item, in the source's order.
        read: ``read(i)`` -> float32 (channels, time) at ``utterances[i].sample_rate``.
        read_blocks: ``read_blocks(i, block_samples)`` -> the same samples as consecutive float32
            (channels, <= block_samples) blocks, in constant memory (long files are streamed this way);
            None: sliced from ``read(i)``.
        frame_labels: ``frame_labels(i)`` -> int64 labels, one per ``label_hop`` samples, or None.
        label_hop: samples (at the source rate) per frame label, when there are frame labels.
        utterance_labels: name -> one value per utterance (e.g. ``digit``: ids into ``vocabularies``).
        files: the audio file of each utterance (folders and lists of audio; None for a prepared dataset).
        phone_vocabulary: label index -> symbol, when frame labels are phones.
        vocabularies: label name -> symbols (``phone``, ``speaker``, ``digit``, ``class``, ...).
    """

    kind: str
    path: Path
    utterances: list[Utterance]
    read: Callable[[int], np.ndarray]
    frame_labels: Optional[Callable[[int], Optional[np.ndarray]]] = None
    label_hop: Optional[int] = None
    utterance_labels: dict[str, list[Any]] = field(default_factory=dict)
    phone_vocabulary: Optional[list[str]] = None
    vocabularies: dict[str, list[str]] = field(default_factory=dict)
    files: Optional[list[Path]] = None
    read_blocks: Optional[Callable[[int, int], Iterator[np.ndarray]]] = None

    def blocks(self, index: int, block_samples: int) -> Iterator[np.ndarray]:
        """Utterance ``index`` as float32 (channels, <= block_samples) blocks at its own rate."""
        if self.read_blocks is not None:
            yield from self.read_blocks(index, block_samples)
            return
        signal = self.read(index)
        for start in range(0, signal.shape[-1], block_samples):
            yield signal[:, start : start + block_samples]

    def describe(self, index: int) -> str:
        """Where utterance ``index`` comes from, for error messages: its file, or its id in the dataset."""
        if self.files is not None:
            return str(self.files[index])
        return f"utterance {self.utterances[index].id!r} of {self.path}"


def open_source(path: PathLike) -> Source:
    """Open INPUT: a prepared dataset directory, a folder of audio files, or a text file listing them.

    A text list has one audio path per line (relative to the list's folder or absolute); blank lines and
    lines starting with ``#`` are ignored, and a UTF-8 byte-order mark (Excel's default) is accepted. Utterance ids are the paths without their extension.

    Raises:
        DataError: the path does not exist, holds no audio, or an audio file is unreadable.
    """
    from cpcaudio.data.format import is_unfinished_dataset

    path = Path(path)
    if path.is_dir() and ((path / "meta.json").is_file() or is_unfinished_dataset(path)):
        return _prepared_source(path)  # an unfinished one: PreparedDataset.open says so
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)
        if not files:
            raise DataError(
                f"{path} holds no audio files ({', '.join(AUDIO_EXTENSIONS)}) and is not a prepared dataset"
            )
        ids = [p.relative_to(path).with_suffix("").as_posix() for p in files]
        return _audio_source("folder", path, files, ids)
    if path.is_file():
        if path.suffix.lower() in AUDIO_EXTENSIONS:
            raise DataError(f"{path} is one audio file; pass its folder, or a text file listing audio files")
        try:
            lines = path.read_text(encoding="utf-8-sig").splitlines()
        except (OSError, UnicodeDecodeError) as error:
            raise DataError(f"cannot read the audio list {path}: {error}") from None
        entries = [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
        if not entries:
            raise DataError(f"the audio list {path} names no files (one audio path per line)")
        files = [Path(entry) if Path(entry).is_absolute() else path.parent / entry for entry in entries]
        ids = [str(Path(entry).with_suffix("").as_posix()).lstrip("/") for entry in entries]
        return _audio_source("list", path, files, ids)
    raise DataError(f"input {path} does not exist; pass a prepared dataset, a folder of audio or a list file")


def _audio_source(kind: str, path: Path, files: list[Path], ids: list[str]) -> Source:
    from cpcaudio.data.audio import audio_info, display_path, is_utf8_name, read_audio

    seen: dict[str, Path] = {}
    utterances = []
    for file, utterance_id in zip(files, ids):
        if not is_utf8_name(utterance_id):
            raise DataError(
                f"{display_path(file)}: the file name is not valid UTF-8; rename it "
                "(e.g. with convmv -f latin1 -t utf8)"
            )
        if utterance_id in seen:
            raise DataError(f"{seen[utterance_id]} and {file} give the same utterance id {utterance_id!r}; rename one")
        seen[utterance_id] = file
        if not file.is_file():
            raise DataError(f"audio file {file} (listed in {path}) does not exist; correct the list")
        rate, channels, frames = audio_info(file)  # DataError for empty, unreadable and truncated files
        utterances.append(Utterance(utterance_id, frames, rate, channels))

    def read(i: int) -> np.ndarray:
        data, _ = read_audio(files[i])  # (T, C) float32; DataError for unreadable, NaN or infinite samples
        return np.ascontiguousarray(data.T)

    def read_blocks(i: int, block_samples: int) -> Iterator[np.ndarray]:
        from cpcaudio.extract.blocks import audio_file_blocks

        return audio_file_blocks(files[i], block_samples, utterances[i].num_samples)

    return Source(kind=kind, path=path, utterances=utterances, read=read, files=list(files), read_blocks=read_blocks)


def _prepared_source(path: Path) -> Source:
    from cpcaudio.data import PreparedDataset
    from cpcaudio.extract.blocks import dataset_blocks

    dataset = PreparedDataset.open(path)
    utterances = [
        Utterance(uid, int(n), dataset.sample_rate, dataset.num_channels, str(speaker), str(split))
        for uid, n, speaker, split in zip(dataset.utterance_ids, dataset.lengths, dataset.speakers, dataset.splits)
    ]
    utterance_labels = {name: dataset.utterance_labels(name).tolist() for name in dataset.utterance_label_names}
    return Source(
        kind="prepared",
        path=path,
        utterances=utterances,
        read=dataset.signal,
        read_blocks=lambda i, block_samples: dataset_blocks(dataset, i, block_samples),
        frame_labels=dataset.frame_labels if dataset.has_frame_labels else None,
        label_hop=dataset.label_hop,
        utterance_labels=utterance_labels,
        phone_vocabulary=dataset.phone_vocabulary,
        vocabularies=dataset.vocabularies,
    )
