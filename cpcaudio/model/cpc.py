"""``CPCModel``: encoder + context network + prediction heads + InfoNCE, built from a ``CPCConfig``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from cpcaudio.config import CPCConfig
from cpcaudio.model.channel_groups import build_context_network, build_encoder
from cpcaudio.model.context import RecurrentState
from cpcaudio.model.heads import PredictionHeads
from cpcaudio.model.input_norm import standardize
from cpcaudio.model.loss import InfoNCEResult, heads_info_nce
from cpcaudio.model.negatives import sample_negatives
from cpcaudio.model.queue import MomentumQueue
from cpcaudio.model.utterance import UtteranceObjective, enqueue_utterance_keys, utterance_views


@dataclass
class CPCOutput:
    """What :meth:`CPCModel.forward` returns.

    Attributes:
        loss: scalar loss trained on: the InfoNCE loss (mean over valid (b, t, k); 0 with
            ``utterance.cpc = false``) plus ``utterance.weight`` times ``utterance_loss`` when there is one.
        step_accuracy: (K,) accuracy of the positive against its negatives per step.
        step_loss: (K,) InfoNCE per step.
        latents: (batch, frames, encoder.hidden_dim) z of ``signal`` (the targets).
        context: (batch, frames, context.hidden_dim) c (of ``context_signal`` when one is given).
        frame_lengths: (batch,) valid frames per sequence.
        utterance_loss: scalar utterance-level loss (config ``utterance``, unweighted), or None when the
            model has none or the call gave no second view (see :mod:`cpcaudio.model.utterance`).
        momentum_latents: (batch, frames, encoder.hidden_dim) the momentum encoder's z of ``signal`` (no
            gradient; enqueued after the loss), or None outside training or without a queue
            (``predictor.queue_size = 0``; see :mod:`cpcaudio.model.queue`).
    """

    loss: torch.Tensor
    step_accuracy: torch.Tensor
    step_loss: torch.Tensor
    latents: torch.Tensor
    context: torch.Tensor
    frame_lengths: torch.Tensor
    utterance_loss: Optional[torch.Tensor] = None
    momentum_latents: Optional[torch.Tensor] = None


class CPCModel(nn.Module):
    """Contrastive Predictive Coding (van den Oord et al., 2018) for signals of any rate and channels.

    Example::

        model = CPCModel(CPCConfig())
        out = model(torch.randn(8, 1, 20480))   # out.loss, out.step_accuracy (12,)
    """

    def __init__(self, config: Optional[CPCConfig] = None) -> None:
        super().__init__()
        self.config = (config or CPCConfig()).validate()
        self.encoder = build_encoder(self.config)  # one per channel group with utterance.views=channels
        self.context_network = build_context_network(self.config)
        window_frames = self.encoder.num_frames(self.config.data.window_size)  # (transformer heads' positions)
        utterance = self.config.utterance
        self.heads: Optional[PredictionHeads] = None  # none when the utterance loss is trained alone
        if utterance.loss == "none" or utterance.cpc:
            self.heads = PredictionHeads(
                self.config.context.hidden_dim, self.config.encoder.hidden_dim, self.config.predictor, window_frames
            )
        self.utterance = UtteranceObjective(self.config) if utterance.loss != "none" else None
        self.momentum: Optional[MomentumQueue] = None  # a momentum encoder and its queue of negatives, or none
        if self.config.predictor.queue_size > 0:  # (with nt-xent also the utterance keys' momentum copies)
            projections = None if self.utterance is None else self.utterance.projections
            self.momentum = MomentumQueue(self.encoder, self.config, self.context_network, projections)

    # ---- geometry ----------------------------------------------------------------------------------
    @property
    def downsample_rate(self) -> int:
        """Input samples per output frame (160 for the paper's encoder)."""
        return self.encoder.geometry.hop

    @property
    def frame_rate(self) -> float:
        """Frames per second at ``config.data.sample_rate``."""
        return self.config.data.sample_rate / self.downsample_rate

    def num_frames(self, num_samples: int) -> int:
        """Exact number of frames for a signal of ``num_samples`` samples."""
        return self.encoder.num_frames(num_samples)

    # ---- the three stages --------------------------------------------------------------------------
    def _as_batch(self, signal: torch.Tensor) -> torch.Tensor:
        if signal.dim() == 2 and self.config.encoder.in_channels == 1:
            signal = signal.unsqueeze(1)  # (B, T) -> (B, 1, T)
        if signal.dim() != 3:
            raise ValueError(
                f"expected a signal of shape (batch, channels, time) or (batch, time) for mono, "
                f"got {tuple(signal.shape)}"
            )
        return signal

    def normalize_input(self, signal: torch.Tensor, lengths: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Apply ``config.encoder.input_normalization`` to (batch, channels, time) with valid ``lengths``.

        ``sequence`` standardises each sequence and channel over its valid samples (training: each
        window; extraction: the whole signal, before any chunking); ``none`` passes the signal through.
        """
        if self.config.encoder.input_normalization == "none":
            return signal
        return standardize(signal, lengths)

    def encode(self, signal: torch.Tensor, lengths: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Args: signal (batch, channels, time), or (batch, time) when mono; lengths (batch,) or None.
        Returns: latents z (batch, frames, encoder.hidden_dim), input normalised per sequence."""
        signal = self.normalize_input(self._as_batch(signal), lengths)
        latents, _ = self.encoder(signal)
        return latents.transpose(1, 2)  # (B, T, C)

    def context(self, latents: torch.Tensor, state: Optional[RecurrentState] = None) -> torch.Tensor:
        """Args: latents (batch, frames, encoder.hidden_dim). Returns: c (batch, frames, context.hidden_dim)."""
        context, _ = self.context_network(latents, state)
        return context

    def momentum_update(self) -> None:
        """After every optimiser step: move the momentum encoder's weights towards the encoder's,
        theta_k <- m * theta_k + (1 - m) * theta_q (``predictor.momentum``), and those of the utterance
        keys' context network and projections towards the model's (nt-xent); nothing without a queue."""
        if self.momentum is not None:
            projections = None if self.utterance is None else self.utterance.projections
            self.momentum.update(self.encoder, self.context_network, projections)

    def extract(
        self,
        signal: torch.Tensor,
        sample_rate: int,
        layer: str = "context",
        lengths: Optional[torch.Tensor] = None,
        chunk_seconds: Optional[float] = None,
        **options,
    ):
        """Frozen features of one signal (time,)/(channels, time) or a padded batch (batch, channels, time)
        with ``lengths`` (tensors or numpy arrays); chunked, resampled, under inference mode. Returns
        :class:`cpcaudio.extract.Features`; see :func:`cpcaudio.extract.extract` for every argument."""
        from cpcaudio.extract.features import extract

        return extract(self, signal, sample_rate, layer=layer, lengths=lengths, chunk_seconds=chunk_seconds, **options)

    def forward(
        self,
        signal: torch.Tensor,
        lengths: Optional[torch.Tensor] = None,
        negative_indices: Optional[torch.Tensor] = None,
        generator: Optional[torch.Generator] = None,
        context_signal: Optional[torch.Tensor] = None,
        view_signal: Optional[torch.Tensor] = None,
        view_lengths: Optional[torch.Tensor] = None,
    ) -> CPCOutput:
        """Encode, summarise, predict and score with InfoNCE.

        Args:
            signal: (batch, channels, time) or (batch, time) for mono.
            lengths: (batch,) valid samples per sequence (padding at the end), or None if all valid.
            negative_indices: (batch, frames, K, N) flat frame indices to use as negatives (a seam for
                tests); None draws them with ``config.predictor.negative_sampling``.
            generator: the torch generator the negatives are drawn from (None: the global RNG). A
                trainer seeds one per step for exact resumes.
            context_signal: None, or a second version of ``signal`` with the same shape and ``lengths``
                (e.g. augmented, see :mod:`cpcaudio.augment`) that only the context network sees: the
                encoder also encodes it and the context c_t summarises it, while the targets z_{t+k} and
                the negatives stay those of ``signal``. Each of the two is encoded as a batch of its own.
            view_signal: None, or (batch, channels, time') the second view of every window for the
                utterance loss with ``utterance.views`` ``crop`` or ``augment`` (see
                :mod:`cpcaudio.model.utterance`); encoded as a batch of its own. Not needed for ``channels``.
            view_lengths: (batch,) valid samples of ``view_signal``, or None if all valid.

        Returns:
            :class:`CPCOutput` with the loss, per-step accuracy and per-step loss (NaN without InfoNCE,
            ``utterance.cpc = false``), and the utterance loss.
        """
        signal = self.normalize_input(self._as_batch(signal), lengths)
        encoded, frame_lengths = self.encoder(signal, lengths)  # (B, C, T), (B,) or None
        latents = encoded.transpose(1, 2)  # (B, T, C)
        context_latents = latents
        if context_signal is not None:
            context_input = self._as_batch(context_signal)
            if context_input.shape != signal.shape:
                expected, got = tuple(signal.shape), tuple(context_input.shape)
                raise ValueError(f"context_signal must have the signal's shape {expected}, got {got}")
            context_input = self.normalize_input(context_input, lengths)
            context_latents = self.encoder(context_input, lengths)[0].transpose(1, 2)  # (B, T, C)
        context = self.context(context_latents)  # (B, T, H)
        batch, frames, _ = latents.shape
        if frame_lengths is None:
            frame_lengths = torch.full((batch,), frames, dtype=torch.long, device=latents.device)
        predictor = self.config.predictor
        momentum = self.momentum if self.training else None  # the MoCo queue: training forwards only
        if self.heads is None:  # utterance.cpc = false: no InfoNCE
            missing = torch.full((predictor.num_steps,), float("nan"), device=latents.device)
            result = InfoNCEResult(latents.new_zeros(()), missing, missing, torch.zeros_like(missing))
        else:
            if negative_indices is None:
                negative_indices = sample_negatives(
                    frame_lengths, frames, predictor.num_steps, predictor.num_negatives,
                    predictor.negative_sampling, generator=generator,
                )
            queue = None if momentum is None else momentum.negatives(batch, frames, predictor.num_steps, generator)
            # The heads' predictions W_k c_t (B, T, K, C) scored against z, or through c for linear heads.
            result = heads_info_nce(
                self.heads, context, latents, negative_indices, frame_lengths, predictor.negative_sampling,
                queue=queue,
            )  # fmt: skip
        loss, utterance_loss, views = result.loss, None, None
        keys = None if momentum is None else momentum.utterance  # nt-xent's queue of utterance keys, or none
        if self.utterance is not None:  # after the negatives: a random triplet negative draws from the generator
            views = utterance_views(self, context, frame_lengths, view_signal, view_lengths)
            if views is not None:
                extra = None if keys is None else keys.negatives()  # (Q', D) or None
                utterance_loss = self.utterance(*views, generator=generator, extra_negatives=extra)
                loss = loss + self.config.utterance.weight * utterance_loss
        # The batch's keys enter the queues after its loss: a batch never scores its own keys.
        momentum_latents = None if momentum is None else momentum.push(signal, frame_lengths, generator)
        if keys is not None and views is not None:
            enqueue_utterance_keys(self, momentum_latents, frame_lengths, view_signal, view_lengths)
        return CPCOutput(
            loss=loss,
            step_accuracy=result.step_accuracy,
            step_loss=result.step_loss,
            latents=latents,
            context=context,
            frame_lengths=frame_lengths,
            utterance_loss=utterance_loss,
            momentum_latents=momentum_latents,
        )
