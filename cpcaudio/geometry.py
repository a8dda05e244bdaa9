"""Frame geometry of a strided convolution stack, in plain Python (no torch).

These functions are the single source of truth for how many frames an encoder produces and which input
samples each frame sees. The model, the label alignment of the data pipeline and chunked feature
extraction all call them, so they can never disagree.

A conv layer with kernel ``k``, stride ``s`` and zero padding ``p`` maps ``n`` input steps to
``floor((n + 2p - k) / s) + 1`` output steps (``0`` when ``n + 2p < k``). Output frame ``t`` of the whole
stack starts at input sample ``t * hop - total_padding`` and spans ``receptive_field`` samples.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np


def default_paddings(kernel_sizes: Sequence[int], strides: Sequence[int]) -> tuple[int, ...]:
    """Padding ``(k - s + 1) // 2`` per layer: CPC_audio's (3, 2, 1, 1, 1) for the paper's encoder.

    With these paddings a 16 kHz signal of ``n * 160`` samples gives exactly ``n`` frames.
    """
    return tuple((k - s + 1) // 2 for k, s in zip(kernel_sizes, strides))


def ceil_div(numerator: Any, denominator: Any) -> Any:
    """``ceil(numerator / denominator)`` for integers (or integer arrays, element-wise), exactly."""
    return -(-numerator // denominator)


def conv_output_length(length: Any, kernel_size: int, stride: int, padding: int) -> Any:
    """Number of output steps of one ``Conv1d`` layer for ``length`` input steps.

    ``length`` may be a Python int, a NumPy array or a torch tensor of lengths (element-wise, floor
    division): this is the only place the formula is written.
    """
    steps = (length + 2 * padding - kernel_size) // stride + 1
    if isinstance(steps, int):
        return max(steps, 0)
    return steps * (steps > 0)  # element-wise max(steps, 0), for arrays and tensors alike


def layer_lengths(
    num_samples: Any, kernel_sizes: Sequence[int], strides: Sequence[int], paddings: Sequence[int]
) -> list[Any]:
    """Time steps after each layer of a conv stack (ints, arrays or tensors, as ``conv_output_length``)."""
    lengths, length = [], num_samples
    for kernel, stride, padding in zip(kernel_sizes, strides, paddings):
        length = conv_output_length(length, kernel, stride, padding)
        lengths.append(length)
    return lengths


@dataclass(frozen=True)
class FrameGeometry:
    """Where the frames of a conv stack sit on the input signal.

    Attributes:
        hop: input samples between consecutive frames (the product of the strides).
        receptive_field: input samples that one output frame depends on.
        offset: input sample index where frame 0's receptive field starts (``-total padding``, so
            usually negative: the first frame partly sees zero padding).
    """

    hop: int
    receptive_field: int
    offset: int

    def frame_start(self, frame: int) -> int:
        """First input sample (possibly negative, i.e. padding) seen by ``frame``."""
        return self.offset + frame * self.hop

    def frame_center(self, frame: int) -> float:
        """Centre of ``frame``'s receptive field, in input samples (index of the middle sample)."""
        return self.frame_start(frame) + (self.receptive_field - 1) / 2.0

    def first_center_seconds(self, sample_rate: float) -> float:
        """Continuous-time centre of frame 0's receptive field, in seconds.

        Sample ``k`` spans ``[k, k + 1)``, so the field ``[offset, offset + receptive_field)`` is centred
        on ``offset + receptive_field / 2``; frame ``t``'s centre is this plus ``t * hop / sample_rate``.
        """
        return (self.offset + self.receptive_field / 2.0) / float(sample_rate)

    def hop_seconds(self, sample_rate: float) -> float:
        """Seconds between consecutive frames."""
        return self.hop / float(sample_rate)


def frame_geometry(
    kernel_sizes: Sequence[int], strides: Sequence[int], paddings: Sequence[int]
) -> FrameGeometry:
    """Hop, receptive field and offset of a conv stack (layers applied in order)."""
    hop = 1
    receptive_field = 1
    offset = 0
    for kernel, stride, padding in zip(kernel_sizes, strides, paddings):
        receptive_field += (kernel - 1) * hop
        offset -= padding * hop
        hop *= stride
    return FrameGeometry(hop=hop, receptive_field=receptive_field, offset=offset)


def num_frames(
    num_samples: Any, kernel_sizes: Sequence[int], strides: Sequence[int], paddings: Sequence[int]
) -> Any:
    """Exact number of frames the conv stack produces for ``num_samples`` input samples (an int, or
    element-wise for an array/tensor of lengths)."""
    length = int(num_samples) if isinstance(num_samples, (int, np.integer)) else num_samples
    for kernel, stride, padding in zip(kernel_sizes, strides, paddings):
        length = conv_output_length(length, kernel, stride, padding)
    return length


def frame_label_indices(
    geometry: FrameGeometry,
    num_frames: int,
    label_hop: int,
    label_rate: Optional[int] = None,
    model_rate: Optional[int] = None,
) -> np.ndarray:
    """The label-centre rule: which label frame holds the centre of each encoder frame's receptive field.

    Encoder frame ``t`` is centred on ``offset + t * hop + receptive_field / 2`` input samples (continuous
    time, sample ``k`` spanning ``[k, k + 1)``); label frame ``j`` covers samples
    ``[j * label_hop, (j + 1) * label_hop)`` at ``label_rate``. When the labels count samples at another
    rate than the model's input (``label_rate != model_rate``), the centre is converted exactly, in
    integers. For the CPC paper's encoder at ``label_hop=160`` this is ``t`` for frame ``t``.

    Args:
        geometry: the encoder's :class:`FrameGeometry`.
        num_frames: encoder frames to place.
        label_hop: samples per label frame, at ``label_rate``.
        label_rate, model_rate: sample rates of the labels and of the encoder input (both None, or
            equal: the same rate).

    Returns:
        int64 ``(num_frames,)`` label-frame indices; they may be negative or past the last label frame
        (callers mark those frames as unlabelled).
    """
    frames = np.arange(num_frames, dtype=np.int64)
    doubled_center = 2 * (geometry.offset + frames * geometry.hop) + geometry.receptive_field
    if label_rate is None or model_rate is None or int(label_rate) == int(model_rate):
        return np.floor_divide(doubled_center, 2 * int(label_hop))
    return np.floor_divide(doubled_center * int(label_rate), 2 * int(label_hop) * int(model_rate))
