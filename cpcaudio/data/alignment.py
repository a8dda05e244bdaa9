"""Exact alignment of frame labels with signal samples and with encoder frames.

Conventions (every function here follows them, and the tests check them on whole utterances):

- Sample ``k`` occupies the continuous time span ``[k, k + 1)`` (in samples).
- **Label frames.** A prepared dataset stores one label per ``label_hop`` samples (160 at 16 kHz: 10 ms).
  Label frame ``j`` covers samples ``[j * label_hop, (j + 1) * label_hop)``; an utterance of ``n`` samples
  has ``ceil(n / label_hop)`` label frames, the last one possibly partial. Its label is the phone whose
  segment contains the frame's centre (``(j + 1/2) * label_hop``, or the middle of the partial last frame).
- **Encoder frames.** Encoder frame ``t`` gets the label frame containing the centre of its receptive
  field (``geometry.frame_center(t) + 1/2`` in continuous time), or -1 where that centre falls outside the
  labels. For the CPC paper's encoder (hop 160, receptive field 465, offset -153) at ``label_hop=160``
  this is exactly label ``t`` for frame ``t``: no shift, no off-by-one, all along the utterance.
- -1 always means "no label" (padding, a deleted symbol, or time outside the labelled span).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cpcaudio.geometry import FrameGeometry, ceil_div, frame_label_indices

NO_LABEL = -1


def num_label_frames(num_samples: int, label_hop: int) -> int:
    """Number of label frames stored for an utterance: ``ceil(num_samples / label_hop)``."""
    return ceil_div(num_samples, label_hop)


def label_frame_centers(num_samples: int, label_hop: int) -> np.ndarray:
    """Centre of every label frame, in continuous samples. Returns: float64 ``(num_label_frames,)``."""
    count = num_label_frames(num_samples, label_hop)
    starts = np.arange(count, dtype=np.float64) * label_hop
    ends = np.minimum(starts + label_hop, float(num_samples))
    return (starts + ends) / 2.0


def segment_index_per_frame(
    starts_seconds: Sequence[float],
    ends_seconds: Sequence[float],
    num_samples: int,
    sample_rate: int,
    label_hop: int,
) -> np.ndarray:
    """Which segment covers each label frame of an utterance.

    Args:
        starts_seconds, ends_seconds: segment bounds ``[start, end)`` in seconds, in time order.
        num_samples: length of the utterance at ``sample_rate``.
        sample_rate: rate of the stored signal.
        label_hop: samples per label frame.

    Returns:
        int64 ``(num_label_frames,)``: the segment index containing each frame's centre, -1 for none.
    """
    centers = label_frame_centers(num_samples, label_hop) / float(sample_rate)  # seconds
    starts = np.asarray(starts_seconds, dtype=np.float64)
    ends = np.asarray(ends_seconds, dtype=np.float64)
    index = np.searchsorted(starts, centers, side="right") - 1
    inside = index >= 0
    inside[inside] &= centers[inside] < ends[index[inside]]
    return np.where(inside, index, NO_LABEL).astype(np.int64)


def frame_labels_for_encoder(
    labels: np.ndarray, label_hop: int, geometry: FrameGeometry, num_frames: int
) -> np.ndarray:
    """The label of each encoder frame: the label frame containing the centre of its receptive field.

    Args:
        labels: int ``(num_label_frames,)`` or ``(batch, num_label_frames)``, label frame ``j`` covering
            samples ``[j * label_hop, (j + 1) * label_hop)`` of the signal fed to the encoder (a whole
            utterance or a window; -1 = no label). A CPU torch tensor is accepted too.
        label_hop: samples per label frame.
        geometry: the encoder's :class:`cpcaudio.geometry.FrameGeometry` (``model.encoder.geometry``).
        num_frames: encoder frames to label (``model.num_frames(num_samples)``).

    Returns:
        int64 ``(num_frames,)`` or ``(batch, num_frames)``; -1 where the centre lies outside the labels.
    """
    labels = np.asarray(labels)
    if labels.ndim not in (1, 2):
        raise ValueError(f"labels must be (frames,) or (batch, frames), got shape {labels.shape}")
    if label_hop < 1 or num_frames < 0:
        raise ValueError(f"label_hop must be >= 1 and num_frames >= 0, got {label_hop}, {num_frames}")
    index = frame_label_indices(geometry, num_frames, label_hop)  # (num_frames,), may be out of range
    available = labels.shape[-1]
    valid = (index >= 0) & (index < available)
    safe = np.clip(index, 0, max(available - 1, 0))
    if available == 0:
        shape = labels.shape[:-1] + (num_frames,)
        return np.full(shape, NO_LABEL, dtype=np.int64)
    picked = labels[..., safe].astype(np.int64)  # (..., num_frames)
    return np.where(valid, picked, NO_LABEL)


def window_label_indices(start: int, valid_length: int, window_size: int, label_hop: int) -> np.ndarray:
    """Which utterance label frame each label frame of a window takes.

    A window of ``window_size`` samples starting at utterance sample ``start`` has
    ``ceil(window_size / label_hop)`` label frames; window label frame ``j`` takes the utterance label
    frame containing its centre ``start + (j + 1/2) * label_hop`` (so a window starting on a multiple of
    ``label_hop`` gets exactly the stored frames). Frames whose centre lies past the ``valid_length``
    samples of the window (padding) get -1.

    Returns:
        int64 ``(ceil(window_size / label_hop),)``: utterance label frame indices, -1 for padding.
    """
    count = num_label_frames(window_size, label_hop)
    # The window's label frames are frames of width and hop label_hop starting at utterance sample start:
    # the label-centre rule of geometry places their centres among the utterance's label frames.
    window_frames = FrameGeometry(hop=label_hop, receptive_field=label_hop, offset=start)
    index = frame_label_indices(window_frames, count, label_hop)  # (count,)
    j = np.arange(count, dtype=np.int64)
    inside = (2 * j + 1) * label_hop < 2 * valid_length  # centre (j + 1/2) * label_hop inside the valid samples
    return np.where(inside, index, NO_LABEL)
