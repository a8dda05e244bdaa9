"""``predictor.head = "transformer"``: CPC_audio's default prediction network (one causal transformer layer per
step), checked against CPC_audio's formulation, for causality, in the loss and in training.

Library: :class:`cpcaudio.model.heads.TransformerHeads`.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cpcaudio.config import CPCConfig
from cpcaudio.data import prepare
from cpcaudio.errors import ConfigError
from cpcaudio.model import CPCModel, PredictionHeads
from cpcaudio.model.loss import heads_info_nce, info_nce_loss, scoring_path
from cpcaudio.model.negatives import sample_negatives
from cpcaudio.train import read_metrics, train

import helpers
from badfiles import tiny_run_sections, write_two_speaker_tones

pytestmark = pytest.mark.usefixtures("one_torch_thread")

STEPS = 3
WIDTH = 32  # C, the latents' width
WINDOW_FRAMES = 12  # frames of a training window: D = 12 - 3 = 9 relative distances
TRANSFORMER = {"head": "transformer", "head_attention_heads": 4, "head_feedforward_dim": 48, "num_steps": STEPS}


def heads(context_dim: int = WIDTH, dropout: float = 0.0, window_frames: int = WINDOW_FRAMES) -> PredictionHeads:
    torch.manual_seed(0)
    predictor = helpers.tiny_config(predictor={**TRANSFORMER, "head_dropout": dropout}).predictor
    return PredictionHeads(context_dim, WIDTH, predictor, window_frames=window_frames)


def cpc_audio_prediction(transformer, step: int, context: torch.Tensor) -> torch.Tensor:
    """CPC_audio's formulation of step ``step``'s predictor, written out on its own (eval mode, H == C):
    per head, scores ``(q k^T + shifted(q Krelpos)) / sqrt(d)`` with the triangular mask, where ``Krelpos``
    is a (d, S) table for inputs of exactly S frames and the relative term comes from its "pad a zero column,
    re-view, drop a row" shift; then residual + layer norm, feed-forward, residual + layer norm; and the
    loss's score mean_c(p * z), written here as the prediction divided by C.

    Args: context (batch, S, C), the first S = window frames - K context frames (CPC_audio cuts c so).
    Returns: (batch, S, C).
    """
    batch, size, dim = context.shape
    heads_count, head_dim = transformer.num_heads, transformer.head_dim
    k = step
    w_q, w_k, w_v = transformer.attention_in[k].split(dim, dim=0)
    krelpos = transformer.relative_positions[k].flip(0).T  # (d, S): column S-1-delta holds r_delta
    assert krelpos.shape == (head_dim, size)
    mask = torch.triu(torch.full((size, size), float("-inf")), diagonal=1)
    outputs = []
    for h in range(heads_count):
        rows = slice(h * head_dim, (h + 1) * head_dim)
        q, key, v = context @ w_q[rows].T, context @ w_k[rows].T, context @ w_v[rows].T  # (B, S, d)
        qp = q @ krelpos  # (B, S, S)
        qp = torch.cat([torch.zeros(batch, size, 1), qp], dim=2).view(batch, size + 1, size)[:, 1:, :]
        attention = torch.softmax((q @ key.transpose(1, 2) + qp) / math.sqrt(head_dim) + mask, dim=2)
        outputs.append(attention @ v)
    attended = torch.cat(outputs, dim=2) @ transformer.attention_out[k].T
    y = F.layer_norm(context + attended, (dim,), transformer.norm1_weight[k], transformer.norm1_bias[k])
    hidden = torch.relu(y @ transformer.feedforward_in[k].T + transformer.feedforward_in_bias[k])
    out = y + hidden @ transformer.feedforward_out[k].T + transformer.feedforward_out_bias[k]
    return F.layer_norm(out, (dim,), transformer.norm2_weight[k], transformer.norm2_bias[k]) / dim


def test_shapes_and_parameters_with_and_without_the_context_projection():
    context = torch.randn(2, 10, WIDTH)
    same = heads().eval()
    assert same(context).shape == (2, 10, STEPS, WIDTH)
    assert same.transformer.input_weight is None  # H == C: the context goes in as it is (CPC_audio)
    assert same.transformer.relative_positions.shape == (STEPS, WINDOW_FRAMES - STEPS, WIDTH // 4)
    assert same.linear_maps() is None
    narrow = heads(context_dim=16).eval()
    assert narrow(torch.randn(2, 10, 16)).shape == (2, 10, STEPS, WIDTH)
    assert narrow.transformer.input_weight.shape == (STEPS, WIDTH, 16)
    # Longer than a training window: distances beyond the table reuse its last entry, nothing breaks.
    assert torch.isfinite(same(torch.randn(1, 3 * WINDOW_FRAMES, WIDTH))).all()


def test_matches_cpc_audios_formulation_step_by_step():
    module = heads().eval()
    size = WINDOW_FRAMES - STEPS  # CPC_audio's sizeInputSeq - nPredicts
    context = torch.randn(2, WINDOW_FRAMES, WIDTH)
    with torch.no_grad():
        ours = module(context)  # (B, T, K, C)
        for step in range(STEPS):
            reference = cpc_audio_prediction(module.transformer, step, context[:, :size])
            torch.testing.assert_close(ours[:, :size, step], reference, rtol=1e-5, atol=1e-7)
    # The steps are independent networks: different predictions from the same context.
    assert not torch.allclose(ours[:, :, 0], ours[:, :, 1])


@pytest.mark.parametrize("context_dim", [WIDTH, 16])
def test_a_prediction_from_c_t_never_sees_later_frames(context_dim):
    module = heads(context_dim).eval()
    context = torch.randn(2, WINDOW_FRAMES, context_dim)
    t = 5
    changed = context.clone()
    changed[:, t + 1 :] = torch.randn(2, WINDOW_FRAMES - t - 1, context_dim) * 10
    with torch.no_grad():
        before, after = module(context), module(changed)
        assert torch.equal(before[:, : t + 1], after[:, : t + 1])
        assert not torch.allclose(before[:, t + 1 :], after[:, t + 1 :])
        earlier = context.clone()
        earlier[:, t - 2] += 1.0  # the past does count
        assert not torch.allclose(module(earlier)[:, t], before[:, t])
    # The same through the gradients: d p_t / d c_j = 0 for every j > t. The prediction ends in a layer norm
    # (unit gain at init), whose features sum to zero whatever the input: a plain .sum() would have a zero
    # gradient everywhere, so weigh the features at random.
    context.requires_grad_(True)
    weights = torch.randn(WIDTH)
    (module(context)[:, t] * weights).sum().backward()
    assert (context.grad[:, t + 1 :] == 0).all() and (context.grad[:, : t + 1] != 0).any()


def test_dropout_only_in_training_and_gradients_finite():
    module = heads(dropout=0.5)
    context = torch.randn(2, WINDOW_FRAMES, WIDTH, requires_grad=True)
    module.train()
    assert not torch.equal(module(context), module(context))  # dropout draws
    module.eval()
    assert torch.equal(module(context), module(context))
    module.train()
    module(context).square().sum().backward()
    for name, parameter in module.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name
        assert parameter.grad.abs().sum() > 0, f"{name} gets no gradient"
    assert torch.isfinite(context.grad).all()


def test_the_loss_scores_the_predictions_never_through_the_context():
    module = heads().eval()
    context, latents = torch.randn(2, WINDOW_FRAMES, WIDTH), torch.randn(2, WINDOW_FRAMES, WIDTH)
    lengths = torch.tensor([WINDOW_FRAMES, WINDOW_FRAMES - 2])
    torch.manual_seed(1)
    negatives = sample_negatives(lengths, WINDOW_FRAMES, STEPS, 8, "batch")
    expected = info_nce_loss(module(context), latents, negatives, lengths, "batch", path="pool")
    with scoring_path("pool", through_context=True):  # forcing the linear heads' fast path changes nothing
        result = heads_info_nce(module, context, latents, negatives, lengths, "batch")
    torch.testing.assert_close(result.loss, expected.loss)
    # The 1/C output scale: at initialisation the scores are small, the loss near chance ln(1 + N).
    assert abs(expected.loss.item() - math.log(9)) < 0.1


def test_bad_settings_are_refused_in_one_line():
    with pytest.raises(ConfigError, match="predictor.head_attention_heads=5 must divide encoder.hidden_dim=32"):
        CPCModel(helpers.tiny_config(predictor={**TRANSFORMER, "head_attention_heads": 5}))
    with pytest.raises(ConfigError, match=r"predictor.head_dropout must be in \[0, 1\)"):
        helpers.tiny_config(predictor={**TRANSFORMER, "head_dropout": 1.0})


def test_a_few_training_steps_lower_the_loss():
    torch.manual_seed(0)
    config = helpers.tiny_config(predictor={**TRANSFORMER, "num_negatives": 8}, data={"window_size": 2560})
    model = CPCModel(config)
    assert model.heads.transformer.num_distances == model.num_frames(2560) - STEPS
    signal = torch.from_numpy(helpers.generated_signal(4 * 2560, np.random.default_rng(0))).view(4, 1, 2560)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    losses = []
    for step in range(16):  # (from near chance: the 1/C scale starts with small scores, as CPC_audio)
        generator = torch.Generator().manual_seed(step % 2)
        output = model(signal, generator=generator)
        optimizer.zero_grad()
        output.loss.backward()
        optimizer.step()
        losses.append(output.loss.item())
    assert all(math.isfinite(loss) for loss in losses)
    assert losses[-1] < losses[0] - 0.2, losses


def test_training_with_dropout_resumes_exactly(tmp_path: Path):
    """Dropout draws from the global RNG, which last.pt saves: a resumed run repeats the same steps."""
    write_two_speaker_tones(tmp_path / "source", 8000)
    dataset = tmp_path / "dataset"
    prepare("folder", tmp_path / "source", dataset, workers=1)
    sections = tiny_run_sections(8000)
    sections["predictor"] = {**sections["predictor"], "head": "transformer", "head_attention_heads": 2,
                             "head_feedforward_dim": 16, "head_dropout": 0.5}  # fmt: skip
    sections["train"] = {**sections["train"], "max_steps": 4, "validate_every": 2}
    config = CPCConfig.from_dict(sections)
    train(dataset, tmp_path / "straight", config)
    train(dataset, tmp_path / "resumed", config.with_overrides(["train.max_steps=2"]))
    train(dataset, tmp_path / "resumed", config, resume=True)
    straight = {r["step"]: r["loss"] for r in read_metrics(tmp_path / "straight", "train")}
    resumed = {r["step"]: r["loss"] for r in read_metrics(tmp_path / "resumed", "train")}
    assert list(straight) == [1, 2, 3, 4] and resumed == straight
