"""Probe problems: the training and test samples of one protocol for one feature source, and the pieces
tasks build them from (protocols, pooling, windows, sample assembly).

A protocol says how samples are made and which probe fits them: ``frame`` (one sample per feature
frame), ``utterance`` (one pooled vector per utterance), ``window`` (one per fixed-length window: the
last context frame, CPC_audio's protocol), ``window-mean`` (the same windows, mean-pooled: SUPERB's
speaker-ID pooling) and ``utterance-svm`` (TS2Vec's max-pooled vectors and RBF-SVM). Tasks
(:mod:`cpcaudio.evaluate.tasks`) choose their protocols and build the problems.

Two protocols can give one source the very same samples (``window`` and ``window-mean`` for features
the window protocol already averages); the second problem then names the first in
:attr:`ProbeProblem.same_as` (:func:`same_problem`), and the runner fits it once and reports it under both.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Optional

import numpy as np

from cpcaudio.errors import DataError
from cpcaudio.evaluate.sources import FeatureSource
from cpcaudio.geometry import ceil_div
from cpcaudio.progress import Progress, ProgressCallback, report


TRAIN_WINDOW_OFFSETS = 8
"""Training windows of the window protocols start every ``window / TRAIN_WINDOW_OFFSETS`` samples.

CPC_audio's speaker probe (``linear_separability.py``) draws its training windows at a random offset in
every one of its 10 epochs, so its linear classifier sees each training utterance at many offsets; its test
windows are consecutive. Eight fixed offsets are the deterministic form of that: the probe trains on the
same utterances seen at 8 shifts. Test windows are consecutive by default (CPC_audio's);
``test_window_offsets`` (:class:`ProbeInputs`, ``run_probe``, ``cpcaudio probe --test-window-offsets``) cuts
them the same way."""

TEST_WINDOW_OFFSETS = 1
"""Default test windows of the window protocols: consecutive, non-overlapping (one start per window).

A small test set has few consecutive windows (44 for the TIMIT sample of ``benchmarks/quality.py``: 2.3
points each), and the last frame of a window is read at one phonetic position each; test windows at 8
offsets score every utterance at 8 positions per window length, which makes the accuracy of that column
far less noisy (overlapping windows are not independent samples: the noise shrinks by less than the
window count suggests)."""


@dataclass(frozen=True)
class Protocol:
    """How one kind of probe sample is made and fitted.

    Attributes:
        name: the protocol's name in the report (``frame``, ``utterance`` ...).
        note: one line for the report; ``{window_seconds:g}`` stands for the window length.
        probe: ``logistic`` (:class:`~cpcaudio.evaluate.LinearProbe`) or ``svm-rbf``
            (:class:`~cpcaudio.evaluate.SVMProbe`).
        frame_level: samples are feature frames: ``max_train_frames`` subsamples the training frames.
        by_utterance: the probe's validation part holds out whole utterances (several samples come from
            one utterance: its frames, or its overlapping training windows), so that no utterance is on
            both sides of the split that chooses the penalty.
    """

    name: str
    note: str
    probe: str = "logistic"
    frame_level: bool = False
    by_utterance: bool = False

    def describe(self, window_seconds: float, test_window_offsets: int = TEST_WINDOW_OFFSETS) -> str:
        """The note with the window length and the test windows' spacing filled in."""
        return self.note.format(window_seconds=window_seconds, test_windows=_test_windows_phrase(test_window_offsets))


def _test_windows_phrase(test_window_offsets: int) -> str:
    """How test windows are cut, in words: ``consecutive`` or ``every 1/N window (overlapping, each scored)``."""
    if test_window_offsets == 1:
        return "consecutive"
    return f"every 1/{test_window_offsets} window (overlapping, each scored)"


FRAME = Protocol(
    "frame",
    "one sample per feature frame, labelled by the frame label at its centre; unlabelled frames dropped",
    frame_level=True,
    by_utterance=True,
)
UTTERANCE = Protocol(
    "utterance", "features averaged over the utterance (raw values: resampled to a common length, flattened)"
)
WINDOW = Protocol(
    "window",
    "{window_seconds:g} s windows, each processed alone (stored features: cut from the whole utterance): "
    f"{{test_windows}} on test utterances, every 1/{TRAIN_WINDOW_OFFSETS} window on training utterances (CPC_audio "
    "trains on windows at a random offset every epoch); last frame for context features (CPC_audio's "
    "protocol), mean over frames otherwise",
    by_utterance=True,
)
WINDOW_MEAN = Protocol(
    "window-mean",
    "the window protocol's windows, each vector the mean over the window's frames (SUPERB's speaker-ID "
    "pooling); for features the window protocol already averages (encoder, MFCC, log-mel) it is the same "
    "problem, fitted once and reported under both",
    by_utterance=True,
)
UTTERANCE_SVM = Protocol(
    "utterance-svm",
    "TS2Vec protocol: features max-pooled over time (raw values: flattened), RBF-SVM, C from {{1e-4..1e4, inf}} "
    "by 5-fold CV",
    probe="svm-rbf",
)


@dataclass
class ProbeProblem:
    """Training and test samples of one protocol for one feature source."""

    protocol: Protocol
    train_x: np.ndarray  # (n_train, dim)
    train_y: np.ndarray  # (n_train,)
    train_groups: np.ndarray  # (n_train,) utterance index of each sample
    test_x: np.ndarray  # (n_test, dim)
    test_y: np.ndarray  # (n_test,)
    excluded: dict[str, int] = field(default_factory=dict)  # what was left out, and why
    same_as: Optional[str] = None  # an earlier protocol (of this source) with these very samples: not refitted


def same_problem(problem: ProbeProblem, protocol: Protocol) -> ProbeProblem:
    """``problem``'s samples (the same arrays, not copied) under ``protocol``, marked as the same problem:
    the runner reports ``problem``'s fit under both protocols instead of fitting twice."""
    return replace(problem, protocol=protocol, same_as=problem.protocol.name)


@dataclass
class ProbeInputs:
    """What a task builds its problems from: the dataset, its train/test utterances and their labels.

    Attributes:
        dataset: the :class:`~cpcaudio.data.PreparedDataset`.
        train, test: (n,) int64 utterance indices of the two sides.
        utterance_labels: per-utterance label of every dataset utterance (None where missing), or None
            for tasks with frame labels.
        window_samples: dataset samples per window (the model's training window).
        test_window_offsets: test windows start every ``window_samples // test_window_offsets`` samples
            (1: consecutive, CPC_audio's; see :data:`TEST_WINDOW_OFFSETS`).
        progress: receives a :class:`~cpcaudio.progress.Progress` event after each step of features.
    """

    dataset: Any
    train: np.ndarray
    test: np.ndarray
    utterance_labels: Optional[list[Any]]
    window_samples: int
    progress: Optional[ProgressCallback] = None
    test_window_offsets: int = TEST_WINDOW_OFFSETS

    @property
    def utterances(self) -> np.ndarray:
        """(n_train + n_test,) train utterances, then test utterances."""
        return np.concatenate([self.train, self.test])

    @property
    def is_train(self) -> np.ndarray:
        """(n_train + n_test,) bool, aligned with :attr:`utterances`."""
        return np.concatenate([np.ones(self.train.size, bool), np.zeros(self.test.size, bool)])

    def labels_of(self, indices: Sequence[int]) -> list[Any]:
        """The utterance label of each of ``indices``."""
        assert self.utterance_labels is not None
        return [self.utterance_labels[int(i)] for i in indices]

    def utterance_frames(self, source: FeatureSource) -> list[np.ndarray]:
        """``source``'s (frames, dim) of every utterance of :attr:`utterances`, in that order."""
        return self._in_steps(
            self.utterances, lambda part: source.utterance_frames(self.dataset, part), f"features: {source.name}",
            "utt", lambda item: item, source,
        )

    def window_frames(self, source: FeatureSource, windows: Sequence[tuple[int, int, int]]) -> list[np.ndarray]:
        """``source``'s (frames, dim) of every ``(utterance, start, stop)`` window, each processed alone."""
        return self._in_steps(
            windows, lambda part: source.window_frames(self.dataset, part), f"windows: {source.name}", "window",
            lambda item: item[0], source,
        )

    def _in_steps(
        self, items: Sequence[Any], compute: Callable[[Sequence[Any]], list], stage: str, unit: str,
        utterance_of: Callable[[Any], int], source: FeatureSource,
    ) -> list:
        """``compute`` over ``items`` in about 20 steps, reporting progress after each; refuses NaN or inf
        features (a probe cannot fit them) with one line naming the source and the utterance."""
        out: list = []
        step = max(1, ceil_div(len(items), 20))
        for start in range(0, len(items), step):
            part = items[start : start + step]
            frames = compute(part)
            for item, array in zip(part, frames):
                if not np.isfinite(array).all():
                    utterance = self.dataset.utterance_ids[int(utterance_of(item))]
                    raise DataError(
                        f"the '{source.name}' features ({source.description}) are non-finite (NaN or inf) for "
                        f"utterance {utterance!r} of {self.dataset.path} and a probe cannot fit them; a trained "
                        "model that gives them most likely diverged: use an earlier checkpoint of the run"
                    )
            out.extend(frames)
            report(self.progress, Progress(stage, min(start + step, len(items)), len(items), unit))
        return out


def pool(frames: np.ndarray, how: str, length: int = 0) -> Optional[np.ndarray]:
    """One vector from (frames, dim): ``mean``, ``max``, ``last``, or ``flatten`` (resampled to ``length``
    frames first); None when there are no frames."""
    if frames.shape[0] == 0:
        return None
    if how == "mean":
        return frames.mean(axis=0)
    if how == "max":
        return frames.max(axis=0)
    if how == "last":
        return frames[-1]
    if how == "flatten":  # (time, channels) -> linearly resampled to ``length`` steps, flattened
        if frames.shape[0] != length:
            old = np.linspace(0.0, 1.0, frames.shape[0]) if frames.shape[0] > 1 else np.zeros(1)
            new = np.linspace(0.0, 1.0, length)
            frames = np.stack([np.interp(new, old, frames[:, c]) for c in range(frames.shape[1])], axis=1)
        return frames.reshape(-1)
    raise ValueError(f"unknown pooling {how!r}")


def speaker_windows(length: int, window: int, offsets: int = 1) -> list[tuple[int, int]]:
    """``(start, stop)`` windows of ``window`` samples starting every ``window // offsets`` samples
    (``offsets`` 1: consecutive, non-overlapping); a signal shorter than one window is a single window, and
    a remainder shorter than a window is dropped."""
    if offsets < 1:
        raise ValueError(f"offsets must be >= 1, got {offsets}")
    if length <= window:
        return [(0, length)]
    hop = max(1, window // offsets)
    return [(start, start + window) for start in range(0, length - window + 1, hop)]


def frame_problem(protocol: Protocol, xs: list, ys: list, gs: list, is_train: np.ndarray) -> ProbeProblem:
    """One sample per frame: ``xs`` (frames, dim), ``ys`` (frames,) labels and ``gs`` (frames,) groups of
    each utterance, the utterances of ``is_train`` on the training side."""
    dim = xs[0].shape[1] if xs else 0

    def stack(parts: list, mask: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        chosen = [p for p, m in zip(parts, mask) if m]
        return np.concatenate(chosen) if chosen else np.zeros(shape)

    return ProbeProblem(
        protocol=protocol,
        train_x=stack(xs, is_train, (0, dim)).astype(np.float32, copy=False),
        train_y=stack(ys, is_train, (0,)).astype(np.int64),
        train_groups=stack(gs, is_train, (0,)).astype(np.int64),
        test_x=stack(xs, ~is_train, (0, dim)).astype(np.float32, copy=False),
        test_y=stack(ys, ~is_train, (0,)).astype(np.int64),
    )


def pooled_problem(
    protocol: Protocol, frames: list[np.ndarray], how: str, labels: list, groups: np.ndarray, is_train: np.ndarray
) -> ProbeProblem:
    """One sample per frame sequence of ``frames``, pooled by ``how`` (:func:`pool`).

    Left out: sequences without frames, labels that are None (missing), and test samples whose label never
    occurs in training (no probe can predict it); the report counts each.
    """
    length = max((f.shape[0] for f in frames), default=1)
    vectors = [pool(f, how, length) for f in frames]
    has_vector = np.array([v is not None for v in vectors], dtype=bool)
    has_label = np.array([label is not None for label in labels], dtype=bool)
    keep = has_vector & has_label
    train_labels = {label for label, ok, tr in zip(labels, keep, is_train) if ok and tr}
    unseen = np.array([not tr and label not in train_labels for label, tr in zip(labels, is_train)], dtype=bool)
    excluded = {
        "no_frames": int((~has_vector).sum()),
        "no_label": int((has_vector & ~has_label).sum()),
        "test_label_not_in_train": int((keep & unseen).sum()),
    }
    keep &= ~unseen

    def pick(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rows = np.flatnonzero(mask)
        if rows.size == 0:
            return np.zeros((0, 1), np.float32), np.zeros(0), groups[rows]
        return np.stack([vectors[r] for r in rows]).astype(np.float32), np.asarray([labels[r] for r in rows]), groups[rows]

    train_x, train_y, train_groups = pick(keep & is_train)
    test_x, test_y, _ = pick(keep & ~is_train)
    return ProbeProblem(protocol, train_x, train_y, train_groups, test_x, test_y, excluded)


def utterance_problem(protocol: Protocol, frames: list[np.ndarray], how: str, inputs: ProbeInputs) -> ProbeProblem:
    """:func:`pooled_problem` with one sample per utterance of ``inputs`` (``frames`` in that order)."""
    return pooled_problem(
        protocol, frames, how, inputs.labels_of(inputs.utterances), inputs.utterances, inputs.is_train
    )


def subsample_training(problem: ProbeProblem, max_samples: Optional[int], seed: int) -> int:
    """Keep at most ``max_samples`` training samples (uniform, seeded, order kept); returns the count before."""
    total = int(problem.train_y.size)
    if max_samples is not None and total > max_samples:
        keep = np.sort(np.random.default_rng(seed).choice(total, size=max_samples, replace=False))
        problem.train_x, problem.train_y = problem.train_x[keep], problem.train_y[keep]
        problem.train_groups = problem.train_groups[keep]
    return total
