"""Where the frames of any feature sequence sit in time, and which frame label each frame takes.

Every feature source of a probe (a CPC model, MFCC, log-mel, raw values) describes its frames by a
:class:`cpcaudio.geometry.FrameGeometry` in the samples it was computed from plus that sample rate, so
frame labels are aligned to any feature rate by the one label-centre rule of ``cpcaudio.geometry``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cpcaudio.geometry import FrameGeometry, frame_label_indices

NO_LABEL = -1


@dataclass(frozen=True)
class FrameTiming:
    """Where frame ``t`` of a feature sequence sits: its centre is ``first_center + t * hop`` seconds.

    Attributes:
        geometry: hop, receptive field and offset of the frames, in samples at ``sample_rate``.
        sample_rate: samples per second of the signal the frames were computed from.
    """

    geometry: FrameGeometry
    sample_rate: int

    @property
    def hop(self) -> float:
        """Seconds between consecutive frames."""
        return self.geometry.hop_seconds(self.sample_rate)

    @property
    def first_center(self) -> float:
        """Centre of frame 0, in seconds (may be negative)."""
        return self.geometry.first_center_seconds(self.sample_rate)

    def centers(self, num_frames: int) -> np.ndarray:
        """Centres of frames ``0 .. num_frames - 1`` in seconds, float64 ``(num_frames,)``."""
        return self.first_center + self.hop * np.arange(num_frames, dtype=np.float64)


def align_frame_labels(
    labels: np.ndarray, label_hop: int, label_rate: int, timing: FrameTiming, num_frames: int
) -> np.ndarray:
    """The label at the centre of each feature frame.

    Args:
        labels: (num_label_frames,) int64, label ``j`` covering samples ``[j * label_hop, (j + 1) * label_hop)``
            of the labelled signal.
        label_hop: samples per label frame.
        label_rate: samples per second of the labelled signal.
        timing: where the feature frames sit (:func:`cpcaudio.evaluate.model_timing`,
            :func:`cpcaudio.evaluate.baselines.spectral_timing`, ...).
        num_frames: feature frames to label.

    Returns:
        (num_frames,) int64 labels, -1 where a centre falls outside the labelled span.
    """
    index = frame_label_indices(
        timing.geometry, num_frames, label_hop, label_rate=label_rate, model_rate=timing.sample_rate
    )
    valid = (index >= 0) & (index < labels.shape[0])
    out = np.full(num_frames, NO_LABEL, dtype=np.int64)
    out[valid] = labels[index[valid]]
    return out
