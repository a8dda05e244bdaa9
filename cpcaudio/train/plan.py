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


# Padding above this share of the window samples is worth a warning at the start of a run.
PADDING_WARNING = 0.10


def padding_share(dataset: Any, config: CPCConfig) -> float:
    """The expected share of the training windows' samples that are zero padding (masked from the loss).

    Sampled windows (``uniform``, ``same-speaker``) pick an utterance in proportion to its length, so a
    window holds ``min(length, window)`` real samples on average over that choice; ``sequential`` tiles
    every utterance and pads its last window. ``short_utterances = skip`` never pads a sampled window.
    """
    data = config.data
    window = data.window_size
    lengths = np.asarray(dataset.lengths, dtype=np.float64)[dataset.indices(config.train.train_split)]
    if data.short_utterances == "skip":
        return 0.0  # only whole windows are read
    if lengths.size == 0 or lengths.sum() <= 0:
        return 0.0
    if data.sampler == "sequential":
        windows = np.ceil(lengths / window).sum()
        return float(1.0 - lengths.sum() / (windows * window))
    return float(1.0 - (lengths * np.minimum(lengths, window)).sum() / lengths.sum() / window)


def padding_warning(dataset: Any, config: CPCConfig, share: float) -> Optional[str]:
    """One line saying how much of each window is padding when windows exceed the utterances (None when
    padding is below :data:`PADDING_WARNING`)."""
    if share < PADDING_WARNING:
        return None
    data = config.data
    window = data.window_size
    lengths = np.asarray(dataset.lengths)[dataset.indices(config.train.train_split)]
    shorter = int((lengths < window).sum())
    if shorter == 0:  # sequential windows: the tail of each utterance is padded
        where = f"the last window of each training utterance is zero-padded (data.sampler={data.sampler})"
    else:
        which = "every training utterance" if shorter == lengths.size else f"{shorter} of {lengths.size} training utterances"
        where = f"data.window_size={window} samples ({window / data.sample_rate:g} s) is longer than {which}"
    nominal = data.batch_size * window * config.optim.accumulate / data.sample_rate
    hop = math.prod(config.encoder.strides)
    typical = int(np.median(lengths)) // hop * hop
    fix = (
        f"--set data.window_size={typical} (the median utterance) or data.short_utterances=skip"
        if 0 < typical < window
        else "a smaller data.window_size or data.sampler=uniform"
    )
    return (
        f"warning: {where}: about {share:.0%} of each window is zero padding (masked out of the loss), "
        f"so a step holds {nominal * (1 - share):.2f} s of audio per process, not {nominal:.2f} s; to train on "
        f"full windows use {fix}"
    )


def start_metrics(
    dataset: Any,
    config: CPCConfig,
    context: Any,
    model: torch.nn.Module,
    start_step: int,
    max_steps: int,
    autocast_dtype: Optional[torch.dtype],
    validation_split: str,
    padding: float,
) -> dict[str, Any]:
    """The ``start`` event's description of the run; the audio per step counts real samples only
    (``padding`` is :func:`padding_share`)."""
    data = config.data
    nominal = data.batch_size * data.window_size * config.optim.accumulate * context.world_size / data.sample_rate
    return {
        "start_step": start_step,
        "max_steps": max_steps,
        "max_minutes": config.train.max_minutes,
        "device": str(context.device),
        "world_size": context.world_size,
        "precision": "fp32" if autocast_dtype is None else str(autocast_dtype).replace("torch.", ""),
        "parameters": sum(p.numel() for p in model.parameters()),
        "train_utterances": len(dataset.indices(config.train.train_split)),
        "validation_split": validation_split,
        "validation_utterances": len(dataset.indices(validation_split)),
        "audio_seconds_per_step": nominal * (1.0 - padding),
        "padding": padding,
    }
