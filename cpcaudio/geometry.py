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


def default_paddings(kernel_sizes: Sequence[int], strides: Sequence[int]) -> tuple[int, ...]:
    """Padding ``(k - s + 1) // 2`` per layer: CPC_audio's (3, 2, 1, 1, 1) for the paper's encoder.

    With these paddings a 16 kHz signal of ``n * 160`` samples gives exactly ``n`` frames.
    """
    return tuple((k - s + 1) // 2 for k, s in zip(kernel_sizes, strides))


def conv_output_length(length: int, kernel_size: int, stride: int, padding: int) -> int:
    """Number of output steps of one ``Conv1d`` layer for ``length`` input steps."""
    padded = length + 2 * padding
    if padded < kernel_size:
        return 0
    return (padded - kernel_size) // stride + 1


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
        """Centre of ``frame``'s receptive field, in input samples."""
        return self.frame_start(frame) + (self.receptive_field - 1) / 2.0


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
    num_samples: int, kernel_sizes: Sequence[int], strides: Sequence[int], paddings: Sequence[int]
) -> int:
    """Exact number of frames the conv stack produces for ``num_samples`` input samples."""
    length = int(num_samples)
    for kernel, stride, padding in zip(kernel_sizes, strides, paddings):
        length = conv_output_length(length, kernel, stride, padding)
    return length
