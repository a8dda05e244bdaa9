"""The utterance-level losses (cpcaudio.model.contrastive) against naive loops and hand-computed cases."""

from __future__ import annotations

import math
from typing import get_args

import pytest
import torch

from cpcaudio.config import UtteranceConfig, UtteranceLoss
from cpcaudio.model.contrastive import UTTERANCE_LOSSES, margin_loss, nt_xent_loss, triplet_loss

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def views(windows: int = 5, dim: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    a = torch.randn(windows, dim, generator=generator, dtype=torch.float64)
    return a, a + 0.7 * torch.randn(windows, dim, generator=generator, dtype=torch.float64)


def unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm()


def rows(a: torch.Tensor, b: torch.Tensor) -> list[torch.Tensor]:
    """The 2N unit rows, both views: row i and row i + N from window i."""
    return [unit(x) for x in list(a) + list(b)]


def naive_nt_xent(a, b, temperature, extra=None):
    z, n = rows(a, b), a.shape[0]
    extra_rows = [unit(e) for e in extra] if extra is not None else []
    total = 0.0
    for i in range(2 * n):
        positive = (i + n) % (2 * n)
        others = [j for j in range(2 * n) if j != i]
        denominator = sum(math.exp(float(z[i] @ z[j]) / temperature) for j in others)
        denominator += sum(math.exp(float(z[i] @ e) / temperature) for e in extra_rows)
        total += -math.log(math.exp(float(z[i] @ z[positive]) / temperature) / denominator)
    return total / (2 * n)


def triplet_terms(a, b, margin):
    """Per anchor: (its positive's distance, [(negative row, its distance)])."""
    z, n = rows(a, b), a.shape[0]
    terms = []
    for i in range(2 * n):
        negatives = [(j, float((z[i] - z[j]).norm())) for j in range(2 * n) if j % n != i % n]
        terms.append((float((z[i] - z[(i + n) % (2 * n)]).norm()), negatives))
    return terms


def naive_triplet(a, b, margin, pick):
    terms = triplet_terms(a, b, margin)
    return sum(max(0.0, p - pick([d for _, d in negatives]) + margin) for p, negatives in terms) / len(terms)


def naive_margin(a, b, margin):
    positives, negatives = [], []
    for i in range(a.shape[0]):
        for j in range(b.shape[0]):
            distance = float((unit(a[i]) - unit(b[j])).norm())
            if i == j:
                positives.append(distance**2)  # y = 1
            else:
                negatives.append(max(0.0, margin - distance) ** 2)  # y = 0
    return sum(positives) / len(positives) + (sum(negatives) / len(negatives) if negatives else 0.0)


@pytest.mark.parametrize("temperature", [0.1, 0.5, 1.0])
def test_nt_xent_equals_a_naive_loop(temperature):
    a, b = views()
    assert float(nt_xent_loss(a, b, temperature)) == pytest.approx(naive_nt_xent(a, b, temperature), rel=1e-9)
    extra = torch.randn(3, 4, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    with_extra = float(nt_xent_loss(a, b, temperature, extra_negatives=extra))
    assert with_extra == pytest.approx(naive_nt_xent(a, b, temperature, extra), rel=1e-9)
    assert with_extra > float(nt_xent_loss(a, b, temperature))  # more negatives, larger denominator


def test_nt_xent_hand_computed():
    # a = b = [e1, e2]: each anchor sees its positive at cosine 1 and the other window's two rows at 0.
    eye = torch.eye(2, dtype=torch.float64)
    assert float(nt_xent_loss(eye, eye.clone(), 1.0)) == pytest.approx(math.log(1 + 2 / math.e), rel=1e-12)
    assert float(nt_xent_loss(eye, eye.clone(), 0.5)) == pytest.approx(math.log(1 + 2 / math.e**2), rel=1e-12)
    # One window: the positive is the only candidate.
    assert float(nt_xent_loss(eye[:1], eye[1:], 0.1)) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("margin", [0.2, 1.0, 2.5])
def test_triplet_hardest_equals_a_naive_loop(margin):
    a, b = views()
    assert float(triplet_loss(a, b, margin, "hardest")) == pytest.approx(naive_triplet(a, b, margin, min), rel=1e-9)


def test_triplet_random_draws_uniformly_among_the_other_windows():
    a, b = views(windows=4)
    margin = 2.0  # every term positive: the loss is linear in the negative's distance
    hardest, easiest = naive_triplet(a, b, margin, min), naive_triplet(a, b, margin, max)
    expected = naive_triplet(a, b, margin, lambda d: sum(d) / len(d))  # the mean over a uniform draw
    draws = [float(triplet_loss(a, b, margin, "random", torch.Generator().manual_seed(s))) for s in range(1500)]
    assert all(easiest - 1e-12 <= value <= hardest + 1e-12 for value in draws)
    assert len(set(draws)) > 100  # not one fixed negative
    assert sum(draws) / len(draws) == pytest.approx(expected, abs=0.01 * (hardest - easiest))
    same = [float(triplet_loss(a, b, margin, "random", torch.Generator().manual_seed(7))) for _ in range(2)]
    assert same[0] == same[1]


def test_triplet_hand_computed():
    eye = torch.eye(2, dtype=torch.float64)
    # Positives coincide (distance 0, clamped to 1e-6), negatives are orthogonal (distance sqrt 2).
    assert float(triplet_loss(eye, eye.clone(), 1.0)) == pytest.approx(0.0, abs=1e-12)
    assert float(triplet_loss(eye, eye.clone(), 2.0)) == pytest.approx(2.0 - math.sqrt(2.0), abs=1e-5)
    swapped = eye.flip(0)  # each window's views orthogonal, the other window's second view coincides
    assert float(triplet_loss(eye, swapped, 0.5, "hardest")) == pytest.approx(math.sqrt(2.0) + 0.5, abs=1e-5)
    assert float(triplet_loss(eye[:1], eye[1:], 1.0)) == 0.0  # one window: no negative


@pytest.mark.parametrize("margin", [0.5, 1.0, 1.8])
def test_margin_equals_a_naive_loop(margin):
    a, b = views()
    assert float(margin_loss(a, b, margin)) == pytest.approx(naive_margin(a, b, margin), rel=1e-9)


def test_margin_hand_computed():
    eye = torch.eye(2, dtype=torch.float64)
    # Swapped views: positive pairs orthogonal (D^2 = 2), negative pairs identical (D = 0, cost margin^2).
    assert float(margin_loss(eye, eye.flip(0), 1.0)) == pytest.approx(2.0 + 1.0, abs=1e-5)
    assert float(margin_loss(eye, eye.flip(0), 0.5)) == pytest.approx(2.0 + 0.25, abs=1e-5)
    # Equal views: positives cost 0; negatives at sqrt 2 cost (margin - sqrt 2)^2 below the margin only.
    assert float(margin_loss(eye, eye.clone(), 1.0)) == pytest.approx(0.0, abs=1e-12)
    assert float(margin_loss(eye, eye.clone(), 2.0)) == pytest.approx((2.0 - math.sqrt(2.0)) ** 2, abs=1e-5)


@pytest.mark.parametrize("name", sorted(UTTERANCE_LOSSES))
def test_gradients_are_finite_even_for_identical_views(name):
    settings = UtteranceConfig(loss=name, triplet_negative="random", margin=1.5)
    loss = UTTERANCE_LOSSES[name].function
    for identical in (False, True):
        a, b = views(windows=3, dim=5, seed=1)
        a.requires_grad_(True)
        b = a.detach().clone().requires_grad_(True) if identical else b.requires_grad_(True)
        value = loss(a, b, settings, torch.Generator().manual_seed(0), None)
        value.backward()
        assert torch.isfinite(value) and torch.isfinite(a.grad).all() and torch.isfinite(b.grad).all()
        assert a.grad.abs().sum() > 0


def test_the_table_matches_the_config_literal_and_extra_negatives_are_nt_xent_only():
    assert set(get_args(UtteranceLoss)) == {"none"} | set(UTTERANCE_LOSSES)
    a, b = views()
    for name, entry in UTTERANCE_LOSSES.items():
        if entry.takes_extra_negatives:
            continue
        with pytest.raises(ValueError, match="no extra negatives"):
            entry.function(a, b, UtteranceConfig(loss=name), None, torch.zeros(2, 4, dtype=torch.float64))


def test_bad_shapes_are_refused():
    a, b = views()
    with pytest.raises(ValueError, match="same shape"):
        nt_xent_loss(a, b[:3], 0.1)
    with pytest.raises(ValueError, match=r"\(batch, dim\)"):
        margin_loss(a[0], b[0], 1.0)
    with pytest.raises(ValueError, match="hardest"):
        triplet_loss(a, b, 1.0, "easiest")
