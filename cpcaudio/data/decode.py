"""The per-utterance work of :func:`cpcaudio.data.prepare`: read, check, convert and label one utterance.

It runs in worker processes (:func:`ordered_map`), one :class:`~cpcaudio.data.sources.UtteranceItem` at a
time, and reports a bad file as a :class:`Failed` value (a line naming the file and the problem) instead
of raising, so that ``on_error="skip"`` can leave it out. What is checked is listed in
:mod:`cpcaudio.data.prepare`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np

from cpcaudio.config import EncoderConfig
from cpcaudio.data.alignment import NO_LABEL, num_label_frames, segment_index_per_frame
from cpcaudio.data.audio import display_path
from cpcaudio.data.labels import read_segment_file, read_textgrid
from cpcaudio.data.sources.base import SourcePlan, UtteranceItem
from cpcaudio.data.stream import Clipping, SignalSink, Spooled, convert_audio, full_scale_gain
from cpcaudio.errors import DataError
from cpcaudio.geometry import frame_geometry

LABEL_FRAME_SECONDS = 0.01  # audio: one frame label per 10 ms
# Audio shorter than the receptive field of the default encoder (465 samples, 29 ms at 16 kHz) cannot fill
# one frame's view of the signal: a recording that short is broken, and is refused like a corrupt one.
_DEFAULT_ENCODER = EncoderConfig()
MIN_AUDIO_SAMPLES = frame_geometry(
    _DEFAULT_ENCODER.kernel_sizes, _DEFAULT_ENCODER.strides, _DEFAULT_ENCODER.resolved_paddings()
).receptive_field


@dataclass(frozen=True)
class DecodeSettings:
    """How every utterance of one dataset is converted and checked (the same for all, picklable)."""

    signal_kind: str
    target_rate: Optional[int]  # resample to this rate; None: files must be at dataset_rate
    dataset_rate: int
    mono: bool
    num_channels: int
    label_hop: int
    label_tolerance: int
    has_frame_labels: bool
    symbol_map: Optional[dict] = None  # source symbol -> stored symbol (None = no label)
    fixed_symbols: Optional[frozenset] = None  # fixed phone set (unknown symbols are errors)
    num_fixed_ids: int = 0  # ready-made frame labels must be < this
    min_samples: int = 0  # shorter signals (after resampling) are refused
    clipping: str = "clip"  # samples beyond full scale: clip, scale or fail (see cpcaudio.data.stream)
    spool_dir: Optional[str] = None  # long outputs are written here instead of held in memory


@dataclass
class Decoded:
    """One utterance ready to append: its signal and, with frame labels, their codes."""

    position: int
    signal: Union[np.ndarray, Spooled]  # (time, channels) int16 or float32, or a spool file of int16
    label_codes: Optional[np.ndarray] = None  # int (label frames,): ids, or codes into label_symbols
    label_symbols: Optional[list[str]] = None  # None: label_codes are already vocabulary ids
    clipping: Optional[Clipping] = None  # samples beyond full scale (None: none)


@dataclass
class Failed:
    """One utterance that could not be used, and why (a line naming the file)."""

    position: int
    origin: str
    problem: str


def decode_settings(
    plan: SourcePlan,
    rate: int,
    channels: int,
    sample_rate: Optional[int],
    mono: bool,
    label_tolerance: int,
    clipping: str = "clip",
    spool_dir: Optional[str] = None,
) -> DecodeSettings:
    """The settings of a dataset whose first readable item has ``rate`` and ``channels``.

    Args:
        plan: the reader's plan.
        rate, channels: of the first readable item (for time series: the plan's rate, the channels).
        sample_rate: ``prepare``'s ``sample_rate`` (resample to it; for time series only declared).
        mono: mix down to one channel.
        label_tolerance: allowed label/audio length mismatch, in label frames.
        clipping: what happens to samples beyond full scale (``clip``, ``scale``, ``fail``).
        spool_dir: folder for the samples of long files (see :mod:`cpcaudio.data.stream`).
    """
    if plan.signal_kind == "timeseries":
        dataset_rate, target_rate, label_hop = int(sample_rate or plan.sample_rate or 1), None, 1
        num_channels = channels
    else:
        dataset_rate = int(sample_rate or rate)
        target_rate = sample_rate
        label_hop = max(1, int(round(dataset_rate * LABEL_FRAME_SECONDS)))
        num_channels = 1 if mono else channels
    fixed = plan.phone_vocabulary
    return DecodeSettings(
        signal_kind=plan.signal_kind,
        target_rate=target_rate,
        dataset_rate=dataset_rate,
        mono=mono,
        num_channels=num_channels,
        label_hop=label_hop,
        label_tolerance=label_tolerance,
        has_frame_labels=plan.has_frame_labels,
        symbol_map=plan.symbol_map,
        fixed_symbols=frozenset(fixed) if fixed is not None and plan.symbol_map is None else None,
        num_fixed_ids=len(fixed) if fixed is not None else 0,
        min_samples=MIN_AUDIO_SAMPLES if plan.signal_kind == "audio" else 1,
        clipping=clipping,
        spool_dir=spool_dir,
    )


def decode_utterance(numbered: tuple[int, UtteranceItem], settings: DecodeSettings) -> Union[Decoded, Failed]:
    """Read, check and convert one utterance; failures come back as values (never raised).

    Audio is converted block by block (:func:`cpcaudio.data.stream.convert_audio`): a long file's
    samples come back as a :class:`~cpcaudio.data.stream.Spooled` file, not an array.

    Args:
        numbered: ``(position in the listing, item)``.
        settings: the dataset's :class:`DecodeSettings`.

    Returns:
        :class:`Decoded` with the signal ``(time, channels)`` (int16 audio or float32 series) and the
        frame label codes ``(label frames,)``, or :class:`Failed`.
    """
    position, item = numbered
    sink: Optional[SignalSink] = None
    try:
        if item.array is not None:
            return Decoded(position, _series_signal(item, settings))
        sink, rate, clipping = _convert(item, settings, position)
        length = sink.length
        if length < settings.min_samples:
            raise DataError(
                f"{display_path(item.audio_path)}: only {length} samples "
                f"({1000 * length / settings.dataset_rate:.1f} ms), shorter than the "
                f"{settings.min_samples}-sample receptive field of the default encoder; remove the file"
            )
        codes, symbols = None, None
        if settings.has_frame_labels:
            codes, symbols = _utterance_frame_labels(item, length, rate, settings)
        return Decoded(position, sink.result(), codes, symbols, clipping if clipping.samples else None)
    except DataError as error:
        if sink is not None:
            sink.discard()
        return Failed(position, item.origin, str(error))


def _convert(item: UtteranceItem, settings: DecodeSettings, position: int) -> tuple[SignalSink, int, Clipping]:
    """Convert an audio item into a sink, applying the ``clipping`` rule to samples beyond full scale."""
    spool = Path(settings.spool_dir) / f"{position}.pcm" if settings.spool_dir else None
    options = dict(
        target_rate=settings.target_rate, mono=settings.mono, expect_rate=settings.dataset_rate,
        expect_channels=settings.num_channels,
    )
    sink = SignalSink(settings.num_channels, spool)
    try:
        rate, clipping = convert_audio(item.audio_path, sink=sink, **options)
        if clipping.samples and settings.clipping == "fail":
            raise DataError(
                f"{display_path(item.audio_path)}: {clipping.describe()}, which int16 cannot hold; pass "
                "--clipping clip to clip them or --clipping scale to scale such files down"
            )
        if clipping.samples and settings.clipping == "scale":
            sink.discard()
            gain = full_scale_gain(clipping.peak)
            convert_audio(item.audio_path, sink=sink, gain=gain, **options)
            clipping = Clipping(clipping.samples, clipping.total, clipping.peak, gain)
    except BaseException:
        sink.discard()
        raise
    return sink, rate, clipping


def _series_signal(item: UtteranceItem, settings: DecodeSettings) -> np.ndarray:
    array = np.asarray(item.array, dtype=np.float32)  # (C, T)
    if array.ndim != 2 or array.shape[0] != settings.num_channels:
        raise DataError(
            f"series {item.utterance_id}: shape {array.shape}, expected ({settings.num_channels}, time)"
        )
    valid = ~np.isnan(array).all(axis=0)
    length = int(np.nonzero(valid)[0][-1]) + 1 if valid.any() else 0  # trim trailing NaN padding
    array = array[:, :length]
    if length == 0:
        raise DataError(f"series {item.utterance_id}: no values (empty or all missing)")
    if not np.isfinite(array).all():
        raise DataError(f"series {item.utterance_id}: missing (NaN) or infinite values inside the series")
    return np.ascontiguousarray(array.T)  # (T, C)


def _utterance_frame_labels(
    item: UtteranceItem, num_samples: int, source_rate: int, settings: DecodeSettings
) -> tuple[np.ndarray, Optional[list[str]]]:
    hop, tolerance = settings.label_hop, settings.label_tolerance
    count = num_label_frames(num_samples, hop)
    if item.labels is None:
        return np.full(count, NO_LABEL, dtype=np.int64), None
    if item.labels.frames is not None:
        frames = np.asarray(item.labels.frames, dtype=np.int64)
        expected = num_samples // hop
        if abs(len(frames) - expected) > tolerance:
            raise DataError(
                f"{item.audio_path}: {len(frames)} frame labels for {expected} frames of audio "
                f"({num_samples} samples / {hop}); more than the tolerance of {tolerance} frames"
            )
        bad = frames[(frames < 0) | (frames >= settings.num_fixed_ids)]
        if bad.size:
            raise DataError(
                f"{item.audio_path}: frame label {int(bad[0])} is not a known class "
                f"(0 .. {settings.num_fixed_ids - 1}); pass the right number of classes"
            )
        out = np.full(count, NO_LABEL, dtype=np.int64)
        used = min(count, len(frames))
        out[:used] = frames[:used]
        return out, None
    path = item.labels.path
    if path.suffix.lower() == ".textgrid":
        segments = read_textgrid(path, item.labels.tier)
    else:
        segments = read_segment_file(path, item.labels.units, source_rate)  # type: ignore[arg-type]
    rate = settings.target_rate or source_rate
    duration, end = num_samples / rate, segments[-1].end
    allowed = tolerance * hop / rate
    if abs(end - duration) > allowed + 1e-9:
        raise DataError(
            f"{path}: labels end at {end:.3f} s but the audio lasts {duration:.3f} s; more than the "
            f"tolerance of {tolerance} label frames ({allowed * 1000:.0f} ms)"
        )
    symbols: list[str] = []
    code_of: dict[str, int] = {}
    segment_codes = np.empty(len(segments), dtype=np.int64)
    for number, segment in enumerate(segments):
        symbol: Optional[str] = segment.symbol
        if settings.symbol_map is not None:
            if symbol not in settings.symbol_map:
                raise DataError(f"{path}: unknown phone symbol {symbol!r} (segment {number + 1})")
            symbol = settings.symbol_map[symbol]
        elif settings.fixed_symbols is not None and symbol not in settings.fixed_symbols:
            raise DataError(f"{path}: phone symbol {symbol!r} (segment {number + 1}) is not in the phone set")
        if symbol is None:
            segment_codes[number] = NO_LABEL
            continue
        if symbol not in code_of:
            code_of[symbol] = len(symbols)
            symbols.append(symbol)
        segment_codes[number] = code_of[symbol]
    index = segment_index_per_frame(
        [s.start for s in segments], [s.end for s in segments], num_samples, rate, hop
    )
    codes = np.where(index >= 0, segment_codes[np.maximum(index, 0)], NO_LABEL)
    return codes, symbols


def ordered_map(function: Callable, items: Iterable, workers: int, ahead_per_worker: int = 4) -> Iterator:
    """``map(function, items)`` in input order, over ``workers`` processes with bounded look-ahead."""
    if workers <= 1:
        for item in items:
            yield function(item)
        return
    iterator = iter(items)
    pool = ProcessPoolExecutor(max_workers=workers)
    pending: deque[Future] = deque()
    try:
        for item in iterator:
            pending.append(pool.submit(function, item))
            if len(pending) >= workers * ahead_per_worker:
                break
        while pending:
            result = pending.popleft().result()
            for item in iterator:
                pending.append(pool.submit(function, item))
                break
            yield result
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
