"""Label alignment: label frames <-> samples <-> encoder frames, checked against independent computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from cpcaudio.config import EncoderConfig
from cpcaudio.data import frame_labels_for_encoder
from cpcaudio.data.alignment import (
    NO_LABEL,
    num_label_frames,
    segment_index_per_frame,
    window_label_indices,
)
from cpcaudio.geometry import default_paddings, frame_geometry, num_frames
from cpcaudio.model.encoder import ConvEncoder

CONFIGS = [
    # (kernel_sizes, strides, paddings, label_hop)
    ((10, 8, 4, 4, 4), (5, 4, 2, 2, 2), None, 160),  # the CPC paper's encoder, 10 ms labels
    ((4, 4), (2, 2), (1, 1), 4),
    ((3, 3, 4), (1, 1, 2), (0, 0, 0), 2),
    ((7, 5), (3, 2), (3, 0), 10),  # label hop larger than the encoder hop
    ((8, 6), (4, 3), (2, 1), 5),  # label hop that does not divide the encoder hop
    ((2, 2, 2), (2, 2, 2), (0, 0, 0), 8),  # even receptive field: the centre falls between samples
]


def _torch_receptive_fields(kernels, strides, paddings, length) -> list[tuple[int, int]]:
    """First and last input sample each output frame depends on, found by back-propagation."""
    layers = []
    for k, s, p in zip(kernels, strides, paddings):
        conv = nn.Conv1d(1, 1, k, stride=s, padding=p, bias=False)
        nn.init.constant_(conv.weight, 1.0)
        layers.append(conv)
    net = nn.Sequential(*layers).double()
    x = torch.zeros(1, 1, length, dtype=torch.float64, requires_grad=True)
    out = net(x)[0, 0]
    spans = []
    for t in range(out.shape[0]):
        (grad,) = torch.autograd.grad(out[t], x, retain_graph=True)
        nonzero = torch.nonzero(grad[0, 0]).flatten()
        spans.append((int(nonzero[0]), int(nonzero[-1])))
    return spans


@pytest.mark.parametrize("kernels,strides,paddings,label_hop", CONFIGS)
def test_encoder_frame_gets_label_at_centre_of_its_receptive_field(kernels, strides, paddings, label_hop):
    paddings = paddings or default_paddings(kernels, strides)
    geometry = frame_geometry(kernels, strides, paddings)
    length = 40 * geometry.hop + 7
    count = num_frames(length, kernels, strides, paddings)
    labels = np.arange(num_label_frames(length, label_hop))  # label j == j: the result names the label frame
    mapped = frame_labels_for_encoder(labels, label_hop, geometry, count)
    spans = _torch_receptive_fields(kernels, strides, paddings, length)
    assert len(spans) == count == mapped.shape[0]
    full_width = max(last - first + 1 for first, last in spans)
    assert full_width == geometry.receptive_field
    checked = 0
    for t, (first, last) in enumerate(spans):
        if last - first + 1 < full_width:
            continue  # clipped by zero padding (at any layer): the gradient cannot show the whole field
        center = (first + last + 1) / 2.0  # continuous-time centre of samples first..last
        expected = int(np.floor(center / label_hop))
        assert mapped[t] == (expected if expected < labels.size else NO_LABEL), t
        checked += 1
    assert checked >= count // 2


def test_paper_encoder_frame_t_gets_label_t_over_whole_utterances():
    encoder = ConvEncoder(EncoderConfig(hidden_dim=4))
    for length in (54682, 20480, 20481, 159, 161, 479, 72090):
        with torch.no_grad():
            latents, _ = encoder(torch.zeros(1, 1, length))  # (1, hidden, frames), lengths
            frames = latents.shape[-1]
        assert frames == encoder.num_frames(length)
        labels = np.arange(num_label_frames(length, 160)) * 3 + 1  # distinct values
        mapped = frame_labels_for_encoder(labels, 160, encoder.geometry, frames)
        # No shift and no off-by-one anywhere, first frame to last:
        np.testing.assert_array_equal(mapped, labels[:frames])


def test_batched_labels_and_out_of_range_frames():
    geometry = frame_geometry((4,), (4,), (0,))
    labels = np.array([[5, 6, 7], [1, -1, 2]])
    mapped = frame_labels_for_encoder(labels, 4, geometry, 5)  # frames 3 and 4 lie past the labels
    np.testing.assert_array_equal(mapped, [[5, 6, 7, -1, -1], [1, -1, 2, -1, -1]])
    mapped = frame_labels_for_encoder(torch.tensor([9, 8]), 4, geometry, 2)
    np.testing.assert_array_equal(mapped, [9, 8])


def test_segments_to_label_frames_at_boundaries():
    # 16 kHz, 160-sample frames (centres at 80, 240, 400, ... samples = 5, 15, 25 ms ...).
    starts, ends = [0.0, 0.010, 0.0251], [0.010, 0.0251, 0.040]
    index = segment_index_per_frame(starts, ends, num_samples=640, sample_rate=16000, label_hop=160)
    # frame 2's centre (25 ms) lies before the third segment's start (25.1 ms): still segment 1.
    np.testing.assert_array_equal(index, [0, 1, 1, 2])
    # A gap and a partial last frame: 500 samples -> 4 frames, the last one centred at 490 samples.
    index = segment_index_per_frame([0.0, 0.02], [0.01, 0.031], num_samples=500, sample_rate=16000, label_hop=160)
    np.testing.assert_array_equal(index, [0, NO_LABEL, 1, 1])


@pytest.mark.parametrize("start", [0, 160, 37, 1000])
def test_window_label_indices_match_sample_centres(start):
    hop, window = 160, 1000
    utterance_length = 5000
    valid = min(window, utterance_length - start)
    index = window_label_indices(start, valid, window, hop)
    assert index.shape == (num_label_frames(window, hop),)
    for j, value in enumerate(index):
        center = start + j * hop + hop / 2  # continuous time, utterance samples
        if center >= start + valid:
            assert value == NO_LABEL
        else:
            assert value == int(center // hop)
    if start % hop == 0:
        np.testing.assert_array_equal(index[index >= 0], np.arange(start // hop, start // hop + (index >= 0).sum()))
