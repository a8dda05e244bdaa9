"""Feature extraction: chunked == whole, padded batch == one at a time, resampling, frame counts."""

from __future__ import annotations

import math

import numpy as np
import pytest
import soxr
import torch

from helpers import tiny_config

from cpcaudio import CPCModel
from cpcaudio.errors import UsageError
from cpcaudio.extract import Features, extract, plan_chunks, resample, resampled_length
from cpcaudio.toy import generated_signal

TOLERANCE = 1e-5


# Distinct encoder and context sizes, so that a mix-up of the two layers changes a shape.
SECTIONS = {"encoder": {"hidden_dim": 32}, "context": {"hidden_dim": 24}, "predictor": {"num_steps": 2}}


def make_model(seed: int = 0, **sections) -> CPCModel:
    torch.manual_seed(seed)
    return CPCModel(tiny_config(SECTIONS, **sections)).eval()


ODD_ENCODER = {"in_channels": 3, "kernel_sizes": [3, 3, 4], "strides": [1, 1, 2]}


def whole_reference(model: CPCModel, signal: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """z and c of one (channels, time) signal through the model's own encode/context, in one piece."""
    with torch.no_grad():
        latents = model.encode(signal[None])  # (1, T, C)
        context = model.context(latents)
    return latents[0], context[0]


def real_like_signal(channels: int, num_samples: int, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    rows = [generated_signal(num_samples, rng) for _ in range(channels)]
    return torch.from_numpy(np.stack(rows))  # (C, T)


@pytest.mark.parametrize(
    "encoder,context,num_samples,chunk_seconds",
    [
        ({}, {"kind": "gru"}, 16000 + 77, [0.01, 0.0371, 0.3]),  # paper geometry: hop 160, rf 465
        (ODD_ENCODER, {"kind": "gru"}, 601, [0.0001, 0.0013, 0.005]),  # hop 2, rf 8, frames of 2 samples
        (ODD_ENCODER, {"kind": "lstm", "num_layers": 2}, 601, [0.0001, 0.0013, 0.005]),
        ({"normalization": "batch"}, {"kind": "lstm"}, 16000 + 1, [0.01, 0.3]),
    ],
)
def test_chunked_extraction_equals_whole_signal(encoder, context, num_samples, chunk_seconds):
    model = make_model(encoder=encoder, context=context)
    signal = real_like_signal(model.config.encoder.in_channels, num_samples)
    latents, context_ref = whole_reference(model, signal)
    assert latents.shape[0] == model.num_frames(num_samples)
    for seconds in chunk_seconds:
        chunk_frames = max(1, round(seconds * 16000 / model.downsample_rate))
        assert chunk_frames < latents.shape[0] // 2, "the test must actually cut the signal into chunks"
        features = model.extract(signal, 16000, layer="all", chunk_seconds=seconds)
        z, c = features.hidden_states
        torch.testing.assert_close(z, latents, atol=TOLERANCE, rtol=0)
        torch.testing.assert_close(c, context_ref, atol=TOLERANCE, rtol=0)
        torch.testing.assert_close(features.frames, torch.cat([latents, context_ref], dim=-1), atol=TOLERANCE, rtol=0)


def test_chunks_that_ignore_the_receptive_field_would_differ():
    """The reference is sensitive: encoding non-overlapping pieces gives different frames at the cuts."""
    model = make_model()
    signal = real_like_signal(1, 16000)
    latents, _ = whole_reference(model, signal)
    with torch.no_grad():
        naive = torch.cat([model.encode(piece[None])[0] for piece in signal.split(1600, dim=-1)])
    assert naive.shape == latents.shape
    assert (naive - latents).abs().max() > 1e-2


def test_plan_chunks_tiles_the_frames_on_hop_aligned_slices():
    model = make_model()
    geometry = model.encoder.geometry
    for num_samples in [465, 16000, 16001, 48000 + 37]:
        total = model.num_frames(num_samples)
        for chunk_frames in [1, 3, 7, 100]:
            chunks = plan_chunks(geometry, num_samples, total, chunk_frames)
            assert [c.frame_start for c in chunks] == list(range(0, total, chunk_frames))
            assert chunks[-1].frame_stop == total
            for chunk in chunks:
                assert chunk.sample_start % geometry.hop == 0
                assert 0 <= chunk.sample_start < chunk.sample_stop <= num_samples
                # the slice is long enough to hold the frames the chunk owns
                local_frames = model.num_frames(chunk.sample_stop - chunk.sample_start)
                assert local_frames >= chunk.frame_stop - chunk.sample_start // geometry.hop


@pytest.mark.parametrize("encoder", [{}, ODD_ENCODER])
def test_padded_batch_equals_one_at_a_time(encoder):
    model = make_model(encoder=encoder, context={"kind": "gru"})
    channels = model.config.encoder.in_channels
    lengths = [6000, 5999, 3210, 161, 470, 5]
    batch = torch.zeros(len(lengths), channels, 6000)
    for row, n in enumerate(lengths):
        batch[row, :, :n] = real_like_signal(channels, n, seed=row)
    together = extract(model, batch, 16000, layer="all", lengths=lengths, chunk_seconds=0.05)
    expected_lengths = [model.num_frames(n) for n in lengths]
    assert together.frame_lengths.tolist() == expected_lengths
    assert together.frames.shape[:2] == (len(lengths), max(expected_lengths))
    for row, n in enumerate(lengths):
        alone = extract(model, batch[row, :, :n], 16000, layer="all", chunk_seconds=math.inf)
        count = expected_lengths[row]
        torch.testing.assert_close(together.frames[row, :count], alone.frames, atol=TOLERANCE, rtol=0)
        assert together.frames[row, count:].abs().max() == 0 if count < together.frames.shape[1] else True


def test_plain_padded_encoding_differs_at_the_end_of_short_sequences():
    """Why extract() masks every layer: without it the last frame of a padded sequence changes."""
    model = make_model()
    signal = real_like_signal(1, 3000)
    padded = torch.nn.functional.pad(signal, (0, 3000))[None]  # (1, 1, 6000)
    alone, _ = whole_reference(model, signal)
    with torch.no_grad():
        plain = model.encode(padded)[0, : alone.shape[0]]
    assert (plain[-1] - alone[-1]).abs().max() > 1e-3
    masked = extract(model, padded, 16000, layer="encoder", lengths=[3000]).frames[0]
    torch.testing.assert_close(masked, alone, atol=TOLERANCE, rtol=0)


def test_layer_normalization_is_processed_whole_and_one_sequence_at_a_time():
    model = make_model(encoder={"normalization": "layer"})
    signal = real_like_signal(1, 8000)
    _, context_ref = whole_reference(model, signal)
    features = extract(model, signal, 16000, chunk_seconds=0.01)
    torch.testing.assert_close(features.frames, context_ref, atol=TOLERANCE, rtol=0)
    batch = torch.zeros(2, 1, 8000)
    batch[0] = signal
    batch[1, :, :4000] = signal[:, :4000]
    together = extract(model, batch, 16000, lengths=[8000, 4000])
    _, short_ref = whole_reference(model, signal[:, :4000])
    torch.testing.assert_close(together.frames[1, : short_ref.shape[0]], short_ref, atol=TOLERANCE, rtol=0)


@pytest.mark.parametrize("num_samples", [0, 1, 159, 160, 161, 464, 465, 16000, 20481])
def test_frame_count_is_the_exact_encoder_count(num_samples):
    model = make_model()
    features = extract(model, torch.randn(num_samples), 16000, layer="encoder")
    expected = model.num_frames(num_samples)
    assert features.frames.shape == (expected, 32)
    assert int(features.frame_lengths) == expected
    if expected:
        with torch.no_grad():
            assert model.encode(torch.zeros(1, 1, num_samples)).shape[1] == expected


def test_features_describe_themselves_for_downstream_code():
    model = make_model()
    features = model.extract(np.zeros(3200, dtype=np.float32), 16000)
    assert isinstance(features, Features)
    assert features.layer == "context"
    assert features.downsample_rate == 160
    assert features.frame_rate == pytest.approx(100.0)
    assert features.sample_rate == 16000
    assert [h.shape for h in features.hidden_states] == [(20, 32), (20, 24)]
    assert torch.equal(features.frames, features.hidden_states[1])
    assert features.frames.dtype == torch.float32 and features.frames.device.type == "cpu"
    assert not features.frames.requires_grad
    encoder_only = model.extract(np.zeros(3200, dtype=np.float32), 16000, layer="encoder")
    assert len(encoder_only.hidden_states) == 1 and encoder_only.frames.shape == (20, 32)


def test_extract_leaves_training_mode_and_uses_running_statistics():
    model = make_model(encoder={"normalization": "batch"})
    model.train()
    signal = real_like_signal(1, 4000)
    first = extract(model, signal, 16000).frames
    assert model.training
    second = extract(model, torch.stack([signal, signal * 0.1]), 16000).frames[0]
    torch.testing.assert_close(first, second, atol=TOLERANCE, rtol=0)  # no batch statistics involved


@pytest.mark.parametrize("rates", [(8000, 16000), (44100, 16000), (22050, 16000), (16000, 8000), (48000, 16000)])
def test_resampled_length_matches_soxr(rates):
    input_rate, output_rate = rates
    for n in [1, 7, 1000, 1001, 12345, 44101]:
        out = soxr.resample(np.zeros(n, dtype=np.float32), input_rate, output_rate)
        assert resampled_length(n, input_rate, output_rate) == len(out), n
        assert resample(np.zeros((2, n), np.float32), input_rate, output_rate).shape == (2, len(out))


def test_resampling_path_equals_extracting_the_soxr_resampled_signal():
    model = make_model()
    rng = np.random.default_rng(3)
    signal_8k = generated_signal(8000 + 33, rng, sample_rate=8000)
    resampled = soxr.resample(signal_8k, 8000, 16000)  # independent call
    _, context_ref = whole_reference(model, torch.from_numpy(resampled)[None])
    features = model.extract(signal_8k, 8000, chunk_seconds=0.1)
    assert features.frames.shape[0] == model.num_frames(len(resampled))
    torch.testing.assert_close(features.frames, context_ref, atol=TOLERANCE, rtol=0)
    # a padded batch at 8 kHz: each sequence is resampled from its own valid samples only
    batch = np.zeros((2, 1, 8033), dtype=np.float32)
    batch[0, 0] = signal_8k
    batch[1, 0, :3000] = signal_8k[:3000]
    together = model.extract(batch, 8000, lengths=[8033, 3000])
    short = model.extract(signal_8k[:3000], 8000)
    assert int(together.frame_lengths[1]) == short.frames.shape[0]
    torch.testing.assert_close(together.frames[1, : short.frames.shape[0]], short.frames, atol=TOLERANCE, rtol=0)


def test_bad_inputs_raise_clear_errors():
    model = make_model()
    with pytest.raises(UsageError, match="layer"):
        model.extract(torch.zeros(1000), 16000, layer="middle")
    with pytest.raises(UsageError, match="channel"):
        model.extract(torch.zeros(2, 1000), 16000)
    with pytest.raises(UsageError, match="lengths"):
        model.extract(torch.zeros(1, 1000), 16000, lengths=[1000])
    with pytest.raises(UsageError, match="lengths"):
        model.extract(torch.zeros(2, 1, 1000), 16000, lengths=[1000, 1001])
    with pytest.raises(UsageError, match="sample_rate"):
        model.extract(torch.zeros(1000), 0)
    with pytest.raises(UsageError, match="chunk_seconds"):
        model.extract(torch.zeros(1000), 16000, chunk_seconds=0)
