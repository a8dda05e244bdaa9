"""The feature store: frozen features of a whole corpus on disk, written resumably, read memory-mapped.

Layout of a store directory (``cpcaudio extract`` writes it, :class:`FeatureStore` reads it)::

    meta.json           written last: its presence means the store is complete (format, checkpoint and
                        its sha256, layer, model config, frame rate, dim, source, command)
    utterances.json     the utterance index: ids, speakers, splits, frame offsets and lengths, utterance
                        labels, phone vocabulary; in the order of the rows of features.npy
    features.npy        float32 (total_frames, dim), utterance i is rows offsets[i] : offsets[i] + lengths[i]
    frame_labels.npy    int64 (total_frames,), one label per feature frame (-1: none); only when the
                        source has frame labels (e.g. phones of a prepared TIMIT dataset)
    npy/<id>.npy        with ``npy=True``: float32 (frames, dim) per utterance

While a run is in progress the features live in ``features.npy.partial`` and ``progress.json`` records
how many utterances (in the run's fixed processing order, kept in ``plan.json``) have been flushed to it;
it is rewritten atomically after every batch. An interrupted run therefore resumes at the first batch not
yet recorded, and no file looks complete before it is: ``features.npy`` appears by a rename once every
utterance is written, and ``meta.json`` after that.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch

from cpcaudio.checkpoint import atomic_write_bytes
from cpcaudio.errors import CheckpointError, DataError, UsageError
from cpcaudio.resources import check_output_dir
from cpcaudio.features import LAYERS, extract, resample, resampled_length

PathLike = Union[str, os.PathLike]
ProgressCallback = Callable[[int, int], None]

STORE_FORMAT = "cpcaudio-features"
STORE_FORMAT_VERSION = 1
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".opus", ".mp3", ".aiff", ".aif", ".au", ".caf", ".w64", ".sph")

_META, _INDEX, _PLAN, _PROGRESS = "meta.json", "utterances.json", "plan.json", "progress.json"
_FEATURES, _PARTIAL, _LABELS, _NPY_DIR = "features.npy", "features.npy.partial", "frame_labels.npy", "npy"
_OWN_NAMES = {_META, _INDEX, _PLAN, _PROGRESS, _FEATURES, _PARTIAL, _LABELS, _NPY_DIR}


# ---- sources: what to extract from ------------------------------------------------------------------------


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


def open_source(path: PathLike) -> Source:
    """Open INPUT: a prepared dataset directory, a folder of audio files, or a text file listing them.

    A text list has one audio path per line (relative to the list's folder or absolute); blank lines and
    lines starting with ``#`` are ignored. Utterance ids are the paths without their extension.

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
            lines = path.read_text().splitlines()
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

    return Source(kind=kind, path=path, utterances=utterances, read=read, files=list(files))


def _prepared_source(path: Path) -> Source:
    try:
        from cpcaudio.data import PreparedDataset
    except ImportError:  # pragma: no cover - the data package is part of cpcaudio
        raise DataError(f"{path} looks like a prepared dataset but cpcaudio.data is unavailable") from None
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
        frame_labels=dataset.frame_labels if dataset.has_frame_labels else None,
        label_hop=dataset.label_hop,
        utterance_labels=utterance_labels,
        phone_vocabulary=dataset.phone_vocabulary,
        vocabularies=dataset.vocabularies,
    )


# ---- the writer ----------------------------------------------------------------------------------------


@dataclass
class ExtractionSummary:
    """What :func:`extract_to_store` did.

    Attributes:
        path: the store directory.
        num_utterances, total_frames, dim: size of the store.
        audio_seconds: duration of all input utterances.
        resumed_from: utterances already done by an earlier, interrupted run (0 for a fresh run).
        processed: utterances extracted by this call.
        seconds: wall time of this call.
        already_complete: the store was complete before this call (no features were computed).
        npy_files_written: ``.npy`` files written by this call (``npy=True``).
    """

    path: Path
    num_utterances: int
    total_frames: int
    dim: int
    audio_seconds: float
    resumed_from: int
    processed: int
    seconds: float
    already_complete: bool = False
    npy_files_written: int = 0


def file_sha256(path: PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _state_dict_sha256(model: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _write_json(path: Path, data: Any) -> None:
    text = json.dumps(data, indent=1) + "\n"
    atomic_write_bytes(path, lambda file: file.write(text.encode()))


def _write_npy(path: Path, array: np.ndarray) -> None:
    atomic_write_bytes(path, lambda file: np.save(file, array))


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise DataError(f"cannot read {path} ({error}); pass --overwrite to start the extraction again") from None


def _encoder_frame_labels(
    labels: np.ndarray, label_hop: int, label_rate: int, model: Any, num_frames: int
) -> np.ndarray:
    """The label at the centre of each encoder frame's receptive field when the labels count ``label_hop``
    samples at ``label_rate`` and the model runs at another rate (-1 outside the labels).

    Same rule as :func:`cpcaudio.data.frame_labels_for_encoder`, in exact integers: the centre
    ``offset + t * hop + receptive_field / 2`` (model samples) lies in label frame
    ``floor(centre * label_rate / (model_rate * label_hop))``.
    """
    geometry = model.encoder.geometry
    model_rate = model.config.data.sample_rate
    doubled_centre = 2 * (geometry.offset + np.arange(num_frames, dtype=np.int64) * geometry.hop) + geometry.receptive_field
    index = np.floor_divide(doubled_centre * int(label_rate), 2 * int(label_hop) * int(model_rate))
    out = np.full(num_frames, -1, dtype=np.int64)
    inside = (index >= 0) & (index < len(labels))
    out[inside] = np.asarray(labels, dtype=np.int64)[index[inside]]
    return out


def _frame_labels_for(source: Source, i: int, model: Any, num_frames: int) -> np.ndarray:
    labels = source.frame_labels(i) if source.frame_labels is not None else None
    if labels is None or source.label_hop is None:
        return np.full(num_frames, -1, dtype=np.int64)
    utterance = source.utterances[i]
    if utterance.sample_rate == model.config.data.sample_rate:
        from cpcaudio.data import frame_labels_for_encoder

        return np.asarray(
            frame_labels_for_encoder(labels, source.label_hop, model.encoder.geometry, num_frames), dtype=np.int64
        )
    return _encoder_frame_labels(labels, source.label_hop, utterance.sample_rate, model, num_frames)


def _all_frame_labels(
    source: Source, model: Any, frame_offsets: np.ndarray, frame_lengths: np.ndarray
) -> Optional[np.ndarray]:
    """int64 (total_frames,) label per feature frame, or None when no utterance has frame labels."""
    if source.frame_labels is None or source.label_hop is None:
        return None
    labels = np.full(int(frame_lengths.sum()), -1, dtype=np.int64)
    found = False
    for i, (offset, count) in enumerate(zip(frame_offsets, frame_lengths)):
        found = found or source.frame_labels(i) is not None
        labels[offset : offset + count] = _frame_labels_for(source, i, model, int(count))
    return labels if found else None


def _check_device(device: Union[str, torch.device, None]) -> Optional[torch.device]:
    """``device`` as a torch.device, or a UsageError naming it when it is malformed or absent here."""
    if device is None:
        return None
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise UsageError(f"unknown device {device!r}; use cpu, cuda, cuda:1, mps ...") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"device {device!r} requested but CUDA is not available here; use --device cpu")
    if resolved.type == "cuda" and resolved.index is not None and resolved.index >= torch.cuda.device_count():
        raise UsageError(f"device {device!r} does not exist; this machine has {torch.cuda.device_count()} CUDA device(s)")
    if resolved.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError(f"device {device!r} requested but MPS is not available here; use --device cpu")
    return resolved


def _resolve_model(model_or_checkpoint: Union[PathLike, torch.nn.Module], device: Any) -> tuple[Any, dict[str, Any]]:
    from cpcaudio.checkpoint import load

    device = _check_device(device)
    if isinstance(model_or_checkpoint, torch.nn.Module):
        model = model_or_checkpoint
        if device is not None:
            model = model.to(device)
        return model, {"checkpoint": None, "checkpoint_sha256": None, "weights_sha256": _state_dict_sha256(model)}
    path = Path(model_or_checkpoint)
    try:
        model = load(path, device=device)
    except (IndexError, KeyError, TypeError, AttributeError, UnicodeDecodeError, MemoryError) as error:
        # torch.load on a file that is no torch file at all can fail in many ways.
        raise CheckpointError(f"checkpoint {path} is not a torch checkpoint ({type(error).__name__}: {error})") from None
    return model, {"checkpoint": str(path.resolve()), "checkpoint_sha256": file_sha256(path)}


_REQUEST_NAMES = {
    "checkpoint_sha256": "checkpoint contents",
    "weights_sha256": "model weights",
    "layer": "layer",
    "source_kind": "kind of input",
    "utterances_sha256": "input utterances",
}


def _prepare_out(out: Path, request: dict[str, Any], overwrite: bool) -> str:
    """Decide what to do with OUT: ``fresh``, ``resume`` or ``complete``; clears it on ``overwrite``."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"output {out} is a file; pass a directory for the feature store")
    if not out.exists() or not any(out.iterdir()):
        return "fresh"
    names = {p.name for p in out.iterdir()}
    if all(name.startswith(".") and name.endswith(".tmp") for name in names):
        for name in names:  # a run killed while writing its first file
            (out / name).unlink()
        return "fresh"
    ours = (_META in names or _PLAN in names) and names <= _OWN_NAMES | {n for n in names if n.startswith(".")}
    if not ours:
        raise UsageError(
            f"output {out} exists and is not a cpcaudio feature store; choose a new or empty directory"
        )
    if overwrite:
        for name in names:
            target = out / name
            shutil.rmtree(target) if target.is_dir() else target.unlink()
        return "fresh"
    recorded = _read_json(out / _PLAN).get("request") if (out / _PLAN).is_file() else None
    if recorded is None and (out / _META).is_file():
        recorded = _read_json(out / _META).get("request")
    if recorded != request:
        recorded = recorded or {}
        differences = [_REQUEST_NAMES.get(k, k) for k in request if recorded.get(k) != request.get(k)]
        raise UsageError(
            f"{out} holds features of another extraction (different {', '.join(differences) or 'request'}); "
            "pass --overwrite to replace them or choose another directory"
        )
    return "complete" if (out / _META).is_file() else "resume"


def extract_to_store(
    model_or_checkpoint: Union[PathLike, torch.nn.Module],
    input: Union[PathLike, Source],
    out: PathLike,
    layer: str = "context",
    device: Union[str, torch.device, None] = None,
    batch_size: int = 8,
    npy: bool = False,
    overwrite: bool = False,
    chunk_seconds: Optional[float] = None,
    progress: Optional[ProgressCallback] = None,
    command: Optional[str] = None,
) -> ExtractionSummary:
    """Extract features of every utterance of ``input`` into a resumable, memory-mapped store at ``out``.

    Args:
        model_or_checkpoint: a checkpoint path (loaded with :func:`cpcaudio.load`) or a model (e.g. a
            randomly initialised ``CPCModel(config)`` for a baseline).
        input: a prepared dataset directory, a folder of audio files, a text list of audio files, or a
            :class:`Source`. Utterances at another sample rate are resampled to the model's (soxr);
            multichannel audio is averaged to one channel for a mono model.
        out: the store directory (created). An unfinished store of the same request is resumed.
        layer: ``context``, ``encoder`` or ``all`` (see :func:`cpcaudio.features.extract`).
        device: where the model runs (default: CUDA when available, else CPU).
        batch_size: utterances per batch (grouped by similar length).
        npy: also write ``npy/<utterance id>.npy`` per utterance.
        overwrite: delete an existing store at ``out`` first.
        chunk_seconds: chunk length for long utterances (does not change the result).
        progress: called as ``progress(done, total)`` (utterances) after each batch is safely written.
        command: the command line to record in meta.json.

    Returns:
        :class:`ExtractionSummary`.

    Raises:
        UsageError: bad layer / batch size, or ``out`` holds something else.
        DataError, CheckpointError: unreadable input or checkpoint.
    """
    if layer not in LAYERS:
        raise UsageError(f"layer must be one of {', '.join(LAYERS)}; got {layer!r}")
    if batch_size < 1:
        raise UsageError(f"batch size must be >= 1, got {batch_size}")
    started = time.perf_counter()
    out = Path(out)
    source = input if isinstance(input, Source) else open_source(input)
    model, model_record = _resolve_model(model_or_checkpoint, device)
    config = model.config
    model_rate = config.data.sample_rate
    in_channels = config.encoder.in_channels
    for utterance in source.utterances:
        if utterance.num_channels != in_channels and in_channels != 1:
            raise DataError(
                f"utterance {utterance.id!r} of {source.path} has {utterance.num_channels} channels but the "
                f"model takes {in_channels}"
            )
    model_samples = [resampled_length(u.num_samples, u.sample_rate, model_rate) for u in source.utterances]
    _check_lengths(model, source, model_samples)
    frame_lengths = np.array([model.num_frames(n) for n in model_samples], dtype=np.int64)
    frame_offsets = np.concatenate([[0], np.cumsum(frame_lengths)[:-1]]).astype(np.int64)
    total_frames = int(frame_lengths.sum())
    dim = {
        "context": config.context.hidden_dim,
        "encoder": config.encoder.hidden_dim,
        "all": config.encoder.hidden_dim + config.context.hidden_dim,
    }[layer]
    # What makes two runs the same extraction (a resume must match it): the weights, the layer and the
    # utterances (ids, lengths, rates, channels). Paths may change between runs; the contents may not.
    request = {
        "checkpoint_sha256": model_record["checkpoint_sha256"],
        "weights_sha256": model_record.get("weights_sha256"),
        "layer": layer,
        "source_kind": source.kind,
        "utterances_sha256": hashlib.sha256(
            json.dumps([[u.id, u.num_samples, u.sample_rate, u.num_channels] for u in source.utterances]).encode()
        ).hexdigest(),
    }
    audio_seconds = float(sum(u.num_samples / u.sample_rate for u in source.utterances))
    check_output_dir(out, "feature store directory")
    state = _prepare_out(out, request, overwrite)
    if state != "complete":
        _check_resources(model, out, model_samples, batch_size, chunk_seconds, total_frames, dim, npy)
    if state == "complete":
        (out / _PROGRESS).unlink(missing_ok=True)
        (out / _PLAN).unlink(missing_ok=True)
        written = 0
        if npy:
            stored = np.load(out / _FEATURES, mmap_mode="r") if total_frames else None
            written = _export_npy(out, stored, source, frame_offsets, frame_lengths, dim)
        return ExtractionSummary(out, len(source.utterances), total_frames, dim, audio_seconds, len(source.utterances), 0,
                                 time.perf_counter() - started, already_complete=True, npy_files_written=written)
    out.mkdir(parents=True, exist_ok=True)
    # Longest first: similar lengths share a batch, and an out-of-memory error shows up at once.
    order = sorted(range(len(source.utterances)), key=lambda i: (-model_samples[i], i))
    plan_record = {"request": request, "order": order, "total_frames": total_frames, "dim": dim}
    if state == "resume" and not (out / _PROGRESS).is_file():
        state = "fresh"  # interrupted while setting up: set up again
    if state == "fresh":
        # plan.json first (it marks the directory as ours), progress.json last (it marks the setup done).
        _write_json(out / _PLAN, plan_record)
        index = {
            "utterance_ids": [u.id for u in source.utterances],
            "speakers": [u.speaker for u in source.utterances],
            "splits": [u.split for u in source.utterances],
            "frame_offsets": frame_offsets.tolist(),
            "frame_lengths": frame_lengths.tolist(),
            "num_samples": model_samples,
            "source_sample_rates": [u.sample_rate for u in source.utterances],
            "utterance_labels": source.utterance_labels,
            "phone_vocabulary": source.phone_vocabulary,
            "vocabularies": source.vocabularies,
        }
        _write_json(out / _INDEX, index)
        labels = _all_frame_labels(source, model, frame_offsets, frame_lengths)
        if labels is not None:
            _write_npy(out / _LABELS, labels)
        if total_frames:
            np.lib.format.open_memmap(out / _PARTIAL, mode="w+", dtype=np.float32, shape=(total_frames, dim)).flush()
            _reserve(out / _PARTIAL)
        else:  # numpy cannot memory-map an empty array
            _write_npy(out / _PARTIAL, np.zeros((0, dim), dtype=np.float32))
        _write_json(out / _PROGRESS, {"completed": 0})
    order = _read_json(out / _PLAN)["order"]
    completed = int(_read_json(out / _PROGRESS)["completed"]) if (out / _PROGRESS).is_file() else len(order)
    resumed_from = completed
    if completed < len(order):
        features = np.load(out / _PARTIAL, mmap_mode="r+") if total_frames else None
        if progress is not None:
            progress(completed, len(order))
        while completed < len(order):
            batch = order[completed : completed + batch_size]
            try:
                _extract_batch(model, source, batch, layer, chunk_seconds, features, frame_offsets, frame_lengths)
            except DataError as error:
                raise DataError(
                    f"{error}. The {completed} utterances extracted before it are kept in {out} (unfinished): "
                    "rerun the same command once the file is replaced, or add --overwrite once it is removed"
                ) from None
            if features is not None:
                features.flush()
            completed += len(batch)
            _write_json(out / _PROGRESS, {"completed": completed})
            if progress is not None:
                progress(completed, len(order))
        del features
    written = 0
    if npy:  # from the flushed features; files already there (an interrupted export) are kept
        partial = out / _PARTIAL if (out / _PARTIAL).exists() else out / _FEATURES
        stored = np.load(partial, mmap_mode="r") if total_frames else None
        written = _export_npy(out, stored, source, frame_offsets, frame_lengths, dim)
    if (out / _PARTIAL).exists():
        os.replace(out / _PARTIAL, out / _FEATURES)
    meta = {
        "format": STORE_FORMAT,
        "format_version": STORE_FORMAT_VERSION,
        "package_version": _package_version(),
        **model_record,
        "layer": layer,
        "dim": dim,
        "config": config.to_dict(),
        "sample_rate": model_rate,
        "downsample_rate": model.downsample_rate,
        "frame_rate": model.frame_rate,
        "num_utterances": len(source.utterances),
        "total_frames": total_frames,
        "audio_seconds": audio_seconds,
        "has_frame_labels": (out / _LABELS).is_file(),
        "source": {"kind": source.kind, "path": str(source.path)},
        "command": command if command is not None else " ".join(sys.argv),
        "request": request,
    }
    _write_json(out / _META, meta)
    (out / _PROGRESS).unlink(missing_ok=True)
    (out / _PLAN).unlink(missing_ok=True)
    return ExtractionSummary(out, len(source.utterances), total_frames, dim, audio_seconds, resumed_from,
                             len(order) - resumed_from, time.perf_counter() - started, npy_files_written=written)


def _check_lengths(model: Any, source: Source, model_samples: Sequence[int]) -> None:
    """Refuse utterances too short to give a single frame (e.g. a 1-sample file): they would be silently
    missing from every later step. Shorter than the receptive field but with frames is fine: those frames
    see the same zero padding as when the utterance is processed whole."""
    receptive_field = model.encoder.geometry.receptive_field
    for index, (utterance, samples) in enumerate(zip(source.utterances, model_samples)):
        if model.num_frames(samples) == 0:
            fix = "prepare the dataset again without it" if source.kind == "prepared" else "remove it from the input"
            where = (
                str(source.files[index]) if source.files is not None else f"utterance {utterance.id!r} of {source.path}"
            )
            raise DataError(
                f"{where} has {utterance.num_samples} samples at "
                f"{utterance.sample_rate} Hz ({samples} at the model's rate), too short for a single frame of "
                f"this model (receptive field {receptive_field} samples); {fix}"
            )


def _check_resources(
    model: Any,
    out: Path,
    model_samples: Sequence[int],
    batch_size: int,
    chunk_seconds: Optional[float],
    total_frames: int,
    dim: int,
    npy: bool,
) -> None:
    """Memory of the largest batch and disk for the features (what is not written yet), before any work."""
    from cpcaudio.features import DEFAULT_CHUNK_SECONDS, WHOLE, chunk_frames_for
    from cpcaudio.resources import check_disk_space, check_extraction_fits

    if not model_samples:
        return
    config = model.config
    hop = model.encoder.geometry.hop
    seconds = DEFAULT_CHUNK_SECONDS if chunk_seconds is None else chunk_seconds
    chunk_frames = chunk_frames_for(seconds, config.data.sample_rate, hop)
    chunk_samples = None if chunk_frames >= WHOLE else chunk_frames * hop + model.encoder.geometry.receptive_field
    device = next(model.parameters()).device
    check_extraction_fits(config, max(model_samples), min(batch_size, len(model_samples)), device, chunk_samples)
    needed = total_frames * dim * 4 * (2 if npy else 1) + total_frames * 8  # features (+ .npy copies), labels
    partial = out / _PARTIAL
    if partial.is_file():
        needed -= partial.stat().st_blocks * 512  # already reserved by the interrupted run
    check_disk_space(out, needed, "the feature store", "free some space or choose another output directory")


def _reserve(path: Path) -> None:
    """Allocate the disk blocks of a freshly created (sparse) memory-mapped file, so that a full disk is
    an error now rather than a crash (SIGBUS) when a page is written through the memory map later."""
    from cpcaudio.resources import disk_full_error, is_disk_full

    if not hasattr(os, "posix_fallocate"):
        return
    with open(path, "r+b") as file:
        try:
            os.posix_fallocate(file.fileno(), 0, os.fstat(file.fileno()).st_size)
        except OSError as error:
            if is_disk_full(error):
                raise disk_full_error(path.parent, error, "the feature store") from None
            # EINVAL/EOPNOTSUPP: the file system cannot reserve space; carry on without.


def _package_version() -> str:
    from cpcaudio import __version__

    return __version__


def _extract_batch(
    model: Any,
    source: Source,
    batch: Sequence[int],
    layer: str,
    chunk_seconds: Optional[float],
    features: Optional[np.ndarray],
    frame_offsets: np.ndarray,
    frame_lengths: np.ndarray,
) -> None:
    """Extract the utterances ``batch`` (indices into ``source``) into their rows of ``features``."""
    model_rate = model.config.data.sample_rate
    signals = []
    for i in batch:
        utterance = source.utterances[i]
        signal = source.read(i)  # (C, T) at the source rate
        if signal.shape[0] != model.config.encoder.in_channels:
            signal = signal.mean(axis=0, keepdims=True)  # multichannel audio into a mono model
        signals.append(resample(signal, utterance.sample_rate, model_rate))
    lengths = [s.shape[-1] for s in signals]
    padded = np.zeros((len(signals), signals[0].shape[0], max(lengths)), dtype=np.float32)
    for row, signal in enumerate(signals):
        padded[row, :, : signal.shape[-1]] = signal
    result = extract(model, padded, model_rate, layer=layer, lengths=lengths, chunk_seconds=chunk_seconds)
    frames = result.frames.numpy()  # (B, frames, dim)
    for row, i in enumerate(batch):
        count = int(frame_lengths[i])
        assert int(result.frame_lengths[row]) == count, (i, int(result.frame_lengths[row]), count)
        if features is not None and count:
            features[frame_offsets[i] : frame_offsets[i] + count] = frames[row, :count]


def npy_path(out: PathLike, utterance_id: str) -> Path:
    """Where ``--npy`` puts utterance ``utterance_id``: ``out/npy/<id>.npy`` (``..`` parts become ``_``)."""
    parts = [part if part not in ("", ".", "..") else "_" for part in utterance_id.split("/")]
    return Path(out) / _NPY_DIR / ("/".join(parts) + ".npy")


def _export_npy(
    out: Path, features: Optional[np.ndarray], source: Source, frame_offsets: np.ndarray, frame_lengths: np.ndarray, dim: int
) -> int:
    """Write ``npy/<id>.npy`` (frames, dim) for every utterance that has none yet (atomically); returns
    how many were written."""
    written = 0
    for i, utterance in enumerate(source.utterances):
        target = npy_path(out, utterance.id)
        if target.is_file():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        offset, count = int(frame_offsets[i]), int(frame_lengths[i])
        rows = features[offset : offset + count] if features is not None else np.zeros((0, dim), np.float32)
        _write_npy(target, np.ascontiguousarray(rows))
        written += 1
    return written


# ---- the reader ----------------------------------------------------------------------------------------


class FeatureStore:
    """Read a store written by :func:`extract_to_store`, in constant memory (``np.memmap``).

    Example::

        store = FeatureStore.open("features/timit_context")
        x = store.features(0)              # float32 (frames, dim), a memory-mapped view
        y = store.frame_labels(0)          # int64 (frames,) or None; -1 = no label
        train = store.indices("train")
    """

    def __init__(self, path: Path, meta: dict[str, Any], index: dict[str, Any]) -> None:
        self.path = path
        self.meta = meta
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
        total, dim = int(meta["total_frames"]), int(meta["dim"])
        if total:
            self.all_features = np.load(path / _FEATURES, mmap_mode="r")
        else:
            self.all_features = np.zeros((0, dim), dtype=np.float32)
        if self.all_features.shape != (total, dim) or self.all_features.dtype != np.float32:
            raise DataError(
                f"{path / _FEATURES} has shape {self.all_features.shape} {self.all_features.dtype}, meta.json "
                f"says ({total}, {dim}) float32; extract again with --overwrite"
            )
        labels_path = path / _LABELS
        self.all_frame_labels: Optional[np.ndarray] = np.load(labels_path, mmap_mode="r") if labels_path.is_file() else None

    @classmethod
    def open(cls, path: PathLike) -> FeatureStore:
        """Open a complete store.

        Raises:
            DataError: ``path`` is not a feature store, is unfinished, or its files disagree.
        """
        path = Path(path)
        if not (path / _META).is_file():
            if (path / _PLAN).is_file():
                raise DataError(f"{path} is an unfinished extraction; rerun the same 'cpcaudio extract' command to finish it")
            raise DataError(f"{path} is not a feature store (no {_META}); create one with 'cpcaudio extract'")
        meta = _read_json(path / _META)
        if meta.get("format") != STORE_FORMAT:
            raise DataError(f"{path} is not a feature store ({_META} has format {meta.get('format')!r})")
        if meta.get("format_version") != STORE_FORMAT_VERSION:
            raise DataError(
                f"feature store {path} has format version {meta.get('format_version')}, this cpcaudio reads "
                f"{STORE_FORMAT_VERSION}; extract again"
            )
        return cls(path, meta, _read_json(path / _INDEX))

    def __len__(self) -> int:
        return len(self.utterance_ids)

    @property
    def dim(self) -> int:
        """Feature dimension."""
        return int(self.meta["dim"])

    @property
    def layer(self) -> str:
        """``context``, ``encoder`` or ``all``."""
        return str(self.meta["layer"])

    @property
    def frame_rate(self) -> float:
        """Feature frames per second."""
        return float(self.meta["frame_rate"])

    @property
    def downsample_rate(self) -> int:
        """Samples (at ``meta['sample_rate']``) per feature frame."""
        return int(self.meta["downsample_rate"])

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
