"""``extract_to_store``: frozen features of a whole corpus into a feature store, resumably.

While a run is in progress the features live in ``features.npy.partial`` and ``progress.json`` records
how many utterances (in the run's fixed processing order, kept in ``plan.json``) have been flushed to it;
it is rewritten atomically after every batch. An interrupted run therefore resumes at the first batch not
yet recorded, and no file looks complete before it is: ``features.npy`` appears by a rename once every
utterance is written, and ``meta.json`` after that (layout: :mod:`cpcaudio.extract.store`).

One extraction writes into a store at a time (:func:`cpcaudio.locks.output_lock`, taken before the folder
is looked at). Utterances longer than :data:`~cpcaudio.extract.blocks.STREAM_SECONDS` are streamed from
disk in blocks (:mod:`cpcaudio.extract.blocks`), the others go in padded batches; rows are written with
``os.pwrite`` (:mod:`cpcaudio.extract.rows`), so memory does not grow with the length of a file or of the
corpus. Non-finite weights and non-finite features are refused (:mod:`cpcaudio.extract.finite`).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch

from cpcaudio.files import atomic_write_bytes
from cpcaudio.devices import DeviceLike
from cpcaudio.errors import DataError, UsageError
from cpcaudio.extract.blocks import BLOCK_SECONDS, STREAM_SECONDS, can_stream, stream_utterance
from cpcaudio.extract.chunks import chunk_samples_for
from cpcaudio.extract.features import LAYERS, extract
from cpcaudio.extract.finite import NonFiniteFeaturesError, check_finite_features
from cpcaudio.extract.inputs import PathLike, Source, open_source
from cpcaudio.extract.labels import store_frame_labels
from cpcaudio.extract.request import extraction_request, load_model, prepare_out
from cpcaudio.extract.resampling import resample, resampled_length
from cpcaudio.extract.rows import FeatureRows, export_npy, reserve
from cpcaudio.extract.store import (
    FEATURES, INDEX, LABELS, META, PARTIAL, PLAN, PROGRESS, STORE_FORMAT, STORE_FORMAT_VERSION, npy_path, read_json,
)
from cpcaudio.locks import output_lock
from cpcaudio.progress import Progress, ProgressCallback, report
from cpcaudio.resources import check_output_dir


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


@dataclass
class _Layout:
    """Where the frames of every utterance go, known before any audio is read.

    Attributes:
        model_samples: samples of each utterance at the model's rate.
        frame_lengths, frame_offsets: int64 (num_utterances,) frames and first row of each utterance.
        total_frames, dim: shape of features.npy.
    """

    model_samples: list[int]
    frame_lengths: np.ndarray
    frame_offsets: np.ndarray
    total_frames: int
    dim: int


def extract_to_store(
    model_or_checkpoint: Union[PathLike, torch.nn.Module],
    input: Union[PathLike, Source],
    out: PathLike,
    layer: str = "context",
    device: DeviceLike = None,
    batch_size: int = 8,
    npy: bool = False,
    overwrite: bool = False,
    chunk_seconds: Optional[float] = None,
    progress: Optional[ProgressCallback] = None,
    command: Optional[str] = None,
    stream_seconds: Optional[float] = None,
) -> ExtractionSummary:
    """Extract features of every utterance of ``input`` into a resumable, memory-mapped store at ``out``.

    Args:
        model_or_checkpoint: a checkpoint path (loaded with :func:`cpcaudio.load`) or a model (e.g. a
            randomly initialised ``CPCModel(config)`` for a baseline).
        input: a prepared dataset directory, a folder of audio files, a text list of audio files, or a
            :class:`~cpcaudio.extract.inputs.Source`. Utterances at another sample rate are resampled to
            the model's (soxr); multichannel audio is averaged to one channel for a mono model.
        out: the store directory (created). An unfinished store of the same request is resumed.
        layer: ``context``, ``encoder`` or ``all`` (see :func:`cpcaudio.extract.extract`).
        device: where the model runs (:func:`cpcaudio.devices.resolve_device`; None: the best device
            here for a checkpoint, where it is for a model).
        batch_size: utterances per batch (grouped by similar length).
        npy: also write ``npy/<utterance id>.npy`` per utterance.
        overwrite: delete an existing store at ``out`` first.
        chunk_seconds: chunk length for long utterances (does not change the result).
        progress: receives ``Progress(stage="extract", done, total, unit="utt")`` when a run starts and
            after each batch is safely written (and, with an ``audio`` field, after each block of a
            streamed utterance).
        command: the command line to record in meta.json.
        stream_seconds: utterances longer than this are streamed from disk in blocks, in constant memory
            (None: :data:`~cpcaudio.extract.blocks.STREAM_SECONDS`; 0: every utterance); the result is
            the same. Never for ``normalization: layer`` models, which need the whole signal.

    Returns:
        :class:`ExtractionSummary`.

    Raises:
        UsageError: bad layer / batch size / device, ``out`` holds something else, or another process is
            writing into ``out`` (:class:`~cpcaudio.locks.OutputLockedError`, naming its pid).
        DataError, CheckpointError: unreadable input or checkpoint, non-finite weights or features.
    """
    if layer not in LAYERS:
        raise UsageError(f"layer must be one of {', '.join(LAYERS)}; got {layer!r}")
    if batch_size < 1:
        raise UsageError(f"batch size must be >= 1, got {batch_size}")
    started = time.perf_counter()
    out = Path(out)
    source = input if isinstance(input, Source) else open_source(input)
    model, model_record = load_model(model_or_checkpoint, device)
    layout = _plan_layout(model, source, layer)
    request = extraction_request(model_record, layer, source)
    audio_seconds = float(sum(u.num_samples / u.sample_rate for u in source.utterances))
    check_output_dir(out, "feature store directory")
    if stream_seconds is not None and not stream_seconds >= 0:
        raise UsageError(f"stream_seconds must be >= 0, got {stream_seconds}")
    limit = STREAM_SECONDS if stream_seconds is None else stream_seconds
    streamed = {i for i, n in enumerate(layout.model_samples) if n > limit * model.config.data.sample_rate}
    run = _Run(out, model, source, layout, layer, batch_size, chunk_seconds, progress,
               streamed if can_stream(model) else set(), _model_name(model_or_checkpoint))
    created = not out.exists()
    with output_lock(out, "extract") as lock:  # before OUT is looked at: one writer per store
        try:
            return _extract_locked(run, request, overwrite, npy, model_record, audio_seconds, command, started)
        except BaseException:
            if created and {p.name for p in out.iterdir()} == {lock.name}:  # refused before writing anything:
                lock.unlink()  # leave no folder behind (still locked: a writer that
                out.rmdir()  # opened this lock file meanwhile was refused)
            raise


@dataclass
class _Run:
    """What every step of one extraction needs."""

    out: Path
    model: Any
    source: Source
    layout: _Layout
    layer: str
    batch_size: int
    chunk_seconds: Optional[float]
    progress: Optional[ProgressCallback]
    streamed: set[int]  # utterances extracted block by block
    model_name: str  # for error messages


def _extract_locked(
    run: _Run, request: dict[str, Any], overwrite: bool, npy: bool, model_record: dict[str, Any],
    audio_seconds: float, command: Optional[str], started: float,
) -> ExtractionSummary:
    """The extraction, holding OUT's lock."""
    out, model, source, layout, layer = run.out, run.model, run.source, run.layout, run.layer
    state = prepare_out(out, request, overwrite)
    if state == "complete":
        (out / PROGRESS).unlink(missing_ok=True)
        (out / PLAN).unlink(missing_ok=True)
        written = _export_npy(out, FEATURES, source, layout) if npy else 0
        return ExtractionSummary(out, len(source.utterances), layout.total_frames, layout.dim, audio_seconds,
                                 len(source.utterances), 0, time.perf_counter() - started, already_complete=True,
                                 npy_files_written=written)
    _check_resources(run, npy)
    out.mkdir(parents=True, exist_ok=True)
    if state == "resume" and not (out / PROGRESS).is_file():
        state = "fresh"  # interrupted while setting up: set up again
    if state == "fresh":
        _set_up(out, request, model, source, layout)
    order = read_json(out / PLAN)["order"]
    completed = int(read_json(out / PROGRESS)["completed"]) if (out / PROGRESS).is_file() else len(order)
    resumed_from = completed
    if completed < len(order):
        _extract_remaining(run, order, completed)
    written = 0
    if npy:  # from the flushed features; files already there (an interrupted export) are kept
        written = _export_npy(out, PARTIAL if (out / PARTIAL).exists() else FEATURES, source, layout)
    if (out / PARTIAL).exists():
        os.replace(out / PARTIAL, out / FEATURES)
    meta = {
        "format": STORE_FORMAT,
        "format_version": STORE_FORMAT_VERSION,
        "package_version": _package_version(),
        **model_record,
        "layer": layer,
        "dim": layout.dim,
        "config": model.config.to_dict(),
        "sample_rate": model.config.data.sample_rate,
        "downsample_rate": model.downsample_rate,
        "frame_rate": model.frame_rate,
        "num_utterances": len(source.utterances),
        "total_frames": layout.total_frames,
        "audio_seconds": audio_seconds,
        "has_frame_labels": (out / LABELS).is_file(),
        "source": {"kind": source.kind, "path": str(source.path)},
        "command": command if command is not None else " ".join(sys.argv),
        "request": request,
    }
    _write_json(out / META, meta)
    (out / PROGRESS).unlink(missing_ok=True)
    (out / PLAN).unlink(missing_ok=True)
    return ExtractionSummary(out, len(source.utterances), layout.total_frames, layout.dim, audio_seconds, resumed_from,
                             len(order) - resumed_from, time.perf_counter() - started, npy_files_written=written)


def _model_name(model_or_checkpoint: Any) -> str:
    if isinstance(model_or_checkpoint, torch.nn.Module):
        return "the model given"
    return f"checkpoint {model_or_checkpoint}"


def _plan_layout(model: Any, source: Source, layer: str) -> _Layout:
    """Frame counts and offsets of every utterance; refuses channel counts and lengths the model cannot take."""
    config = model.config
    in_channels = config.encoder.in_channels
    for utterance in source.utterances:
        if utterance.num_channels != in_channels and in_channels != 1:
            raise DataError(
                f"utterance {utterance.id!r} of {source.path} has {utterance.num_channels} channels but the "
                f"model takes {in_channels}"
            )
    model_rate = config.data.sample_rate
    model_samples = [resampled_length(u.num_samples, u.sample_rate, model_rate) for u in source.utterances]
    _check_lengths(model, source, model_samples)
    frame_lengths = np.array([model.num_frames(n) for n in model_samples], dtype=np.int64)
    frame_offsets = np.concatenate([[0], np.cumsum(frame_lengths)[:-1]]).astype(np.int64)
    dim = {
        "context": config.context.hidden_dim,
        "encoder": config.encoder.hidden_dim,
        "all": config.encoder.hidden_dim + config.context.hidden_dim,
    }[layer]
    return _Layout(model_samples, frame_lengths, frame_offsets, int(frame_lengths.sum()), dim)


def _check_lengths(model: Any, source: Source, model_samples: Sequence[int]) -> None:
    """Refuse utterances too short to give a single frame (e.g. a 1-sample file): they would be silently
    missing from every later step. Shorter than the receptive field but with frames is fine: those frames
    see the same zero padding as when the utterance is processed whole."""
    receptive_field = model.encoder.geometry.receptive_field
    for index, (utterance, samples) in enumerate(zip(source.utterances, model_samples)):
        if model.num_frames(samples) == 0:
            fix = "prepare the dataset again without it" if source.kind == "prepared" else "remove it from the input"
            raise DataError(
                f"{source.describe(index)} has {utterance.num_samples} samples at "
                f"{utterance.sample_rate} Hz ({samples} at the model's rate), too short for a single frame of "
                f"this model (receptive field {receptive_field} samples); {fix}"
            )


def _check_resources(run: _Run, npy: bool) -> None:
    """Memory of the largest batch and disk for the features (what is not written yet), before any work.
    A streamed utterance counts as one block of it."""
    from cpcaudio.resources import check_disk_space, check_extraction_fits

    model, out, layout = run.model, run.out, run.layout
    if not layout.model_samples:
        return
    config = model.config
    chunk_samples = chunk_samples_for(run.chunk_seconds, config.data.sample_rate, model.encoder.geometry)
    device = next(model.parameters()).device
    block = int(BLOCK_SECONDS * config.data.sample_rate) + model.encoder.geometry.receptive_field
    lengths = [min(n, block) if i in run.streamed else n for i, n in enumerate(layout.model_samples)]
    longest, batch = max(lengths), min(run.batch_size, len(lengths))
    check_extraction_fits(config, longest, batch, device, chunk_samples)
    total_frames, dim = layout.total_frames, layout.dim
    needed = total_frames * dim * 4 * (2 if npy else 1) + total_frames * 8  # features (+ .npy copies), labels
    partial = out / PARTIAL
    if partial.is_file():
        needed -= partial.stat().st_blocks * 512  # already reserved by the interrupted run
    check_disk_space(out, needed, "the feature store", "free some space or choose another output directory")


def _set_up(out: Path, request: dict[str, Any], model: Any, source: Source, layout: _Layout) -> None:
    """A fresh run: plan.json first (it marks the directory as ours), then the index, the frame labels and
    the empty features, progress.json last (it marks the setup done)."""
    # Longest first: similar lengths share a batch, and an out-of-memory error shows up at once.
    order = sorted(range(len(source.utterances)), key=lambda i: (-layout.model_samples[i], i))
    plan_record = {"request": request, "order": order, "total_frames": layout.total_frames, "dim": layout.dim}
    _write_json(out / PLAN, plan_record)
    index = {
        "utterance_ids": [u.id for u in source.utterances],
        "speakers": [u.speaker for u in source.utterances],
        "splits": [u.split for u in source.utterances],
        "frame_offsets": layout.frame_offsets.tolist(),
        "frame_lengths": layout.frame_lengths.tolist(),
        "num_samples": layout.model_samples,
        "source_sample_rates": [u.sample_rate for u in source.utterances],
        "utterance_labels": source.utterance_labels,
        "phone_vocabulary": source.phone_vocabulary,
        "vocabularies": source.vocabularies,
    }
    _write_json(out / INDEX, index)
    labels = store_frame_labels(source, model, layout.frame_offsets, layout.frame_lengths)
    if labels is not None:
        _write_npy(out / LABELS, labels)
    if layout.total_frames:
        shape = (layout.total_frames, layout.dim)
        np.lib.format.open_memmap(out / PARTIAL, mode="w+", dtype=np.float32, shape=shape).flush()
        reserve(out / PARTIAL)
    else:  # numpy cannot memory-map an empty array
        _write_npy(out / PARTIAL, np.zeros((0, layout.dim), dtype=np.float32))
    _write_json(out / PROGRESS, {"completed": 0})


def _extract_remaining(run: _Run, order: list[int], completed: int) -> None:
    """Extract ``order[completed:]`` batch by batch into features.npy.partial, recording each batch."""
    out, progress = run.out, run.progress
    rows = FeatureRows(out / PARTIAL) if run.layout.total_frames else None
    report(progress, Progress("extract", done=completed, total=len(order), unit="utt"))
    try:
        while completed < len(order):
            batch = [order[completed]]  # a streamed utterance alone; else a batch of the next ones (up to
            while len(batch) < run.batch_size and completed + len(batch) < len(order):  # the next streamed one)
                if batch[0] in run.streamed or order[completed + len(batch)] in run.streamed:
                    break
                batch.append(order[completed + len(batch)])
            try:
                if batch[0] in run.streamed:
                    _stream_one(run, batch[0], rows, completed, len(order))
                else:
                    _extract_batch(
                        run.model, run.source, batch, run.layer, run.chunk_seconds, rows, run.layout.frame_offsets,
                        run.layout.frame_lengths, run.model_name,
                    )
            except NonFiniteFeaturesError:
                raise
            except DataError as error:
                raise DataError(
                    f"{error}. The {completed} utterances extracted before it are kept in {out} (unfinished): "
                    "rerun the same command once the file is replaced, or add --overwrite once it is removed"
                ) from None
            if rows is not None:
                rows.sync()
            completed += len(batch)
            _write_json(out / PROGRESS, {"completed": completed})
            report(progress, Progress("extract", done=completed, total=len(order), unit="utt"))
    finally:
        if rows is not None:
            rows.close()


def _stream_one(run: _Run, index: int, rows: Optional[FeatureRows], completed: int, total: int) -> None:
    """Utterance ``index`` block by block (:func:`cpcaudio.extract.blocks.stream_utterance`)."""
    first = int(run.layout.frame_offsets[index])
    rate = run.model.config.data.sample_rate

    def write(offset: int, frames: np.ndarray) -> None:
        if rows is not None:
            rows.write(first + offset, frames)

    def on_block(done: int, samples: int) -> None:
        audio = f"{done / rate / 60:.1f}/{samples / rate / 60:.1f} min"
        report(run.progress, Progress("extract", done=completed, total=total, unit="utt", fields={"audio": audio}))

    stream_utterance(run.model, run.source, index, run.layer, int(run.layout.frame_lengths[index]), write,
                     run.model_name, on_block)


def _extract_batch(
    model: Any,
    source: Source,
    batch: Sequence[int],
    layer: str,
    chunk_seconds: Optional[float],
    rows: Optional[FeatureRows],
    frame_offsets: np.ndarray,
    frame_lengths: np.ndarray,
    model_name: str = "the model",
) -> None:
    """Extract the utterances ``batch`` (indices into ``source``) into their rows of the features file."""
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
    del signals
    result = extract(model, padded, model_rate, layer=layer, lengths=lengths, chunk_seconds=chunk_seconds)
    frames = result.frames.numpy()  # (B, frames, dim)
    for row, i in enumerate(batch):
        count = int(frame_lengths[i])
        assert int(result.frame_lengths[row]) == count, (i, int(result.frame_lengths[row]), count)
        check_finite_features(frames[row, :count], source.describe(i), model_name)
        if rows is not None and count:
            rows.write(int(frame_offsets[i]), frames[row, :count])


def _export_npy(out: Path, name: str, source: Source, layout: _Layout) -> int:
    """Write ``npy/<id>.npy`` (frames, dim) from the features file ``out/name`` for every utterance that
    has none yet (atomically, copied in blocks); returns how many were written."""
    targets = [npy_path(out, u.id) for u in source.utterances]
    return export_npy(out / name, targets, layout.frame_offsets, layout.frame_lengths, layout.dim)


def _write_json(path: Path, data: Any) -> None:
    text = json.dumps(data, indent=1) + "\n"
    atomic_write_bytes(path, lambda file: file.write(text.encode()))


def _write_npy(path: Path, array: np.ndarray) -> None:
    atomic_write_bytes(path, lambda file: np.save(file, array))


def _package_version() -> str:
    from cpcaudio import __version__

    return __version__
