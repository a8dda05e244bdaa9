"""The training batch stream: sampled windows plus their augmentation, made ahead in loader workers.

Batch ``n`` is a pure function of ``n`` (the sampler's :meth:`~cpcaudio.data.WindowSampler.batch` and
the chain's seeded draws), so the stream is the same for any number of workers and after any resume:
``data.num_workers = 0`` makes each batch in the training process when the step asks for it (no
DataLoader at all); ``N > 0`` starts ``N`` ``torch.utils.data.DataLoader`` worker processes that make
the next batches while the step runs, and the DataLoader hands them over in stream order. The main
process's sampler counts the batches *consumed* (not the ones made ahead), so a checkpoint's sampler state
resumes at the first batch the step has not used.

With ``augment.target = past`` a batch carries the clean windows in ``signal`` (the targets and negatives)
and the augmented ones in ``context_signal`` (the context network's input); with ``both`` the augmented
windows replace ``signal``. An utterance loss with ``utterance.views`` crop or augment adds the second view
(``view_signal``, ``view_lengths``; :mod:`cpcaudio.augment.views`).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any, Optional, Union

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from cpcaudio.augment.chain import AugmentationChain
from cpcaudio.augment.views import SecondView, training_view
from cpcaudio.config import CPCConfig
from cpcaudio.data.sampler import WindowBatch, WindowSampler
from cpcaudio.errors import CPCAudioError


@dataclass
class BatchMaker:
    """Makes batch ``step``: the sampler's windows, augmented by ``chain`` (None: not augmented), with
    their second ``view`` (None: none)."""

    sampler: WindowSampler
    chain: Optional[AugmentationChain] = None
    target: str = "past"
    view: Optional[SecondView] = None

    def __call__(self, step: int) -> WindowBatch:
        batch = self.sampler.batch(step)
        if self.view is not None:
            batch = self.view(batch)  # (made from the windows before their augmentation)
        if self.chain is None:
            return batch
        augmented = self.chain.augment(batch, self.sampler.seed, self.sampler.rank)  # (B, C, window)
        if self.target == "past":
            return replace(batch, context_signal=augmented)
        return replace(batch, signal=augmented)


@dataclass
class _Failure:
    """A library error raised in a worker, carried to the main process (re-raised there as one line)."""

    error: CPCAudioError


class _BatchesByStep(Dataset):
    """Map-style view for the DataLoader: item ``step`` is batch ``step`` (or the error making it raised)."""

    def __init__(self, maker: BatchMaker) -> None:
        self.maker = maker

    def __getitem__(self, step: int) -> Union[WindowBatch, _Failure]:
        try:
            return self.maker(step)
        except CPCAudioError as error:
            return _Failure(error)


class _StepsFrom(Sampler):
    """The step numbers ``start, start + 1, ...`` (endless)."""

    def __init__(self, start: int) -> None:
        self.start = start

    def __iter__(self) -> Iterator[int]:
        return itertools.count(self.start)


class TrainingBatches:
    """An endless iterator of :class:`~cpcaudio.data.WindowBatch` from ``sampler.step`` on.

    Args:
        sampler: the training sampler (its ``step`` is the first batch; it is advanced as batches are
            consumed, so ``sampler.state_dict()`` stays the one to checkpoint).
        chain: the augmentation (None or inactive: windows as the sampler reads them).
        target: ``past`` or ``both`` (see the module docstring).
        num_workers: loader processes; 0 makes batches in this process.
        pin_memory: hand batches over in page-locked memory (for CUDA; workers only).
        view: the second view of every window (for the utterance loss), or None.
    """

    def __init__(
        self,
        sampler: WindowSampler,
        chain: Optional[AugmentationChain] = None,
        target: str = "past",
        num_workers: int = 0,
        pin_memory: bool = False,
        view: Optional[SecondView] = None,
    ) -> None:
        self.sampler = sampler
        self.maker = BatchMaker(sampler, chain if chain is not None and chain.active else None, target, view)
        self.num_workers = int(num_workers)
        self._loader: Optional[Iterator[Any]] = None
        if self.num_workers > 0:
            loader = DataLoader(
                _BatchesByStep(self.maker), batch_size=None, sampler=_StepsFrom(sampler.step),
                num_workers=self.num_workers, pin_memory=pin_memory,
            )  # fmt: skip
            self._loader = iter(loader)

    def __iter__(self) -> TrainingBatches:
        return self

    def __next__(self) -> WindowBatch:
        if self._loader is None:
            batch = self.maker(self.sampler.step)
        else:
            batch = next(self._loader)
            if isinstance(batch, _Failure):
                raise batch.error
            if batch.step != self.sampler.step:  # internal invariant: the DataLoader keeps the order
                raise AssertionError(f"loader gave batch {batch.step}, expected {self.sampler.step}")
        self.sampler.step = batch.step + 1
        return batch

    def state_dict(self) -> dict:
        """The sampler's state: the first batch not yet consumed (see :meth:`WindowSampler.state_dict`)."""
        return self.sampler.state_dict()

    def close(self) -> None:
        """Stop the worker processes (if any); the iterator cannot be used afterwards."""
        loader, self._loader = self._loader, None
        if loader is not None:
            shutdown = getattr(loader, "_shutdown_workers", None)
            if shutdown is not None:
                shutdown()

    def __enter__(self) -> TrainingBatches:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def training_batches(
    sampler: WindowSampler, config: CPCConfig, sample_rate: int, device: Optional[torch.device] = None
) -> TrainingBatches:
    """The training run's batch stream: ``config.augment`` (when enabled) and the utterance loss's second
    view (when it needs one) in ``config.data.num_workers`` worker processes.

    Args:
        sampler: this rank's training sampler, at the step to continue from.
        config: the run's config.
        sample_rate: the dataset's samples per second.
        device: the training device (CUDA: batches come in page-locked memory).

    Raises:
        DataError: ``augment.noise_dir`` is not a folder of readable audio files.
    """
    chain = AugmentationChain(config.augment, sample_rate) if config.augment.enabled else None
    pin = device is not None and device.type == "cuda"
    view = training_view(sampler, config, chain)
    return TrainingBatches(sampler, chain, config.augment.target, config.data.num_workers, pin_memory=pin, view=view)
