"""Utterance-level contrastive losses on two views of a batch: NT-Xent, triplet and margin (pairwise).

Every loss takes the embeddings of two views of the same N windows, ``a`` and ``b``, each (N, D): row i of
``a`` and row i of ``b`` come from window i (a positive pair); rows of different windows are negatives.
All three L2-normalise the rows first, so similarities are cosines and Euclidean distances lie in [0, 2]
(``D(x, y) = ||x - y|| = sqrt(2 - 2 cos(x, y))`` for unit vectors). They are plain functions beside
:func:`cpcaudio.model.loss.info_nce_loss`; :data:`UTTERANCE_LOSSES` maps the names of the config's
``utterance.loss`` to them (a test checks that the two agree), and :mod:`cpcaudio.model.utterance` pools,
projects and calls them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F

from cpcaudio.config import UtteranceConfig

_MIN_SQUARED_DISTANCE = 1e-12  # distances are clamped to >= 1e-6, where sqrt keeps a finite gradient


def _unit_rows(x: torch.Tensor, name: str) -> torch.Tensor:
    """x (N, D) with every row scaled to length 1 (a zero row stays zero)."""
    if x.dim() != 2:
        raise ValueError(f"{name} must be (batch, dim) embeddings, got shape {tuple(x.shape)}")
    return F.normalize(x, dim=1)


def _two_views(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The unit rows of both views stacked: (2N, D), row i and row i + N from window i."""
    a, b = _unit_rows(a, "a"), _unit_rows(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"the two views must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    return torch.cat([a, b])


def unit_distances(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Euclidean distances of unit rows, ``sqrt(2 - 2 x_i . y_j)``. Args: x (N, D), y (M, D), unit rows.
    Returns: (N, M), clamped to >= 1e-6 so that identical rows keep a finite gradient."""
    return (2.0 - 2.0 * x @ y.T).clamp(min=_MIN_SQUARED_DISTANCE).sqrt()


def nt_xent_loss(
    a: torch.Tensor, b: torch.Tensor, temperature: float, extra_negatives: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """SimCLR's NT-Xent (normalised temperature-scaled cross-entropy; Chen et al., 2020).

    With z the 2N unit rows of ``a`` and ``b`` and s(x, y) = cos(x, y) / temperature, anchor i's loss is

        l_i = -log( exp(s(z_i, z_p(i))) / sum_{j != i} exp(s(z_i, z_j)) )

    where p(i) is the other view of i's window; the sum runs over the positive and the 2N - 2 rows of the
    other windows (both views), plus every row of ``extra_negatives`` when given. The loss is the mean of
    l_i over all 2N anchors (both views are anchors, so the loss is symmetric in ``a`` and ``b``).

    Args:
        a, b: (N, D) embeddings of two views of N windows.
        temperature: > 0; smaller sharpens the softmax (SimCLR: 0.1 to 0.5).
        extra_negatives: (M, D) further negatives of every anchor (e.g. a queue of momentum keys), or None.

    Returns:
        Scalar loss (0 for N = 1 without extra negatives: the positive is the only candidate).
    """
    z = _two_views(a, b)  # (2N, D)
    count = z.shape[0]
    scores = z @ z.T / temperature  # (2N, 2N)
    itself = torch.eye(count, dtype=torch.bool, device=z.device)
    scores = scores.masked_fill(itself, float("-inf"))
    if extra_negatives is not None:
        extra = _unit_rows(extra_negatives, "extra_negatives")  # (M, D)
        scores = torch.cat([scores, z @ extra.T / temperature], dim=1)  # (2N, 2N + M)
    positives = (torch.arange(count, device=z.device) + count // 2) % count  # (2N,)
    return F.cross_entropy(scores, positives)


def triplet_loss(
    a: torch.Tensor,
    b: torch.Tensor,
    margin: float,
    negative: str = "hardest",
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """The triplet loss (Schroff et al., 2015) with Euclidean distances D of unit rows.

    Every one of the 2N rows (both views) is an anchor x; its positive p is the other view of its window,
    its negative n one of the 2N - 2 rows of the other windows (either view): the closest to the anchor
    (``hardest``) or one drawn uniformly with ``generator`` (``random``). The loss is the mean over the
    2N anchors of ``max(0, D(x, p) - D(x, n) + margin)``.

    Args:
        a, b: (N, D) embeddings of two views of N windows.
        margin: > 0, the distance by which the negative should be farther than the positive.
        negative: ``hardest`` or ``random``.
        generator: the torch generator of the ``random`` draws (None: the global RNG); on z's device.

    Returns:
        Scalar loss (0 for N = 1: no negative exists).
    """
    if negative not in ("hardest", "random"):
        raise ValueError(f"negative must be 'hardest' or 'random', got {negative!r}")
    z = _two_views(a, b)  # (2N, D)
    count, windows = z.shape[0], z.shape[0] // 2
    if windows < 2:
        return z.sum() * 0.0
    distances = unit_distances(z, z)  # (2N, 2N)
    anchors = torch.arange(count, device=z.device)
    window = anchors % windows  # (2N,)
    positive = distances[anchors, (anchors + windows) % count]  # (2N,)
    if negative == "hardest":
        same_window = window[:, None] == window[None, :]  # (2N, 2N): the anchor itself and its positive
        negative_distance = distances.masked_fill(same_window, float("inf")).min(dim=1).values
    else:
        # uniform over the 2N - 2 rows of the other windows: another window (offset 1..N-1), either view
        draw = torch.randint(0, 2 * (windows - 1), (count,), generator=generator, device=z.device)
        other = (window + 1 + draw % (windows - 1)) % windows + windows * (draw // (windows - 1))
        negative_distance = distances[anchors, other]
    return F.relu(positive - negative_distance + margin).mean()


def margin_loss(a: torch.Tensor, b: torch.Tensor, margin: float) -> torch.Tensor:
    """The pairwise contrastive loss (Hadsell et al., 2006), ``y D^2 + (1 - y) max(0, margin - D)^2``.

    The pairs are (a_i, b_j) for every i, j: y = 1 for the N pairs i = j (two views of one window), y = 0
    for the N (N - 1) pairs i != j; D is the Euclidean distance of the unit rows. Each kind weighs the
    same: the loss is the mean of D^2 over the positive pairs plus the mean of max(0, margin - D)^2 over
    the negative pairs (the second term is 0 for N = 1).

    Args:
        a, b: (N, D) embeddings of two views of N windows.
        margin: > 0, the distance beyond which a negative pair costs nothing.

    Returns:
        Scalar loss.
    """
    _two_views(a, b)  # checks the shapes
    a, b = _unit_rows(a, "a"), _unit_rows(b, "b")
    windows = a.shape[0]
    positive = (a - b).pow(2).sum(dim=1).mean()  # D^2 of the positive pairs, computed directly
    if windows < 2:
        return positive
    distances = unit_distances(a, b)  # (N, N)
    different = ~torch.eye(windows, dtype=torch.bool, device=a.device)
    negative = F.relu(margin - distances[different]).pow(2).mean()
    return positive + negative


# ---- the table of ``utterance.loss`` -------------------------------------------------------------------

# (a (N, D), b (N, D), the config section, generator, extra negatives (M, D) or None) -> scalar loss
LossFunction = Callable[
    [torch.Tensor, torch.Tensor, UtteranceConfig, Optional[torch.Generator], Optional[torch.Tensor]], torch.Tensor
]


@dataclass(frozen=True)
class UtteranceLoss:
    """One value of ``utterance.loss``: its function and a line of help."""

    name: str
    function: LossFunction
    summary: str
    takes_extra_negatives: bool = False


UTTERANCE_LOSSES: dict[str, UtteranceLoss] = {}


def register_utterance_loss(name: str, summary: str, takes_extra_negatives: bool = False) -> Callable:
    """Decorator adding a :data:`LossFunction` to :data:`UTTERANCE_LOSSES` (its name must also join the
    config's ``UtteranceLoss`` literal)."""

    def register(function: LossFunction) -> LossFunction:
        UTTERANCE_LOSSES[name] = UtteranceLoss(name, function, summary, takes_extra_negatives)
        return function

    return register


def _no_extra_negatives(name: str, extra_negatives: Optional[torch.Tensor]) -> None:
    if extra_negatives is not None:
        raise ValueError(f"utterance.loss={name} takes no extra negatives (only nt-xent does)")


@register_utterance_loss("nt-xent", "SimCLR's cross-entropy over cosines / temperature, 2N - 2 negatives", True)
def _nt_xent(a, b, config, generator, extra_negatives):  # noqa: ANN001, ANN202 (see LossFunction)
    return nt_xent_loss(a, b, config.temperature, extra_negatives)


@register_utterance_loss("triplet", "max(0, D(anchor, positive) - D(anchor, negative) + margin)")
def _triplet(a, b, config, generator, extra_negatives):  # noqa: ANN001, ANN202
    _no_extra_negatives("triplet", extra_negatives)
    return triplet_loss(a, b, config.margin, config.triplet_negative, generator)


@register_utterance_loss("margin", "y D^2 + (1 - y) max(0, margin - D)^2 over all view pairs")
def _margin(a, b, config, generator, extra_negatives):  # noqa: ANN001, ANN202
    _no_extra_negatives("margin", extra_negatives)
    return margin_loss(a, b, config.margin)
