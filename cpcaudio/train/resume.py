"""Continuing a run from its ``last.pt``: which config changes are allowed, the dataset check, and putting
the saved model, optimiser, scheduler, scaler, sampler and RNG states back.

Exact resume. Every source of randomness in a step is either saved or derived from the step number:

* windows come from :class:`cpcaudio.data.WindowSampler`, whose state (per rank) is saved;
* negatives are drawn from a generator seeded with ``(seed, rank, step, micro-batch)``
  (:func:`cpcaudio.train.seeding.negative_seed`), not from the global RNG, so they need no saved state
  and differ across ranks;
* the model, optimiser, scheduler and gradient-scaler states and the global python/numpy/torch (and CUDA)
  RNG states of every rank are saved too (nothing in the loop draws from the global RNGs after the model
  is initialised, but user code around ``train`` might).

So a run killed at any moment and resumed from ``last.pt`` (step ``n``) recomputes steps ``n+1..`` exactly
as the uninterrupted run would have (bit-identical on CPU for the same thread count and world size).
``metrics.jsonl`` and the TensorBoard events are cut back to step ``n`` on resume.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any, Optional

import torch

from cpcaudio.config import CPCConfig
from cpcaudio.errors import CheckpointError, ConfigError, UsageError
from cpcaudio.interop.cpc_audio import refuse_training
from cpcaudio.train.checkpoint import capture_rng_state, config_from_checkpoint, restore_rng_state

# Keys a resumed run may change; any other difference from the checkpoint's config is refused.
RESUMABLE_KEYS = frozenset(
    {
        "train.max_steps",
        "train.max_epochs",
        "train.max_minutes",
        "train.validate_every",
        "train.validation_batches",
        "train.log_every",
        "train.checkpoint_every",
        "train.checkpoint_minutes",
        "train.precision",
        "train.compile",
        "data.num_workers",  # the batches are the same for any number of loader workers
    }
)

# Taken from the dataset (see match_dataset): a resumed run has them in its checkpoint's config.
DATASET_KEYS = ("data.sample_rate", "encoder.in_channels")


def match_dataset(
    config: CPCConfig, sample_rate: int, num_channels: int, explicit_keys: Optional[Collection[str]] = None
) -> CPCConfig:
    """Set ``data.sample_rate`` and ``encoder.in_channels`` from the dataset unless the user chose them.

    Args:
        config: the requested config.
        sample_rate, num_channels: the dataset's.
        explicit_keys: ``section.key`` names the user set (config file or ``--set``); a differing value
            for one of them is an error. None: a value other than the default counts as chosen.

    Returns:
        The config with the dataset's values.

    Raises:
        ConfigError: a chosen value differs from the dataset's.
    """
    defaults = CPCConfig()
    checks = (
        ("data.sample_rate", config.data.sample_rate, defaults.data.sample_rate, sample_rate),
        ("encoder.in_channels", config.encoder.in_channels, defaults.encoder.in_channels, num_channels),
    )
    assignments = []
    for key, value, default, actual in checks:
        if value == actual:
            continue
        chosen = key in explicit_keys if explicit_keys is not None else value != default
        if chosen:
            raise ConfigError(
                f"{key}={value} but the dataset has {actual}; set {key}={actual} or leave it unset "
                "(it is taken from the dataset)"
            )
        assignments.append(f"{key}={actual}")
    return config.with_overrides(assignments) if assignments else config


def resumed_config(record: dict[str, Any], requested: Optional[CPCConfig], path: Path) -> CPCConfig:
    """The config a resumed run continues with: the checkpoint's, changed only in :data:`RESUMABLE_KEYS`.

    Args:
        record: the loaded ``last.pt``.
        requested: the config asked for (None: the checkpoint's as it is).
        path: the checkpoint's path (for messages).

    Raises:
        UsageError: the checkpoint was converted from a CPC_audio model whose prediction heads could not
            be carried over (:func:`cpcaudio.interop.refuse_training`).
        ConfigError: ``requested`` changes a key outside :data:`RESUMABLE_KEYS`.
    """
    refuse_untrainable(record, path)
    saved = config_from_checkpoint(record, path)
    if requested is None:
        return saved
    old, new = _flatten(saved.to_dict()), _flatten(requested.to_dict())
    changed = [key for key in new if new[key] != old.get(key) and key not in RESUMABLE_KEYS]
    # The saved config has the dataset's rate/channels; a default in the request is not a change.
    defaults = _flatten(CPCConfig().to_dict())
    for key in DATASET_KEYS:
        if key in changed and new[key] == defaults[key]:
            changed.remove(key)
            new[key] = old[key]
    if changed:
        key = changed[0]
        raise ConfigError(
            f"cannot change {key} when resuming ({old.get(key)!r} in {path.name}, {new[key]!r} "
            f"requested); only {', '.join(sorted(RESUMABLE_KEYS))} may change. Start a new run in "
            "another directory to change it"
        )
    return CPCConfig.from_dict(_unflatten(new))


def refuse_untrainable(record: dict[str, Any], path: Path) -> None:
    """Refuse to resume a checkpoint converted from a CPC_audio model whose prediction heads could not be
    carried over (:func:`cpcaudio.interop.refuse_training`), saying what it can still be used for.

    Raises:
        UsageError: one line: why, and the fix.
    """
    try:
        refuse_training(record, path)
    except UsageError as error:
        raise UsageError(
            f"{error}; it gives features ('cpcaudio extract', 'cpcaudio probe') but cannot be resumed: start a "
            "new run in another folder"
        ) from None


def restore_training_state(
    record: dict[str, Any],
    path: Path,
    dataset_path: Path,
    num_utterances: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
) -> tuple[int, dict[str, Any]]:
    """Load ``record`` into the fresh model, optimiser, scheduler and scaler.

    Returns:
        (steps completed, the best-validation record ``{"step", "loss", "accuracy"}`` or ``{}``).

    Raises:
        CheckpointError: the checkpoint was trained on another dataset or does not fit its own config.
    """
    missing = [key for key in ("optimizer", "scheduler", "sampler", "rng") if key not in record]
    if missing:
        raise CheckpointError(
            f"{path} holds a model but no training state ({', '.join(missing)} missing: a converted or "
            "exported checkpoint, not a run's last.pt); resume only the last.pt that 'cpcaudio train' wrote, "
            "or start a new run in another folder"
        )
    dataset_info = record.get("dataset", {})
    if dataset_info.get("num_utterances", num_utterances) != num_utterances:
        raise CheckpointError(
            f"{path} was trained on a dataset of {dataset_info['num_utterances']} utterances but "
            f"{dataset_path} has {num_utterances}; resume with the same prepared dataset"
        )
    try:
        model.load_state_dict(record["model"])
        optimizer.load_state_dict(record["optimizer"])
        scheduler.load_state_dict(record["scheduler"])
    except (RuntimeError, KeyError, ValueError) as error:
        raise CheckpointError(f"{path} does not match its config: {str(error).splitlines()[0]}") from None
    if record.get("scaler") and scaler.is_enabled():
        scaler.load_state_dict(record["scaler"])
    return int(record["step"]), dict(record.get("best") or {})


def training_payload(
    config: CPCConfig,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    step: int,
    world_size: int,
    states: list[dict[str, Any]],
    best: dict[str, Any],
    validation: Optional[dict[str, Any]],
    dataset_path: Path,
    dataset: Any,
) -> dict[str, Any]:
    """What ``last.pt`` and ``best.pt`` hold (see :mod:`cpcaudio.train.checkpoint`): everything
    :func:`restore_training_state` and :func:`continue_sampler` put back.

    Args:
        states: every rank's ``{"sampler": state_dict, "rng": plain_rng_state()}``, in rank order.
        best: the best-validation record so far; validation: the latest validation record or None.
    """
    return {
        "config": config.to_dict(),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler.is_enabled() else None,
        "step": step,
        "world_size": world_size,
        "sampler": [state["sampler"] for state in states],
        "rng": [state["rng"] for state in states],
        "best": dict(best),
        "validation": None if validation is None else {k: v for k, v in validation.items() if k != "kind"},
        "dataset": {
            "path": str(dataset_path),
            "num_utterances": len(dataset),
            "sample_rate": int(dataset.sample_rate),
            "num_channels": int(dataset.num_channels),
        },
    }


def plain_rng_state(device: torch.device) -> dict[str, Any]:
    """RNG state with tensors on the CPU (gathered across ranks, then saved)."""
    state = capture_rng_state(device)
    return {key: value.cpu() if isinstance(value, torch.Tensor) else value for key, value in state.items()}


def continue_sampler(
    record: Optional[dict[str, Any]],
    make_sampler: Callable[[int], Any],
    seed: int,
    rank: int,
    world_size: int,
    reseed: Callable[[], int],
    device: torch.device,
) -> tuple[Any, Optional[str]]:
    """This rank's training sampler: fresh, or continuing exactly where ``last.pt`` left it.

    Args:
        record: the loaded ``last.pt``, or None for a new run.
        make_sampler: builds this rank's sampler from a seed.
        seed: ``train.seed``.
        rank, world_size: this process's place in the job.
        reseed: the seed of a fresh data stream, used when the checkpoint was written by another
            number of processes (whose sharding cannot be continued).
        device: this rank's device (for its CUDA RNG state).

    Returns:
        (the sampler, a note for the user or None).
    """
    if record is None:
        return make_sampler(seed), None
    if record.get("world_size") == world_size:
        sampler = make_sampler(seed)
        sampler.load_state_dict(record["sampler"][rank])
        restore_rng_state(record["rng"][rank], device)
        return sampler, None
    note = (
        f"resuming a {record.get('world_size')}-process run with {world_size} processes: the data "
        "stream is reseeded, so the trajectory differs from an uninterrupted run"
    )
    return make_sampler(reseed()), note


def _flatten(config: dict[str, Any]) -> dict[str, Any]:
    return {f"{section}.{key}": value for section, values in config.items() for key, value in values.items()}


def _unflatten(flat: dict[str, Any]) -> dict[str, Any]:
    nested: dict[str, dict[str, Any]] = {}
    for key, value in flat.items():
        section, _, name = key.partition(".")
        nested.setdefault(section, {})[name] = value
    return nested
