"""InfoNCE over time steps, scored against the pool or at the sampled candidates only.

Definitions (CPC paper, eq. 4, with the choices written out):

* For every sequence b, frame t and step k = 1..K with t + k < L_b (L_b = valid frames of sequence b),
  the **positive** is z_{b,t+k} and the **prediction** is p_{b,t,k} = W_k c_{b,t}.
* The **score** of a candidate z is the plain dot product ``p . z`` (no scaling, no normalisation), i.e.
  the log of the paper's f_k(z, c_t) = exp(z^T W_k c_t); CPC_audio does the same.
* N **negatives** are drawn independently for every (b, t, k), uniformly with replacement from a pool
  (``batch``: every valid frame of the batch, CPC_audio's default; ``same-sequence``: the valid frames
  of sequence b), never the positive itself: see :mod:`cpcaudio.model.negatives`, where each mode is
  one registered function.
* The **loss** is the cross-entropy of the (1 + N) scores with the positive as the target, averaged over
  all valid (b, t, k) (so steps with more valid positions weigh more, exactly as a flat mean).
* The **accuracy** of step k is the fraction of valid (b, t) where the positive has the highest score
  (the positive scores strictly above every negative: a tie with a negative counts as wrong, unlike
  CPC_audio's ``argmax == 0``, so that a collapsed model (all scores equal) or a NaN run shows
  accuracy 0, not 1).

How the (B, T, K, 1 + N) candidate scores are computed (``path``; the same numbers up to float rounding):

* ``pool``: per step, one matrix product of the step's B*T predictions against the whole pool ((B*T)^2
  scores for ``batch``, B T^2 for ``same-sequence``), then the candidates are gathered from it. Products
  run at matrix-multiply speed, but the work is pool / (1 + N) times the needed (8x at the paper's batch of
  8, growing with the batch), and so is the transient score matrix.
* ``sampled``: only the 1 + N candidate scores of every prediction, forward and backward
  (:func:`cpcaudio.model.sampled_scores.sampled_scores`): cost per sequence independent of the batch.

``auto`` (the default) takes ``sampled`` when pool / (1 + N) exceeds ``SAMPLED_MIN_RATIO`` for the
device; :func:`scoring_path` forces one for a block of code (benchmarks, tests).

For linear heads, :func:`info_nce_loss_linear` scores through the context: p . z = W_k c . z + b_k . z
= [c, 1] . [W_k^T z, b_k . z], so the queries are the (H + 1)-wide contexts and the keys one product of the
latents with the heads' weights; every score then costs H + 1 instead of C multiply-adds (half for the
paper's H = 256, C = 512) and the (B, T, K, C) predictions are never built. :func:`heads_info_nce`
chooses it where it is cheaper. The (B, T, K, N, C) tensor of negative latents is never built on any path.

With a MoCo queue (``predictor.queue_size > 0``, :mod:`cpcaudio.model.queue`) every path appends the scores
of the queue entries to the (1 + N) candidates (``queue=``); without one (None) nothing changes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Optional

import torch

from cpcaudio.model.cpu_kernels import fast_paths_requested, linear
from cpcaudio.model.heads import PredictionHeads
from cpcaudio.model.negatives import NEGATIVE_SAMPLING_MODES, negative_sampler, sample_negatives  # noqa: F401
from cpcaudio.model.queue import QueueNegatives, with_queue_scores
from cpcaudio.model.sampled_scores import sampled_scores


SCORING_PATHS = ("pool", "sampled")
# pool / (1 + N) above which the sampled path is cheaper, per device type. CPU: measured (paper model,
# docs/performance.md); CUDA: an estimate (dense float32 products are ~20x a CPU core's, gathers ~50x);
# other devices keep the pool path.
SAMPLED_MIN_RATIO: dict[str, float] = {"cpu": 2.0, "cuda": 16.0}
_FORCED_PATH: Optional[str] = None
_FORCED_THROUGH_CONTEXT: Optional[bool] = None


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


def _check_path(path: Optional[str]) -> None:
    if path is not None and path not in SCORING_PATHS:
        raise ValueError(f"scoring path must be one of {SCORING_PATHS} or None (automatic), got {path!r}")


@contextlib.contextmanager
def scoring_path(path: Optional[str], through_context: Optional[bool] = None) -> Iterator[None]:
    """Use scoring ``path`` (``pool`` or ``sampled``) for every InfoNCE in the block; None: automatic.

    ``through_context`` forces (True, where the heads are linear) or forbids (False) scoring through the
    context in :func:`heads_info_nce`; None: where cheaper. An explicit ``path=`` argument still wins.
    """
    global _FORCED_PATH, _FORCED_THROUGH_CONTEXT
    _check_path(path)
    previous = _FORCED_PATH, _FORCED_THROUGH_CONTEXT
    _FORCED_PATH, _FORCED_THROUGH_CONTEXT = path, through_context
    try:
        yield
    finally:
        _FORCED_PATH, _FORCED_THROUGH_CONTEXT = previous


def choose_scoring_path(pool_size: int, num_candidates: int, device: torch.device) -> str:
    """The cheaper scoring path for a pool of ``pool_size`` frames and 1 + N = ``num_candidates``.

    ``sampled`` when ``pool_size / num_candidates > SAMPLED_MIN_RATIO[device.type]``, else ``pool``;
    always ``pool`` with the fast paths switched off (``cpu_kernels.fast_paths(False)``: the plain
    formulation). A :func:`scoring_path` block overrides the choice.
    """
    if _FORCED_PATH is not None:
        return _FORCED_PATH
    if not fast_paths_requested():
        return "pool"
    threshold = SAMPLED_MIN_RATIO.get(device.type, float("inf"))
    return "sampled" if pool_size / max(num_candidates, 1) > threshold else "pool"


def _resolve_path(
    path: Optional[str], mode: str, batch: int, frames: int, candidates: int, device: torch.device
) -> str:
    """``path`` if given, else the cheaper path for ``mode``'s pool (B*T frames, or T per sequence)."""
    _check_path(path)
    if path is not None:
        return path
    pool_size = batch * frames if negative_sampler(mode).pool == "batch" else frames
    return choose_scoring_path(pool_size, candidates, device)


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


def _candidates(negative_indices: torch.Tensor) -> torch.Tensor:
    """(B, T, K, 1 + N) flat frame indices: ``[..., 0]`` the positive b*T + t + k (clamped to the last
    frame where t + k >= T: a stand-in that the mask removes), ``[..., 1:]`` the negatives."""
    batch, frames, steps, _ = negative_indices.shape
    device = negative_indices.device
    t = torch.arange(frames, device=device).view(1, -1, 1)
    k = torch.arange(1, steps + 1, device=device).view(1, 1, -1)
    offsets = (torch.arange(batch, device=device) * frames).view(-1, 1, 1)
    positive = offsets + torch.clamp(t + k, max=frames - 1)  # (B, T, K)
    return torch.cat([positive.unsqueeze(-1), negative_indices], dim=-1)


def _score_steps(
    queries: Sequence[torch.Tensor], keys: Sequence[torch.Tensor], candidates: torch.Tensor, pool: str, path: str
) -> torch.Tensor:
    """Scores ``queries[k][b*T + t] . keys[k][candidates[b, t, k, j]]`` of every (b, t, k, j).

    Args:
        queries, keys: K tensors each (B*T, D) (the same tensor repeated where it is shared by the steps).
        candidates: (B, T, K, 1 + N) flat indices into the B*T rows of the keys.
        pool: ``batch`` or ``sequence`` (the pool the negatives come from); path: ``pool`` or ``sampled``.

    Returns:
        (B, T, K, 1 + N) (a permuted view for the ``batch`` pool and the sampled path). Steps are computed
        one at a time and joined by ``stack``, so autograd never allocates (B, T, K, ...)-sized zero
        tensors per step.
    """
    batch, frames, steps, per_row = candidates.shape
    per_step = []
    if path == "sampled" or pool == "batch":
        # (K, B*T, 1+N): one contiguous slice per step, and step-major results whose gradients are too.
        by_step = candidates.reshape(batch * frames, steps, per_row).transpose(0, 1).contiguous()
        for step in range(steps):
            if path == "sampled":
                per_step.append(sampled_scores(queries[step], keys[step], by_step[step]))  # (B*T, 1+N)
            else:
                scores = linear(queries[step], keys[step])  # (B*T, B*T) = Q_k @ K_k^T
                per_step.append(scores.gather(1, by_step[step]))  # (B*T, 1+N)
        stacked = torch.stack(per_step, dim=0).view(steps, batch, frames, per_row)  # (K, B, T, 1+N)
        return stacked.permute(1, 2, 0, 3)  # (B, T, K, 1+N) view
    offsets = (torch.arange(batch, device=candidates.device) * frames).view(-1, 1, 1, 1)
    local = candidates - offsets  # (B, T, K, 1+N), frames within the sequence
    for step in range(steps):
        query = queries[step].view(batch, frames, -1)  # (B, T, D)
        key = keys[step].view(batch, frames, -1)
        scores = torch.bmm(query, key.transpose(1, 2))  # (B, T, T)
        per_step.append(scores.gather(2, local[:, :, step]))  # (B, T, 1+N)
    return torch.stack(per_step, dim=2)


def _reduce(logits: torch.Tensor, frame_lengths: torch.Tensor) -> InfoNCEResult:
    """Cross-entropy with target 0, accuracy and counts over the valid (b, t, k) of (B, T, K, 1+N) logits."""
    batch, frames, steps, _ = logits.shape
    positive = logits[..., 0]  # (B, T, K)
    valid = valid_prediction_mask(frame_lengths, frames, steps)  # (B, T, K)
    cross_entropy = torch.logsumexp(logits, dim=-1) - positive  # (B, T, K)
    correct = (logits[..., 0] > logits[..., 1:].amax(dim=-1)) & valid  # ties and NaN: not correct
    weights = valid.to(cross_entropy.dtype)
    counts = weights.sum(dim=(0, 1))  # (K,)
    masked = cross_entropy.where(valid, torch.zeros_like(cross_entropy))
    loss = masked.sum() / counts.sum().clamp(min=1)
    step_loss = masked.sum(dim=(0, 1)) / counts.where(counts > 0, torch.nan)
    step_accuracy = correct.sum(dim=(0, 1)).to(counts.dtype) / counts.where(counts > 0, torch.nan)
    return InfoNCEResult(
        loss=loss, step_loss=step_loss.detach(), step_accuracy=step_accuracy.detach(), step_counts=counts
    )


def _all_valid(batch: int, frames: int, device: torch.device) -> torch.Tensor:
    return torch.full((batch,), frames, dtype=torch.long, device=device)


def info_nce_loss(
    predictions: torch.Tensor,
    latents: torch.Tensor,
    negative_indices: torch.Tensor,
    frame_lengths: Optional[torch.Tensor] = None,
    mode: str = "batch",
    path: Optional[str] = None,
    queue: Optional[QueueNegatives] = None,
) -> InfoNCEResult:
    """InfoNCE over time steps (see the module docstring for every definition).

    Args:
        predictions: (batch, T, K, C) with ``[:, t, k-1] = W_k c_t``.
        latents: (batch, T, C), the encoder's z (positives and negatives both come from here).
        negative_indices: (batch, T, K, N) flat indices into the (batch * T) frames, e.g. from
            :func:`sample_negatives`. Tests pass their own through this seam.
        frame_lengths: (batch,) valid frames per sequence; None means all T are valid.
        mode: a registered negative-sampling mode (``cpcaudio.model.negatives``); must match how
            ``negative_indices`` were drawn (its pool decides how the ``pool`` path scores).
        path: ``pool``, ``sampled``, or None to choose by cost (:func:`choose_scoring_path`).
        queue: latents of earlier batches scored as further negatives of every (b, t, k), or None.

    Returns:
        :class:`InfoNCEResult`. Computed in float32 even under autocast.
    """
    batch, frames, steps, dim = predictions.shape
    if frame_lengths is None:
        frame_lengths = _all_valid(batch, frames, latents.device)
    path = _resolve_path(path, mode, batch, frames, negative_indices.shape[-1] + 1, latents.device)
    with torch.autocast(device_type=latents.device.type, enabled=False):
        predictions = predictions.float()
        pool = latents.float().reshape(batch * frames, dim)  # (B*T, C)
        queries = [step.reshape(batch * frames, dim) for step in predictions.unbind(2)]  # K x (B*T, C) views
        candidates = _candidates(negative_indices)
        logits = _score_steps(queries, [pool] * steps, candidates, negative_sampler(mode).pool, path)
        if queue is not None:
            logits = with_queue_scores(logits, queries, [queue.latents.float()] * steps, queue.indices)
        return _reduce(logits, frame_lengths)


def info_nce_loss_linear(
    context: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor],
    latents: torch.Tensor,
    negative_indices: torch.Tensor,
    frame_lengths: Optional[torch.Tensor] = None,
    mode: str = "batch",
    path: Optional[str] = None,
    queue: Optional[QueueNegatives] = None,
) -> InfoNCEResult:
    """InfoNCE of linear heads ``p_{b,t,k} = W_k c_{b,t} + b_k``, scored through the context.

    The same result as ``info_nce_loss(predictions, ...)`` with those predictions, computed as
    ``[c, 1] . [W_k^T z, b_k . z]``: queries (B*T, H + 1), keys per step (B*T, H + 1) from one product.

    Args:
        context: (batch, T, H), c.
        weight: (K * C, H), the fused heads' weight (rows k*C .. (k+1)*C - 1 are W_k), as
            ``PredictionHeads.projection.weight``.
        bias: (K * C,) or None.
        latents: (batch, T, C).
        negative_indices, frame_lengths, mode, path, queue: as :func:`info_nce_loss` (the queue's keys
            per step are ``[W_k^T q, b_k . q]``, like the latents').

    Returns:
        :class:`InfoNCEResult`, in float32 even under autocast.
    """
    batch, frames, hidden = context.shape
    dim = latents.shape[-1]
    steps = weight.shape[0] // dim
    if frame_lengths is None:
        frame_lengths = _all_valid(batch, frames, latents.device)
    path = _resolve_path(path, mode, batch, frames, negative_indices.shape[-1] + 1, latents.device)
    with torch.autocast(device_type=latents.device.type, enabled=False):
        query = context.float().reshape(batch * frames, hidden)  # (B*T, H)
        maps = weight.float().view(steps, dim, hidden).transpose(1, 2)  # (K, H, C): maps[k] = W_k^T
        if bias is not None:
            query = torch.cat([query, query.new_ones(batch * frames, 1)], dim=1)  # (B*T, H+1)
            maps = torch.cat([maps, bias.float().view(steps, 1, dim)], dim=1)  # (K, H+1, C)
        width = maps.shape[1]
        pool = latents.float().reshape(batch * frames, dim)  # (B*T, C)
        keys = linear(pool, maps.reshape(steps * width, dim))  # (B*T, K*D): [W_k^T z, b_k . z] per step
        keys = keys.view(batch * frames, steps, width).transpose(0, 1).contiguous()  # (K, B*T, D)
        candidates = _candidates(negative_indices)
        logits = _score_steps([query] * steps, keys.unbind(0), candidates, negative_sampler(mode).pool, path)
        if queue is not None:
            queue_keys = linear(queue.latents.float(), maps.reshape(steps * width, dim))  # (Q, K*D)
            queue_keys = queue_keys.view(-1, steps, width).transpose(0, 1).contiguous()  # (K, Q, D)
            logits = with_queue_scores(logits, [query] * steps, queue_keys.unbind(0), queue.indices)
        return _reduce(logits, frame_lengths)


def heads_info_nce(
    heads: PredictionHeads,
    context: torch.Tensor,
    latents: torch.Tensor,
    negative_indices: torch.Tensor,
    frame_lengths: Optional[torch.Tensor] = None,
    mode: str = "batch",
    path: Optional[str] = None,
    queue: Optional[QueueNegatives] = None,
) -> InfoNCEResult:
    """InfoNCE of ``heads`` on ``context``: through the context where that is cheaper (linear heads with
    H + 1 < C, fast paths on; :func:`scoring_path` may force either), else the heads' predictions through
    :func:`info_nce_loss`.

    Args:
        heads: the model's prediction heads.
        context: (batch, T, H); latents (batch, T, C); the rest as :func:`info_nce_loss`.
    """
    maps = heads.linear_maps()
    cheaper = context.shape[-1] + 1 < latents.shape[-1] and fast_paths_requested()
    if maps is not None and (cheaper if _FORCED_THROUGH_CONTEXT is None else _FORCED_THROUGH_CONTEXT):
        weight, bias = maps
        return info_nce_loss_linear(context, weight, bias, latents, negative_indices, frame_lengths, mode, path, queue)
    return info_nce_loss(heads(context), latents, negative_indices, frame_lengths, mode, path, queue)
