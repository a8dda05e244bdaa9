"""InfoNCE over time steps and negative sampling, as plain functions (thin module in ``cpc.py``).

Definitions (CPC paper, eq. 4, with the choices written out):

* For every sequence b, frame t and step k = 1..K with t + k < L_b (L_b = valid frames of sequence b),
  the **positive** is z_{b,t+k} and the **prediction** is p_{b,t,k} = W_k c_{b,t}.
* The **score** of a candidate z is the plain dot product ``p . z`` (no scaling, no normalisation), i.e.
  the log of the paper's f_k(z, c_t) = exp(z^T W_k c_t); CPC_audio does the same.
* N **negatives** are drawn independently for every (b, t, k), uniformly with replacement from a pool:

  - ``batch``: every valid frame of every sequence in the batch (CPC_audio's default pool);
  - ``same-sequence``: every valid frame of sequence b.

  The positive z_{b,t+k} itself is never drawn (CPC_audio does not exclude it; we do): we draw a rank
  u uniformly in [0, M - 1) over the M pool frames and skip the positive's rank, which is exactly uniform
  over the pool minus the positive. Other frames may still have latents equal to the positive's
  (e.g. digital silence); those stay, as in the paper. Same-speaker pools come from the data sampler
  (batches drawn from one speaker), not from here.
* The **loss** is the cross-entropy of the (1 + N) scores with the positive as the target, averaged over
  all valid (b, t, k) (so steps with more valid positions weigh more, exactly as a flat mean).
* The **accuracy** of step k is the fraction of valid (b, t) where the positive has the highest score
  (``argmax == 0``; a tie with a negative counts as correct, as in CPC_audio).

Memory and speed: scores are computed as one matrix product of the predictions against the whole pool,
one step at a time, and the positive and the negatives are then gathered from it; the (batch, time,
step, negatives, channels) tensor of negative latents that CPC_audio materialises is never built. The
transient score matrix per step is (B*T) x (B*T) floats for ``batch`` and B x T x T for
``same-sequence``. The dense product does (B*T) / (1 + N) times the strictly needed multiply-adds (8x
for the paper's config), but at matrix-multiply speed on cache-resident operands, which beats gathering
N latents per position by far (see docs/performance.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from cpcaudio.model.cpu_kernels import linear

NEGATIVE_SAMPLING_MODES = ("batch", "same-sequence")


@dataclass
class InfoNCEResult:
    """Output of :func:`info_nce_loss`.

    Attributes:
        loss: scalar, mean cross-entropy over all valid (b, t, k).
        step_loss: (K,) mean cross-entropy per step (NaN for a step with no valid position).
        step_accuracy: (K,) fraction of valid positions where the positive scores highest.
        step_counts: (K,) number of valid positions per step.
    """

    loss: torch.Tensor
    step_loss: torch.Tensor
    step_accuracy: torch.Tensor
    step_counts: torch.Tensor


def valid_prediction_mask(frame_lengths: torch.Tensor, num_frames: int, num_steps: int) -> torch.Tensor:
    """Which (b, t, k) have a target inside the sequence.

    Args:
        frame_lengths: (batch,) valid frames per sequence.
        num_frames: T, the padded number of frames.
        num_steps: K.

    Returns:
        (batch, T, K) bool, True where t + k < frame_lengths[b] (k = 1..K).
    """
    t = torch.arange(num_frames, device=frame_lengths.device).view(1, -1, 1)
    k = torch.arange(1, num_steps + 1, device=frame_lengths.device).view(1, 1, -1)
    return (t + k) < frame_lengths.view(-1, 1, 1)


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
        mode: ``batch`` (pool = all valid frames of the batch) or ``same-sequence``.
        generator: optional torch generator (default: the global RNG, so ``torch.manual_seed`` applies).

    Returns:
        (batch, T, K, N) long tensor of flat frame indices ``b' * T + t'`` into the (batch * T) frames.
        Entries at invalid (b, t, k) (see :func:`valid_prediction_mask`) are arbitrary valid indices.
    """
    if mode not in NEGATIVE_SAMPLING_MODES:
        raise ValueError(f"negative sampling mode must be one of {NEGATIVE_SAMPLING_MODES}, got {mode!r}")
    device = frame_lengths.device
    batch = frame_lengths.shape[0]
    lengths = frame_lengths.clamp(max=num_frames).long()
    shape = (batch, num_frames, num_steps, num_negatives)
    t = torch.arange(num_frames, device=device).view(1, -1, 1, 1)
    k = torch.arange(1, num_steps + 1, device=device).view(1, 1, -1, 1)
    b = torch.arange(batch, device=device).view(-1, 1, 1, 1)
    # Positive frame index within its sequence; clamp keeps invalid (b, t, k) inside the sequence.
    positive_t = torch.minimum(t + k, (lengths.view(-1, 1, 1, 1) - 1).clamp(min=0))
    raw = torch.randint(0, 2**62, shape, device=device, generator=generator)

    if mode == "same-sequence":
        pool = (lengths.view(-1, 1, 1, 1) - 1).clamp(min=1)  # frames other than the positive
        rank = raw % pool
        negative_t = rank + (rank >= positive_t).long()  # skip the positive
        negative_t = torch.minimum(negative_t, (lengths.view(-1, 1, 1, 1) - 1).clamp(min=0))
        return b * num_frames + negative_t

    # batch mode: ranks over the list of all valid frames of the batch.
    valid = torch.arange(num_frames, device=device).view(1, -1) < lengths.view(-1, 1)  # (B, T)
    valid_flat = valid.reshape(-1).nonzero().squeeze(1)  # (M,) flat indices of valid frames
    total = valid_flat.numel()
    # Rank of each sequence's first frame in the valid list = frames of the earlier sequences.
    first_rank = torch.cumsum(lengths, 0) - lengths  # (B,)
    positive_rank = first_rank.view(-1, 1, 1, 1) + positive_t
    rank = raw % max(total - 1, 1)
    rank = rank + (rank >= positive_rank).long()
    rank = rank.clamp(max=max(total - 1, 0))
    return valid_flat[rank]


def _candidate_scores(
    predictions: torch.Tensor, latents: torch.Tensor, negative_indices: torch.Tensor, mode: str
) -> torch.Tensor:
    """Scores of each prediction against its positive and its sampled negatives: (B, T, K, 1 + N).

    ``[..., 0]`` is the positive z_{b,t+k} (at t + k >= T, where no target exists, a stand-in frame that
    the caller masks out), ``[..., 1:]`` the negatives. Computed one step at a time as a matrix product
    of the step's predictions against the whole pool, then gathered at the candidates, so the
    (B, T, K, N, C) tensor of negative latents is never built and every candidate costs the same
    dot product. Each step slice is a view and the steps are joined by ``stack``, so autograd never
    allocates (B, T, K, C)-sized zero tensors per step.
    """
    batch, frames, steps, dim = predictions.shape
    t = torch.arange(frames, device=latents.device).view(-1, 1)
    k = torch.arange(1, steps + 1, device=latents.device).view(1, -1)
    positive_t = torch.clamp(t + k, max=frames - 1)  # (T, K), frame index of the positive
    per_step = []
    if mode == "batch":
        offsets = (torch.arange(batch, device=latents.device) * frames).view(-1, 1, 1)
        positive = (offsets + positive_t).unsqueeze(-1)  # (B, T, K, 1) flat indices
        candidates = torch.cat([positive, negative_indices], dim=-1).reshape(batch * frames, steps, -1)
        pool = latents.reshape(batch * frames, dim)  # (B*T, C)
        for step, prediction in enumerate(predictions.unbind(2)):  # (B, T, C) views
            scores = linear(prediction.reshape(batch * frames, dim), pool)  # (B*T, B*T) = P_k @ pool^T
            per_step.append(scores.gather(1, candidates[:, step]))  # (B*T, 1+N)
        return torch.stack(per_step, dim=1).view(batch, frames, steps, -1)  # (B, T, K, 1+N)
    offsets = (torch.arange(batch, device=latents.device) * frames).view(-1, 1, 1, 1)
    local = negative_indices - offsets  # (B, T, K, N), indices within the sequence
    positive = positive_t.view(1, frames, steps, 1).expand(batch, -1, -1, -1)  # (B, T, K, 1)
    candidates = torch.cat([positive, local], dim=-1)  # (B, T, K, 1+N)
    pool_t = latents.transpose(1, 2)  # (B, C, T)
    for step, prediction in enumerate(predictions.unbind(2)):  # (B, T, C) views
        scores = torch.bmm(prediction, pool_t)  # (B, T, T)
        per_step.append(scores.gather(2, candidates[:, :, step]))  # (B, T, 1+N)
    return torch.stack(per_step, dim=2)  # (B, T, K, 1+N)


def info_nce_loss(
    predictions: torch.Tensor,
    latents: torch.Tensor,
    negative_indices: torch.Tensor,
    frame_lengths: Optional[torch.Tensor] = None,
    mode: str = "batch",
) -> InfoNCEResult:
    """InfoNCE over time steps (see the module docstring for every definition).

    Args:
        predictions: (batch, T, K, C) with ``[:, t, k-1] = W_k c_t``.
        latents: (batch, T, C), the encoder's z (positives and negatives both come from here).
        negative_indices: (batch, T, K, N) flat indices into the (batch * T) frames, e.g. from
            :func:`sample_negatives`. Tests pass their own through this seam.
        frame_lengths: (batch,) valid frames per sequence; None means all T are valid.
        mode: ``batch`` or ``same-sequence``; must match how ``negative_indices`` were drawn.

    Returns:
        :class:`InfoNCEResult`. Computed in float32 even under autocast.
    """
    batch, frames, steps, _ = predictions.shape
    if frame_lengths is None:
        frame_lengths = torch.full((batch,), frames, dtype=torch.long, device=latents.device)
    with torch.autocast(device_type=latents.device.type, enabled=False):
        predictions = predictions.float()
        latents = latents.float()
        logits = _candidate_scores(predictions, latents, negative_indices, mode)  # (B, T, K, 1+N)
        positive = logits[..., 0]  # (B, T, K)
        valid = valid_prediction_mask(frame_lengths, frames, steps)  # (B, T, K)
        # Cross-entropy with target 0: logsumexp - positive score.
        cross_entropy = torch.logsumexp(logits, dim=-1) - positive  # (B, T, K)
        correct = (logits.argmax(dim=-1) == 0) & valid
        weights = valid.to(cross_entropy.dtype)
        counts = weights.sum(dim=(0, 1))  # (K,)
        masked = cross_entropy.where(valid, torch.zeros_like(cross_entropy))
        loss = masked.sum() / counts.sum().clamp(min=1)
        step_loss = masked.sum(dim=(0, 1)) / counts.where(counts > 0, torch.nan)
        step_accuracy = correct.sum(dim=(0, 1)).to(counts.dtype) / counts.where(counts > 0, torch.nan)
    return InfoNCEResult(
        loss=loss, step_loss=step_loss.detach(), step_accuracy=step_accuracy.detach(), step_counts=counts
    )
