"""``class``: one label per utterance (FSDD digit, UEA class). ``utterance`` protocol (features averaged
over the utterance), plus ``utterance-svm``: TS2Vec's protocol, features max-pooled over time into one
instance vector, then :class:`~cpcaudio.evaluate.SVMProbe`."""

from __future__ import annotations

from typing import Any, Optional

from cpcaudio.errors import DataError, UsageError
from cpcaudio.evaluate.problems import UTTERANCE, UTTERANCE_SVM, ProbeInputs, ProbeProblem, utterance_problem
from cpcaudio.evaluate.sources import FeatureSource
from cpcaudio.evaluate.tasks.base import ProbeTask


class ClassTask(ProbeTask):
    """Utterance classification by one of the dataset's utterance labels (``--label``)."""

    name = "class"
    summary = "per utterance, by an utterance label such as FSDD's digit"
    protocols = (UTTERANCE, UTTERANCE_SVM)

    def utterance_labels(self, dataset: Any, label: Optional[str]) -> tuple[Optional[list[Any]], str]:
        names = list(dataset.utterance_label_names)
        if label is None:
            if not names:
                raise DataError(
                    f"dataset {dataset.path} has no utterance labels for --task class; prepare a dataset with "
                    "classes (FSDD digits, UEA classes) or use --task speaker/phone"
                )
            label = names[0]
        elif label not in names:
            raise UsageError(
                f"dataset {dataset.path} has no utterance label {label!r}; it has: {', '.join(names) or 'none'}"
            )
        vocabulary = dataset.vocabularies.get(label, [])
        ids = [dataset.utterance_label(i, label) for i in range(len(dataset))]
        return [vocabulary[i] if 0 <= i < len(vocabulary) else None for i in ids], label

    def supports(self, dataset: Any) -> bool:
        return bool(dataset.utterance_label_names)

    def build_problems(self, source: FeatureSource, inputs: ProbeInputs) -> list[ProbeProblem]:
        frames = inputs.utterance_frames(source)
        flatten = source.utterance_pooling == "flatten"
        return [
            utterance_problem(UTTERANCE, frames, source.utterance_pooling, inputs),
            utterance_problem(UTTERANCE_SVM, frames, "flatten" if flatten else "max", inputs),
        ]
