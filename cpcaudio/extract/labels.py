"""Frame labels of a feature store: the source's label frames moved onto the encoder's frames.

Each encoder frame takes the label frame that holds the centre of its receptive field
(:func:`cpcaudio.geometry.frame_label_indices`, the rule the data pipeline uses for training windows),
also when the labels count samples at the source's rate and the model runs at another.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import numpy as np

from cpcaudio.geometry import frame_label_indices

if TYPE_CHECKING:  # pragma: no cover
    from cpcaudio.extract.inputs import Source
    from cpcaudio.model import CPCModel

NO_LABEL = -1


def encoder_frame_labels(
    labels: np.ndarray, label_hop: int, label_rate: int, model: "CPCModel", num_frames: int
) -> np.ndarray:
    """The label at the centre of each encoder frame's receptive field.

    Args:
        labels: int (num_label_frames,), label frame ``j`` covering samples ``[j * label_hop,
            (j + 1) * label_hop)`` at ``label_rate``.
        label_hop: samples per label frame, at ``label_rate``.
        label_rate: sample rate the labels count in (the source's; the model may run at another).
        model: the :class:`~cpcaudio.model.CPCModel` whose frames are labelled.
        num_frames: encoder frames to label.

    Returns:
        int64 (num_frames,); -1 where the centre lies outside the labels.
    """
    index = frame_label_indices(
        model.encoder.geometry, num_frames, label_hop, label_rate=label_rate, model_rate=model.config.data.sample_rate
    )
    out = np.full(num_frames, NO_LABEL, dtype=np.int64)
    inside = (index >= 0) & (index < len(labels))
    out[inside] = np.asarray(labels, dtype=np.int64)[index[inside]]
    return out


def store_frame_labels(
    source: "Source", model: "CPCModel", frame_offsets: np.ndarray, frame_lengths: np.ndarray
) -> Optional[np.ndarray]:
    """int64 (total_frames,) label per feature frame of the store (utterances back to back, -1: none),
    or None when no utterance of ``source`` has frame labels."""
    if source.frame_labels is None or source.label_hop is None:
        return None
    labels = np.full(int(frame_lengths.sum()), NO_LABEL, dtype=np.int64)
    found = False
    for i, (offset, count) in enumerate(zip(frame_offsets, frame_lengths)):
        utterance_labels = source.frame_labels(i)
        if utterance_labels is None:
            continue
        found = True
        rate = source.utterances[i].sample_rate
        frames = encoder_frame_labels(utterance_labels, source.label_hop, rate, model, int(count))
        labels[offset : offset + count] = frames
    return labels if found else None
