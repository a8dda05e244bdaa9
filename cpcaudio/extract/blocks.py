"""Long utterances in constant memory: read in blocks, resampled as a stream, extracted with
:class:`~cpcaudio.extract.streaming.StreamingExtractor`, written as the frames come.

Reading a whole 2-hour file decodes 440 MiB of float32 and the padded batch, the standardised copy and
the chunk slices each add as much again (2.5 GB measured). Utterances longer than
:data:`STREAM_SECONDS` are therefore never held whole: their audio is read :data:`BLOCK_SECONDS` at a
time (soundfile, or ``os.pread`` of a prepared dataset), averaged to mono for a mono model and
resampled with ``soxr.ResampleStream`` (the same samples as ``soxr.resample`` of the whole signal), and
each block's finished frames go straight to disk. Models that standardise their input
(``encoder.input_normalization: sequence``) need the whole signal's mean and standard deviation first:
a first streaming pass computes them (:class:`~cpcaudio.extract.streaming.RunningStatistics`, float64),
so the frames equal whole-signal extraction to float rounding. Memory is then independent of the file's
length.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Optional

import numpy as np

from cpcaudio.errors import DataError
from cpcaudio.extract.finite import check_finite_features
from cpcaudio.extract.inputs import Source
from cpcaudio.extract.resampling import resampled_length
from cpcaudio.extract.streaming import RunningStatistics, StreamingExtractor

BLOCK_SECONDS = 2.0  # audio read and pushed per block: bounds the activations (paper model: ~100 MiB)
STREAM_SECONDS = 60.0  # utterances longer than this (at the model's rate) are streamed

WriteRows = Callable[[int, np.ndarray], None]  # (first row of the utterance's frames, frames (n, dim))


def can_stream(model: Any) -> bool:
    """Whether ``model`` streams exactly (``normalization: layer`` makes every frame depend on the end)."""
    return model.config.encoder.normalization != "layer"


def audio_file_blocks(path: Path, block_samples: int, expected_samples: int) -> Iterator[np.ndarray]:
    """The samples of an audio file as float32 (channels, <= block_samples) blocks.

    Raises:
        DataError: the file cannot be decoded, holds NaN or infinite samples, or holds fewer or more
            samples than its header says.
    """
    import soundfile

    from cpcaudio.data.audio import display_path

    def unreadable(error: BaseException) -> DataError:
        message = getattr(error, "error_string", None) or str(error)  # libsndfile's, without the file name
        lines = str(message).strip().splitlines()
        reason = lines[0] if lines else type(error).__name__
        return DataError(f"{display_path(path)}: cannot read audio ({reason}); replace or remove the file")

    try:
        file = soundfile.SoundFile(os.fsencode(path))
    except Exception as error:  # libsndfile errors come in several types
        raise unreadable(error) from None
    read = 0
    with file:
        while True:
            try:
                block = file.read(block_samples, dtype="float32", always_2d=True)  # (n, C)
            except Exception as error:
                raise unreadable(error) from None
            if block.shape[0] == 0:
                break
            if not np.isfinite(block).all():
                raise DataError(
                    f"{display_path(path)}: audio contains NaN or infinite samples; repair or remove the file"
                )
            read += block.shape[0]
            yield np.ascontiguousarray(block.T)
    if read != expected_samples:
        raise DataError(
            f"{display_path(path)}: holds {read} samples but its header says {expected_samples}; the file is "
            "truncated or damaged, replace or remove it"
        )


def dataset_blocks(dataset: Any, index: int, block_samples: int) -> Iterator[np.ndarray]:
    """Utterance ``index`` of a :class:`~cpcaudio.data.PreparedDataset` as float32 (channels, n) blocks."""
    total = int(dataset.lengths[index])
    for start in range(0, total, block_samples):
        yield dataset.read(index, start, min(block_samples, total - start))


def model_rate_blocks(source: Source, index: int, model_rate: int, in_channels: int) -> Iterator[np.ndarray]:
    """Utterance ``index`` as float32 (channels, n) blocks at ``model_rate``, exactly the samples the
    whole-signal path feeds the model: averaged to one channel for a mono model, then resampled (soxr,
    streamed), ``resampled_length`` samples in all."""
    import soxr

    utterance = source.utterances[index]
    rate = int(utterance.sample_rate)
    target = resampled_length(utterance.num_samples, rate, model_rate)
    channels = in_channels if utterance.num_channels == in_channels else 1
    resampler = None if rate == model_rate else soxr.ResampleStream(rate, model_rate, channels, dtype="float32")
    produced = 0

    def keep(block: np.ndarray) -> np.ndarray:
        nonlocal produced
        block = block[:, : max(0, target - produced)]
        produced += block.shape[1]
        return np.ascontiguousarray(block, dtype=np.float32)

    for block in source.blocks(index, max(1, int(BLOCK_SECONDS * rate))):
        if block.shape[0] != in_channels:
            block = block.mean(axis=0, keepdims=True)  # multichannel audio into a mono model
        if resampler is not None:
            block = resampler.resample_chunk(np.ascontiguousarray(block.T), last=False).T
        if block.shape[1]:
            yield keep(block)
    if resampler is not None:
        tail = resampler.resample_chunk(np.zeros((0, channels), dtype=np.float32), last=True).T
        if tail.shape[1]:
            yield keep(tail)
    if produced < target:  # as resample() keeps its promised length
        yield keep(np.zeros((channels, target - produced), dtype=np.float32))


def stream_utterance(
    model: Any,
    source: Source,
    index: int,
    layer: str,
    expected_frames: int,
    write: WriteRows,
    model_name: str,
    on_block: Optional[Callable[[int, int], None]] = None,
) -> None:
    """Extract utterance ``index`` block by block, handing each block's finished frames to ``write``.

    Args:
        model: a :class:`~cpcaudio.CPCModel` that :func:`can_stream`.
        source: where the utterance comes from.
        index: the utterance.
        layer: ``context``, ``encoder`` or ``all``.
        expected_frames: the frame count the store planned for it.
        write: ``write(first, frames)`` stores frames ``[first, first + len(frames))`` of the utterance.
        model_name: the model as error messages name it (its checkpoint).
        on_block: ``on_block(samples_done, samples_total)`` after each block (progress).

    Raises:
        NonFiniteFeaturesError: a block of frames holds NaN or inf. DataError: unreadable audio.
    """
    config = model.config
    model_rate, in_channels = int(config.data.sample_rate), int(config.encoder.in_channels)
    total = resampled_length(source.utterances[index].num_samples, source.utterances[index].sample_rate, model_rate)
    statistics = None
    if config.encoder.input_normalization != "none":  # the whole signal's mean and std: a first pass
        running = RunningStatistics()
        for block in model_rate_blocks(source, index, model_rate, in_channels):
            running.update(block)
        statistics = running.result()
    extractor = StreamingExtractor(model, layer=layer, input_statistics=statistics)
    where = source.describe(index)
    written = 0

    def emit(frames: Any) -> None:
        nonlocal written
        if frames.shape[0]:
            check_finite_features(frames, where, model_name)
            write(written, frames.numpy())
            written += frames.shape[0]

    for block in model_rate_blocks(source, index, model_rate, in_channels):
        emit(extractor.push(block))
        if on_block is not None:
            on_block(extractor.samples_received, total)
    emit(extractor.flush())
    if written != expected_frames:  # the plan and the stream disagree: a bug, not bad input
        raise AssertionError(f"{where}: streamed {written} frames, planned {expected_frames}")
