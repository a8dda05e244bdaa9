"""Chunk planning: cut a long signal into hop-aligned slices whose frames equal whole-signal frames.

Output frame ``t`` of the encoder depends on the input samples ``[t * hop + offset, ... + receptive_field)``
(:mod:`cpcaudio.geometry`). A chunk that owns frames ``[f0, f1)`` is given the input slice from the
hop-aligned sample at or before frame ``f0``'s first sample up to frame ``f1 - 1``'s last sample, and only
the frames it owns are kept: their whole dependency cone lies on real samples of the slice, so the zero
padding the convolutions add at the slice's edges never reaches them. At the true edges of the signal
(first and last chunk) the slice edge *is* the signal edge, so the padding is the same as for the whole
signal. Starting the slice on a multiple of the hop keeps every layer's sampling grid aligned.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

from cpcaudio.errors import UsageError
from cpcaudio.geometry import FrameGeometry

DEFAULT_CHUNK_SECONDS = 10.0  # seconds of signal per chunk when ``chunk_seconds`` is None
WHOLE = 2**62  # "chunk" size meaning: the whole signal at once


@dataclass(frozen=True)
class Chunk:
    """One piece of a chunked extraction: frames ``[frame_start, frame_stop)`` computed from the input
    samples ``[sample_start, sample_stop)``; the slice's frame ``j`` is the signal's frame
    ``j + sample_start // hop``."""

    frame_start: int
    frame_stop: int
    sample_start: int
    sample_stop: int


def plan_chunks(geometry: FrameGeometry, num_samples: int, total_frames: int, chunk_frames: int) -> list[Chunk]:
    """Cut ``total_frames`` frames of a ``num_samples``-long signal into chunks of ``chunk_frames``.

    Each chunk's sample range covers the receptive fields of the frames it owns and starts on a multiple
    of the hop (or at 0), and it ends at the signal's end whenever its last frame reaches into the
    right-hand padding; see the module docstring for why this reproduces whole-signal processing.
    """
    if chunk_frames < 1:
        raise ValueError(f"chunk_frames must be >= 1, got {chunk_frames}")
    hop = geometry.hop
    chunks = []
    for frame_start in range(0, total_frames, chunk_frames):
        frame_stop = min(total_frames, frame_start + chunk_frames)
        first_sample = geometry.frame_start(frame_start)
        sample_start = 0 if first_sample <= 0 else (first_sample // hop) * hop
        end = geometry.frame_start(frame_stop - 1) + geometry.receptive_field
        sample_stop = num_samples if (frame_stop == total_frames or end >= num_samples) else end
        chunks.append(Chunk(frame_start, frame_stop, sample_start, sample_stop))
    return chunks


def chunk_frames_for(seconds: Optional[float], sample_rate: int, hop: int) -> int:
    """Frames per chunk for ``seconds`` of signal at ``sample_rate`` (at least one; None: the default
    10 s; ``math.inf``: :data:`WHOLE`)."""
    if seconds is None:
        seconds = DEFAULT_CHUNK_SECONDS
    if not seconds > 0:
        raise UsageError(f"chunk_seconds must be > 0 (or None for {DEFAULT_CHUNK_SECONDS:g} s), got {seconds}")
    if math.isinf(seconds):
        return WHOLE
    return max(1, int(round(seconds * sample_rate / hop)))


def chunk_samples_for(seconds: Optional[float], sample_rate: int, geometry: FrameGeometry) -> Optional[int]:
    """Input samples of the longest slice a chunk of ``seconds`` reads, or None for whole signals."""
    chunk_frames = chunk_frames_for(seconds, sample_rate, geometry.hop)
    if chunk_frames >= WHOLE:
        return None
    return chunk_frames * geometry.hop + geometry.receptive_field
