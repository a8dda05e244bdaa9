"""The preset ``cpcaudio train`` picks by itself: ``timeseries`` for a prepared dataset that is not audio.

The default encoder downsamples 160 times (10 ms at 16 kHz): a 100-step sensor series gives no frame at
all. So when the dataset's ``meta.json`` says ``signal_kind: timeseries`` (``cpcaudio prepare uea``) and
the user set no ``encoder.*`` key (neither in a ``--config`` file nor with ``--set``), the run starts
from the ``timeseries`` preset (``cpcaudio/configs/timeseries.yaml``) instead of the defaults, and two of
its values are sized from the training series:

* ``data.window_size``: the median training series length, halved when the utterance loss contrasts two
  crops of a series (``utterance.views: crop``, so that the crops differ) but not below
  :data:`MIN_WINDOW` samples, and at most the median series and the preset's window (so a window holds
  a typical series or a good part of it, and long series give many windows);
* ``predictor.num_steps`` (K): a quarter of the window's frames, between 1 and the preset's K (and
  fewer than the shortest window's frames, so every window has something to predict).

and the input normalisation is chosen from what the series look like:

* ``encoder.input_normalization``: ``sequence`` (each window standardised per channel) when the series
  are z-normalised one by one already (UCR's univariate sets: every series has mean 0 and standard
  deviation 1), so windows look like the series they come from; ``none`` otherwise, where a series'
  level and amplitude carry its class (JapaneseVowels' cepstra, accelerometer gravity and energy:
  measured, standardising each window of JapaneseVowels cost 0.3 of the probe's accuracy). Standardise
  such a dataset per channel with the training statistics first, as TS2Vec does (and
  ``benchmarks/timeseries.py``).

Keys the user set keep the user's value (a given ``data.window_size`` then sizes K). An explicit
``--config paper`` or any ``--set encoder.KEY=...`` turns the choice off. Library callers of
:func:`cpcaudio.train.train` pass their config as they want it: only
:func:`cpcaudio.train.assemble_run_config` (what the CLI calls) consults this module.
"""

from __future__ import annotations

import os
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, Optional, Union

import numpy as np

from cpcaudio.config import CPCConfig
from cpcaudio.geometry import num_frames
from cpcaudio.presets import preset_path

PathLike = Union[str, os.PathLike]

PRESET = "timeseries"
SIGNAL_KINDS = ("timeseries",)  # meta.json signal kinds that get the preset
STEPS_SHARE = 4  # K = window frames // STEPS_SHARE (bounded by the preset's K)
CROP_SHARE = 2  # with crop views the window is median / CROP_SHARE ...
MIN_WINDOW = 16  # ... but at least this many samples (at most the median series)
NORMALISED_TOLERANCE = 0.05  # a series is z-normalised when |mean| and |std - 1| are below this per channel
NORMALISED_SHARE = 0.9  # ... and the dataset when this share of the (sampled) training series is
SAMPLED_SERIES = 256  # training series read to decide
WINDOW_KEY = "data.window_size"
STEPS_KEY = "predictor.num_steps"
NORMALISATION_KEY = "encoder.input_normalization"


@dataclass(frozen=True)
class AutomaticPreset:
    """The preset chosen for a dataset, and the values sized from its series.

    Attributes:
        name: the preset (``timeseries``).
        lengths: (n,) samples of every series of the dataset.
        splits: (n,) the split of each.
        normalised: whether the training series are z-normalised one by one.
    """

    name: str
    lengths: np.ndarray
    splits: np.ndarray
    normalised: bool

    def base(self, base: CPCConfig) -> CPCConfig:
        """``base`` with every key the preset file sets taken from it."""
        preset, raw = CPCConfig.load_with_mapping(preset_path(self.name))
        data, loaded = base.to_dict(), preset.to_dict()
        for section, values in raw.items():
            for key in values or {}:
                data[section][key] = loaded[section][key]
        return CPCConfig.from_dict(data)

    def size(self, config: CPCConfig, explicit_keys: Collection[str]) -> tuple[CPCConfig, str]:
        """``config`` with the window and K sized from the series (unless set in ``explicit_keys``), and the
        line that says so."""
        encoder = config.encoder
        chosen = self.splits == config.train.train_split
        lengths = self.lengths[chosen] if chosen.any() else self.lengths  # (no such split: training says so)
        frames_of = lambda samples: int(  # noqa: E731
            num_frames(int(samples), encoder.kernel_sizes, encoder.strides, encoder.resolved_paddings())
        )
        window = config.data.window_size
        if WINDOW_KEY not in explicit_keys:
            median = max(1, int(np.median(lengths)))
            crops = config.utterance.loss != "none" and config.utterance.views == "crop"
            typical = max(min(MIN_WINDOW, median), median // CROP_SHARE) if crops else median
            window = int(min(window, typical))
        steps = config.predictor.num_steps
        if STEPS_KEY not in explicit_keys:
            shortest = frames_of(min(window, int(lengths.min())))
            steps = int(max(1, min(steps, frames_of(window) // STEPS_SHARE, shortest - 1)))
        normalisation = "sequence" if self.normalised else "none"
        sized = config.with_overrides(
            [f"{WINDOW_KEY}={window}", f"{STEPS_KEY}={steps}", f"{NORMALISATION_KEY}={normalisation}"]
        )
        why = "series z-normalised one by one" if self.normalised else "series levels kept"
        hop = int(np.prod(encoder.strides))
        utterance = config.utterance
        objective = f" + utterance {utterance.loss} on {utterance.views} views" if utterance.loss != "none" else ""
        note = (
            f"time series (median training series {int(np.median(lengths))} samples): using the "
            f"'{self.name}' preset (encoder kernels {list(encoder.kernel_sizes)}, {hop} sample(s) per frame, "
            f"receptive field {_receptive_field(encoder)} samples; InfoNCE{objective}), "
            f"{NORMALISATION_KEY}={normalisation} ({why}), {WINDOW_KEY}={window}, {STEPS_KEY}={steps}; "
            "set any encoder key (--set encoder.KEY=... or --config) to choose the encoder yourself"
        )
        return sized, note


def choose_preset(dataset: PathLike, explicit_keys: Collection[str]) -> Optional[AutomaticPreset]:
    """The preset for ``dataset``, or None: an audio dataset, an encoder key set by the user, or a path that
    is not a readable prepared dataset (training then reports that itself).

    Args:
        dataset: a prepared dataset directory.
        explicit_keys: the ``section.key`` names the user set.
    """
    if any(key.startswith("encoder.") for key in explicit_keys):
        return None
    from cpcaudio.data import PreparedDataset
    from cpcaudio.errors import DataError

    try:
        opened = PreparedDataset.open(dataset)
    except (DataError, OSError):
        return None
    try:
        if opened.meta.get("signal_kind") not in SIGNAL_KINDS:
            return None
        if len(opened) == 0:
            return None
        return AutomaticPreset(PRESET, np.asarray(opened.lengths), np.asarray(opened.splits), _normalised(opened))
    finally:
        opened.close()


def _normalised(dataset: Any) -> bool:
    """Whether most training series (at most :data:`SAMPLED_SERIES`, evenly spaced) have per-channel mean 0
    and standard deviation 1 (within :data:`NORMALISED_TOLERANCE`)."""
    indices = dataset.indices("train")
    if indices.size == 0:
        indices = np.arange(len(dataset))
    chosen = indices[np.linspace(0, indices.size - 1, min(indices.size, SAMPLED_SERIES)).astype(int)]
    hits = 0
    for index in chosen:
        series = np.asarray(dataset.signal(int(index)), dtype=np.float64)  # (channels, time)
        mean, std = series.mean(axis=-1), series.std(axis=-1)
        hits += bool(np.all(np.abs(mean) < NORMALISED_TOLERANCE) and np.all(np.abs(std - 1) < NORMALISED_TOLERANCE))
    return hits >= NORMALISED_SHARE * chosen.size


def _receptive_field(encoder: Any) -> int:
    """Input samples one frame sees."""
    from cpcaudio.geometry import frame_geometry

    return int(frame_geometry(encoder.kernel_sizes, encoder.strides, encoder.resolved_paddings()).receptive_field)
