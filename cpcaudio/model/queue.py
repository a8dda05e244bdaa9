"""A MoCo-style queue of negatives: latents of earlier batches, made by a momentum copy of the encoder.

After He et al. (2020), "Momentum Contrast for Unsupervised Visual Representation Learning". With
``predictor.queue_size = Q > 0`` a :class:`~cpcaudio.model.CPCModel` holds a :class:`MomentumQueue` as
``model.momentum`` (``None`` when Q = 0). The choices, in the order a training step meets them:

* **Negatives.** In a training forward (``model.training``) InfoNCE scores every prediction p_{b,t,k}
  against its positive, its N negatives from the in-batch pool (``predictor.negative_sampling``,
  unchanged) and the *filled* queue entries: all of them (``predictor.queue_negatives = 0``, MoCo's
  choice: one (B*T, Q) matrix product per step) or M = ``queue_negatives`` of them drawn uniformly with
  replacement for every (b, t, k) with the forward's generator (scored by
  :func:`cpcaudio.model.sampled_scores.sampled_scores`). The cross-entropy keeps the positive at index 0
  over [positive, N pool negatives, queue negatives] (:func:`with_queue_scores`). The positive and the
  in-batch negatives stay the encoder's z, with their gradients; the queue entries carry none (the
  prediction, and through it the heads and the context, does get one). The in-batch scoring path
  (``pool`` / ``sampled``, through the context or not) is chosen as without a queue. An empty queue (the
  first step) adds nothing, so that loss is exactly the queue-less one.
* **Keys.** After the loss, under ``no_grad``, the momentum encoder encodes the batch's ``signal`` (the
  targets' version when a ``context_signal`` is given) and :func:`select_keys` enqueues
  ``min(B*T, max(1, Q // QUEUE_SPAN))`` of its valid frames, drawn uniformly without replacement with the
  forward's generator: a subset, so that the queue holds frames of at least the last ``QUEUE_SPAN`` = 8
  batches rather than one batch's strongly correlated neighbouring frames (a batch with fewer valid
  frames repeats them). A batch never scores its own keys: they enter after its loss.
* **FIFO.** :class:`LatentQueue` holds (Q, C) float32 latents, a write pointer and a fill count (buffers);
  an enqueue writes at the pointer and wraps around, overwriting the oldest entries first. Until the
  queue is full its filled entries are rows ``0 .. count - 1``.
* **Momentum update.** The momentum encoder is a copy of the encoder made with the model (so the two start
  equal) whose weights are *buffers*, not parameters: optimisers, parameter counts, gradient clipping and
  DDP's gradient reduction never see them. After every optimiser step (once per step under gradient
  accumulation) the trainer calls :meth:`CPCModel.momentum_update`: theta_k <- m * theta_k + (1 - m) *
  theta_q for every weight (m = ``predictor.momentum``). Its own buffers (the running statistics of
  ``encoder.normalization = batch``) follow its own forward passes, as MoCo's do; it runs in the model's
  mode.
* **Evaluation.** ``model.eval()`` forwards (validation, extraction) neither score nor fill the queue, so
  validation losses compare with those of runs without a queue; extraction, export and the probes use
  ``encode`` / ``context`` only and ignore the momentum encoder.
* **Checkpoints.** The momentum encoder's weights and the queue's latents, pointer and count are in
  ``model.state_dict()`` (keys ``momentum.*``), so ``last.pt`` carries them and a resume is exact.
  Checkpoints of models without a queue (every one written before it existed) hold no such key and load
  as before.
* **Distributed.** Each rank enqueues its own batch's keys into its own copy, but DDP broadcasts rank 0's
  buffers (``broadcast_buffers``, its default) at the first forward of every optimiser step, so every
  rank scores against rank 0's queue (under gradient accumulation plus its own earlier micro-batches of
  the step). We accept that: every rank starts each step with the queue rank 0 saves, so a resume is exact
  on every rank; the cost is one broadcast of the queue and the momentum weights per step. Batches must
  have the same shape on every rank (they do) so that the ranks' write pointers agree. SyncBatchNorm
  (``train.sync_batch_norm`` with ``encoder.normalization = batch``) is refused: it cannot take over batch
  norms whose weights are buffers.
* **torch.compile.** Scoring and filling run eagerly (:meth:`MomentumQueue.negatives` and
  :meth:`MomentumQueue.push` are excluded from compilation); the loss sees a queue that grows until it is
  full, so a compiled loss recompiles a few times at the start.

* **Utterance keys (nt-xent).** With ``utterance.loss = nt-xent`` (:mod:`cpcaudio.model.utterance`) and
  ``utterance.queue_size = U > 0`` (default 1024) the momentum queue also holds :class:`UtteranceKeys`
  (``model.momentum.utterance``; None otherwise), MoCo v2's keys for the utterance loss: momentum copies
  of the context network and of the utterance projection(s) (weights as buffers, started equal, moved by
  the same update with the same m) and a second :class:`LatentQueue` of U unit vectors in the projected
  space. The InfoNCE queue's z cannot serve there: they are encoder latents, not utterance embeddings.
  A training forward passes the filled keys to nt-xent as extra negatives of all 2N anchors (an empty
  queue adds nothing: the first step's loss is the queue-less one); after its loss the momentum encoder,
  context and projection make the keys of the batch's second view (``crop`` / ``augment``: one per
  window, an extra momentum encoder and context pass over ``view_signal``; ``channels``: every group's,
  G per window, from the momentum latents of ``signal``, no extra encoder pass) and they join the FIFO.
  A window's own keys never score against it in its batch; in later batches another window of the same
  utterance may be a (false) negative, so U stays small next to the number of utterances (1024: 128
  batches of 8). Everything else (evaluation, checkpoints under ``momentum.utterance.*``, DDP, eager
  scoring) is as for the InfoNCE queue. ``utterance.queue_size = 0``, another utterance loss or
  ``predictor.queue_size = 0`` build none (the state-dict keys of such models are unchanged).

The batch's momentum latents are ``CPCOutput.momentum_latents`` and the queues' entries
``model.momentum.queue.entries()`` and ``model.momentum.utterance.queue.entries()``.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn

from cpcaudio.config import CPCConfig
from cpcaudio.errors import ConfigError
from cpcaudio.model.contrastive import UTTERANCE_LOSSES
from cpcaudio.model.cpu_kernels import linear
from cpcaudio.model.sampled_scores import sampled_scores
from cpcaudio.model.utterance import pool_context

QUEUE_SPAN = 8  # a batch enqueues at most queue_size // QUEUE_SPAN keys: the queue spans >= 8 batches


@dataclass
class QueueNegatives:
    """The queue entries a forward scores as extra negatives of every prediction.

    Attributes:
        latents: (Q, C) the filled entries (a copy: later enqueues do not change it).
        indices: None to score every entry against every (b, t, k); else (batch, T, K, M) long indices
            into the Q entries, M per (b, t, k).
    """

    latents: torch.Tensor
    indices: Optional[torch.Tensor] = None


def with_queue_scores(
    logits: torch.Tensor,
    queries: Sequence[torch.Tensor],
    keys: Sequence[torch.Tensor],
    indices: Optional[torch.Tensor],
) -> torch.Tensor:
    """``logits`` with the scores of the queue entries appended as further negatives.

    Args:
        logits: (batch, T, K, 1 + N) scores of the positive and the in-batch negatives.
        queries: K tensors (batch * T, D), the queries of each step (as scored for ``logits``).
        keys: K tensors (Q, D), the queue entries as keys of each step (the same tensor repeated where
            the steps share it).
        indices: None (every entry, a dense product per step) or (batch, T, K, M) indices into the Q rows.

    Returns:
        (batch, T, K, 1 + N + Q), or (batch, T, K, 1 + N + M) with ``indices``.
    """
    batch, frames, steps, _ = logits.shape
    per_step = []
    for step in range(steps):
        if indices is None:
            per_step.append(linear(queries[step], keys[step]))  # (B*T, Q)
        else:
            chosen = indices[:, :, step].reshape(batch * frames, -1)  # (B*T, M)
            per_step.append(sampled_scores(queries[step], keys[step], chosen))  # (B*T, M)
    scores = torch.stack(per_step, dim=0).view(steps, batch, frames, -1)  # (K, B, T, Q|M)
    return torch.cat([logits, scores.permute(1, 2, 0, 3)], dim=-1)  # (B, T, K, 1+N+Q|M)


def select_keys(
    latents: torch.Tensor, frame_lengths: torch.Tensor, count: int, generator: Optional[torch.Generator] = None
) -> torch.Tensor:
    """``count`` valid frames of a batch, uniformly without replacement (repeated when fewer are valid).

    Runs on the device without reading anything back (no synchronisation).

    Args:
        latents: (batch, T, C).
        frame_lengths: (batch,) valid frames per sequence.
        count: keys wanted, at most batch * T.
        generator: the random source (None: the global one).

    Returns:
        (count, C): the chosen frames, valid ones only (a batch without any valid frame gives padding).
    """
    batch, frames, dim = latents.shape
    valid = (torch.arange(frames, device=latents.device) < frame_lengths.view(-1, 1)).reshape(-1)  # (B*T,)
    order = torch.rand(batch * frames, generator=generator, device=latents.device)
    order = order.masked_fill(~valid, 2.0).sort(stable=True).indices[:count]  # valid frames first, shuffled
    repeat = torch.arange(count, device=latents.device) % valid.sum().clamp(min=1)  # wraps over the valid ones
    return latents.reshape(batch * frames, dim)[order[repeat]]  # (count, C)


def frozen_copy(module: nn.Module) -> nn.Module:
    """A deep copy of ``module`` whose parameters became buffers of the same names (no gradients, and no
    place in ``parameters()``); its state-dict keys are the original's."""
    clone = copy.deepcopy(module)
    for submodule in clone.modules():
        for name, parameter in list(submodule.named_parameters(recurse=False)):
            delattr(submodule, name)
            submodule.register_buffer(name, parameter.detach())
        if isinstance(submodule, nn.RNNBase):
            submodule._init_flat_weights()  # the recurrent kernels read their weights from this list
    return clone


@torch.no_grad()
def ema_update(copy_: nn.Module, module: nn.Module, momentum: float) -> None:
    """theta_k <- m * theta_k + (1 - m) * theta_q for every weight theta_q of ``module``.

    Args:
        copy_: a :func:`frozen_copy` of ``module`` (theta_k, buffers of the parameters' names).
        module: the trained module (theta_q).
        momentum: m in [0, 1].
    """
    for name, weight in module.named_parameters():
        copy_.get_buffer(name).mul_(momentum).add_(weight.detach(), alpha=1.0 - momentum)


def uses_utterance_queue(config: CPCConfig) -> bool:
    """Whether the model keeps :class:`UtteranceKeys`: a MoCo queue, ``utterance.queue_size > 0`` and an
    utterance loss that takes extra negatives (nt-xent)."""
    loss = UTTERANCE_LOSSES.get(config.utterance.loss)
    takes_negatives = loss is not None and loss.takes_extra_negatives
    return takes_negatives and config.predictor.queue_size > 0 and config.utterance.queue_size > 0


def _refresh_counters(module: nn.Module, incompatible_keys: Any) -> None:
    """Load-state-dict post hook: read the loaded pointer and count into the Python-side copies."""
    module.refresh_counters()


class LatentQueue(nn.Module):
    """A FIFO of ``size`` latents of ``dim`` channels (buffers ``latents``, ``pointer``, ``count``).

    The pointer and count also live as Python ints (refreshed on ``load_state_dict``), so that neither a
    forward nor an enqueue reads a device value back.
    """

    def __init__(self, size: int, dim: int) -> None:
        super().__init__()
        if size < 1 or dim < 1:
            raise ValueError(f"a latent queue needs size >= 1 and dim >= 1, got {size} and {dim}")
        self.size = size
        self.register_buffer("latents", torch.zeros(size, dim))  # (Q, C), rows [0, count) filled
        self.register_buffer("pointer", torch.zeros(1, dtype=torch.long))  # (1,) the next row written
        self.register_buffer("count", torch.zeros(1, dtype=torch.long))  # (1,) filled rows, at most size
        self._pointer = 0
        self._count = 0
        self.register_load_state_dict_post_hook(_refresh_counters)

    @property
    def filled(self) -> int:
        """Number of filled entries (0 .. size)."""
        return self._count

    def refresh_counters(self) -> None:
        """Take the Python-side pointer and count from the buffers (after they were written directly)."""
        pointer, count = int(self.pointer), int(self.count)
        if not (0 <= pointer < self.size and 0 <= count <= self.size):
            raise ValueError(f"latent queue pointer {pointer} / count {count} out of range for size {self.size}")
        self._pointer, self._count = pointer, count

    def entries(self) -> torch.Tensor:
        """(filled, C): a copy of the filled entries (rows in storage order, not age order once wrapped)."""
        return self.latents[: self._count].clone()

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        """Write ``keys`` (n, C) at the pointer, wrapping around: the oldest entries are overwritten first.

        More keys than ``size``: only the last ``size`` are kept (those an enqueue one by one would leave).
        """
        if keys.dim() != 2 or keys.shape[1] != self.latents.shape[1]:
            raise ValueError(f"expected keys of shape (n, {self.latents.shape[1]}), got {tuple(keys.shape)}")
        keys = keys.detach()[-self.size :].to(self.latents.dtype)
        count = keys.shape[0]
        if count == 0:
            return
        positions = (self._pointer + torch.arange(count, device=self.latents.device)) % self.size  # (n,)
        self.latents.index_copy_(0, positions, keys)
        self._pointer = (self._pointer + count) % self.size
        self._count = min(self._count + count, self.size)
        self.pointer.fill_(self._pointer)
        self.count.fill_(self._count)


class UtteranceKeys(nn.Module):
    """Momentum copies of the context network and the utterance projections, and the FIFO of the unit
    keys they make (``utterance.queue_size`` of them; see "Utterance keys" in the module docstring).

    Args:
        context_network: the model's (copied; the copy's weights are buffers).
        projections: the :class:`~cpcaudio.model.utterance.UtteranceObjective`'s ``projections``, one per
            channel group with ``utterance.views = channels``, else one (copied likewise).
        config: the model's; ``utterance.queue_size``, ``pooling``, ``projection_dim`` and ``context.hidden_dim``.
    """

    def __init__(self, context_network: nn.Module, projections: nn.ModuleList, config: CPCConfig) -> None:
        super().__init__()
        self.pooling = config.utterance.pooling
        self.context_network = frozen_copy(context_network)
        self.projections = frozen_copy(projections)
        dim = config.utterance.projection_dim or config.context.hidden_dim // len(projections)
        self.queue = LatentQueue(config.utterance.queue_size, dim)

    def update(self, context_network: nn.Module, projections: nn.ModuleList, momentum: float) -> None:
        """The EMA of :func:`ema_update` for the context network's and the projections' weights."""
        ema_update(self.context_network, context_network, momentum)
        ema_update(self.projections, projections, momentum)

    @torch.compiler.disable  # the shape follows the fill count
    def negatives(self) -> Optional[torch.Tensor]:
        """(filled, D) a copy of the filled keys, the extra negatives of one forward; None while empty."""
        return self.queue.entries() if self.queue.filled else None

    @torch.compiler.disable
    @torch.no_grad()
    def push(self, latents: torch.Tensor, frame_lengths: torch.Tensor) -> torch.Tensor:
        """Make the keys of momentum latents and enqueue them (after the loss that used the queue).

        Args:
            latents: (batch, frames, encoder.hidden_dim) the momentum encoder's z of the key view.
            frame_lengths: (batch,) valid frames per sequence.

        Returns:
            (G * batch, D) the enqueued unit keys, group by group (G = 1 without channel groups).
        """
        context, _ = self.context_network(latents)  # (B, T, H)
        groups = context.chunk(len(self.projections), dim=-1)  # G x (B, T, H / G)
        with torch.autocast(context.device.type, enabled=False):
            keys = [
                F.normalize(projection(pool_context(group, frame_lengths, self.pooling).float()), dim=1)
                for projection, group in zip(self.projections, groups)
            ]  # G x (B, D)
        keys = torch.cat(keys)  # (G * B, D)
        self.queue.enqueue(keys)
        return keys


class MomentumQueue(nn.Module):
    """The momentum encoder and the queue of its latents (see the module docstring for every choice).

    Args:
        encoder: the model's encoder (copied; the copy's weights are buffers).
        config: the model's; ``predictor.queue_size`` (>= 1), ``momentum`` and ``queue_negatives`` are read.
        context_network, projections: the model's context network and utterance projections, copied into
            :class:`UtteranceKeys` (``self.utterance``) when :func:`uses_utterance_queue`; else unused.

    Raises:
        ConfigError: with ``train.sync_batch_norm`` and ``encoder.normalization = batch`` (SyncBatchNorm
            cannot take over batch norms whose weights are buffers).
    """

    def __init__(
        self,
        encoder: nn.Module,
        config: CPCConfig,
        context_network: Optional[nn.Module] = None,
        projections: Optional[nn.ModuleList] = None,
    ) -> None:
        super().__init__()
        if config.train.sync_batch_norm and config.encoder.normalization == "batch":
            raise ConfigError(
                "predictor.queue_size > 0 does not combine with train.sync_batch_norm=true and "
                "encoder.normalization=batch; set train.sync_batch_norm=false or another encoder.normalization"
            )
        self.momentum = config.predictor.momentum
        self.num_negatives = config.predictor.queue_negatives
        self.encoder = frozen_copy(encoder)
        self.queue = LatentQueue(config.predictor.queue_size, config.encoder.hidden_dim)
        self.utterance: Optional[UtteranceKeys] = None
        if uses_utterance_queue(config):
            if context_network is None or projections is None:
                raise ValueError("utterance keys need the model's context network and utterance projections")
            self.utterance = UtteranceKeys(context_network, projections, config)

    def update(
        self,
        encoder: nn.Module,
        context_network: Optional[nn.Module] = None,
        projections: Optional[nn.ModuleList] = None,
    ) -> None:
        """theta_k <- m * theta_k + (1 - m) * theta_q for every weight of the momentum encoder, and of
        the utterance keys' context network and projections when there are some.

        Args:
            encoder: the trained encoder (theta_q), of the same structure.
            context_network, projections: the trained ones (needed with ``self.utterance``).
        """
        ema_update(self.encoder, encoder, self.momentum)
        if self.utterance is not None:
            if context_network is None or projections is None:
                raise ValueError("the utterance keys' update needs the context network and the projections")
            self.utterance.update(context_network, projections, self.momentum)

    @torch.no_grad()
    def encode(self, signal: torch.Tensor) -> torch.Tensor:
        """Args: signal (batch, channels, time), already normalised as the encoder's input.
        Returns: (batch, T, encoder.hidden_dim) the momentum encoder's latents (no gradient)."""
        encoded, _ = self.encoder(signal)  # (B, C, T)
        return encoded.transpose(1, 2)  # (B, T, C)

    @torch.compiler.disable  # shapes follow the fill count: run eagerly rather than recompile
    def negatives(
        self, batch: int, frames: int, steps: int, generator: Optional[torch.Generator] = None
    ) -> Optional[QueueNegatives]:
        """The queue entries for one forward's loss (None while the queue is empty).

        Args:
            batch, frames, steps: B, T and K of the predictions.
            generator: draws the M entries of every (b, t, k) when ``queue_negatives`` > 0.
        """
        filled = self.queue.filled
        if filled == 0:
            return None
        latents = self.queue.entries()  # (Q', C)
        indices = None
        if self.num_negatives > 0:
            shape = (batch, frames, steps, self.num_negatives)
            indices = torch.randint(filled, shape, generator=generator, device=latents.device)  # (B, T, K, M)
        return QueueNegatives(latents, indices)

    @torch.compiler.disable
    @torch.no_grad()
    def push(
        self, signal: torch.Tensor, frame_lengths: torch.Tensor, generator: Optional[torch.Generator] = None
    ) -> torch.Tensor:
        """Encode ``signal`` with the momentum encoder and enqueue a subset of its valid frames.

        Args:
            signal: (batch, channels, time), already normalised as the encoder's input.
            frame_lengths: (batch,) valid frames per sequence.
            generator: picks the frames (see :func:`select_keys`).

        Returns:
            (batch, T, C) the momentum latents of the whole batch (no gradient).
        """
        latents = self.encode(signal)  # (B, T, C)
        batch, frames, _ = latents.shape
        count = min(batch * frames, max(1, self.queue.size // QUEUE_SPAN))
        self.queue.enqueue(select_keys(latents, frame_lengths, count, generator))
        return latents
