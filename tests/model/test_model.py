"""The CPC model: shapes, exact frame counts, gradients, and learning on a fixed batch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cpcaudio import CPCConfig, CPCModel
from cpcaudio.presets import load_preset
from helpers import generated_signal, tiny_config


@pytest.mark.parametrize("num_samples,expected", [(20480, 128), (20481, 128), (16000, 100), (159, 1), (160, 1)])
def test_paper_encoder_frame_counts(num_samples, expected):
    model = CPCModel(tiny_config())
    assert model.downsample_rate == 160
    assert model.num_frames(num_samples) == expected
    with torch.no_grad():
        z = model.encode(torch.zeros(1, 1, num_samples))
    assert z.shape == (1, expected, 32)


def test_six_channel_series_with_custom_strides():
    config = tiny_config(encoder={"in_channels": 6, "kernel_sizes": [3, 3, 4], "strides": [1, 1, 2]})
    model = CPCModel(config)
    assert model.downsample_rate == 2
    assert model.num_frames(100) == 50
    signal = torch.randn(4, 6, 100)
    with torch.no_grad():
        z = model.encode(signal)
        out = model(signal)
    assert z.shape == (4, 50, 32)
    assert out.step_accuracy.shape == (3,)
    assert torch.isfinite(out.loss)


def test_frame_count_formula_matches_conv_output_for_many_lengths():
    config = tiny_config(encoder={"kernel_sizes": [7, 5, 3], "strides": [3, 2, 2], "paddings": [0, 2, 1]})
    model = CPCModel(config)
    for length in [1, 6, 7, 8, 50, 97, 1000, 1001]:
        with torch.no_grad():
            frames = model.encoder(torch.zeros(1, 1, length))[0].shape[-1] if length >= 7 else 0
        assert model.num_frames(length) == frames, length


@pytest.mark.parametrize("normalization", ["batch", "channel", "layer", "none"])
def test_gradients_reach_every_parameter(normalization):
    torch.manual_seed(0)
    model = CPCModel(tiny_config(encoder={"normalization": normalization}, predictor={"head": "mlp"}))
    out = model(torch.randn(3, 1, 3200))
    out.loss.backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, name
        assert parameter.grad.abs().sum() > 0, name


def test_lstm_context_and_padded_lengths():
    torch.manual_seed(0)
    model = CPCModel(tiny_config(context={"kind": "lstm", "num_layers": 2}))
    signal = torch.randn(2, 1, 3200)
    out = model(signal, lengths=torch.tensor([3200, 1600]))
    assert out.frame_lengths.tolist() == [20, 10]
    assert torch.isfinite(out.loss)


def test_small_model_overfits_a_fixed_batch():
    """Step-1 accuracy above 0.9 within a few hundred CPU steps on one deterministic batch."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    config = tiny_config(predictor={"num_steps": 2, "num_negatives": 8}, optim={"learning_rate": 3e-3})
    model = CPCModel(config)
    batch = torch.from_numpy(np.stack([generated_signal(3200, rng) for _ in range(4)])).unsqueeze(1)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.optim.learning_rate)
    first_accuracy = None
    for step in range(300):
        out = model(batch)
        if first_accuracy is None:
            first_accuracy = float(out.step_accuracy[0])
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        if float(out.step_accuracy[0]) > 0.9:
            break
    assert first_accuracy < 0.5
    assert float(out.step_accuracy[0]) > 0.9, f"step-1 accuracy only {float(out.step_accuracy[0]):.3f}"


def test_paper_preset_is_the_papers_model():
    config = load_preset("paper")
    assert config.encoder.hidden_dim == 512
    assert config.encoder.kernel_sizes == (10, 8, 4, 4, 4)
    assert config.encoder.strides == (5, 4, 2, 2, 2)
    assert config.context.kind == "gru" and config.context.hidden_dim == 256
    assert config.predictor.num_steps == 12 and config.predictor.num_negatives == 128
    assert config.data.window_size == 20480 and config.data.sample_rate == 16000
    assert config.optim.learning_rate == 2e-4
    model = CPCModel(config)
    assert model.num_frames(config.data.window_size) == 128


def test_default_config_keeps_the_papers_geometry_and_learns_fast():
    """The defaults differ from the paper only where measurement chose (README, "Defaults")."""
    config = CPCConfig()
    assert config.encoder.kernel_sizes == (10, 8, 4, 4, 4) and config.encoder.strides == (5, 4, 2, 2, 2)
    assert config.context.kind == "gru" and config.predictor.num_steps == 12
    assert config.predictor.num_negatives == 128 and config.data.window_size == 20480
    assert (config.encoder.hidden_dim, config.data.sampler, config.predictor.negative_sampling) == (
        256, "uniform", "batch")
    assert (config.optim.learning_rate, config.optim.warmup_steps, config.optim.grad_clip) == (5e-4, 100, 1.0)


def test_encoder_returns_valid_frame_lengths_of_a_padded_batch():
    config = tiny_config(encoder={"kernel_sizes": [7, 5, 3], "strides": [3, 2, 2], "paddings": [0, 2, 1]})
    model = CPCModel(config)
    lengths = torch.tensor([1000, 97, 7, 6])
    with torch.no_grad():
        latents, frame_lengths = model.encoder(torch.zeros(4, 1, 1000), lengths)
        _, none = model.encoder(torch.zeros(4, 1, 1000))
    assert none is None
    assert frame_lengths.tolist() == [model.num_frames(int(n)) for n in lengths]
    assert latents.shape[-1] == model.num_frames(1000)


def test_config_sampling_modes_are_the_registered_samplers():
    from typing import get_args

    from cpcaudio.config import NegativeSampling
    from cpcaudio.model.negatives import NEGATIVE_SAMPLERS

    assert set(get_args(NegativeSampling)) == set(NEGATIVE_SAMPLERS)


def test_forward_draws_negatives_from_the_given_generator():
    torch.manual_seed(0)
    model = CPCModel(tiny_config())
    signal = torch.randn(2, 1, 3200)
    with torch.no_grad():
        first = model(signal, generator=torch.Generator().manual_seed(5)).loss
        again = model(signal, generator=torch.Generator().manual_seed(5)).loss
        other = model(signal, generator=torch.Generator().manual_seed(6)).loss
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
