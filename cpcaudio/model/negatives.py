"""Negative sampling for InfoNCE: one function per mode, registered in :data:`NEGATIVE_SAMPLERS`.

Every sampler draws, for every (b, t, k), N frame indices uniformly with replacement from its pool,
never the positive frame (b, t + k) itself: it draws a rank ``u`` uniformly in ``[0, M - 1)`` over the
``M`` frames of the pool and skips the positive's rank, which is exactly uniform over the pool minus the
positive (CPC_audio does not exclude the positive; we do). Other frames whose latents equal the
positive's (e.g. digital silence) stay, as in the paper. Same-speaker pools come from the data sampler
(batches drawn from one speaker), not from here.

Modes:

* ``batch``: every valid frame of every sequence in the batch (CPC_audio's default pool);
* ``same-sequence``: every valid frame of sequence b;
* ``mixed``: the first ``N // 2`` negatives from sequence b (as ``same-sequence``), the other
  ``N - N // 2`` from the whole batch (as ``batch``). Negatives from other sequences (other speakers in a
  mixed-speaker batch) reward speaker information; negatives from the same sequence only reward what
  changes within it (phones). Half of each keeps both in the features.

A new mode is one function from :class:`Draws` (the batch's lengths, positives and raw random integers)
to indices, registered with :func:`register_negative_sampler`, plus its name in ``cpcaudio.config.NegativeSampling`` (a test checks
that the two agree). Its ``pool`` tells the loss how to score: ``batch`` (indices anywhere in the batch:
scores against all B*T frames) or ``sequence`` (indices inside the sequence: B products of T x T).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Optional

import torch

@dataclass(frozen=True)
class Draws:
    """What every sampler starts from: one batch's geometry and its raw random integers.

    Attributes:
        lengths: (batch,) valid frames per sequence (clamped to ``num_frames``).
        positive_t: (batch, T, K, 1) frame of the positive within its sequence (``t + k``, clamped into
            the sequence where no target exists; those positions are masked by the loss).
        raw: (batch, T, K, N) uniform integers in ``[0, 2**62)``, from the caller's generator.
        num_frames: T, padded frames per sequence.
    """

    lengths: torch.Tensor
    positive_t: torch.Tensor
    raw: torch.Tensor
    num_frames: int


SamplerFunction = Callable[[Draws], torch.Tensor]


@dataclass(frozen=True)
class NegativeSampler:
    """A registered sampling mode: its drawing function and the pool its indices come from."""

    name: str
    sample: SamplerFunction
    pool: Literal["batch", "sequence"]


NEGATIVE_SAMPLERS: dict[str, NegativeSampler] = {}


def register_negative_sampler(
    name: str, pool: Literal["batch", "sequence"]
) -> Callable[[SamplerFunction], SamplerFunction]:
    """Decorator: register ``function(draws) -> (batch, T, K, N) flat indices`` as mode ``name``."""

    def register(function: SamplerFunction) -> SamplerFunction:
        NEGATIVE_SAMPLERS[name] = NegativeSampler(name, function, pool)
        return function

    return register


def negative_sampler(mode: str) -> NegativeSampler:
    """The registered sampler of ``mode``; a ValueError naming the known modes otherwise."""
    try:
        return NEGATIVE_SAMPLERS[mode]
    except KeyError:
        raise ValueError(
            f"negative sampling mode must be one of {tuple(NEGATIVE_SAMPLERS)}, got {mode!r}"
        ) from None


def draws(
    frame_lengths: torch.Tensor,
    num_frames: int,
    num_steps: int,
    num_negatives: int,
    generator: Optional[torch.Generator] = None,
) -> Draws:
    """The :class:`Draws` of a batch: ``raw`` from ``generator`` (None: the global RNG)."""
    lengths = frame_lengths.clamp(max=num_frames).long()
    device = frame_lengths.device
    t = torch.arange(num_frames, device=device).view(1, -1, 1, 1)
    k = torch.arange(1, num_steps + 1, device=device).view(1, 1, -1, 1)
    positive_t = torch.minimum(t + k, (lengths.view(-1, 1, 1, 1) - 1).clamp(min=0))
    shape = (lengths.shape[0], num_frames, num_steps, num_negatives)
    raw = torch.randint(0, 2**62, shape, device=device, generator=generator)
    return Draws(lengths, positive_t, raw, num_frames)


@register_negative_sampler("batch", pool="batch")
def sample_batch(d: Draws) -> torch.Tensor:
    """Negatives from every valid frame of the batch (flat indices, as :func:`sample_negatives`)."""
    lengths = d.lengths
    valid = torch.arange(d.num_frames, device=lengths.device).view(1, -1) < lengths.view(-1, 1)  # (B, T)
    valid_flat = valid.reshape(-1).nonzero().squeeze(1)  # (M,) flat indices of valid frames
    total = valid_flat.numel()
    # Rank of each sequence's first frame in the valid list = frames of the earlier sequences.
    first_rank = torch.cumsum(lengths, 0) - lengths  # (B,)
    positive_rank = first_rank.view(-1, 1, 1, 1) + d.positive_t
    rank = d.raw % max(total - 1, 1)
    rank = rank + (rank >= positive_rank).long()
    rank = rank.clamp(max=max(total - 1, 0))
    return valid_flat[rank]


@register_negative_sampler("same-sequence", pool="sequence")
def sample_same_sequence(d: Draws) -> torch.Tensor:
    """Negatives from the valid frames of the positive's own sequence (as :func:`sample_negatives`)."""
    last = (d.lengths.view(-1, 1, 1, 1) - 1).clamp(min=0)  # (B, 1, 1, 1)
    rank = d.raw % last.clamp(min=1)  # ranks over the frames other than the positive
    negative_t = torch.minimum(rank + (rank >= d.positive_t).long(), last)  # skip the positive
    b = torch.arange(d.lengths.shape[0], device=d.lengths.device).view(-1, 1, 1, 1)
    return b * d.num_frames + negative_t


@register_negative_sampler("mixed", pool="batch")
def sample_mixed(d: Draws) -> torch.Tensor:
    """The first ``N // 2`` negatives from the positive's own sequence, the rest from the whole batch."""
    half = d.raw.shape[-1] // 2
    within = sample_same_sequence(Draws(d.lengths, d.positive_t, d.raw[..., :half], d.num_frames))
    across = sample_batch(Draws(d.lengths, d.positive_t, d.raw[..., half:], d.num_frames))
    return torch.cat([within, across], dim=-1)


NEGATIVE_SAMPLING_MODES = tuple(NEGATIVE_SAMPLERS)


def sample_negatives(
    frame_lengths: torch.Tensor,
    num_frames: int,
    num_steps: int,
    num_negatives: int,
    mode: str = "batch",
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """Draw negative frame indices for every (b, t, k), never the positive (b, t + k).

    Args:
        frame_lengths: (batch,) valid frames per sequence (frames >= length are padding).
        num_frames: T, padded frames per sequence.
        num_steps: K.
        num_negatives: N.
        mode: a registered mode (see the module docstring): ``batch`` or ``same-sequence``.
        generator: optional torch generator (default: the global RNG, so ``torch.manual_seed`` applies).

    Returns:
        (batch, T, K, N) long tensor of flat frame indices ``b' * T + t'`` into the (batch * T) frames.
        Entries at invalid (b, t, k) (see ``cpcaudio.model.loss.valid_prediction_mask``) are arbitrary
        valid indices.
    """
    sampler = negative_sampler(mode)
    return sampler.sample(draws(frame_lengths, num_frames, num_steps, num_negatives, generator))
