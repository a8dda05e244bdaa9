"""InfoNCE and negative sampling against independent, naive implementations."""

from __future__ import annotations

import math

import pytest
import torch

from cpcaudio.model.loss import SCORING_PATHS, info_nce_loss, sample_negatives, valid_prediction_mask


def naive_info_nce(predictions, latents, negatives, frame_lengths):
    """Loop over every valid (b, t, k) and compute the cross-entropy with the positive at index 0."""
    batch, frames, steps, dim = predictions.shape
    flat = latents.reshape(batch * frames, dim)
    losses, per_step = [], {k: [] for k in range(steps)}
    correct = {k: 0 for k in range(steps)}
    for b in range(batch):
        for t in range(frames):
            for k in range(1, steps + 1):
                if t + k >= int(frame_lengths[b]):
                    continue
                p = predictions[b, t, k - 1]
                scores = [float(p @ latents[b, t + k])]
                scores += [float(p @ flat[int(n)]) for n in negatives[b, t, k - 1]]
                top = max(scores)
                log_sum = top + math.log(sum(math.exp(s - top) for s in scores))
                losses.append(log_sum - scores[0])
                per_step[k - 1].append(log_sum - scores[0])
                correct[k - 1] += int(scores[0] > max(scores[1:]))  # a tie is not a success
    step_loss = [sum(v) / len(v) if v else float("nan") for v in per_step.values()]
    step_acc = [correct[k] / len(per_step[k]) if per_step[k] else float("nan") for k in range(steps)]
    return sum(losses) / len(losses), step_loss, step_acc


@pytest.mark.parametrize("path", SCORING_PATHS)
@pytest.mark.parametrize("mode", ["batch", "same-sequence", "mixed"])
def test_loss_matches_naive_loop(mode, path):
    torch.manual_seed(0)
    batch, frames, steps, dim, negatives = 3, 9, 4, 5, 6
    predictions = torch.randn(batch, frames, steps, dim, dtype=torch.float64)
    latents = torch.randn(batch, frames, dim, dtype=torch.float64)
    frame_lengths = torch.tensor([9, 7, 5])
    indices = sample_negatives(frame_lengths, frames, steps, negatives, mode)
    result = info_nce_loss(predictions, latents, indices, frame_lengths, mode, path=path)
    expected_loss, expected_step_loss, expected_acc = naive_info_nce(predictions, latents, indices, frame_lengths)
    assert result.loss.item() == pytest.approx(expected_loss, rel=1e-5)
    assert result.step_loss.tolist() == pytest.approx(expected_step_loss, rel=1e-5)
    assert result.step_accuracy.tolist() == pytest.approx(expected_acc)


@pytest.mark.parametrize("path", SCORING_PATHS)
def test_loss_with_fixed_hand_picked_negatives(path):
    """A hand-checkable case: one sequence, K = 1, one negative per position."""
    predictions = torch.tensor([[[[1.0, 0.0]], [[0.0, 1.0]], [[0.0, 0.0]]]])  # (1, 3, 1, 2)
    latents = torch.tensor([[[0.0, 0.0], [2.0, 0.0], [0.0, 3.0]]])  # (1, 3, 2)
    negatives = torch.tensor([[[[0]], [[0]], [[0]]]])  # every negative is frame 0 (score 0)
    result = info_nce_loss(predictions, latents, negatives, mode="batch", path=path)
    # t=0: positive z1 scores 2, negative 0 -> log(1 + e^-2); t=1: positive z2 scores 3 -> log(1 + e^-3).
    expected = (math.log1p(math.exp(-2)) + math.log1p(math.exp(-3))) / 2
    assert result.loss.item() == pytest.approx(expected, rel=1e-6)
    assert result.step_accuracy.item() == 1.0
    assert result.step_counts.item() == 2


@pytest.mark.parametrize("mode", ["batch", "same-sequence", "mixed"])
def test_positive_never_drawn_and_pool_covered(mode):
    torch.manual_seed(1)
    batch, frames, steps, negatives = 3, 10, 3, 64
    frame_lengths = torch.tensor([10, 6, 8])
    seen_batch_of = set()
    covered = torch.zeros(batch * frames, dtype=torch.bool)
    valid = valid_prediction_mask(frame_lengths, frames, steps)
    for _ in range(20):
        indices = sample_negatives(frame_lengths, frames, steps, negatives, mode)
        assert indices.shape == (batch, frames, steps, negatives)
        for b in range(batch):
            for t in range(frames):
                for k in range(1, steps + 1):
                    if not valid[b, t, k - 1]:
                        continue
                    drawn = indices[b, t, k - 1]
                    positive = b * frames + t + k
                    assert not (drawn == positive).any(), "the positive was drawn as a negative"
                    seq, pos = drawn // frames, drawn % frames
                    # Never a padded frame.
                    assert (pos < frame_lengths[seq]).all()
                    if mode == "same-sequence":
                        assert (seq == b).all()
                    if mode == "mixed":  # the first half from the own sequence, the rest anywhere
                        assert (seq[: negatives // 2] == b).all()
                        seq = seq[negatives // 2 :]
                    seen_batch_of.update(seq.tolist())
                    covered[drawn] = True
    # Every valid frame is drawn at some point, and no padded frame ever is.
    for b in range(batch):
        assert covered[b * frames : b * frames + int(frame_lengths[b])].all()
        assert not covered[b * frames + int(frame_lengths[b]) : (b + 1) * frames].any()
    if mode in ("batch", "mixed"):
        assert seen_batch_of == {0, 1, 2}


def test_batch_negatives_are_uniform_over_the_pool():
    """Counts of each frame over many draws agree with the uniform law (chi-square-ish bound)."""
    torch.manual_seed(2)
    frame_lengths = torch.tensor([5, 5])
    indices = sample_negatives(frame_lengths, 5, 1, 20000, "batch")
    draws = indices[0, 0, 0]  # positive is frame 1 of sequence 0 -> 9 allowed frames
    counts = torch.bincount(draws, minlength=10).float()
    assert counts[1] == 0
    allowed = counts[[0, 2, 3, 4, 5, 6, 7, 8, 9]]
    expected = 20000 / 9
    assert ((allowed - expected).abs() < 5 * math.sqrt(expected)).all()


@pytest.mark.parametrize("path", SCORING_PATHS)
def test_ties_and_nan_do_not_count_as_correct(path):
    """A collapsed encoder (every latent equal) ties every candidate: accuracy 0, loss ln(1 + N)."""
    predictions = torch.ones(2, 6, 2, 3)
    latents = torch.zeros(2, 6, 3)
    indices = sample_negatives(torch.tensor([6, 6]), 6, 2, 4, "batch")
    result = info_nce_loss(predictions, latents, indices, mode="batch", path=path)
    assert result.step_accuracy.tolist() == [0.0, 0.0]
    assert result.loss.item() == pytest.approx(math.log(5))
    broken = info_nce_loss(predictions * float("nan"), latents + 1, indices, mode="batch", path=path)
    assert broken.step_accuracy.tolist() == [0.0, 0.0]
