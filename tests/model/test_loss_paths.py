"""The InfoNCE scoring paths agree with each other (values and gradients), and their pieces with the dense
formulation: ``pool`` / ``sampled`` scoring, predictions / through-the-context (linear heads), the sparse
CPU forward / the device-agnostic gather forward / the dense fallback, channel blocks, and the choice."""

from __future__ import annotations

import pytest
import torch

from cpcaudio import CPCModel
from cpcaudio.model import sampled_scores as sampled_module
from cpcaudio.model.cpu_kernels import fast_paths
from cpcaudio.model.loss import (
    SAMPLED_MIN_RATIO,
    SCORING_PATHS,
    choose_scoring_path,
    heads_info_nce,
    info_nce_loss,
    info_nce_loss_linear,
    sample_negatives,
    scoring_path,
)
from cpcaudio.model.sampled_scores import channel_blocks, sampled_scores
from helpers import tiny_config

BATCH, FRAMES, STEPS, DIM, HIDDEN, NEGATIVES = 3, 11, 4, 9, 5, 7
LENGTHS = torch.tensor([11, 8, 6])


def linear_problem(seed: int, mode: str, bias: bool = True):
    """Context, heads weight and bias, latents (float64 leaves) and negatives for one small batch."""
    generator = torch.Generator().manual_seed(seed)

    def leaf(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator, dtype=torch.float64).requires_grad_()

    context, latents = leaf(BATCH, FRAMES, HIDDEN), leaf(BATCH, FRAMES, DIM)
    weight, offset = leaf(STEPS * DIM, HIDDEN), (leaf(STEPS * DIM) if bias else None)
    negatives = sample_negatives(LENGTHS, FRAMES, STEPS, NEGATIVES, mode, generator=generator)
    return context, weight, offset, latents, negatives


def predictions_of(context, weight, bias):
    """The linear heads' predictions (B, T, K, C) = W_k c + b_k."""
    out = context @ weight.t() + (0 if bias is None else bias)
    return out.view(BATCH, FRAMES, STEPS, DIM)


def outputs_and_grads(result, leaves):
    grads = torch.autograd.grad(result.loss, [leaf for leaf in leaves if leaf is not None])
    return [result.loss, result.step_loss, result.step_accuracy, result.step_counts], list(grads)


def assert_all_close(got, expected):
    for a, b in zip(got, expected):
        torch.testing.assert_close(a.double(), b.double(), rtol=1e-5, atol=1e-5, equal_nan=True)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("mode", ["batch", "same-sequence", "mixed"])
def test_every_path_and_formulation_agrees_with_the_pool_path(mode, bias):
    context, weight, offset, latents, negatives = linear_problem(0, mode, bias)
    leaves = [context, weight, offset, latents]
    reference = predictions_of(context, weight, offset)
    expected = outputs_and_grads(info_nce_loss(reference, latents, negatives, LENGTHS, mode, path="pool"), leaves)
    for path in SCORING_PATHS:
        predictions = predictions_of(context, weight, offset)
        got = outputs_and_grads(info_nce_loss(predictions, latents, negatives, LENGTHS, mode, path=path), leaves)
        assert_all_close(got[0] + got[1], expected[0] + expected[1])
        linear = info_nce_loss_linear(context, weight, offset, latents, negatives, LENGTHS, mode, path=path)
        got = outputs_and_grads(linear, leaves)
        assert_all_close(got[0] + got[1], expected[0] + expected[1])


@pytest.mark.parametrize("mode", ["batch", "same-sequence", "mixed"])
def test_heads_info_nce_matches_the_heads_predictions(mode):
    torch.manual_seed(3)
    model = CPCModel(tiny_config(encoder={"hidden_dim": 16}, context={"hidden_dim": 8}))
    heads = model.heads.double()
    context = torch.randn(BATCH, FRAMES, 8, dtype=torch.float64)
    latents = torch.randn(BATCH, FRAMES, 16, dtype=torch.float64)
    negatives = sample_negatives(LENGTHS, FRAMES, heads.num_steps, NEGATIVES, mode)
    expected = info_nce_loss(heads(context), latents, negatives, LENGTHS, mode, path="pool")
    for path in SCORING_PATHS:
        got = heads_info_nce(heads, context, latents, negatives, LENGTHS, mode, path=path)
        # the loss is computed in float32 on every path (even from float64 inputs): compare at float32's
        # tolerance; the paths sum in different orders, which on some CPUs differ by an ulp or two
        assert got.loss.dtype == expected.loss.dtype == torch.float32
        torch.testing.assert_close(got.loss, expected.loss)
        torch.testing.assert_close(got.step_accuracy, expected.step_accuracy, equal_nan=True)


@pytest.mark.parametrize("head", ["linear", "mlp"])
def test_model_loss_and_gradients_do_not_depend_on_the_path(head):
    """The model's default (through the context, sampled where cheaper) against the pre-issue-18
    formulation (predictions against the whole pool), same weights, batch and negatives."""
    torch.manual_seed(4)
    config = tiny_config(encoder={"hidden_dim": 24}, context={"hidden_dim": 8}, predictor={"head": head})
    model = CPCModel(config)
    signal = torch.randn(3, 1, 3200)
    lengths = torch.tensor([3200, 2600, 2000])
    frames = model.num_frames(3200)
    frame_lengths = torch.tensor([model.num_frames(int(n)) for n in lengths])
    negatives = sample_negatives(frame_lengths, frames, config.predictor.num_steps, config.predictor.num_negatives)
    runs = []
    for path, through_context in [("pool", False), ("sampled", None), ("pool", None), ("sampled", False)]:
        model.zero_grad()
        with scoring_path(path, through_context=through_context):
            out = model(signal, lengths, negative_indices=negatives)
        out.loss.backward()
        runs.append((out.loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}))
    (loss, grads), others = runs[0], runs[1:]
    for other_loss, other_grads in others:
        torch.testing.assert_close(other_loss, loss, rtol=1e-5, atol=1e-6)
        for name, grad in grads.items():
            torch.testing.assert_close(other_grads[name], grad, rtol=1e-4, atol=1e-5, msg=name)


def dense_scores(rows, pool, candidates):
    return (rows @ pool.t()).gather(1, candidates)


@pytest.mark.parametrize("forward", ["sparse", "gather"])
@pytest.mark.parametrize("pool_rows,per_row", [(40, 6), (5, 9), (1, 3), (6, 6)])
def test_sampled_scores_match_the_dense_product(monkeypatch, forward, pool_rows, per_row):
    """Forward and both gradients; candidates repeat (drawn with replacement); more candidates per row
    than pool rows takes the dense fallback."""
    monkeypatch.setattr(sampled_module, "_SPARSE_FORWARD", forward == "sparse")
    generator = torch.Generator().manual_seed(5)
    rows = torch.randn(13, 10, generator=generator, dtype=torch.float64, requires_grad=True)
    pool = torch.randn(pool_rows, 10, generator=generator, dtype=torch.float64, requires_grad=True)
    candidates = torch.randint(0, pool_rows, (13, per_row), generator=generator)
    weights = torch.randn(13, per_row, generator=generator, dtype=torch.float64)
    got = sampled_scores(rows, pool, candidates)
    expected = dense_scores(rows, pool, candidates)
    torch.testing.assert_close(got, expected)
    got_grads = torch.autograd.grad((got * weights).sum(), [rows, pool])
    expected_grads = torch.autograd.grad((expected * weights).sum(), [rows, pool])
    for a, b in zip(got_grads, expected_grads):
        torch.testing.assert_close(a, b)


def test_sampled_scores_in_channel_blocks_and_chunks(monkeypatch):
    """A pool larger than the block budget is scored block by block; the gather forward in chunks."""
    monkeypatch.setattr(sampled_module, "POOL_BLOCK_BYTES", 64 * 4 * 50)  # 50 rows of 64 float32 channels
    monkeypatch.setattr(sampled_module, "GATHER_CHUNK_BYTES", 3 * 8 * 200 * 4)  # 3 rows at a time
    generator = torch.Generator().manual_seed(6)
    rows = torch.randn(10, 200, generator=generator, requires_grad=True)
    pool = torch.randn(90, 200, generator=generator, requires_grad=True)
    candidates = torch.randint(0, 90, (10, 8), generator=generator)
    assert len(sampled_module._blocks_of(pool)) > 1
    expected = dense_scores(rows, pool, candidates)
    expected_grads = torch.autograd.grad(expected.square().sum(), [rows, pool])
    for sparse in (True, False):
        monkeypatch.setattr(sampled_module, "_SPARSE_FORWARD", sparse)
        got = sampled_scores(rows, pool, candidates)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-4)
        for a, b in zip(torch.autograd.grad(got.square().sum(), [rows, pool]), expected_grads):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-3)


def test_channel_blocks_cover_the_channels_and_fit_the_budget():
    assert channel_blocks(100, 256, 4, budget=2**20) == [slice(0, 256)]
    blocks = channel_blocks(8192, 257, 4, budget=2**21)
    assert blocks[0].start == 0 and blocks[-1].stop == 257
    assert all(a.stop == b.start for a, b in zip(blocks, blocks[1:]))
    widths = [b.stop - b.start for b in blocks]
    assert len(blocks) == 4 and all(b.start % 16 == 0 for b in blocks) and min(widths) >= 64  # 8.4 MB in 4
    assert channel_blocks(10**6, 64, 4) == [slice(0, 64)]  # never narrower than MIN_BLOCK_WIDTH
    assert [b.stop - b.start for b in channel_blocks(8192, 512, 4, budget=2**21)] == [64] * 8


def test_sampled_scores_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="sampled_scores expects"):
        sampled_scores(torch.zeros(3, 4), torch.zeros(5, 4), torch.zeros(2, 2, dtype=torch.long))


def test_path_choice_by_ratio_device_and_overrides():
    cpu = torch.device("cpu")
    threshold = SAMPLED_MIN_RATIO["cpu"]
    assert choose_scoring_path(int(129 * threshold) + 129, 129, cpu) == "sampled"
    assert choose_scoring_path(int(129 * threshold) - 1, 129, cpu) == "pool"
    assert choose_scoring_path(10**6, 129, torch.device("meta")) == "pool"  # unmeasured devices: the pool
    with fast_paths(False):
        assert choose_scoring_path(10**6, 129, cpu) == "pool"  # the plain formulation
    with scoring_path("sampled"):
        assert choose_scoring_path(10, 129, cpu) == "sampled"
        with scoring_path(None):
            assert choose_scoring_path(10, 129, cpu) == "pool"
    with pytest.raises(ValueError, match="scoring path"):
        with scoring_path("dense"):
            pass
    predictions = torch.zeros(1, 3, 1, 2)
    with pytest.raises(ValueError, match="scoring path"):
        info_nce_loss(predictions, torch.zeros(1, 3, 2), torch.zeros(1, 3, 1, 1, dtype=torch.long), path="dense")
