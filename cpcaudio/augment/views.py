"""The second view of every training window, for the utterance loss (``utterance.views`` crop or augment).

* ``crop``: a second window of the same utterance, its start uniform over the utterance (it may overlap
  the first; an utterance no longer than a window gives the same, whole utterance twice). When the
  augmentation is on (``augment.enabled``) the second window is augmented too, with draws of its own.
* ``augment``: the same window, augmented with draws of its own (``augment.enabled`` must be true); the
  first view is the one the CPC context reads (augmented with ``augment.target = past``).

``views = channels`` needs no second input (:mod:`cpcaudio.model.channel_groups`).

Determinism: the second start of window ``position`` of batch ``step`` comes from
``numpy.random.default_rng([VIEW_STREAM, seed, rank, world_size, step])`` and the second view's
augmentation from the chain seeded with :func:`view_seed` ``(seed)`` instead of ``seed``, so batch ``step``
and its views are a pure function of ``step`` (same after a resume and with any number of loader
workers) and the first view's windows and augmentation are those of a run without the utterance loss.

Validation (:func:`validation_view`): the held-out windows get a second crop, or a second view augmented
with the chain (the one exception to "validation is never augmented": an augment view needs it), and
the first view stays clean.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Optional

import numpy as np

from cpcaudio.augment.chain import AugmentationChain
from cpcaudio.config import CPCConfig
from cpcaudio.data.sampler import WindowBatch, WindowSampler

VIEW_STREAM = 0x5EC0  # first entry of the second view's seed sequences (distinct from the other streams)
VIEW_KINDS = ("crop", "augment")  # the utterance.views values that need a second input


def view_seed(seed: int) -> int:
    """The seed the second view's augmentation is drawn with (the first view's is ``seed`` itself)."""
    return int(np.random.SeedSequence([VIEW_STREAM, int(seed)]).generate_state(1)[0])


@dataclass
class SecondView:
    """Adds ``view_signal`` and ``view_lengths`` to a batch of ``sampler`` (see the module docstring).

    Attributes:
        sampler: the sampler the batches come from (its dataset, seed, rank and window size).
        kind: ``crop`` or ``augment``.
        chain: the augmentation of the second view, or None (not augmented; ``augment`` needs one).
    """

    sampler: WindowSampler
    kind: str
    chain: Optional[AugmentationChain] = None

    def __post_init__(self) -> None:
        if self.kind not in VIEW_KINDS:
            raise ValueError(f"kind must be one of {VIEW_KINDS}, got {self.kind!r}")
        if self.kind == "augment" and self.chain is None:
            raise ValueError("an augment view needs an augmentation chain")

    def __call__(self, batch: WindowBatch) -> WindowBatch:
        """``batch`` (as the sampler read it, not augmented) with its second view: ``view_signal`` (batch,
        channels, window) and ``view_lengths`` (batch,)."""
        view = self.crop(batch) if self.kind == "crop" else batch
        signal = view.signal
        if self.chain is not None:
            signal = self.chain.augment(view, view_seed(self.sampler.seed), self.sampler.rank)  # (B, C, window)
        return replace(batch, view_signal=signal, view_lengths=view.lengths)

    def crop(self, batch: WindowBatch) -> WindowBatch:
        """A second window of each window's utterance, as a batch of the same step."""
        sampler = self.sampler
        utterances = batch.utterance_index.numpy()
        rng = np.random.default_rng([VIEW_STREAM, sampler.seed, sampler.rank, sampler.world_size, int(batch.step)])
        max_start = np.maximum(sampler.dataset.lengths[utterances] - sampler.window_size, 0)
        starts = rng.integers(0, max_start + 1).astype(np.int64)
        return sampler.read(utterances, starts, batch.step)


def training_view(
    sampler: WindowSampler, config: CPCConfig, chain: Optional[AugmentationChain]
) -> Optional[SecondView]:
    """The second view of the training batches, or None when the config's utterance loss needs none.

    Args:
        sampler: the training sampler.
        config: the run's config.
        chain: the training augmentation (None when ``augment.enabled`` is false).
    """
    kind = config.utterance.views
    if config.utterance.loss == "none" or kind not in VIEW_KINDS:
        return None
    return SecondView(sampler, kind, chain)


def validation_view(batches: Any, config: CPCConfig) -> Optional[SecondView]:
    """The second view of the validation windows (crop: not augmented; augment: augmented), or None.

    Args:
        batches: what validation iterates; a view is made only for a :class:`WindowSampler`'s batches.
        config: the run's config (the augmentation settings and the data's sample rate).

    Raises:
        DataError: ``augment.noise_dir`` is not a folder of readable audio files.
    """
    kind = config.utterance.views
    if config.utterance.loss == "none" or kind not in VIEW_KINDS or not isinstance(batches, WindowSampler):
        return None
    chain = AugmentationChain(config.augment, config.data.sample_rate) if kind == "augment" else None
    return SecondView(batches, kind, chain)
