"""Training windows from a prepared dataset: never across utterances, seeded, resumable, rank-sharded.

Batch ``n`` of the stream is a pure function of ``(seed, rank, world_size, n)`` and the dataset, so
resuming is just remembering ``n`` (:meth:`WindowSampler.state_dict`), and rerunning with the same
seed reproduces every batch. Sharding: the eligible utterances are shuffled once with the seed and dealt
to the ranks (``share = shuffled[rank::world_size]``), so ranks draw from disjoint utterances.

Modes:

- ``uniform``: each window picks an utterance with probability proportional to its length (uniform
  over samples, like CPC_audio's chunked buffer but without straddling), then a uniform start.
- ``same-speaker`` (CPC_audio's default): each batch picks a speaker with probability proportional to
  its amount of audio, then every window of the batch comes from that speaker's utterances as above.
- ``sequential``: walks the rank's utterances in dataset order, cutting each into consecutive
  non-overlapping windows (``pad``: the tail becomes one zero-padded window; ``skip``: the tail is
  dropped), and starts over at the end (epochs).

Utterances shorter than a window are padded with zeros and masked through ``lengths``
(``short_utterances="pad"``), or never drawn (``"skip"``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from cpcaudio.data.alignment import NO_LABEL, num_label_frames, window_label_indices
from cpcaudio.data.dataset import PreparedDataset
from cpcaudio.errors import DataError, UsageError
from cpcaudio.geometry import ceil_div

MODES: tuple[str, ...] = ("uniform", "same-speaker", "sequential")
SHORT_UTTERANCES: tuple[str, ...] = ("pad", "skip")
_SHARD_STREAM = 0x5EED  # seed-sequence tag of the shard shuffle (distinct from the batch streams)


@dataclass
class WindowBatch:
    """A batch of windows.

    Attributes:
        signal: float32 ``(batch, channels, window)``, zero after ``lengths``.
        lengths: int64 ``(batch,)`` valid samples of each window.
        utterance_index: int64 ``(batch,)`` utterance each window comes from.
        start: int64 ``(batch,)`` first sample of the window in its utterance.
        speaker: int64 ``(batch,)`` speaker id (index into ``dataset.speaker_vocabulary``).
        frame_labels: int64 ``(batch, ceil(window / label_hop))`` or ``None``; -1 = no label/padding.
            Pass a row to :func:`cpcaudio.data.frame_labels_for_encoder` to label encoder frames.
        step: position of this batch in the stream.
        context_signal: float32 ``(batch, channels, window)`` or ``None``: with ``augment.target = past``,
            the augmented windows that only the context network sees (``signal`` stays clean and gives
            the targets and negatives); see :mod:`cpcaudio.augment`.
        view_signal: float32 ``(batch, channels, window)`` or ``None``: the second view of every window for
            the utterance loss (``utterance.views`` crop or augment; :mod:`cpcaudio.augment.views`).
        view_lengths: int64 ``(batch,)`` valid samples of ``view_signal``, or ``None``.
    """

    signal: torch.Tensor
    lengths: torch.Tensor
    utterance_index: torch.Tensor
    start: torch.Tensor
    speaker: torch.Tensor
    frame_labels: Optional[torch.Tensor]
    step: int
    context_signal: Optional[torch.Tensor] = None
    view_signal: Optional[torch.Tensor] = None
    view_lengths: Optional[torch.Tensor] = None

    @property
    def mask(self) -> torch.Tensor:
        """bool ``(batch, window)``: True on valid samples."""
        positions = torch.arange(self.signal.shape[-1])
        return positions[None, :] < self.lengths[:, None]

    def to(self, device: torch.device | str) -> "WindowBatch":
        """The same batch with every tensor moved to ``device``."""
        return self._map(lambda t: t.to(device, non_blocking=True))

    def model_inputs(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
        """``(signal, lengths, context_signal)`` copied to ``device`` (non-blocking): the arguments of
        :meth:`cpcaudio.model.CPCModel.forward`; ``context_signal`` stays None when there is none."""
        move = lambda t: t.to(device, non_blocking=True) if t is not None else None  # noqa: E731
        return move(self.signal), move(self.lengths), move(self.context_signal)

    def view_inputs(self, device: torch.device) -> dict[str, torch.Tensor]:
        """``{"view_signal", "view_lengths"}`` on ``device`` (non-blocking), the keyword arguments of
        :meth:`cpcaudio.model.CPCModel.forward` for the second view; empty when the batch has none."""
        if self.view_signal is None:
            return {}
        view = {"view_signal": self.view_signal, "view_lengths": self.view_lengths}
        return {name: t.to(device, non_blocking=True) for name, t in view.items() if t is not None}

    def pin_memory(self) -> "WindowBatch":
        """The same batch in page-locked memory (what ``DataLoader(pin_memory=True)`` calls)."""
        return self._map(lambda t: t.pin_memory())

    def _map(self, function: Callable[[torch.Tensor], torch.Tensor]) -> "WindowBatch":
        move = lambda t: function(t) if t is not None else None  # noqa: E731
        return WindowBatch(
            move(self.signal), move(self.lengths), move(self.utterance_index), move(self.start),
            move(self.speaker), move(self.frame_labels), self.step, move(self.context_signal),
            move(self.view_signal), move(self.view_lengths),
        )  # fmt: skip


class WindowSampler:
    """An infinite, deterministic stream of :class:`WindowBatch` (see the module docstring).

    Args:
        dataset: the prepared dataset.
        window_size: samples per window (20480 = 1.28 s at 16 kHz, the CPC paper's).
        batch_size: windows per batch (per rank).
        mode: ``uniform``, ``same-speaker`` or ``sequential``.
        seed: non-negative seed of the stream.
        split: draw from the utterances of this split (``None``: all).
        rank, world_size: this process's share of the utterances.
        short_utterances: ``pad`` (zero-pad and mask) or ``skip`` utterances shorter than a window.
        with_labels: also return frame labels (the dataset must have them).
    """

    def __init__(
        self,
        dataset: PreparedDataset,
        window_size: int = 20480,
        batch_size: int = 8,
        mode: str = "uniform",
        seed: int = 0,
        split: Optional[str] = "train",
        rank: int = 0,
        world_size: int = 1,
        short_utterances: str = "pad",
        with_labels: bool = False,
    ) -> None:
        if mode not in MODES:
            raise UsageError(f"sampler mode {mode!r} is not one of {', '.join(MODES)}")
        if short_utterances not in SHORT_UTTERANCES:
            raise UsageError(f"short_utterances {short_utterances!r} is not one of {', '.join(SHORT_UTTERANCES)}")
        if window_size < 1 or batch_size < 1:
            raise UsageError(f"window_size and batch_size must be >= 1, got {window_size} and {batch_size}")
        if seed < 0:
            raise UsageError(f"seed must be >= 0, got {seed}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise UsageError(f"rank must be in [0, world_size), got rank {rank} of {world_size}")
        if with_labels and not dataset.has_frame_labels:
            raise UsageError(f"{dataset.path} has no frame labels; use with_labels=False")
        self.dataset = dataset
        self.window_size = int(window_size)
        self.batch_size = int(batch_size)
        self.mode = mode
        self.seed = int(seed)
        self.split = split
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.short_utterances = short_utterances
        self.with_labels = with_labels
        self.step = 0

        candidates = dataset.indices(split) if split is not None else np.arange(len(dataset), dtype=np.int64)
        lengths = dataset.lengths[candidates]
        minimum = self.window_size if short_utterances == "skip" else 1
        eligible = candidates[lengths >= minimum]
        if eligible.size < world_size:
            where = f"split {split!r}" if split is not None else "the dataset"
            raise DataError(
                f"{dataset.path}: {eligible.size} utterances of {where} can give windows of {window_size} "
                f"samples (short_utterances={short_utterances!r}), fewer than the {world_size} rank(s); "
                "use short_utterances='pad', a smaller window or another split"
            )
        order = np.random.default_rng([self.seed, _SHARD_STREAM]).permutation(eligible.size)
        self.utterances = np.sort(eligible[order][self.rank :: self.world_size])  # this rank's share
        self._lengths = dataset.lengths[self.utterances]
        self._cumulative = np.cumsum(self._lengths, dtype=np.float64)
        # same-speaker: utterances grouped by speaker, speakers weighted by their audio.
        speakers = dataset.speaker_indices[self.utterances]
        self._speaker_ids = np.unique(speakers)
        self._speaker_members = [np.nonzero(speakers == s)[0] for s in self._speaker_ids]
        self._all_members = np.arange(self.utterances.size)
        self._member_cumulative = [np.cumsum(self._lengths[m], dtype=np.float64) for m in self._speaker_members]
        self._speaker_cumulative = np.cumsum(
            [self._lengths[m].sum() for m in self._speaker_members], dtype=np.float64
        )
        # sequential: windows per utterance.
        if short_utterances == "pad":
            per_utterance = ceil_div(self._lengths, self.window_size)
        else:
            per_utterance = self._lengths // self.window_size
        self._window_cumulative = np.cumsum(per_utterance)
        self.windows_per_epoch = int(self._window_cumulative[-1])

    # ---- stream ----------------------------------------------------------------------------------

    def __iter__(self) -> Iterator[WindowBatch]:
        while True:
            batch = self.batch(self.step)
            self.step += 1
            yield batch

    def batch(self, step: int) -> WindowBatch:
        """Batch number ``step`` of the stream (does not move the stream)."""
        utterances, starts = self.positions(step)
        return self.read(utterances, starts, step)

    def positions(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        """``(utterance indices, starts)`` of batch ``step``, each int64 ``(batch,)``."""
        if self.mode == "sequential":
            return self._sequential(step)
        rng = np.random.default_rng([self.seed, self.rank, self.world_size, int(step)])
        if self.mode == "uniform":
            members, cumulative = self._all_members, self._cumulative
        else:
            pick = rng.random() * self._speaker_cumulative[-1]
            speaker = int(np.searchsorted(self._speaker_cumulative, pick, side="right"))
            speaker = min(speaker, len(self._speaker_members) - 1)
            members, cumulative = self._speaker_members[speaker], self._member_cumulative[speaker]
        picks = rng.random(self.batch_size) * cumulative[-1]
        chosen = members[np.minimum(np.searchsorted(cumulative, picks, side="right"), members.size - 1)]
        lengths = self._lengths[chosen]
        max_start = np.maximum(lengths - self.window_size, 0)
        starts = rng.integers(0, max_start + 1)
        return self.utterances[chosen], starts.astype(np.int64)

    def _sequential(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        flat = (int(step) * self.batch_size + np.arange(self.batch_size)) % self.windows_per_epoch
        position = np.searchsorted(self._window_cumulative, flat, side="right")
        first = np.where(position > 0, self._window_cumulative[np.maximum(position - 1, 0)], 0)
        starts = (flat - first) * self.window_size
        return self.utterances[position], starts.astype(np.int64)

    @property
    def epoch(self) -> int:
        """Sequential mode: complete passes over the rank's windows before the next batch."""
        return (self.step * self.batch_size) // self.windows_per_epoch

    def read(self, utterances: np.ndarray, starts: np.ndarray, step: int) -> WindowBatch:
        """The windows at ``starts`` (int64 ``(batch,)``) of ``utterances`` (``(batch,)``) as batch ``step``."""
        dataset, window = self.dataset, self.window_size
        signal = np.zeros((self.batch_size, dataset.num_channels, window), dtype=np.float32)
        valid = np.minimum(dataset.lengths[utterances] - starts, window)
        labels = None
        if self.with_labels:
            hop = dataset.label_hop
            labels = np.full((self.batch_size, num_label_frames(window, hop)), NO_LABEL, dtype=np.int64)
        for row, (utterance, start, length) in enumerate(zip(utterances, starts, valid)):
            signal[row, :, :length] = dataset.read(int(utterance), int(start), int(length))
            if labels is not None:
                utterance_labels = dataset.frame_labels(int(utterance))
                index = window_label_indices(int(start), int(length), window, dataset.label_hop)
                inside = (index >= 0) & (index < utterance_labels.size)
                labels[row, inside] = utterance_labels[index[inside]]
        return WindowBatch(
            signal=torch.from_numpy(signal),
            lengths=torch.from_numpy(valid.astype(np.int64)),
            utterance_index=torch.from_numpy(utterances.astype(np.int64)),
            start=torch.from_numpy(starts.astype(np.int64)),
            speaker=torch.from_numpy(dataset.speaker_indices[utterances].astype(np.int64)),
            frame_labels=torch.from_numpy(labels) if labels is not None else None,
            step=int(step),
        )

    # ---- resuming --------------------------------------------------------------------------------

    def _config(self) -> dict:
        return {
            "seed": self.seed,
            "mode": self.mode,
            "window_size": self.window_size,
            "batch_size": self.batch_size,
            "split": self.split,
            "rank": self.rank,
            "world_size": self.world_size,
            "short_utterances": self.short_utterances,
            "num_utterances": int(self.utterances.size),
        }

    def state_dict(self) -> dict:
        """Plain-Python state: the next batch's step plus the settings it is only valid with."""
        return {"step": int(self.step), **self._config()}

    def load_state_dict(self, state: dict) -> None:
        """Continue the stream after the batches counted in ``state`` (from :meth:`state_dict`).

        Raises:
            UsageError: the state was saved by a sampler with other settings (seed, mode, ...).
        """
        for key, value in self._config().items():
            if key in state and state[key] != value:
                raise UsageError(
                    f"sampler state was saved with {key}={state[key]!r} but this sampler has {key}={value!r}; "
                    "resume with the same data settings"
                )
        if "step" not in state or int(state["step"]) < 0:
            raise UsageError("sampler state has no valid 'step'")
        self.step = int(state["step"])
