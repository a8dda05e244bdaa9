"""``speaker``: three protocols. ``utterance``: features averaged over the utterance. ``window`` (as in
CPC_audio): each test utterance is cut into consecutive non-overlapping windows of the model's training
window (1.28 s by default; an utterance shorter than one window is one window; with
``ProbeInputs.test_window_offsets`` N > 1, windows every 1/N window, each scored), each training utterance
into windows at :data:`~cpcaudio.evaluate.problems.TRAIN_WINDOW_OFFSETS` offsets a window apart (CPC_audio
trains its probe on windows at a random offset every epoch); each window is processed alone, and its vector
is the last context frame (``--layer context``) or the mean over the window's frames
(encoder features and the MFCC/log-mel baselines). ``window-mean`` (SUPERB's speaker-ID pooling): the
same windows, each vector the mean over the window's frames; for the sources whose window vector already
is that mean it is the same problem as ``window``, fitted once and reported under both.

The same utterance features also give the test utterances' embeddings for speaker verification
(:mod:`cpcaudio.evaluate.verification`: cosine scores, EER, minDCF; no training)."""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from cpcaudio.evaluate.problems import (
    UTTERANCE,
    WINDOW,
    WINDOW_MEAN,
    ProbeInputs,
    TRAIN_WINDOW_OFFSETS,
    ProbeProblem,
    pooled_problem,
    same_problem,
    speaker_windows,
    utterance_problem,
)
from cpcaudio.evaluate.sources import FeatureSource
from cpcaudio.evaluate.tasks.base import ProbeTask
from cpcaudio.evaluate.verification import UtteranceEmbeddings, utterance_embeddings


class SpeakerTask(ProbeTask):
    """Speaker identification from whole utterances and from fixed-length windows."""

    name = "speaker"
    summary = "per utterance, and per window by its last frame and by its mean"
    protocols = (UTTERANCE, WINDOW, WINDOW_MEAN)
    few_classes_advice = " (UEA sets have no speakers: use --task class)"

    def utterance_labels(self, dataset: Any, label: Optional[str]) -> tuple[Optional[list[Any]], str]:
        return list(dataset.speakers), "speaker"

    def supports(self, dataset: Any) -> bool:
        train = {dataset.speakers[i] for i in dataset.indices("train")}
        test = {dataset.speakers[i] for i in dataset.indices("test")}
        return len(train) >= 2 and bool(train & test)

    def build_problems(self, source: FeatureSource, inputs: ProbeInputs) -> list[ProbeProblem]:
        return self.build_problems_and_embeddings(source, inputs)[0]

    def build_problems_and_embeddings(
        self, source: FeatureSource, inputs: ProbeInputs
    ) -> tuple[list[ProbeProblem], Optional[UtteranceEmbeddings]]:
        dataset = inputs.dataset
        utterances = inputs.utterances
        frames = inputs.utterance_frames(source)
        embeddings = utterance_embeddings(frames, source.utterance_pooling, inputs)
        problems = [utterance_problem(UTTERANCE, frames, source.utterance_pooling, inputs)]
        del frames  # the windows' frames replace them
        train = set(inputs.train.tolist())
        windows = [
            (int(i), start, stop)
            for i in utterances
            for start, stop in speaker_windows(
                int(dataset.lengths[int(i)]),
                inputs.window_samples,
                TRAIN_WINDOW_OFFSETS if int(i) in train else inputs.test_window_offsets,
            )
        ]
        window_frames = inputs.window_frames(source, windows)
        how = "flatten" if source.utterance_pooling == "flatten" else source.window_pooling
        window_index = np.array([i for i, _, _ in windows], dtype=np.int64)
        labels = inputs.labels_of(window_index)
        is_train = np.array([i in train for i in window_index])
        window = pooled_problem(WINDOW, window_frames, how, labels, window_index, is_train)
        if how == "mean":  # the window vector already is the mean: one problem, reported under both names
            window_mean = same_problem(window, WINDOW_MEAN)
        else:
            window_mean = pooled_problem(WINDOW_MEAN, window_frames, "mean", labels, window_index, is_train)
        return problems + [window, window_mean], embeddings
