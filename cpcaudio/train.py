"""The training loop: ``train(dataset, out_dir, config)`` over a prepared dataset.

What a run directory ``OUT`` holds::

    OUT/last.pt          checkpoint after the latest saved step (everything needed to resume exactly)
    OUT/best.pt          checkpoint with the lowest validation loss so far (its metrics inside)
    OUT/metrics.jsonl    one JSON object per logged step ("kind": "train") and per validation ("valid")
    OUT/tensorboard/     TensorBoard event files (train/*, valid/* scalars)
    OUT/config.yaml      the resolved configuration
    OUT/command.txt      the command line of every invocation (one per line, resumes appended)

Exact resume. Every source of randomness in a step is either saved or derived from the step number:

* windows come from :class:`cpcaudio.data.WindowSampler`, whose state (per rank) is saved;
* negatives are drawn from a generator seeded with ``(seed, rank, step, micro-batch)``
  (:func:`negative_seed`), not from the global RNG, so they need no saved state and differ across ranks;
* the model, optimiser, scheduler and gradient-scaler states and the global python/numpy/torch (and CUDA)
  RNG states of every rank are saved too (nothing in the loop draws from the global RNGs after the model
  is initialised, but user code around ``train`` might).

So a run killed at any moment and resumed from ``last.pt`` (step ``n``) recomputes steps ``n+1..`` exactly
as the uninterrupted run would have (bit-identical on CPU for the same thread count and world size).
``metrics.jsonl`` and the TensorBoard events are cut back to step ``n`` on resume.

Multi-process training (``torchrun``; see :mod:`cpcaudio.distributed`). Each rank draws a disjoint share
of the windows (sampler ``rank``/``world_size``) and its own negatives from *its local batch*, computes the
InfoNCE loss as the mean over its valid (sequence, frame, step) positions, and
``DistributedDataParallel`` averages the gradients over ranks. With full windows every rank has the same
number of valid positions, so this equals the gradient of the mean loss over the union of the ranks'
batches, provided the single-process run scores each rank's half against the same negatives (the test
``tests/test_train.py`` checks this to 1e-5). With padded windows the per-rank counts may differ and
DDP weighs each rank equally (not each position); the difference is small and the standard DDP choice.

Batch norm under DDP. The paper's default ``encoder.normalization = "channel"`` (and ``layer``, ``none``)
has no statistics across sequences, so DDP is exactly data parallel. With ``batch`` normalisation each
rank normalises with the statistics of its own local batch (the running averages of rank 0 are broadcast
to the others at every forward, DDP's default), i.e. the effective "batch" of the statistics is the
per-rank batch; set ``train.sync_batch_norm = true`` to convert to :class:`torch.nn.SyncBatchNorm`
(statistics over all ranks; CUDA).

Validation runs every ``train.validate_every`` steps on a fixed set of windows: the first
``train.validation_batches`` batches of a sampler over the held-out split with a fixed seed and fixed
negatives, so successive validations compare like with like. Batches are shared out across ranks and the
sums are all-reduced.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import shlex
import shutil
import sys
import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch
from torch import nn

from cpcaudio.checkpoint import (
    atomic_write_bytes,
    capture_rng_state,
    config_from_checkpoint,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from cpcaudio.config import CPCConfig
from cpcaudio.distributed import (
    DistributedContext,
    all_gather_objects,
    all_reduce_sum,
    barrier,
    init_distributed,
    teardown,
)
from cpcaudio.errors import CheckpointError, ConfigError, DataError, UsageError
from cpcaudio.model import CPCModel
from cpcaudio.model.loss import sample_negatives, valid_prediction_mask
from cpcaudio.optim import build_optimizer, build_scheduler

PathLike = Union[str, os.PathLike]

LAST_CHECKPOINT = "last.pt"
BEST_CHECKPOINT = "best.pt"
METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"
CONFIG_FILE = "config.yaml"
COMMAND_FILE = "command.txt"
RUN_FILES = (LAST_CHECKPOINT, BEST_CHECKPOINT, METRICS_FILE, TENSORBOARD_DIR, CONFIG_FILE, COMMAND_FILE)

# Keys a resumed run may change; any other difference from the checkpoint's config is refused.
RESUMABLE_KEYS = frozenset(
    {
        "train.max_steps",
        "train.max_epochs",
        "train.validate_every",
        "train.validation_batches",
        "train.log_every",
        "train.checkpoint_every",
        "train.precision",
        "train.compile",
        "data.num_workers",
    }
)

_VALIDATION_STREAM = 1  # tags of the seed sequences of negatives: training uses 0, validation 1


# ---- public records ---------------------------------------------------------------------------------


@dataclass
class TrainEvent:
    """What :func:`train` reports to its ``progress`` callback (on rank 0 only).

    Attributes:
        kind: ``start`` (metrics: run description), ``step`` (after every optimiser step; ``metrics`` is
            filled on logged steps, else empty), ``validation``, ``checkpoint`` (``message`` = path),
            ``message`` (a note for the user, e.g. resuming) or ``end`` (metrics: the summary as a dict).
        step: optimiser steps completed.
        max_steps: the step the run stops at.
        metrics: the record written to ``metrics.jsonl`` for this event, if any.
        message: human-readable text for ``checkpoint`` and ``message`` events.
    """

    kind: str
    step: int
    max_steps: int
    metrics: dict[str, Any] = field(default_factory=dict)
    message: str = ""


@dataclass
class TrainSummary:
    """What :func:`train` returns.

    Attributes:
        out_dir: the run directory.
        start_step: step the run (re)started from (0 for a new run).
        steps: steps completed at the end.
        max_steps: the configured end.
        final_loss: training loss of the last logged step (None if nothing was logged).
        final_accuracy: per-step (k = 1..K) training accuracy of the last logged step.
        last_validation: the last validation record (``loss``, ``accuracy``, ``step``), or None.
        best_step: step of ``best.pt`` (lowest validation loss), or None.
        best_validation_loss: its validation loss.
        best_validation_accuracy: its per-step validation accuracy.
        audio_seconds: seconds of audio trained on in this invocation (all ranks).
        train_seconds: wall seconds spent in training steps (without validation and checkpoints).
        throughput: ``audio_seconds / train_seconds``.
        last_checkpoint / best_checkpoint: paths (None if not written).
        world_size: number of processes; device: this process's device.
        is_main: True on rank 0 (the only rank whose summary should be printed).
    """

    out_dir: Path
    start_step: int
    steps: int
    max_steps: int
    final_loss: Optional[float] = None
    final_accuracy: list[float] = field(default_factory=list)
    last_validation: Optional[dict[str, Any]] = None
    best_step: Optional[int] = None
    best_validation_loss: Optional[float] = None
    best_validation_accuracy: list[float] = field(default_factory=list)
    audio_seconds: float = 0.0
    train_seconds: float = 0.0
    throughput: float = 0.0
    last_checkpoint: Optional[Path] = None
    best_checkpoint: Optional[Path] = None
    world_size: int = 1
    device: str = "cpu"
    is_main: bool = True

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (paths as strings)."""
        out = dict(self.__dict__)
        for key in ("out_dir", "last_checkpoint", "best_checkpoint"):
            out[key] = None if out[key] is None else str(out[key])
        return out


ProgressCallback = Callable[[TrainEvent], None]


# ---- building blocks (public so tests and scripts can reproduce a step) -----------------------------


def initial_model(config: CPCConfig) -> CPCModel:
    """The model a new run starts from: python, numpy and torch seeded with ``config.train.seed``, then
    ``CPCModel(config)``."""
    seed = config.train.seed
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return CPCModel(config)


def negative_seed(seed: int, rank: int, step: int, micro_step: int, stream: int = 0) -> int:
    """Seed of the negatives of one micro-batch: a hash of (stream, seed, rank, step, micro_step)."""
    state = np.random.SeedSequence([stream, seed, rank, step, micro_step]).generate_state(1, dtype=np.uint64)
    return int(state[0] & np.uint64(2**63 - 1))


def draw_negatives(
    model: CPCModel, lengths: torch.Tensor, num_samples: int, seed: int, device: torch.device
) -> torch.Tensor:
    """Negative indices for a batch, exactly as ``model.forward`` would draw them, from a seeded generator.

    Args:
        model: the (unwrapped) model; gives frame counts and the predictor settings.
        lengths: (batch,) valid samples per window.
        num_samples: the padded window size.
        seed: generator seed (see :func:`negative_seed`).
        device: where the indices are drawn and returned.

    Returns:
        (batch, frames, K, N) long tensor of flat frame indices (see :func:`cpcaudio.model.loss.sample_negatives`).
    """
    frames = model.num_frames(num_samples)
    frame_lengths = model.encoder.frame_lengths(lengths.to(device).long()).clamp(max=frames)
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    predictor = model.config.predictor
    return sample_negatives(
        frame_lengths,
        frames,
        predictor.num_steps,
        predictor.num_negatives,
        predictor.negative_sampling,
        generator=generator,
    )


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


# ---- the loop ---------------------------------------------------------------------------------------


def train(
    dataset_path: PathLike,
    out_dir: PathLike,
    config: Optional[CPCConfig] = None,
    *,
    resume: bool = False,
    device: Union[str, torch.device, None] = None,
    progress: Optional[ProgressCallback] = None,
    overwrite: bool = False,
    command: Optional[str] = None,
    explicit_keys: Optional[Collection[str]] = None,
) -> TrainSummary:
    """Train a CPC model on a prepared dataset; write checkpoints, metrics and logs to ``out_dir``.

    Launch several processes with ``torchrun`` to train data-parallel: every process calls this function
    with the same arguments; rank 0 writes the files and reports progress.

    Args:
        dataset_path: a directory written by :func:`cpcaudio.data.prepare`.
        out_dir: the run directory (created).
        config: the configuration (default: the paper's, with sample rate and channels from the data).
            When resuming, None means the checkpoint's; a given config may differ from the checkpoint's
            only in :data:`RESUMABLE_KEYS` (e.g. a larger ``train.max_steps``).
        resume: continue from ``out_dir/last.pt`` (a new run starts if there is none yet).
        device: ``cpu``, ``cuda``, ``cuda:N`` or ``mps``; default CUDA, then MPS, then CPU.
        progress: called with a :class:`TrainEvent` after every step, validation and checkpoint (rank 0).
        overwrite: delete an existing run in ``out_dir`` instead of refusing to start.
        command: the command line to record in ``command.txt`` (default: ``sys.argv``).
        explicit_keys: config keys the user set explicitly (see :func:`match_dataset`).

    Returns:
        A :class:`TrainSummary`.

    Raises:
        UsageError: ``out_dir`` holds a run and neither ``resume`` nor ``overwrite`` is set; bad device.
        ConfigError: the config contradicts the dataset or the checkpoint being resumed.
        DataError: the dataset is unreadable or a split is empty.
        CheckpointError: ``last.pt`` cannot be loaded.
    """
    context = init_distributed(device)
    try:
        summary = _Trainer(
            dataset_path, out_dir, config, context, resume, progress, overwrite, command, explicit_keys
        ).run()
        # Leave together: a rank that destroys its gloo group while a peer still talks to it can make the
        # peer abort at exit ("terminate called without an active exception"). Only on success: after an
        # error a peer may never arrive.
        barrier(context)
        return summary
    finally:
        teardown(context)


class _Trainer:
    """State of one training invocation; :meth:`run` is the loop. Private: use :func:`train`."""

    def __init__(
        self,
        dataset_path: PathLike,
        out_dir: PathLike,
        config: Optional[CPCConfig],
        context: DistributedContext,
        resume: bool,
        progress: Optional[ProgressCallback],
        overwrite: bool,
        command: Optional[str],
        explicit_keys: Optional[Collection[str]],
    ) -> None:
        from cpcaudio.data import PreparedDataset

        from cpcaudio.resources import check_output_dir

        self.context = context
        self.device = context.device
        self.out_dir = Path(out_dir)
        check_output_dir(self.out_dir, "run directory")
        self.progress = progress if context.is_main else None
        self.dataset = PreparedDataset.open(dataset_path)
        self.dataset_path = Path(dataset_path)
        self.command = command if command is not None else shlex.join(sys.argv)

        self.record = self._existing_run(resume, overwrite)
        if self.record is not None:
            config = self._resumed_config(config)
            explicit_keys = None if explicit_keys is None else set(explicit_keys) | {
                "data.sample_rate",
                "encoder.in_channels",
            }
        config = config if config is not None else CPCConfig()
        self.config = match_dataset(
            config, self.dataset.sample_rate, self.dataset.num_channels, explicit_keys
        ).validate()
        self.train_split = self.config.train.train_split
        self.validation_split = self._validation_split()
        self.max_steps = self._max_steps()
        self._check_resources()

    def _check_resources(self) -> None:
        """Refuse, before any work, a window longer than every utterance or a batch that cannot fit."""
        from cpcaudio.checkpoint import remove_stale_temporaries
        from cpcaudio.resources import check_dataset_covers_window, check_training_fits

        lengths = np.asarray(self.dataset.lengths)[self.dataset.indices(self.train_split)]
        check_dataset_covers_window(lengths, self.config, self.train_split, self.dataset_path)
        check_training_fits(self.config, self.device, self.out_dir if self.context.is_main else None)
        if self.context.is_main and self.out_dir.is_dir():
            remove_stale_temporaries(self.out_dir)  # leftovers of a write killed mid-way

    # ---- set-up ---------------------------------------------------------------------------------------
    def _existing_run(self, resume: bool, overwrite: bool) -> Optional[dict[str, Any]]:
        last = self.out_dir / LAST_CHECKPOINT
        if resume and last.is_file():
            return load_checkpoint(last, map_location=self.device)
        if last.is_file() and not overwrite:
            raise UsageError(
                f"{self.out_dir} already holds a run ({LAST_CHECKPOINT}); pass --resume to continue it or "
                "--overwrite to start over"
            )
        if overwrite and self.context.is_main:
            for name in RUN_FILES:
                path = self.out_dir / name
                if path.is_dir():
                    shutil.rmtree(path)
                elif path.exists():
                    path.unlink()
        barrier(self.context)
        return None

    def _resumed_config(self, requested: Optional[CPCConfig]) -> CPCConfig:
        saved = config_from_checkpoint(self.record, self.out_dir / LAST_CHECKPOINT)
        if requested is None:
            return saved
        old, new = _flatten(saved.to_dict()), _flatten(requested.to_dict())
        changed = [key for key in new if new[key] != old.get(key) and key not in RESUMABLE_KEYS]
        # The saved config has the dataset's rate/channels; a default in the request is not a change.
        defaults = _flatten(CPCConfig().to_dict())
        for key in ("data.sample_rate", "encoder.in_channels"):
            if key in changed and new[key] == defaults[key]:
                changed.remove(key)
                new[key] = old[key]
        if changed:
            key = changed[0]
            raise ConfigError(
                f"cannot change {key} when resuming ({old.get(key)!r} in {LAST_CHECKPOINT}, {new[key]!r} "
                f"requested); only {', '.join(sorted(RESUMABLE_KEYS))} may change. Start a new run in "
                "another directory to change it"
            )
        return CPCConfig.from_dict(_unflatten(new))

    def _validation_split(self) -> str:
        splits = set(self.dataset.splits)
        if len(self.dataset.indices(self.train_split)) == 0:
            raise DataError(
                f"dataset {self.dataset_path} has no utterances in split '{self.train_split}' "
                f"(splits: {', '.join(sorted(splits))}); set train.train_split"
            )
        requested = self.config.train.validation_split
        if requested == "auto":
            for candidate in ("valid", "test"):
                if candidate in splits and candidate != self.train_split:
                    return candidate
            raise DataError(
                f"dataset {self.dataset_path} has no held-out split ('valid' or 'test'; it has "
                f"{', '.join(sorted(splits))}); prepare it with a held-out split or set train.validation_split"
            )
        if len(self.dataset.indices(requested)) == 0:
            raise DataError(
                f"dataset {self.dataset_path} has no utterances in split '{requested}' "
                f"(splits: {', '.join(sorted(splits))}); set train.validation_split"
            )
        return requested

    def _max_steps(self) -> int:
        train_config = self.config.train
        if train_config.max_epochs <= 0:
            return train_config.max_steps
        lengths = np.asarray(self.dataset.lengths)[self.dataset.indices(self.train_split)]
        data = self.config.data
        per_step = data.window_size * data.batch_size * self.config.optim.accumulate * self.context.world_size
        return max(1, math.ceil(train_config.max_epochs * float(lengths.sum()) / per_step))

    def _precision(self) -> tuple[Optional[torch.dtype], bool]:
        """(autocast dtype or None for fp32, whether to use a GradScaler)."""
        precision = self.config.train.precision
        if precision == "auto":
            use_bf16 = self.device.type == "cuda" and torch.cuda.is_bf16_supported()
            precision = "bf16" if use_bf16 else "fp32"
        if precision == "fp32":
            return None, False
        if precision == "bf16":
            return torch.bfloat16, False
        return torch.float16, True

    def _sampler(self, split: str, seed: int, rank: int, world_size: int) -> Any:
        from cpcaudio.data import WindowSampler

        data = self.config.data
        return WindowSampler(
            self.dataset,
            window_size=data.window_size,
            batch_size=data.batch_size,
            mode=data.sampler,
            seed=seed,
            split=split,
            rank=rank,
            world_size=world_size,
            short_utterances=data.short_utterances,
        )

    # ---- the run --------------------------------------------------------------------------------------
    def run(self) -> TrainSummary:
        config, context, device = self.config, self.context, self.device
        model = initial_model(config)
        frames = model.num_frames(config.data.window_size)
        if frames <= config.predictor.num_steps:
            raise ConfigError(
                f"data.window_size={config.data.window_size} gives {frames} frames, too few to predict "
                f"predictor.num_steps={config.predictor.num_steps} steps ahead; use a larger window"
            )
        if config.train.sync_batch_norm and context.is_distributed:
            if device.type != "cuda":
                raise ConfigError("train.sync_batch_norm=true needs CUDA devices; set it to false on cpu/mps")
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        model.to(device)
        optimizer = build_optimizer(model.parameters(), config.optim)
        scheduler = build_scheduler(optimizer, config.optim, self.max_steps)
        autocast_dtype, use_scaler = self._precision()
        scaler = torch.amp.GradScaler(device.type, enabled=use_scaler)

        start_step = 0
        best: dict[str, Any] = {}
        if self.record is not None:
            start_step, best = self._restore(model, optimizer, scheduler, scaler)
        sampler = self._train_sampler(start_step)
        batches = iter(sampler)

        network: nn.Module = model
        if context.is_distributed:
            device_ids = [device.index] if device.type == "cuda" else None
            network = nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
        self.ddp = network if context.is_distributed else None
        if config.train.compile:
            network = torch.compile(network)

        log = _RunLog(self, start_step) if context.is_main else None
        self._emit("start", start_step, self._start_metrics(model, start_step, autocast_dtype))

        summary = TrainSummary(
            out_dir=self.out_dir,
            start_step=start_step,
            steps=start_step,
            max_steps=self.max_steps,
            world_size=context.world_size,
            device=str(device),
            is_main=context.is_main,
        )
        if best:
            summary.best_step = best["step"]
            summary.best_validation_loss = best["loss"]
            summary.best_validation_accuracy = best["accuracy"]
        if start_step >= self.max_steps:
            self._emit(
                "message",
                start_step,
                message=f"the run is already at step {start_step} of {self.max_steps}; raise train.max_steps "
                "(--steps) to train further",
            )
        interval = _Interval(config.predictor.num_steps, device)
        checkpoint_every = config.train.checkpoint_every or config.train.validate_every
        try:
            for step in range(start_step + 1, self.max_steps + 1):
                began = time.perf_counter()
                self._train_step(network, model, optimizer, scheduler, scaler, batches, step, autocast_dtype, interval)
                interval.seconds += time.perf_counter() - began
                metrics: dict[str, Any] = {}
                if step % config.train.log_every == 0 or step == self.max_steps:
                    metrics = self._log_interval(interval, step, optimizer, summary, log)
                self._emit("step", step, metrics)
                validated = step % config.train.validate_every == 0 or step == self.max_steps
                if validated:
                    record = self._validate(model, step, autocast_dtype)
                    summary.last_validation = record
                    improved = not best or record["loss"] < best["loss"]
                    record["best"] = improved
                    if improved:
                        best = {"step": step, "loss": record["loss"], "accuracy": record["accuracy"]}
                        summary.best_step, summary.best_validation_loss = step, record["loss"]
                        summary.best_validation_accuracy = record["accuracy"]
                    if log is not None:
                        log.write(record)
                    self._emit("validation", step, record)
                if validated or step % checkpoint_every == 0:
                    paths = self._save(
                        model, optimizer, scheduler, scaler, sampler, step, best, summary.last_validation,
                        save_best=validated and best.get("step") == step,
                    )
                    if context.is_main:
                        summary.last_checkpoint = paths[0]
                        if paths[1] is not None:
                            summary.best_checkpoint = paths[1]
                summary.steps = step
        finally:
            if log is not None:
                log.close()
        if context.is_main:
            if summary.best_checkpoint is None and (self.out_dir / BEST_CHECKPOINT).is_file():
                summary.best_checkpoint = self.out_dir / BEST_CHECKPOINT
            if summary.last_checkpoint is None and (self.out_dir / LAST_CHECKPOINT).is_file():
                summary.last_checkpoint = self.out_dir / LAST_CHECKPOINT
        summary.audio_seconds = interval.total_audio_seconds
        summary.train_seconds = interval.total_seconds
        summary.throughput = summary.audio_seconds / summary.train_seconds if summary.train_seconds else 0.0
        self._emit("end", summary.steps, summary.to_dict())
        return summary

    def _train_step(
        self,
        network: nn.Module,
        model: CPCModel,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        scaler: torch.amp.GradScaler,
        batches: Iterator[Any],
        step: int,
        autocast_dtype: Optional[torch.dtype],
        interval: _Interval,
    ) -> None:
        """One optimiser step over ``optim.accumulate`` micro-batches."""
        config, context, device = self.config, self.context, self.device
        accumulate = config.optim.accumulate
        network.train()
        optimizer.zero_grad(set_to_none=True)
        for micro_step in range(accumulate):
            batch = next(batches)
            signal = batch.signal.to(device, non_blocking=True)  # (B, C, window)
            lengths = batch.lengths.to(device, non_blocking=True)  # (B,)
            seed = negative_seed(config.train.seed, context.rank, step, micro_step)
            negatives = draw_negatives(model, lengths, signal.shape[-1], seed, device)
            last_micro = micro_step == accumulate - 1
            synchronise = contextlib.nullcontext() if last_micro or self.ddp is None else self.ddp.no_sync()
            with synchronise:
                with _autocast(device, autocast_dtype):
                    output = network(signal, lengths, negatives)
                scaler.scale(output.loss / accumulate).backward()
            interval.add(output, batch.lengths, config.data.sample_rate, accumulate)
        if scaler.is_enabled():
            scaler.unscale_(optimizer)
        max_norm = config.optim.grad_clip if config.optim.grad_clip > 0 else float("inf")
        interval.grad_norm += torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm).detach().float()
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()

    def _log_interval(
        self,
        interval: _Interval,
        step: int,
        optimizer: torch.optim.Optimizer,
        summary: TrainSummary,
        log: Optional[_RunLog],
    ) -> dict[str, Any]:
        """Reduce the interval's sums over ranks, write the ``train`` record (rank 0) and reset."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        sums = interval.reduced(self.context)
        steps = max(interval.steps, 1)
        accuracy = (sums["correct"] / sums["counts"].clamp(min=1)).tolist()
        record = {
            "kind": "train",
            "step": step,
            "loss": float(sums["loss"]) / (steps * self.context.world_size),
            "accuracy": accuracy,
            "throughput": float(sums["audio_seconds"]) / interval.seconds if interval.seconds > 0 else 0.0,
            "lr": float(optimizer.param_groups[0]["lr"]),
            "grad_norm": float(interval.grad_norm) / steps,
            "audio_seconds": float(sums["audio_seconds"]),
            "seconds": interval.seconds,
        }
        summary.final_loss, summary.final_accuracy = record["loss"], accuracy
        interval.reset()
        if log is not None:
            log.write(record)
        return record

    @torch.no_grad()
    def _validate(self, model: CPCModel, step: int, autocast_dtype: Optional[torch.dtype]) -> dict[str, Any]:
        """InfoNCE loss and per-step accuracy on the fixed validation windows (all ranks take part)."""
        config, context, device = self.config, self.context, self.device
        was_training = model.training
        model.eval()
        steps = config.predictor.num_steps
        sums = torch.zeros(2 + 2 * steps, dtype=_sum_dtype(device), device=device)  # loss, count, correct, counts
        sampler = self._sampler(self.validation_split, config.train.seed, 0, 1)
        for index, batch in zip(range(config.train.validation_batches), sampler):
            if index % context.world_size != context.rank:
                continue
            signal = batch.signal.to(device)
            lengths = batch.lengths.to(device)
            seed = negative_seed(config.train.seed, 0, 0, index, stream=_VALIDATION_STREAM)
            negatives = draw_negatives(model, lengths, signal.shape[-1], seed, device)
            with _autocast(device, autocast_dtype):
                output = model(signal, lengths, negatives)
            counts = _step_counts(output, steps).to(sums.dtype)
            total = counts.sum()
            sums[0] += output.loss.to(sums.dtype) * total
            sums[1] += total
            sums[2 : 2 + steps] += output.step_accuracy.to(sums.dtype).nan_to_num(0.0) * counts
            sums[2 + steps :] += counts
        all_reduce_sum(sums, context)
        model.train(was_training)
        return {
            "kind": "valid",
            "step": step,
            "loss": float(sums[0] / sums[1].clamp(min=1)),
            "accuracy": (sums[2 : 2 + steps] / sums[2 + steps :].clamp(min=1)).tolist(),
            "positions": int(sums[1]),
        }

    # ---- checkpoints ----------------------------------------------------------------------------------
    def _save(
        self,
        model: CPCModel,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        scaler: torch.amp.GradScaler,
        sampler: Any,
        step: int,
        best: dict[str, Any],
        validation: Optional[dict[str, Any]],
        save_best: bool,
    ) -> tuple[Optional[Path], Optional[Path]]:
        """Gather every rank's sampler and RNG state; rank 0 writes ``best.pt`` (if ``save_best``) then ``last.pt``."""
        states = all_gather_objects(
            {"sampler": sampler.state_dict(), "rng": _plain_rng_state(self.device)}, self.context
        )
        if not self.context.is_main:
            return None, None
        payload = {
            "config": self.config.to_dict(),
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict() if scaler.is_enabled() else None,
            "step": step,
            "world_size": self.context.world_size,
            "sampler": [state["sampler"] for state in states],
            "rng": [state["rng"] for state in states],
            "best": dict(best),
            "validation": None if validation is None else {k: v for k, v in validation.items() if k != "kind"},
            "dataset": {
                "path": str(self.dataset_path),
                "num_utterances": len(self.dataset),
                "sample_rate": int(self.dataset.sample_rate),
                "num_channels": int(self.dataset.num_channels),
            },
        }
        best_path = None
        if save_best:
            best_path = self.out_dir / BEST_CHECKPOINT
            save_checkpoint(best_path, {**payload, "kind": "best"})
            self._emit("checkpoint", step, {}, str(best_path))
        last_path = self.out_dir / LAST_CHECKPOINT
        save_checkpoint(last_path, {**payload, "kind": "last"})
        self._emit("checkpoint", step, {}, str(last_path))
        return last_path, best_path

    def _restore(
        self,
        model: CPCModel,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        scaler: torch.amp.GradScaler,
    ) -> tuple[int, dict[str, Any]]:
        """Load ``last.pt`` into the fresh model, optimiser, scheduler and scaler; returns (step, best record)."""
        record, path = self.record, self.out_dir / LAST_CHECKPOINT
        dataset_info = record.get("dataset", {})
        if dataset_info.get("num_utterances", len(self.dataset)) != len(self.dataset):
            raise CheckpointError(
                f"{path} was trained on a dataset of {dataset_info['num_utterances']} utterances but "
                f"{self.dataset_path} has {len(self.dataset)}; resume with the same prepared dataset"
            )
        try:
            model.load_state_dict(record["model"])
            optimizer.load_state_dict(record["optimizer"])
            scheduler.load_state_dict(record["scheduler"])
        except (RuntimeError, KeyError, ValueError) as error:
            raise CheckpointError(f"{path} does not match its config: {str(error).splitlines()[0]}") from None
        if record.get("scaler") and scaler.is_enabled():
            scaler.load_state_dict(record["scaler"])
        step = int(record["step"])
        self._emit("message", step, message=f"resuming from {path} at step {step}")
        return step, dict(record.get("best") or {})

    def _train_sampler(self, start_step: int) -> Any:
        """This rank's training sampler: fresh, or continuing exactly where ``last.pt`` left it."""
        seed, rank, world_size = self.config.train.seed, self.context.rank, self.context.world_size
        record = self.record
        if record is None:
            return self._sampler(self.train_split, seed, rank, world_size)
        if record.get("world_size") == world_size:
            sampler = self._sampler(self.train_split, seed, rank, world_size)
            sampler.load_state_dict(record["sampler"][rank])
            restore_rng_state(record["rng"][rank], self.device)
            return sampler
        # Another number of processes shards the data differently: continue on a fresh, seeded stream.
        reseeded = negative_seed(seed, 0, start_step, 0, stream=2) % (2**31)
        self._emit(
            "message",
            start_step,
            message=f"resuming a {record.get('world_size')}-process run with {world_size} processes: the data "
            "stream is reseeded, so the trajectory differs from an uninterrupted run",
        )
        return self._sampler(self.train_split, reseeded, rank, world_size)

    # ---- reporting ------------------------------------------------------------------------------------
    def _emit(self, kind: str, step: int, metrics: Optional[dict[str, Any]] = None, message: str = "") -> None:
        if self.progress is not None:
            self.progress(TrainEvent(kind, step, self.max_steps, metrics or {}, message))

    def _start_metrics(self, model: CPCModel, start_step: int, autocast_dtype: Optional[torch.dtype]) -> dict[str, Any]:
        data = self.config.data
        return {
            "start_step": start_step,
            "max_steps": self.max_steps,
            "device": str(self.device),
            "world_size": self.context.world_size,
            "precision": "fp32" if autocast_dtype is None else str(autocast_dtype).replace("torch.", ""),
            "parameters": sum(p.numel() for p in model.parameters()),
            "train_utterances": len(self.dataset.indices(self.train_split)),
            "validation_split": self.validation_split,
            "validation_utterances": len(self.dataset.indices(self.validation_split)),
            "audio_seconds_per_step": data.batch_size
            * data.window_size
            * self.config.optim.accumulate
            * self.context.world_size
            / data.sample_rate,
        }


# ---- small helpers ----------------------------------------------------------------------------------


class _Interval:
    """Sums over the steps since the last log line, kept on the device (no sync per step)."""

    def __init__(self, num_steps: int, device: torch.device) -> None:
        self.num_steps = num_steps
        self.device = device
        self.total_audio_seconds = 0.0
        self.total_seconds = 0.0
        self.reset()

    def reset(self) -> None:
        dtype = _sum_dtype(self.device)
        self.loss = torch.zeros((), dtype=dtype, device=self.device)
        self.correct = torch.zeros(self.num_steps, dtype=dtype, device=self.device)
        self.counts = torch.zeros(self.num_steps, dtype=dtype, device=self.device)
        self.grad_norm = torch.zeros((), dtype=torch.float32, device=self.device)
        self.audio_seconds = 0.0
        self.seconds = 0.0
        self.steps = 0
        self.micro_steps = 0

    def add(self, output: Any, lengths: torch.Tensor, sample_rate: int, accumulate: int) -> None:
        """Add one micro-batch (its loss weighs ``1 / accumulate`` of a step)."""
        dtype = self.loss.dtype
        counts = _step_counts(output, self.num_steps).to(dtype)
        self.loss += output.loss.detach().to(dtype) / accumulate
        self.correct += output.step_accuracy.detach().to(dtype).nan_to_num(0.0) * counts
        self.counts += counts
        seconds = float(lengths.sum()) / sample_rate
        self.audio_seconds += seconds
        self.total_audio_seconds += seconds
        self.micro_steps += 1
        if self.micro_steps % accumulate == 0:
            self.steps += 1

    def reduced(self, context: DistributedContext) -> dict[str, torch.Tensor]:
        """The sums over all ranks (loss summed over ranks too: divide by steps * world_size)."""
        packed = torch.cat(
            [
                self.loss.view(1),
                self.correct,
                self.counts,
                torch.tensor([self.audio_seconds], dtype=self.loss.dtype, device=self.device),
            ]
        )
        all_reduce_sum(packed, context)
        self.total_seconds += self.seconds
        k = self.num_steps
        self.total_audio_seconds += float(packed[-1]) - self.audio_seconds  # other ranks' audio
        return {
            "loss": packed[0],
            "correct": packed[1 : 1 + k],
            "counts": packed[1 + k : 1 + 2 * k],
            "audio_seconds": packed[-1],
        }


class _RunLog:
    """Rank 0's files: metrics.jsonl, TensorBoard events, config.yaml and command.txt."""

    def __init__(self, trainer: _Trainer, start_step: int) -> None:
        out_dir = trainer.out_dir
        out_dir.mkdir(parents=True, exist_ok=True)
        trainer.config.save(out_dir / CONFIG_FILE)
        with open(out_dir / COMMAND_FILE, "a") as file:
            file.write(trainer.command + "\n")
        self.metrics_path = out_dir / METRICS_FILE
        kept = _read_metrics(self.metrics_path, max_step=start_step) if start_step > 0 else []
        text = "".join(json.dumps(record) + "\n" for record in kept).encode()
        atomic_write_bytes(self.metrics_path, lambda file: file.write(text))  # a kill here loses nothing
        self.file = open(self.metrics_path, "a")
        from torch.utils.tensorboard import SummaryWriter

        events = out_dir / TENSORBOARD_DIR
        if start_step == 0 and events.is_dir():
            shutil.rmtree(events)  # leftovers of a run killed before its first checkpoint
        purge = {"purge_step": start_step + 1} if start_step > 0 else {}
        self.writer = SummaryWriter(str(events), **purge)

    def write(self, record: dict[str, Any]) -> None:
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        prefix, step = record["kind"], record["step"]
        self.writer.add_scalar(f"{prefix}/loss", record["loss"], step)
        for k, accuracy in enumerate(record["accuracy"], start=1):
            self.writer.add_scalar(f"{prefix}/accuracy_step{k}", accuracy, step)
        for key in ("throughput", "lr", "grad_norm"):
            if key in record:
                self.writer.add_scalar(f"{prefix}/{key}", record[key], step)

    def close(self) -> None:
        self.file.close()
        self.writer.close()


def read_metrics(out_dir: PathLike, kind: Optional[str] = None) -> list[dict[str, Any]]:
    """The records of ``out_dir/metrics.jsonl`` (optionally only ``train`` or ``valid`` ones)."""
    records = _read_metrics(Path(out_dir) / METRICS_FILE)
    return [r for r in records if kind is None or r.get("kind") == kind]


def _read_metrics(path: Path, max_step: Optional[int] = None) -> list[dict[str, Any]]:
    """Parse a metrics file, skipping a torn last line; keep records with ``step <= max_step``."""
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and (max_step is None or record.get("step", 0) <= max_step):
            records.append(record)
    return records


def _step_counts(output: Any, num_steps: int) -> torch.Tensor:
    """(K,) number of valid (sequence, frame) positions per step of a model output."""
    frames = output.latents.shape[1]
    return valid_prediction_mask(output.frame_lengths, frames, num_steps).sum(dim=(0, 1))


def _sum_dtype(device: torch.device) -> torch.dtype:
    """float64 for metric sums, except on MPS (which has no float64)."""
    return torch.float32 if device.type == "mps" else torch.float64


def _autocast(device: torch.device, dtype: Optional[torch.dtype]) -> contextlib.AbstractContextManager:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def _plain_rng_state(device: torch.device) -> dict[str, Any]:
    """RNG state with tensors on the CPU (gathered across ranks, then saved)."""
    state = capture_rng_state(device)
    return {key: value.cpu() if isinstance(value, torch.Tensor) else value for key, value in state.items()}


def _flatten(config: dict[str, Any]) -> dict[str, Any]:
    return {f"{section}.{key}": value for section, values in config.items() for key, value in values.items()}


def _unflatten(flat: dict[str, Any]) -> dict[str, Any]:
    nested: dict[str, dict[str, Any]] = {}
    for key, value in flat.items():
        section, _, name = key.partition(".")
        nested.setdefault(section, {})[name] = value
    return nested
