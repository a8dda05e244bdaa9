"""The queue of utterance keys for nt-xent (MoCo v2, :class:`cpcaudio.model.queue.UtteranceKeys`): which
models have one, the EMA of its momentum copies, FIFO filling with the momentum keys after the loss, the
empty-queue first step, evaluation, channel groups, and an exact resume of a tiny training run.

nt-xent with extra negatives against a naive loop: tests/model/test_contrastive_losses.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
import torch.nn.functional as F

from cpcaudio.data import prepare
from cpcaudio.model import CPCModel
from cpcaudio.model.channel_groups import build_context_network
from cpcaudio.model.utterance import ProjectionHead, pool_context
from cpcaudio.train import read_metrics, train
from cpcaudio.train.checkpoint import load_checkpoint

import helpers

pytestmark = pytest.mark.usefixtures("one_torch_thread")

NT_XENT = {"loss": "nt-xent", "queue_size": 5}
SIGNAL_LENGTHS, VIEW_LENGTHS = torch.tensor([4000, 3200, 2400]), torch.tensor([3000, 2000, 1000])


def model_for(queue_size: int = 32, momentum: float = 0.999, **utterance) -> CPCModel:
    torch.manual_seed(0)
    predictor = {"queue_size": queue_size, "momentum": momentum}
    return CPCModel(helpers.tiny_config(predictor=predictor, utterance={**NT_XENT, **utterance}))


def batch(seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    signal, view = torch.randn(3, 1, 4000, generator=generator), torch.randn(3, 1, 3000, generator=generator)
    return {"signal": signal, "lengths": SIGNAL_LENGTHS, "view_signal": view, "view_lengths": VIEW_LENGTHS}


def run(model: CPCModel, inputs: dict[str, torch.Tensor]):
    return model(**inputs, generator=torch.Generator().manual_seed(1))


def expected_keys(model: CPCModel, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """(3, D) the second views' keys, recomputed with plain modules that hold the momentum weights."""
    keys = model.momentum.utterance
    context_network = build_context_network(model.config)
    context_network.load_state_dict(keys.context_network.state_dict())
    projection = ProjectionHead(model.config.context.hidden_dim, model.config.utterance.projection_dim)
    projection.load_state_dict(keys.projections[0].state_dict())
    with torch.no_grad():
        view = model.normalize_input(inputs["view_signal"], inputs["view_lengths"])
        latents = model.momentum.encoder(view)[0].transpose(1, 2)  # (B, T', C)
        frames = model.encoder.frame_lengths(inputs["view_lengths"])
        pooled = pool_context(context_network(latents)[0], frames, model.config.utterance.pooling)
        return F.normalize(projection(pooled), dim=1)


def test_only_nt_xent_with_both_queue_sizes_gets_utterance_keys_and_no_parameters():
    model = model_for()
    assert model.momentum.utterance is not None and model.momentum.utterance.queue.latents.shape == (5, 128)
    assert not any(name.startswith("momentum.") for name, _ in model.named_parameters())
    plain = CPCModel(helpers.tiny_config(utterance={"loss": "nt-xent"}))
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in plain.parameters())
    for predictor, utterance in [  # no queue, another loss, no utterance queue, no utterance loss
        ({}, {"loss": "nt-xent"}),
        ({"queue_size": 32}, {"loss": "triplet"}),
        ({"queue_size": 32}, {"loss": "nt-xent", "queue_size": 0}),
        ({"queue_size": 32}, {}),
    ]:
        other = CPCModel(helpers.tiny_config(predictor=predictor, utterance=utterance))
        assert not any(key.startswith("momentum.utterance.") for key in other.state_dict()), (predictor, utterance)
        assert other.momentum is None or other.momentum.utterance is None


def test_momentum_copies_start_equal_and_follow_the_ema_formula():
    model = model_for(momentum=0.75)
    keys = model.momentum.utterance
    pairs = [(keys.context_network, model.context_network), (keys.projections, model.utterance.projections)]
    for copy_, live in pairs:
        for name, weight in live.named_parameters():
            assert torch.equal(copy_.get_buffer(name), weight), name
    with torch.no_grad():
        for _, live in pairs:
            for weight in live.parameters():
                weight.add_(torch.randn_like(weight))
    before = [{name: copy_.get_buffer(name).clone() for name, _ in live.named_parameters()} for copy_, live in pairs]
    model.momentum_update()
    for (copy_, live), old in zip(pairs, before):
        for name, weight in live.named_parameters():
            expected = 0.75 * old[name] + 0.25 * weight.detach()
            torch.testing.assert_close(copy_.get_buffer(name), expected, rtol=1e-6, atol=1e-7)


def test_empty_queue_gives_the_queueless_loss_then_keys_fill_fifo_after_the_loss():
    model = model_for(momentum=0.5)
    plain = CPCModel(helpers.tiny_config(utterance={"loss": "nt-xent"}))
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("momentum.")})
    first_batch, second_batch = batch(0), batch(1)
    first, reference = run(model, first_batch), run(plain, first_batch)
    assert torch.equal(first.utterance_loss, reference.utterance_loss) and torch.equal(first.loss, reference.loss)
    queue = model.momentum.utterance.queue
    assert queue.filled == 3 and int(queue.pointer) == 3
    keys = expected_keys(model, first_batch)  # the momentum copies start equal: the live model's keys
    torch.testing.assert_close(queue.entries(), keys, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(queue.entries().norm(dim=1), torch.ones(3))

    with torch.no_grad():  # move the live weights, so that the momentum copies differ from them
        for weight in model.parameters():
            weight.add_(0.1 * torch.randn_like(weight))
    model.momentum_update()
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("momentum.")})
    second, without = run(model, second_batch), run(plain, second_batch)
    assert second.utterance_loss > without.utterance_loss  # the 3 queued keys are extra negatives
    new_keys = expected_keys(model, second_batch)
    assert not torch.allclose(new_keys, expected_keys_of_live(plain, second_batch), atol=1e-4)
    torch.testing.assert_close(queue.latents, torch.cat([new_keys[2:], keys[1:], new_keys[:2]]), rtol=1e-5, atol=1e-6)
    assert queue.filled == 5 and int(queue.pointer) == 1  # 3 + 3 keys in 5 rows: the oldest, row 0, overwritten

    model.eval()
    plain.eval()
    stored = queue.latents.clone()
    with torch.no_grad():
        evaluated, expected = run(model, second_batch), run(plain, second_batch)
    assert torch.equal(evaluated.utterance_loss, expected.utterance_loss)  # no queue negatives in evaluation
    assert torch.equal(queue.latents, stored) and int(queue.pointer) == 1  # and no keys added


def expected_keys_of_live(model: CPCModel, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """(3, D) the second views' keys as the live (not momentum) model would make them."""
    with torch.no_grad():
        context = model.context(model.encode(inputs["view_signal"], inputs["view_lengths"]))
        pooled = pool_context(context, model.encoder.frame_lengths(inputs["view_lengths"]), "mean")
        return F.normalize(model.utterance.projections[0](pooled), dim=1)


def test_channel_groups_enqueue_every_groups_key():
    sections = helpers.merge_sections(
        helpers.TINY_SECTIONS,
        encoder={"in_channels": 6, "hidden_dim": 16, "kernel_sizes": [3, 3], "strides": [1, 1]},
        context={"hidden_dim": 16},
        data={"sample_rate": 100, "window_size": 40, "batch_size": 4},
        predictor={"queue_size": 16},
    )
    utterance = {"loss": "nt-xent", "views": "channels", "channel_groups": [[0, 1, 2], [3, 4, 5]], "queue_size": 16}
    torch.manual_seed(0)
    model = CPCModel(helpers.tiny_config(sections, utterance=utterance))
    signal = torch.randn(4, 6, 40)
    first = model(signal)
    keys = model.momentum.utterance.queue.entries()
    assert keys.shape == (8, 128) and model.momentum.utterance.queue.filled == 8  # 2 groups x 4 windows
    with torch.no_grad():
        context = model.context(model.encode(signal))  # (4, 40, 16); the momentum copies are still equal
        for group, half in enumerate(context.chunk(2, dim=-1)):
            pooled = pool_context(half, torch.full((4,), 40), "mean")
            expected = F.normalize(model.utterance.projections[group](pooled), dim=1)
            torch.testing.assert_close(keys[4 * group : 4 * group + 4], expected, rtol=1e-5, atol=1e-6)
    second = model(signal)
    assert second.utterance_loss > first.utterance_loss and model.momentum.utterance.queue.filled == 16


# ---- a tiny training run: 4 steps = 2 + --resume 2, bit for bit ---------------------------------------

SAMPLE_RATE = 8000
SECTIONS = {
    "encoder": {"hidden_dim": 16},
    "context": {"hidden_dim": 16},
    "predictor": {"num_steps": 2, "num_negatives": 4, "queue_size": 16},
    "data": {"window_size": 1600, "batch_size": 4},
    "optim": {"learning_rate": 1e-3, "warmup_steps": 0, "grad_clip": 0.0},
    "utterance": {"loss": "nt-xent", "views": "crop", "projection_dim": 8, "queue_size": 6},
    "train": {"max_steps": 4, "validate_every": 2, "validation_batches": 1, "log_every": 1},
}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """2 speakers x 2 utterances of 0.6 s at 8 kHz (3 windows each), prepared."""
    root = tmp_path_factory.mktemp("utterance_queue_data")
    rng = np.random.default_rng(0)
    for speaker in ("ann", "bob"):
        (root / "source" / speaker).mkdir(parents=True)
        for index in range(2):
            signal = helpers.generated_signal(int(0.6 * SAMPLE_RATE), rng, SAMPLE_RATE)
            soundfile.write(root / "source" / speaker / f"{speaker}_{index}.wav", signal, SAMPLE_RATE, subtype="PCM_16")
    prepare("folder", root / "source", root / "prepared", workers=1)
    return root / "prepared"


def test_resume_with_utterance_keys_is_exact(dataset, tmp_path):
    config = helpers.tiny_config(SECTIONS)
    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    train(dataset, reference, config)
    train(dataset, resumed, config.with_overrides(["train.max_steps=2"]))
    halfway = load_checkpoint(resumed / "last.pt")["model"]
    assert int(halfway["momentum.utterance.queue.count"]) == 6 and int(halfway["momentum.utterance.queue.pointer"]) == 2
    assert train(dataset, resumed, config, resume=True).start_step == 2
    for name in ("loss", "utterance_loss"):  # bit for bit
        expected = [record[name] for record in read_metrics(reference, "train")]
        assert [record[name] for record in read_metrics(resumed, "train")] == expected and len(expected) == 4
    expected, got = load_checkpoint(reference / "last.pt")["model"], load_checkpoint(resumed / "last.pt")["model"]
    assert expected.keys() == got.keys() and int(got["momentum.utterance.queue.pointer"]) == 4  # 4 x 4 keys in 6
    for key in expected:  # weights, momentum copies, both queues' entries, pointers and counts
        assert torch.equal(expected[key], got[key]), key
