"""A run's requested configuration, assembled from what the user gave: the base (the defaults, or the
config of the run being resumed), a config file, ``--set`` overrides, ``--steps``, ``--minutes`` and ``--seed``.

The order is the command line's: base, then the file's keys, then the overrides in order (``--steps``,
``--minutes`` and ``--seed`` last). The keys the user set (the file's and the overrides') are kept as ``explicit_keys``:
only those may contradict the dataset (see :func:`cpcaudio.train.match_dataset`). Given the dataset, a new run
on time series that sets no encoder key starts from the ``timeseries`` preset instead of the defaults
(:mod:`cpcaudio.train.auto_preset`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

from cpcaudio.config import CPCConfig
from cpcaudio.presets import resolve_config_file
from cpcaudio.train.auto_preset import choose_preset
from cpcaudio.train.checkpoint import config_from_checkpoint, load_checkpoint
from cpcaudio.train.resume import refuse_untrainable
from cpcaudio.train.run_dir import resumable_checkpoint

PathLike = Union[str, os.PathLike]


@dataclass(frozen=True)
class RunConfig:
    """What :func:`assemble_run_config` returns; pass its fields on to :func:`cpcaudio.train.train`.

    Attributes:
        config: the requested config (the dataset's rate and channels are filled in by ``train``).
        explicit_keys: ``section.key`` names the user set.
        resume_record: the ``last.pt`` read for the resume base (``train(resume_record=...)`` then does
            not read it again), or None for a new run.
        note: a line to show before training (the preset chosen for the dataset), or None.
    """

    config: CPCConfig
    explicit_keys: frozenset[str]
    resume_record: Optional[dict[str, Any]] = None
    note: Optional[str] = None


def assemble_run_config(
    out_dir: PathLike,
    config_file: Optional[PathLike] = None,
    overrides: Sequence[str] = (),
    steps: Optional[int] = None,
    seed: Optional[int] = None,
    resume: bool = False,
    minutes: Optional[float] = None,
    dataset: Optional[PathLike] = None,
) -> RunConfig:
    """The config a ``cpcaudio train`` invocation asks for, and the keys it set.

    Args:
        out_dir: the run directory; with ``resume`` and an ``out_dir/last.pt``, its config is the base
            (the file and the overrides are applied over it; ``train`` refuses changes that cannot be
            resumed).
        config_file: a YAML or JSON file holding any subset of the sections, or the name of a preset
            (:func:`cpcaudio.presets.resolve_config_file`: a bare name that is not an existing file).
        overrides: ``section.key=value`` assignments, applied in order.
        steps: sets ``train.max_steps``.
        seed: sets ``train.seed``.
        resume: whether the run continues ``out_dir``.
        minutes: sets ``train.max_minutes``, the wall-clock budget of this invocation (0: none).
        dataset: the prepared dataset, for a new run: time series with no encoder key set get the
            ``timeseries`` preset sized to their lengths (:func:`cpcaudio.train.auto_preset.choose_preset`).

    Returns:
        A :class:`RunConfig`.

    Raises:
        ConfigError: the file or an override is malformed or names an unknown key or a bad value; an
            unknown preset name.
        CheckpointError: ``last.pt`` (when resuming) cannot be loaded or holds an invalid config.
        UsageError: ``last.pt`` was converted from a CPC_audio model that cannot be trained further.
    """
    last = resumable_checkpoint(out_dir, resume)
    record = load_checkpoint(last) if last is not None else None
    if record is not None:
        refuse_untrainable(record, last)
    base = config_from_checkpoint(record, last) if record is not None else CPCConfig()
    explicit: set[str] = set()
    file_path = resolve_config_file(config_file) if config_file is not None else None
    if file_path is not None:
        explicit |= _apply_config_file(base, file_path)[1]
    assignments = list(overrides)
    if steps is not None:
        assignments.append(f"train.max_steps={steps}")
    if minutes is not None:
        assignments.append(f"train.max_minutes={float(minutes)!r}")
    if seed is not None:
        assignments.append(f"train.seed={seed}")
    explicit |= {assignment.split("=", 1)[0].strip() for assignment in assignments}
    automatic = choose_preset(dataset, explicit) if record is None and dataset is not None else None
    if automatic is not None:
        base = automatic.base(base)
    if file_path is not None:
        base = _apply_config_file(base, file_path)[0]
    config, note = base.with_overrides(assignments), None
    if automatic is not None:
        config, note = automatic.size(config, explicit)
    return RunConfig(config, frozenset(explicit), record, note)


def _apply_config_file(base: CPCConfig, path: Path) -> tuple[CPCConfig, set[str]]:
    """``base`` with the keys ``path`` sets taken from it, and those keys."""
    # Validated, with a clear error naming the file; ``raw`` says which keys the file names (its other
    # values are defaults, not choices).
    config, raw = CPCConfig.load_with_mapping(path)
    loaded = config.to_dict()
    data = base.to_dict()
    keys = set()
    for section, values in raw.items():
        for key in values or {}:
            if key in loaded[section]:  # not a retired key, which loading dropped
                keys.add(f"{section}.{key}")
                data[section][key] = loaded[section][key]
    return CPCConfig.from_dict(data), keys
