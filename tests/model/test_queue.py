"""The MoCo-style queue of negatives (:mod:`cpcaudio.model.queue`): FIFO order and wrap-around, the fill
count, the momentum update, the key selection, and InfoNCE with queue negatives against a naive loop."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from cpcaudio import CPCModel
from cpcaudio.errors import ConfigError
from cpcaudio.model.loss import SCORING_PATHS, info_nce_loss, info_nce_loss_linear, sample_negatives
from cpcaudio.model.queue import QUEUE_SPAN, LatentQueue, QueueNegatives, select_keys
from helpers import tiny_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")

BATCH, FRAMES, STEPS, DIM, HIDDEN, NEGATIVES, QUEUED = 3, 7, 3, 5, 4, 4, 6
LENGTHS = torch.tensor([7, 5, 3])


def rows(*values: float) -> torch.Tensor:
    """(n, 2) keys whose both channels hold the given values (easy to read back)."""
    return torch.tensor(values, dtype=torch.float32).view(-1, 1).repeat(1, 2)


# ---- the FIFO ---------------------------------------------------------------------------------------


def test_fifo_fills_in_order_then_overwrites_the_oldest_first():
    queue = LatentQueue(5, 2)
    assert queue.filled == 0 and queue.entries().shape == (0, 2)
    queue.enqueue(rows(0, 1, 2))
    assert queue.filled == 3 and int(queue.pointer) == 3 and int(queue.count) == 3
    assert queue.entries()[:, 0].tolist() == [0, 1, 2]
    queue.enqueue(rows(3, 4, 5, 6))  # rows 3, 4, then wraps: 5 and 6 replace the oldest, 0 and 1
    assert queue.filled == 5 and int(queue.pointer) == 2
    assert queue.latents[:, 0].tolist() == [5, 6, 2, 3, 4]
    queue.enqueue(rows(*range(10, 17)))  # more than the queue holds: the newest five remain, written in turn
    assert sorted(queue.latents[:, 0].tolist()) == [12, 13, 14, 15, 16]
    assert queue.latents[:, 0].tolist() == [15, 16, 12, 13, 14] and int(queue.pointer) == 2
    snapshot = queue.entries()
    queue.enqueue(rows(20))
    assert snapshot[:, 0].tolist() == [15, 16, 12, 13, 14]  # entries() is a copy
    with pytest.raises(ValueError, match=r"\(n, 2\)"):
        queue.enqueue(torch.zeros(3, 4))


def test_loaded_state_restores_the_pointer_and_count():
    queue = LatentQueue(4, 2)
    queue.enqueue(rows(1, 2, 3))
    restored = LatentQueue(4, 2)
    restored.load_state_dict(queue.state_dict())
    assert restored.filled == 3
    queue.enqueue(rows(7, 8))
    restored.enqueue(rows(7, 8))
    assert torch.equal(restored.latents, queue.latents) and restored.filled == queue.filled == 4
    broken = queue.state_dict()
    broken["pointer"] = torch.tensor([9])
    with pytest.raises(ValueError, match="out of range"):
        LatentQueue(4, 2).load_state_dict(broken)


def test_keys_are_valid_frames_without_repeats_unless_too_few():
    latents = torch.arange(BATCH * FRAMES, dtype=torch.float32).view(BATCH, FRAMES, 1)  # value = flat index
    valid = {b * FRAMES + t for b in range(BATCH) for t in range(int(LENGTHS[b]))}
    generator = torch.Generator().manual_seed(0)
    keys = select_keys(latents, LENGTHS, 9, generator)[:, 0].long().tolist()
    assert len(set(keys)) == 9 and set(keys) <= valid
    everything = select_keys(latents, LENGTHS, BATCH * FRAMES, generator)[:, 0].long().tolist()
    assert set(everything) == valid  # fewer valid frames than asked: each valid frame, then repeats
    draws = [tuple(select_keys(latents, LENGTHS, 4, torch.Generator().manual_seed(s))[:, 0].tolist()) for s in (1, 2)]
    assert draws[0] != draws[1]


# ---- the model's momentum encoder ---------------------------------------------------------------------


def queue_model(**predictor) -> CPCModel:
    torch.manual_seed(0)
    return CPCModel(tiny_config(predictor={"queue_size": 32, **predictor}))


def test_momentum_encoder_starts_equal_holds_no_parameters_and_follows_the_formula():
    model = queue_model(momentum=0.75)
    plain = CPCModel(tiny_config())
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in plain.parameters())
    assert not any(name.startswith("momentum.") for name, _ in model.named_parameters())
    assert not any(key.startswith("momentum.") for key in plain.state_dict())  # old checkpoints: unchanged keys
    names = [name for name, _ in model.encoder.named_parameters()]
    for name, weight in model.encoder.named_parameters():
        assert torch.equal(model.momentum.encoder.get_buffer(name), weight)
    with torch.no_grad():
        for weight in model.encoder.parameters():
            weight.add_(torch.randn_like(weight))
    before = {name: model.momentum.encoder.get_buffer(name).clone() for name in names}
    model.momentum_update()
    for name, weight in model.encoder.named_parameters():
        expected = 0.75 * before[name] + 0.25 * weight.detach()
        torch.testing.assert_close(model.momentum.encoder.get_buffer(name), expected, rtol=1e-6, atol=1e-7)
    CPCModel(tiny_config()).momentum_update()  # without a queue: nothing to do


def test_empty_queue_gives_the_queueless_loss_and_the_keys_enter_after_it():
    model = queue_model()
    plain = CPCModel(tiny_config())
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("momentum.")})
    signal, lengths = torch.randn(3, 1, 4000), torch.tensor([4000, 3200, 2400])
    first = model(signal, lengths, generator=torch.Generator().manual_seed(1))
    expected = plain(signal, lengths, generator=torch.Generator().manual_seed(1))
    assert torch.equal(first.loss, expected.loss) and torch.equal(first.step_accuracy, expected.step_accuracy)
    count = min(3 * first.latents.shape[1], 32 // QUEUE_SPAN)
    assert model.momentum.queue.filled == count
    frames = first.frame_lengths
    valid = torch.cat([first.momentum_latents[b, : int(frames[b])] for b in range(3)])  # (valid, C)
    for key in model.momentum.queue.entries():
        assert (valid == key).all(dim=1).any(), "a queue entry is not a momentum latent of a valid frame"
    torch.testing.assert_close(first.momentum_latents, first.latents.detach())  # the copy starts equal
    second = model(signal, lengths, generator=torch.Generator().manual_seed(1))
    assert second.loss > first.loss  # the same batch with more negatives
    model.eval()
    with torch.no_grad():
        evaluated = model(signal, lengths, generator=torch.Generator().manual_seed(1))
    assert model.momentum.queue.filled == 2 * count and evaluated.momentum_latents is None
    plain.eval()
    with torch.no_grad():
        assert torch.equal(evaluated.loss, plain(signal, lengths, generator=torch.Generator().manual_seed(1)).loss)


@pytest.mark.parametrize("per_row", [0, 5])  # the whole queue, or 5 entries drawn per prediction
def test_queue_negatives_change_the_loss_and_the_heads_gradients(per_row):
    model = queue_model(queue_negatives=per_row)
    plain = CPCModel(tiny_config())
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("momentum.")})
    signal = torch.randn(2, 1, 4000)
    model(torch.randn(2, 1, 4000))  # fills the queue with another batch's keys
    with_queue = model(signal, generator=torch.Generator().manual_seed(2))
    without = plain(signal, generator=torch.Generator().manual_seed(2))
    assert torch.isfinite(with_queue.loss) and with_queue.loss > without.loss  # more negatives, same rest
    with_queue.loss.backward()
    without.loss.backward()
    for trained, reference in zip(model.heads.parameters(), plain.heads.parameters()):
        assert trained.grad is not None and not torch.allclose(trained.grad, reference.grad)


@pytest.mark.parametrize(
    "assignment, fragment",
    [
        ("predictor.queue_negatives=9", "exceeds predictor.queue_size=0"),
        ("predictor.momentum=1.5", "predictor.momentum must be in [0, 1]"),
        ("predictor.queue_size=-1", "predictor.queue_size must be >= 0"),
    ],
)
def test_bad_queue_settings_are_refused_in_one_line(assignment, fragment):
    with pytest.raises(ConfigError) as error:
        tiny_config().with_overrides([assignment])
    assert fragment in str(error.value) and "\n" not in str(error.value)


def test_sync_batch_norm_with_batch_norm_is_refused():
    config = tiny_config(
        predictor={"queue_size": 8}, encoder={"normalization": "batch"}, train={"sync_batch_norm": True}
    )
    with pytest.raises(ConfigError, match="train.sync_batch_norm=false"):
        CPCModel(config)


# ---- InfoNCE with queue negatives ---------------------------------------------------------------------


def naive_info_nce_with_queue(predictions, latents, negatives, frame_lengths, queue, queue_indices):
    """Every valid (b, t, k) one at a time: the candidates [positive, pool negatives, queue negatives] as
    vectors, their dot products with the prediction, the cross-entropy of the first. Returns (loss, accuracy)."""
    batch, frames, steps, dim = predictions.shape
    flat = latents.reshape(batch * frames, dim)
    losses, correct = [], []
    for b, t, k in itertools.product(range(batch), range(frames), range(steps)):
        if t + k + 1 >= int(frame_lengths[b]):  # no target z_{t+k+1} (k is 0-based here)
            continue
        chosen = range(queue.shape[0]) if queue_indices is None else queue_indices[b, t, k].tolist()
        candidates = [latents[b, t + k + 1]] + [flat[int(n)] for n in negatives[b, t, k]] + [queue[j] for j in chosen]
        scores = [float(predictions[b, t, k] @ candidate) for candidate in candidates]
        losses.append(math.log(math.fsum(math.exp(score - scores[0]) for score in scores)))
        correct.append(all(scores[0] > score for score in scores[1:]))
    return sum(losses) / len(losses), sum(correct) / len(correct)


def queue_problem(mode: str, per_row: int, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)

    def leaf(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator, dtype=torch.float64).requires_grad_()

    context, latents = leaf(BATCH, FRAMES, HIDDEN), leaf(BATCH, FRAMES, DIM)
    weight, bias = leaf(STEPS * DIM, HIDDEN), leaf(STEPS * DIM)
    negatives = sample_negatives(LENGTHS, FRAMES, STEPS, NEGATIVES, mode, generator=generator)
    queue = torch.randn(QUEUED, DIM, generator=generator, dtype=torch.float64)
    indices = torch.randint(QUEUED, (BATCH, FRAMES, STEPS, per_row), generator=generator) if per_row else None
    return context, weight, bias, latents, negatives, QueueNegatives(queue, indices)


@pytest.mark.parametrize("per_row", [0, 4, 9])  # the whole queue; 4 (sampled scores) or 9 (> Q: dense) per row
@pytest.mark.parametrize("mode", ["batch", "same-sequence"])
def test_loss_with_queue_matches_the_naive_loop_on_every_path(mode, per_row):
    context, weight, bias, latents, negatives, queue = queue_problem(mode, per_row)
    predictions = (context @ weight.t() + bias).view(BATCH, FRAMES, STEPS, DIM)
    expected_loss, expected_accuracy = naive_info_nce_with_queue(
        predictions.detach(), latents.detach(), negatives, LENGTHS, queue.latents, queue.indices
    )
    leaves = [context, weight, bias, latents]
    reference_grads = None
    for path in SCORING_PATHS:
        results = [
            info_nce_loss(predictions, latents, negatives, LENGTHS, mode, path=path, queue=queue),
            info_nce_loss_linear(context, weight, bias, latents, negatives, LENGTHS, mode, path=path, queue=queue),
        ]
        for result in results:
            assert result.loss.item() == pytest.approx(expected_loss, rel=1e-5)  # (scored in float32)
            accuracy = float((result.step_accuracy * result.step_counts).sum() / result.step_counts.sum())
            assert accuracy == pytest.approx(expected_accuracy)
            grads = torch.autograd.grad(result.loss, leaves, allow_unused=True, retain_graph=True)
            grads = [torch.zeros_like(leaf) if g is None else g for leaf, g in zip(leaves, grads)]
            if reference_grads is None:
                reference_grads = grads
            for got, want in zip(grads, reference_grads):  # every path: the same gradients
                torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
    plain = info_nce_loss(predictions, latents, negatives, LENGTHS, mode, path="pool")
    assert not math.isclose(plain.loss.item(), expected_loss)  # the queue's scores did count
