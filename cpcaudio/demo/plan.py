"""The demo's plan: every setting that decides its numbers, fixed before any work starts.

:func:`make_plan` turns the user's options (size, budget, seed, ``--data``, ``--set`` overrides) into a
:class:`DemoPlan`; :func:`inspect_dataset` decides which probe tasks a user's prepared dataset supports;
:func:`probe_utterances` picks the utterances a probe fits on.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from cpcaudio.demo.presets import WINDOW_SECONDS, preset_for
from cpcaudio.errors import DataError, UsageError

PathLike = Union[str, os.PathLike]

# The probe tasks of the synthetic corpus (it has phone alignments and speakers, no utterance labels).
SYNTHETIC_TASKS = ("phone", "speaker")

# Config keys the demo derives itself (from --steps/--minutes, --seed and the dataset); --set refuses them.
DERIVED_KEYS = frozenset(
    {"train.max_steps", "train.seed", "train.validate_every", "train.checkpoint_every", "train.max_epochs",
     "data.sample_rate", "encoder.in_channels"}
)


@dataclass
class DemoPlan:
    """Every setting that decides the demo's numbers; saved in ``demo.json`` and compared on a rerun.

    Attributes:
        preset: the :class:`~cpcaudio.demo.presets.Preset` name.
        seed: seed of the corpus, the model, the sampler and the probes.
        minutes: the time budget the step count was derived from.
        steps: training steps.
        device_kind: ``cpu``, ``cuda`` or ``mps`` (the preset depends on it).
        data: the prepared dataset given by the user, or None for the synthetic corpus.
        num_speakers, corpus_minutes: of the synthetic corpus (None with ``data``).
        config: the full training config (:meth:`CPCConfig.to_dict`).
        tasks: probe tasks run (``phone``, ``speaker``, ``class``).
        phone_train_seconds, units_clusters, abx_train_seconds, abx_max_size_group: see
            :class:`~cpcaudio.demo.presets.Preset`.
    """

    preset: str
    seed: int
    minutes: float
    steps: int
    device_kind: str
    data: Optional[str]
    num_speakers: Optional[int]
    corpus_minutes: Optional[float]
    config: dict[str, Any]
    tasks: list[str]
    phone_train_seconds: float
    units_clusters: int
    abx_train_seconds: float
    abx_max_size_group: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class DatasetInfo:
    """What the plan needs to know of a user's prepared dataset."""

    path: Path
    sample_rate: int
    num_channels: int
    audio: bool
    tasks: list[str]


def _has_shared_speakers(dataset: Any) -> bool:
    """At least two training speakers, some of them also in test (the speaker probe needs both)."""
    train_speakers = {dataset.speakers[i] for i in dataset.indices("train")}
    test_speakers = {dataset.speakers[i] for i in dataset.indices("test")}
    return len(train_speakers) >= 2 and bool(train_speakers & test_speakers)


# Which probe tasks a dataset supports, in the order the demo runs them.
TASK_SUPPORT: dict[str, Callable[[Any], bool]] = {
    "phone": lambda dataset: bool(dataset.phone_vocabulary),
    "speaker": _has_shared_speakers,
    "class": lambda dataset: bool(dataset.utterance_label_names),
}


def inspect_dataset(path: Path) -> DatasetInfo:
    """Open a user's prepared dataset and decide which probe tasks it supports.

    Raises:
        DataError: no train or no test utterances, or nothing to probe.
    """
    from cpcaudio.data import PreparedDataset
    from cpcaudio.evaluate.sources import is_audio as _is_audio

    dataset = PreparedDataset.open(path)
    for split in ("train", "test"):
        if len(dataset.indices(split)) == 0:
            raise DataError(
                f"dataset {path} has no '{split}' utterances; the demo trains on 'train' and probes on "
                "'train' vs 'test' (prepare it with a held-out split, e.g. --test-fraction 0.2)"
            )
    tasks = [task for task, supported in TASK_SUPPORT.items() if supported(dataset)]
    if not tasks:
        raise DataError(
            f"dataset {path} has no phone labels, no speakers shared by train and test and no utterance "
            "labels, so there is nothing to probe"
        )
    return DatasetInfo(path, int(dataset.sample_rate), int(dataset.num_channels), _is_audio(dataset), tasks)


def assigned_keys(overrides: Sequence[str]) -> list[str]:
    """The ``section.key`` names that ``section.key=value`` overrides assign, in order, once each."""
    return list(dict.fromkeys(assignment.split("=", 1)[0].strip() for assignment in overrides))


def make_plan(
    size: str,
    minutes: Optional[float],
    steps: Optional[int],
    seed: int,
    device_kind: str,
    data: Optional[PathLike],
    dataset_info: Optional[DatasetInfo],
    overrides: Sequence[str] = (),
) -> DemoPlan:
    """The plan of a demo run (arguments validated by :func:`cpcaudio.demo.run_demo`).

    The training config is the preset's, then the user's ``overrides``, then what the demo derives: the
    dataset's sample rate and channels and (unless the user set ``data.window_size``) a window of about
    :data:`~cpcaudio.demo.presets.WINDOW_SECONDS` at its sample rate, and the step count, validation and
    checkpoint intervals.

    Raises:
        UsageError: an override of a key the demo derives itself, or a time-series dataset.
    """
    from cpcaudio.config import CPCConfig

    preset = preset_for(size, device_kind)
    budget = float(minutes) if minutes is not None else preset.default_minutes
    user_keys = assigned_keys(overrides)
    fixed = [key for key in user_keys if key in DERIVED_KEYS]
    if fixed:
        raise UsageError(f"the demo sets {fixed[0]} itself; use --steps, --seed or --data instead of --set")
    config = CPCConfig.from_dict(preset.config).with_overrides([*overrides, f"train.seed={seed}"])
    tasks = list(SYNTHETIC_TASKS)
    if dataset_info is not None:
        if not dataset_info.audio:
            raise UsageError(
                f"dataset {dataset_info.path} holds time series, not audio; the demo's encoder is the audio "
                "one (160 samples per frame). Train with 'cpcaudio train' and a stride-1 encoder and probe "
                "with 'cpcaudio probe --task class' (see the README's time-series section)"
            )
        tasks = dataset_info.tasks
        assignments = [
            f"data.sample_rate={dataset_info.sample_rate}",
            f"encoder.in_channels={dataset_info.num_channels}",
        ]
        if "data.window_size" not in user_keys:  # the user's window wins over the derived one
            assignments.append(f"data.window_size={window_samples(dataset_info.sample_rate, config.encoder)}")
        config = config.with_overrides(assignments)
    train_steps = steps if steps is not None else preset.steps_for(budget)
    config = config.with_overrides(
        [f"train.max_steps={train_steps}", f"train.validate_every={validate_every(train_steps)}",
         f"train.checkpoint_every={max(1, min(25, train_steps))}"]
    )
    synthetic = data is None
    return DemoPlan(
        preset=preset.name, seed=seed, minutes=budget, steps=train_steps, device_kind=device_kind,
        data=None if synthetic else str(Path(data).resolve()),
        num_speakers=preset.num_speakers if synthetic else None,
        corpus_minutes=preset.corpus_minutes if synthetic else None,
        config=config.to_dict(), tasks=tasks, phone_train_seconds=preset.phone_train_seconds,
        units_clusters=preset.units_clusters, abx_train_seconds=preset.abx_train_seconds,
        abx_max_size_group=preset.abx_max_size_group,
    )


def window_samples(sample_rate: int, encoder: Any) -> int:
    """About :data:`~cpcaudio.demo.presets.WINDOW_SECONDS` of samples at ``sample_rate``, a multiple of
    the hop of ``encoder`` (an :class:`cpcaudio.config.EncoderConfig`), at least 16 frames."""
    from cpcaudio.geometry import frame_geometry

    hop = frame_geometry(encoder.kernel_sizes, encoder.strides, encoder.resolved_paddings()).hop
    return max(hop * 16, int(round(WINDOW_SECONDS * sample_rate / hop)) * hop)


def validate_every(steps: int) -> int:
    """About 10 validations per run (validation loss and accuracy curves), at least every step."""
    return max(1, int(math.ceil(steps / 10)))


def probe_utterances(dataset: Any, task: str, phone_train_seconds: float) -> Optional[list[int]]:
    """The utterances a probe uses: all (None), except for the phone task, whose frame-level probe fits on
    at most ``phone_train_seconds`` of training audio (every k-th training utterance, so every speaker is
    represented) and tests on every test utterance (:func:`train_subset`)."""
    return train_subset(dataset, phone_train_seconds) if task == "phone" else None


def train_subset(dataset: Any, train_seconds: float) -> Optional[list[int]]:
    """Every test utterance and every k-th training utterance, at most ``train_seconds`` of training audio
    (every speaker represented); None when the whole train split fits."""
    train = np.asarray(dataset.indices("train"))
    seconds = float(np.sum(dataset.lengths[train])) / dataset.sample_rate
    if seconds <= train_seconds:
        return None
    stride = int(math.ceil(seconds / train_seconds))
    chosen = train[::stride]
    return sorted(int(i) for i in [*chosen, *dataset.indices("test")])
