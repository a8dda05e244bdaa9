"""The utterance objective inside CPCModel: config checks, pooling, channel groups, extraction, CPC unchanged."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from cpcaudio.config import CPCConfig
from cpcaudio.errors import ConfigError
from cpcaudio.model import CPCModel
from cpcaudio.model.channel_groups import GroupedContext, GroupedEncoder
from cpcaudio.model.encoder import ConvEncoder
from cpcaudio.model.utterance import pool_context

import helpers

pytestmark = pytest.mark.usefixtures("one_torch_thread")

GROUPS = [[0, 1, 2], [3, 4, 5]]
IMU = {  # a 6-channel series at 100 Hz with a stride-1 encoder (one frame per sample)
    "encoder": {"in_channels": 6, "hidden_dim": 16, "kernel_sizes": [3, 3], "strides": [1, 1]},
    "context": {"hidden_dim": 16},
    "data": {"sample_rate": 100, "window_size": 40, "batch_size": 4},
}


def channels_config(**utterance) -> CPCConfig:
    sections = helpers.merge_sections(helpers.TINY_SECTIONS, **IMU)
    settings = {"loss": "nt-xent", "views": "channels", "channel_groups": GROUPS, **utterance}
    return helpers.tiny_config(sections, utterance=settings)


@pytest.mark.parametrize(
    "assignments, fragment",
    [
        (["utterance.loss=nt-xent", "utterance.views=channels"], ">= 2 non-empty utterance.channel_groups"),
        (["utterance.loss=margin", "utterance.views=channels", "utterance.channel_groups=[[0,1],[1,2]]"], "distinct"),
        (["utterance.loss=triplet", "utterance.channel_groups=[[0],[1]]"], "only read with utterance.views=channels"),
        (["utterance.loss=triplet", "utterance.views=augment"], "set augment.enabled=true"),
        (["utterance.loss=triplet", "data.batch_size=1"], "data.batch_size >= 2"),
        (["utterance.loss=nt-xent", "utterance.temperature=0"], "utterance.temperature must be > 0"),
        (["utterance.loss=nt-xent", "utterance.views=channels", "utterance.channel_groups=[[0],[1],[2]]"],
         "encoder.hidden_dim=256 is shared out among the 3 channel groups"),
    ],
)
def test_bad_utterance_settings_are_refused_in_one_line(assignments, fragment):
    with pytest.raises(ConfigError, match=fragment.replace("[", r"\[").replace(".", r"\.")) as caught:
        CPCConfig().with_overrides(assignments)
    assert "\n" not in str(caught.value)
    # loss none ignores the rest of the section
    CPCConfig().with_overrides([a for a in assignments if not a.startswith("utterance.loss")])


def test_a_channel_the_signal_lacks_is_refused_when_the_model_is_built():
    config = channels_config().with_overrides(["encoder.in_channels=4"])
    with pytest.raises(ConfigError, match="names channel 5 but the signal has encoder.in_channels=4"):
        CPCModel(config)


def test_pooling_mean_and_last_over_valid_frames():
    context = torch.randn(3, 5, 2)
    lengths = torch.tensor([5, 2, 0])
    mean = pool_context(context, lengths, "mean")
    last = pool_context(context, lengths, "last")
    for b, n in enumerate(lengths.tolist()):
        expected_mean = context[b, :n].mean(dim=0) if n else torch.zeros(2)
        torch.testing.assert_close(mean[b], expected_mean)
        torch.testing.assert_close(last[b], context[b, max(n - 1, 0)])


def test_the_cpc_part_is_unchanged_and_the_total_adds_the_weighted_utterance_loss():
    none = CPCModel(helpers.tiny_config())
    settings = {"loss": "triplet", "weight": 0.3, "triplet_negative": "random"}
    utterance = CPCModel(helpers.tiny_config(utterance=settings))
    missing, unexpected = utterance.load_state_dict(none.state_dict(), strict=False)
    assert not unexpected and missing and all(key.startswith("utterance.") for key in missing)
    assert not any(key.startswith("utterance.") for key in none.state_dict())
    signal, view = torch.randn(4, 1, 4000), torch.randn(4, 1, 3200)
    lengths = torch.tensor([4000, 4000, 3000, 4000])

    def run(model, **views):
        return model(signal, lengths, generator=torch.Generator().manual_seed(5), **views)

    reference = run(none)
    assert reference.utterance_loss is None
    alone = run(utterance)  # no second view given: no utterance loss
    assert alone.utterance_loss is None and torch.equal(alone.loss, reference.loss)
    both = run(utterance, view_signal=view, view_lengths=torch.tensor([3200, 1000, 3200, 3200]))
    torch.testing.assert_close(both.step_accuracy, reference.step_accuracy)
    torch.testing.assert_close(both.loss, reference.loss + 0.3 * both.utterance_loss)
    assert both.utterance_loss > 0


def test_utterance_loss_alone_has_no_heads_and_no_info_nce():
    model = CPCModel(helpers.tiny_config(utterance={"loss": "margin", "cpc": False}))
    assert model.heads is None
    out = model(torch.randn(3, 1, 3000), view_signal=torch.randn(3, 1, 3000))
    assert torch.isnan(out.step_accuracy).all() and out.step_accuracy.shape == (3,)
    torch.testing.assert_close(out.loss, out.utterance_loss)
    out.loss.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_grouped_encoder_and_context_are_one_network_per_group_side_by_side():
    config = channels_config()
    encoder, context = GroupedEncoder(config.encoder, GROUPS), GroupedContext(16, config, 2)
    signal = torch.randn(2, 6, 30)
    latents, frames = encoder(signal, torch.tensor([30, 20]))
    assert latents.shape == (2, 16, 30) and frames.tolist() == [30, 20]
    for g, group in enumerate(GROUPS):
        single = ConvEncoder(replace(config.encoder, in_channels=3, hidden_dim=8))
        single.layers = torch.nn.ModuleList(layer.blocks[g] for layer in encoder.layers)
        torch.testing.assert_close(latents[:, 8 * g : 8 * (g + 1)], single(signal[:, group])[0])
    c, state = context(latents.transpose(1, 2))
    assert c.shape == (2, 30, 16) and len(state) == 2
    alone, _ = context.networks[1](latents.transpose(1, 2)[..., 8:])
    torch.testing.assert_close(c[..., 8:], alone)


def test_channels_model_trains_all_its_parts_and_extracts_both_groups():
    torch.manual_seed(0)
    model = CPCModel(channels_config(loss="triplet"))
    signal = torch.randn(4, 6, 40)
    out = model(signal, torch.tensor([40, 40, 30, 40]))
    assert out.utterance_loss is not None and math.isfinite(out.loss.item())
    out.loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    assert len(model.utterance.projections) == 2  # one projection per group

    series = torch.randn(6, 250)
    features = model.extract(series, 100, layer="all")
    assert features.frames.shape == (250, 32)  # z of both groups (16), then c of both groups (16)
    with torch.no_grad():
        latents = model.encode(series[None])  # (1, 250, 16), input standardised like extract's
        expected = torch.cat([latents, model.context(latents)], dim=-1)[0]
    torch.testing.assert_close(features.frames, expected, rtol=1e-4, atol=1e-5)
    chunked = model.extract(series, 100, layer="context", chunk_seconds=0.7)  # state carried per group
    torch.testing.assert_close(chunked.frames, features.frames[:, 16:], rtol=1e-4, atol=1e-5)
