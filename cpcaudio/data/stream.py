"""Audio read, mixed down, resampled and quantised in blocks: memory that does not grow with file length.

``prepare`` never holds a whole file as float32. :func:`convert_audio` reads ``BLOCK_FRAMES`` frames at a
time (soundfile), mixes them down, resamples them with soxr's streaming resampler
(``soxr.ResampleStream``, the same filter as ``soxr.resample``: the output is identical to resampling the
whole file at once, flushed at the end) and quantises them to int16. The int16 blocks go to a
:class:`SignalSink`: kept in memory up to ``SPOOL_BYTES``, written to a spool file in the output folder
beyond that, which the main process then appends to ``signal.bin`` in chunks
(:meth:`~cpcaudio.data.format.DatasetWriter.add`). Every per-sample operation is the same as on the
whole file, so a file that needs no resampling gives byte-identical samples.

Samples beyond full scale (``|x| > 1`` after mixing and resampling: float WAVs above 0 dBFS, some MP3 or
Ogg decodes, resampler overshoot) cannot be stored as int16. ``clipping`` decides what happens to them:
``clip`` (default: clipped, counted, listed in ``report.json``), ``scale`` (the file is scaled down by
its peak, ``(32767 / 32768) / peak``, in a second pass, so nothing is clipped; listed too) or ``fail``
(the file is refused with the fraction of samples beyond full scale).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np
import soundfile

from cpcaudio.data.audio import INT16_SCALE, check_not_empty, check_not_truncated, describe_error, display_path
from cpcaudio.errors import DataError

BLOCK_FRAMES = 1 << 16  # frames read (and resampled) at a time: 256 KiB of float32 per channel
SPOOL_BYTES = 1 << 22  # int16 output beyond 4 MiB (about 2 min of 16 kHz mono) goes to a spool file
CLIPPING_CHOICES = ("clip", "scale", "fail")
_FULL_SCALE_GAIN = (INT16_SCALE - 1) / INT16_SCALE  # a peak scaled to this is stored without clipping


@dataclass(frozen=True)
class Spooled:
    """An utterance's int16 samples in a spool file (``(length, channels)``, raw little-endian)."""

    path: str
    length: int
    num_channels: int


@dataclass(frozen=True)
class Clipping:
    """Samples of one file beyond full scale, and what was done about them.

    Attributes:
        samples: samples (over all channels) beyond full scale after mixing and resampling.
        total: samples (over all channels) of the converted signal.
        peak: the largest ``|x|`` (1.0 = full scale) before any scaling.
        gain: the factor applied (``scale``); 1.0 when clipped.
    """

    samples: int
    total: int
    peak: float
    gain: float = 1.0

    @property
    def fraction(self) -> float:
        return self.samples / max(self.total, 1)

    def describe(self) -> str:
        """``6.5% of its samples (1040 of 16000) beyond full scale (peak 2.13)``."""
        return (
            f"{100 * self.fraction:.3g}% of its samples ({self.samples} of {self.total}) beyond full scale "
            f"(peak {self.peak:.3g})"
        )

    def as_report(self, file: str) -> dict:
        return {
            "file": file,
            "samples_beyond_full_scale": self.samples,
            "samples": self.total,
            "fraction": round(self.fraction, 6),
            "peak": round(self.peak, 6),
            "action": "clipped" if self.gain == 1.0 else f"scaled by {self.gain:.6g}",
        }


class SignalSink:
    """Collects int16 blocks ``(time, channels)``: in memory up to ``limit`` bytes, then in ``spool_path``."""

    def __init__(self, num_channels: int, spool_path: Optional[Path], limit: Optional[int] = None) -> None:
        self.num_channels = num_channels
        self.spool_path = spool_path
        self.limit = SPOOL_BYTES if limit is None else limit
        self.length = 0
        self._blocks: list[np.ndarray] = []
        self._bytes = 0
        self._file = None

    def write(self, block: np.ndarray) -> None:
        if block.shape[0] == 0:
            return
        self.length += int(block.shape[0])
        if self._file is None and self.spool_path is not None and self._bytes + block.nbytes > self.limit:
            self._file = open(self.spool_path, "wb")
            for kept in self._blocks:
                self._file.write(kept.astype("<i2", copy=False).tobytes())
            self._blocks, self._bytes = [], 0
        if self._file is not None:
            self._file.write(np.ascontiguousarray(block, dtype="<i2").tobytes())
        else:
            self._blocks.append(block)
            self._bytes += block.nbytes

    def result(self) -> Union[np.ndarray, Spooled]:
        """The samples: an int16 array ``(time, channels)``, or the spool file holding them."""
        if self._file is not None:
            self._file.close()
            return Spooled(str(self.spool_path), self.length, self.num_channels)
        if not self._blocks:
            return np.zeros((0, self.num_channels), dtype=np.int16)
        return self._blocks[0] if len(self._blocks) == 1 else np.concatenate(self._blocks)

    def discard(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self.spool_path is not None:
            Path(self.spool_path).unlink(missing_ok=True)
        self._blocks, self._bytes, self.length = [], 0, 0


def read_blocks(path: Path, block_frames: Optional[int] = None) -> Iterator[tuple[int, np.ndarray]]:
    """``(sample_rate, float32 block (frames, channels))`` of an audio file, checked as
    :func:`cpcaudio.data.audio.read_audio` checks the whole file (empty, unreadable, truncated, no
    samples, NaN or infinite samples), ``block_frames`` frames at a time."""
    block_frames = block_frames or BLOCK_FRAMES
    check_not_empty(path)
    try:
        file = soundfile.SoundFile(os.fsencode(path))
    except Exception as error:
        raise DataError(
            f"{display_path(path)}: cannot read audio ({describe_error(error)}); replace or remove the file"
        ) from None
    with file:
        check_not_truncated(path, file.extra_info)
        rate, frames = int(file.samplerate), 0
        while True:
            try:
                block = file.read(block_frames, dtype="float32", always_2d=True)
            except Exception as error:
                raise DataError(
                    f"{display_path(path)}: cannot read audio ({describe_error(error)}); replace or remove the file"
                ) from None
            if block.shape[0] == 0:
                break
            if not np.isfinite(block).all():
                raise DataError(
                    f"{display_path(path)}: audio contains NaN or infinite samples; repair or remove the file"
                )
            frames += block.shape[0]
            yield rate, block
    if frames == 0:
        raise DataError(f"{display_path(path)}: audio file has no samples; remove it")


def convert_audio(
    path: Path,
    *,
    target_rate: Optional[int],
    mono: bool,
    sink: SignalSink,
    gain: float = 1.0,
    expect_rate: Optional[int] = None,
    expect_channels: Optional[int] = None,
    block_frames: Optional[int] = None,
) -> tuple[int, Clipping]:
    """Read, mix down, resample and quantise ``path`` block by block into ``sink``.

    Args:
        path: the audio file.
        target_rate: resample to this rate (``None``: keep the file's).
        mono: average the channels into one.
        sink: receives int16 blocks ``(time, channels)``.
        gain: factor applied before quantising (``scale`` clipping).
        expect_rate: without resampling, the rate every file must have (checked before decoding).
        expect_channels: when channels are kept, the channel count every file must have.
        block_frames: frames read at a time (default ``BLOCK_FRAMES``).

    Returns:
        ``(the file's sample rate, the samples beyond full scale)``.
    """
    resampler = None
    rate = channels = 0
    clipped = total = 0
    peak = 0.0
    factor = np.float32(gain)
    for rate, block in read_blocks(path, block_frames):
        if channels == 0:
            _check_format(path, rate, block.shape[1], target_rate, mono, expect_rate, expect_channels)
            channels = 1 if mono else block.shape[1]
            if target_rate is not None and target_rate != rate:
                import soxr

                resampler = soxr.ResampleStream(rate, target_rate, channels, dtype="float32", quality="HQ")
        if mono and block.shape[1] > 1:
            block = block.mean(axis=1, keepdims=True, dtype=np.float32)
        if resampler is not None:
            block = resampler.resample_chunk(block, last=False)
        counts = _quantise(block, factor, sink)
        clipped, total, peak = clipped + counts[0], total + block.size, max(peak, counts[1])
    if resampler is not None:
        block = resampler.resample_chunk(np.zeros((0, channels), dtype=np.float32), last=True)
        counts = _quantise(block.reshape(block.shape[0], -1), factor, sink)
        clipped, total, peak = clipped + counts[0], total + block.size, max(peak, counts[1])
        if sink.length == 0:
            raise DataError(f"{path}: too short to resample from {rate} Hz to {target_rate} Hz")
    return rate, Clipping(clipped, total, peak, gain)


def full_scale_gain(peak: float) -> float:
    """The factor that brings a signal of ``peak`` just under full scale (nothing clipped)."""
    return _FULL_SCALE_GAIN / peak


def _quantise(block: np.ndarray, factor: np.float32, sink: SignalSink) -> tuple[int, float]:
    """Append ``block`` (float32) as int16 to ``sink``: ``x * 32768``, rounded, clipped (exactly what
    :func:`cpcaudio.data.audio.to_int16` does); returns (samples beyond full scale, peak before gain)."""
    if block.size == 0:
        return 0, 0.0
    peak = float(np.abs(block).max())
    if factor != 1.0:
        block = block * factor
    beyond = int(np.count_nonzero(np.abs(block) > 1.0)) if peak * float(factor) > 1.0 else 0
    sink.write(np.clip(np.rint(block * INT16_SCALE), -32768, 32767).astype(np.int16))
    return beyond, peak


def _check_format(
    path: Path,
    rate: int,
    channels: int,
    target_rate: Optional[int],
    mono: bool,
    expect_rate: Optional[int],
    expect_channels: Optional[int],
) -> None:
    if target_rate is None and expect_rate is not None and rate != expect_rate:
        raise DataError(
            f"{path}: sample rate {rate} Hz differs from the dataset's {expect_rate} Hz "
            f"(the first file's); pass --sample-rate {expect_rate} to resample every file"
        )
    if not mono and expect_channels is not None and channels != expect_channels:
        raise DataError(
            f"{path}: {channels} channels, the dataset has {expect_channels}; "
            "pass --mono to mix every file down to one channel"
        )
