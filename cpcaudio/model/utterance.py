"""The utterance-level objective of a CPC model (config section ``utterance``): pool, project, contrast.

Each view of a window becomes one vector: its context frames c_t pooled over the valid frames
(``utterance.pooling``: ``mean``, or ``last``, the last valid frame, which is what CPC_audio's
speaker-window protocol reads), then a projection MLP g (SimCLR's: Linear(H, H), ReLU, Linear(H,
``projection_dim``); ``projection_dim = 0``: none). The loss of :data:`~cpcaudio.model.contrastive.UTTERANCE_LOSSES`
named by ``utterance.loss`` contrasts the two views across the batch. The projection is training-only:
extraction returns the encoder and context features as for any model.

The views (``utterance.views``):

* ``crop``: view 1 is the window the CPC context network reads; view 2 a second window of the same
  utterance (``view_signal``, drawn by :mod:`cpcaudio.augment.views`), encoded as a batch of its own.
* ``augment``: the same, view 2 being an independently augmented copy of the window (view 1 is
  augmented too: the CPC context's input with ``augment.target = past``).
* ``channels``: the channel groups' own contexts (:mod:`cpcaudio.model.channel_groups`) of the same
  window, each with its own projection (as CLIP's per-modality heads); with G > 2 groups the loss is
  the mean over the G (G - 1) / 2 pairs of groups. No second input is needed.

The losses run in float32 (autocast off): cosines over a temperature of 0.1 need more than bf16's
precision.

With a MoCo queue (``predictor.queue_size > 0``) and ``nt-xent``, a second queue holds the unit keys of
earlier windows, made by momentum copies of the encoder, the context network and the projection (MoCo v2;
``utterance.queue_size``, default 1024, 0: none): a training forward passes them to the loss as extra
negatives of every anchor, then :func:`enqueue_utterance_keys` adds the batch's own keys (see
:class:`cpcaudio.model.queue.UtteranceKeys`). Every ``views`` works: ``crop`` and ``augment`` enqueue the
key of each window's second view, ``channels`` the keys of each window's G groups.
"""

from __future__ import annotations

from itertools import combinations
from typing import Optional

import torch
from torch import nn

from cpcaudio.config import CPCConfig
from cpcaudio.model.contrastive import UTTERANCE_LOSSES


def pool_context(context: torch.Tensor, frame_lengths: torch.Tensor, pooling: str) -> torch.Tensor:
    """One vector per sequence from its valid context frames.

    Args:
        context: (batch, frames, dim).
        frame_lengths: (batch,) valid frames per sequence.
        pooling: ``mean`` (of the valid frames; zero for a sequence without any) or ``last`` (the last
            valid frame; frame 0 for a sequence without any).

    Returns:
        (batch, dim).
    """
    lengths = frame_lengths.to(context.device).long()
    if pooling == "last":
        last = (lengths - 1).clamp(min=0)  # (B,)
        return context[torch.arange(context.shape[0], device=context.device), last]
    if pooling != "mean":
        raise ValueError(f"pooling must be 'mean' or 'last', got {pooling!r}")
    valid = torch.arange(context.shape[1], device=context.device)[None, :] < lengths[:, None]  # (B, T)
    total = (context * valid.unsqueeze(-1).to(context.dtype)).sum(dim=1)  # (B, dim)
    return total / lengths.clamp(min=1).unsqueeze(-1).to(context.dtype)


class ProjectionHead(nn.Module):
    """SimCLR's g: Linear(dim, dim) -> ReLU -> Linear(dim, projection_dim); identity when projection_dim = 0."""

    def __init__(self, dim: int, projection_dim: int) -> None:
        super().__init__()
        self.layers: nn.Module = (
            nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, projection_dim))
            if projection_dim > 0
            else nn.Identity()
        )

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        """Args: pooled (batch, dim). Returns: (batch, projection_dim), or (batch, dim) without projection."""
        return self.layers(pooled)


class UtteranceObjective(nn.Module):
    """The projections and the loss of ``config.utterance`` (``loss`` other than ``none``).

    Args:
        config: the model's config; with ``views = channels`` one projection per channel group, each
            reading ``context.hidden_dim / G`` features, else one shared projection.
    """

    def __init__(self, config: CPCConfig) -> None:
        super().__init__()
        self.settings = config.utterance
        self.loss = UTTERANCE_LOSSES[self.settings.loss]
        groups = len(self.settings.channel_groups) if self.settings.views == "channels" else 1
        width = config.context.hidden_dim // groups
        self.projections = nn.ModuleList(ProjectionHead(width, self.settings.projection_dim) for _ in range(groups))

    def forward(
        self,
        contexts: list[torch.Tensor],
        frame_lengths: list[torch.Tensor],
        generator: Optional[torch.Generator] = None,
        extra_negatives: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """The utterance loss of two or more views of the same windows.

        Args:
            contexts: one (batch, frames_v, dim) context per view (the same batch of windows in the same order).
            frame_lengths: (batch,) valid frames of each view.
            generator: for the loss's random draws (``triplet_negative = random``).
            extra_negatives: (M, projection_dim) further negatives for ``nt-xent`` (e.g. a queue), or None.

        Returns:
            Scalar loss (float32): the mean over the pairs of views.
        """
        pooled = [pool_context(c, n, self.settings.pooling) for c, n in zip(contexts, frame_lengths)]
        projections = list(self.projections) * (len(pooled) if len(self.projections) == 1 else 1)
        with torch.autocast(pooled[0].device.type, enabled=False):
            embeddings = [g(p.float()) for g, p in zip(projections, pooled)]  # (B, projection_dim) each
            losses = [
                self.loss.function(embeddings[i], embeddings[j], self.settings, generator, extra_negatives)
                for i, j in combinations(range(len(embeddings)), 2)
            ]
        return torch.stack(losses).mean()


def utterance_views(
    model: nn.Module,
    context: torch.Tensor,
    frame_lengths: torch.Tensor,
    view_signal: Optional[torch.Tensor],
    view_lengths: Optional[torch.Tensor],
) -> Optional[tuple[list[torch.Tensor], list[torch.Tensor]]]:
    """The contexts of a batch's views and their valid frames, as :class:`UtteranceObjective` takes them.

    Args:
        model: the :class:`~cpcaudio.model.CPCModel`.
        context: (batch, frames, context.hidden_dim) the CPC pass's context (view 1).
        frame_lengths: (batch,) its valid frames.
        view_signal: (batch, channels, time) view 2 for ``crop`` and ``augment``, or None.
        view_lengths: (batch,) valid samples of ``view_signal`` (None: all valid).

    Returns:
        ``(contexts, frame_lengths)``, or None when the views need a ``view_signal`` and none was given
        (e.g. a plain ``model(signal)`` call).
    """
    settings = model.config.utterance
    if settings.views == "channels":
        groups = len(settings.channel_groups)
        return list(context.chunk(groups, dim=-1)), [frame_lengths] * groups  # (B, T, H / G) each
    if view_signal is None:
        return None
    if view_signal.shape[0] != context.shape[0]:
        raise ValueError(f"view_signal must hold the batch's {context.shape[0]} windows, got {view_signal.shape[0]}")
    view_context = model.context(model.encode(view_signal, view_lengths))  # (B, T', H)
    return [context, view_context], [frame_lengths, _valid_frames(model, view_lengths, view_context)]


def _valid_frames(model: nn.Module, lengths: Optional[torch.Tensor], encoded: torch.Tensor) -> torch.Tensor:
    """(batch,) valid frames of ``encoded`` (batch, frames, dim) for ``lengths`` valid samples (None: all)."""
    batch, frames = encoded.shape[:2]
    if lengths is None:
        return torch.full((batch,), frames, dtype=torch.long, device=encoded.device)
    return model.encoder.frame_lengths(lengths.to(encoded.device)).clamp(max=frames)  # (B,)


@torch.compiler.disable
@torch.no_grad()
def enqueue_utterance_keys(
    model: nn.Module,
    momentum_latents: torch.Tensor,
    frame_lengths: torch.Tensor,
    view_signal: Optional[torch.Tensor],
    view_lengths: Optional[torch.Tensor],
) -> torch.Tensor:
    """After the loss: add the momentum keys of the batch's key view to ``model.momentum.utterance``.

    The key view is the second view (``crop`` / ``augment``: ``view_signal``, through the momentum
    encoder), or every channel group of ``signal`` (``channels``: its momentum latents, already made).

    Args:
        model: the :class:`~cpcaudio.model.CPCModel`, with utterance keys.
        momentum_latents: (batch, frames, encoder.hidden_dim) the momentum encoder's z of ``signal``.
        frame_lengths: (batch,) their valid frames.
        view_signal: (batch, channels, time') the second view (not read with ``channels``).
        view_lengths: (batch,) valid samples of ``view_signal``, or None if all valid.

    Returns:
        (G * batch, D) the enqueued unit keys (G = 1 but with channel groups).
    """
    momentum = model.momentum
    if model.config.utterance.views != "channels":
        signal = model.normalize_input(model._as_batch(view_signal), view_lengths)
        momentum_latents = momentum.encode(signal)  # (B, T', C)
        frame_lengths = _valid_frames(model, view_lengths, momentum_latents)
    return momentum.utterance.push(momentum_latents, frame_lengths)
