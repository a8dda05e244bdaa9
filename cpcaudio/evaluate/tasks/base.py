"""What a probe task declares: its name, the labels it needs, its protocols, its default baselines, its
memory check and its protocol notes, and how it turns one feature source into probe problems."""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Optional

import numpy as np

from cpcaudio.errors import UsageError
from cpcaudio.evaluate.problems import TEST_WINDOW_OFFSETS, ProbeInputs, ProbeProblem, Protocol
from cpcaudio.evaluate.sources import AUDIO_BASELINES, TIMESERIES_BASELINES, FeatureSource

if TYPE_CHECKING:
    import torch

    from cpcaudio.config import CPCConfig
    from cpcaudio.evaluate.verification import UtteranceEmbeddings


class ProbeTask(abc.ABC):
    """One probe task. Subclass it in a module of this package and add an instance to ``TASKS`` in
    ``cpcaudio/evaluate/tasks/__init__.py``; ``run_probe``, ``--task`` and the report read it from there.

    Class attributes:
        name: the task's name (``--task NAME``).
        summary: a few words for ``--task``'s help (``per frame``).
        protocols: the protocols it runs, in report order.
        unsupported_baselines: baselines that make no sense for it, each with the error message that
            refuses it; they are also left out of its defaults.
        few_classes_advice: appended to the error for training labels of fewer than two classes.
    """

    name: ClassVar[str]
    summary: ClassVar[str]
    protocols: ClassVar[tuple[Protocol, ...]]
    unsupported_baselines: ClassVar[dict[str, str]] = {}
    few_classes_advice: ClassVar[str] = ""

    @abc.abstractmethod
    def utterance_labels(self, dataset: Any, label: Optional[str]) -> tuple[Optional[list[Any]], str]:
        """The labels this task needs, checked.

        Args:
            dataset: the prepared dataset.
            label: the user's ``--label`` (a name among the dataset's utterance labels), or None.

        Returns:
            The label of every utterance (None where missing), or None for a task with frame labels; and
            the label's name for the report.

        Raises:
            DataError: the dataset lacks the labels; UsageError: ``label`` is not one of them.
        """

    @abc.abstractmethod
    def supports(self, dataset: Any) -> bool:
        """Whether ``dataset`` has what this task needs (the demo runs every task its data supports)."""

    @abc.abstractmethod
    def build_problems(self, source: FeatureSource, inputs: ProbeInputs) -> list[ProbeProblem]:
        """Compute ``source``'s features once and turn them into one problem per protocol."""

    def build_problems_and_embeddings(
        self, source: FeatureSource, inputs: ProbeInputs
    ) -> tuple[list[ProbeProblem], Optional[UtteranceEmbeddings]]:
        """:meth:`build_problems`, plus the test utterances' embeddings for speaker verification
        (:mod:`cpcaudio.evaluate.verification`) from the same features; None (the default): the task
        scores no verification trials. ``run_probe`` calls this one."""
        return self.build_problems(source, inputs), None

    def label_names(self, dataset: Any) -> Optional[list[str]]:
        """Display names of integer labels (the phone symbols of frame labels); None: the labels are names."""
        return None

    def default_baselines(self, audio: bool) -> list[str]:
        """Baselines run when the user names none: mfcc, logmel, random for audio; raw, random otherwise."""
        return [name for name in (AUDIO_BASELINES if audio else TIMESERIES_BASELINES)
                if name not in self.unsupported_baselines]

    def check_baselines(self, names: Sequence[str]) -> None:
        """Refuse a requested baseline that makes no sense for this task."""
        for name in names:
            if name in self.unsupported_baselines:
                raise UsageError(self.unsupported_baselines[name])

    def check_memory(
        self, dataset: Any, train: np.ndarray, test: np.ndarray, config: CPCConfig,
        max_train_frames: Optional[int], device: torch.device,
    ) -> None:
        """Refuse, before any work, a probe whose cached features would not fit in memory (default: one
        vector per utterance or window is always small)."""

    def protocol_notes(self, window_seconds: float, test_window_offsets: int = TEST_WINDOW_OFFSETS) -> dict[str, str]:
        """One line per protocol for the report (``window_seconds``: the window protocol's length;
        ``test_window_offsets``: test windows per window length)."""
        return {protocol.name: protocol.describe(window_seconds, test_window_offsets) for protocol in self.protocols}
