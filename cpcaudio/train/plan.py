"""What a run will do, decided before the first step: its splits, its length, its precision, its samplers,
and whether the data and the machine can take it."""

from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from cpcaudio.config import CPCConfig
from cpcaudio.errors import ConfigError, DataError


def validation_split(dataset: Any, config: CPCConfig, dataset_path: Path) -> str:
    """The held-out split to validate on (``train.validation_split``; ``auto``: ``valid``, else ``test``).

    Raises:
        DataError: the training split or the chosen held-out split is empty or missing.
    """
    splits = set(dataset.splits)
    train_split = config.train.train_split
    if len(dataset.indices(train_split)) == 0:
        raise DataError(
            f"dataset {dataset_path} has no utterances in split '{train_split}' "
            f"(splits: {', '.join(sorted(splits))}); set train.train_split"
        )
    requested = config.train.validation_split
    if requested == "auto":
        for candidate in ("valid", "test"):
            if candidate in splits and candidate != train_split:
                return candidate
        raise DataError(
            f"dataset {dataset_path} has no held-out split ('valid' or 'test'; it has "
            f"{', '.join(sorted(splits))}); prepare it with a held-out split or set train.validation_split"
        )
    if len(dataset.indices(requested)) == 0:
        raise DataError(
            f"dataset {dataset_path} has no utterances in split '{requested}' "
            f"(splits: {', '.join(sorted(splits))}); set train.validation_split"
        )
    return requested


def max_steps(dataset: Any, config: CPCConfig, world_size: int) -> int:
    """The step the run stops at: ``train.max_steps``, or enough steps for ``train.max_epochs`` passes
    over the training split's samples (all ranks together) when that is set."""
    train_config = config.train
    if train_config.max_epochs <= 0:
        return train_config.max_steps
    lengths = np.asarray(dataset.lengths)[dataset.indices(train_config.train_split)]
    data = config.data
    per_step = data.window_size * data.batch_size * config.optim.accumulate * world_size
    return max(1, math.ceil(train_config.max_epochs * float(lengths.sum()) / per_step))


def precision(config: CPCConfig, device: torch.device) -> tuple[Optional[torch.dtype], bool]:
    """(autocast dtype or None for fp32, whether to use a GradScaler) for ``train.precision`` on ``device``."""
    requested = config.train.precision
    if requested == "auto":
        use_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
        requested = "bf16" if use_bf16 else "fp32"
    if requested == "fp32":
        return None, False
    if requested == "bf16":
        return torch.bfloat16, False
    return torch.float16, True


def autocast(device: torch.device, dtype: Optional[torch.dtype]) -> contextlib.AbstractContextManager:
    """``torch.autocast`` to ``dtype`` on ``device``, or nothing for fp32 (``dtype`` None)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def window_sampler(dataset: Any, config: CPCConfig, split: str, seed: int, rank: int, world_size: int) -> Any:
    """A :class:`cpcaudio.data.WindowSampler` over ``split`` with the config's window, batch and mode."""
    from cpcaudio.data import WindowSampler

    data = config.data
    return WindowSampler(
        dataset, window_size=data.window_size, batch_size=data.batch_size, mode=data.sampler, seed=seed,
        split=split, rank=rank, world_size=world_size, short_utterances=data.short_utterances,
    )


def check_window(config: CPCConfig, num_frames: int) -> None:
    """Refuse a window of ``num_frames`` frames too short to predict ``predictor.num_steps`` ahead."""
    if num_frames <= config.predictor.num_steps:
        raise ConfigError(
            f"data.window_size={config.data.window_size} gives {num_frames} frames, too few to predict "
            f"predictor.num_steps={config.predictor.num_steps} steps ahead; use a larger window"
        )


def check_resources(
    dataset: Any, dataset_path: Path, config: CPCConfig, device: torch.device, out_dir: Optional[Path]
) -> None:
    """Refuse, before any work, a window longer than every utterance or a batch that cannot fit.

    Args:
        out_dir: the run directory whose disk must hold the checkpoints (None: not this process's job).
    """
    from cpcaudio.resources import check_dataset_covers_window, check_training_fits

    train_split = config.train.train_split
    lengths = np.asarray(dataset.lengths)[dataset.indices(train_split)]
    check_dataset_covers_window(lengths, config, train_split, dataset_path)
    check_training_fits(config, device, out_dir)
