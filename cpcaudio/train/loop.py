"""The training loop: ``train(dataset, out_dir, config)`` over a prepared dataset.

Multi-process training (``torchrun``; see :mod:`cpcaudio.train.distributed`). Each rank draws a disjoint
share of the windows (sampler ``rank``/``world_size``) and its own negatives from *its local batch*,
computes the InfoNCE loss as the mean over its valid (sequence, frame, step) positions, and
``DistributedDataParallel`` averages the gradients over ranks. With full windows every rank has the same
number of valid positions, so this equals the gradient of the mean loss over the union of the ranks'
batches, provided the single-process run scores each rank's half against the same negatives (the test
``tests/train/test_train.py`` checks this to 1e-5). With padded windows the per-rank counts may differ
and DDP weighs each rank equally (not each position); the difference is small and the standard DDP choice.

Batch norm under DDP. The paper's default ``encoder.normalization = "channel"`` (and ``layer``, ``none``)
has no statistics across sequences, so DDP is exactly data parallel. With ``batch`` normalisation each
rank normalises with the statistics of its own local batch (the running averages of rank 0 are broadcast
to the others at every forward, DDP's default), i.e. the effective "batch" of the statistics is the
per-rank batch; set ``train.sync_batch_norm = true`` to convert to :class:`torch.nn.SyncBatchNorm`
(statistics over all ranks; CUDA).

Exact resume: see :mod:`cpcaudio.train.resume`; validation: see :mod:`cpcaudio.train.validation`.

Early stops: SIGINT/SIGTERM write ``last.pt`` at the step reached and raise
:class:`~cpcaudio.errors.TrainingInterrupted`; a NaN or infinite loss, gradient or weight raises
:class:`~cpcaudio.errors.DivergenceError` before anything non-finite is saved (see
:mod:`cpcaudio.train.guards`). ``last.pt`` is also written every ``train.checkpoint_minutes``, so a kill
-9 loses at most that much work. Rank 0 holds the run directory's writer lock (:mod:`cpcaudio.locks`).
Time budget (``train.max_minutes``, per invocation): the run also ends, as at its last step, after the
first step at which its wall time reaches the budget; see :mod:`cpcaudio.train.budget`.
"""

from __future__ import annotations

import contextlib
import math
import os
import shlex
import signal
import sys
import time
import traceback
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any, Optional, Union

import torch
from torch import nn

from cpcaudio.augment import training_batches
from cpcaudio.config import CPCConfig
from cpcaudio.devices import DeviceLike
from cpcaudio.errors import ConfigError, DivergenceError, TrainingInterrupted
from cpcaudio.model import CPCModel
from cpcaudio.train import plan
from cpcaudio.train.budget import TimeBudget
from cpcaudio.train.checkpoint import load_checkpoint, remove_stale_temporaries, save_checkpoint
from cpcaudio.train.distributed import (
    DistributedContext,
    agree_max,
    all_gather_objects,
    barrier,
    init_distributed,
    open_control_group,
    teardown,
)
from cpcaudio.train.events import TrainEvent, TrainEventCallback, TrainSummary
from cpcaudio.train.guards import (
    Health,
    StopRequest,
    continue_hint,
    divergence_message,
    interrupted_message,
    stop_request,
)
from cpcaudio.train.metrics import Interval, MetricsLog, log_interval
from cpcaudio.train.optim import build_optimizer, build_scheduler
from cpcaudio.train.resume import (
    DATASET_KEYS,
    continue_sampler,
    match_dataset,
    plain_rng_state,
    restore_training_state,
    resumed_config,
    training_payload,
)
from cpcaudio.train.run_dir import (
    BEST_CHECKPOINT,
    LAST_CHECKPOINT,
    claim_run_dir,
    resumable_checkpoint,
    run_dir_lock,
    write_run_description,
)
from cpcaudio.train.seeding import RESHARD_STREAM, initial_model, negative_generator, negative_seed
from cpcaudio.train.update import apply_update
from cpcaudio.train.validation import validate

PathLike = Union[str, os.PathLike]


def train(
    dataset_path: PathLike,
    out_dir: PathLike,
    config: Optional[CPCConfig] = None,
    *,
    resume: bool = False,
    device: DeviceLike = None,
    progress: Optional[TrainEventCallback] = None,
    overwrite: bool = False,
    command: Optional[str] = None,
    explicit_keys: Optional[Collection[str]] = None,
    resume_record: Optional[dict[str, Any]] = None,
) -> TrainSummary:
    """Train a CPC model on a prepared dataset; write checkpoints, metrics and logs to ``out_dir``.

    Launch several processes with ``torchrun`` to train data-parallel: every process calls this function
    with the same arguments; rank 0 writes the files and reports progress.

    Args:
        dataset_path: a directory written by :func:`cpcaudio.data.prepare`.
        out_dir: the run directory (created; see :mod:`cpcaudio.train.run_dir`).
        config: the configuration (default: the paper's, with sample rate and channels from the data).
            When resuming, None means the checkpoint's; a given config may differ from the checkpoint's
            only in :data:`cpcaudio.train.RESUMABLE_KEYS` (e.g. a larger ``train.max_steps``).
        resume: continue from ``out_dir/last.pt`` (a new run starts if there is none yet, and says so).
        device: ``cpu``, ``cuda``, ``cuda:N`` or ``mps``; default CUDA, then MPS, then CPU.
        progress: called with a :class:`TrainEvent` after every step, validation and checkpoint (rank 0);
            :func:`cpcaudio.train.forward_progress` adapts a :class:`cpcaudio.progress.Progress` callback.
        overwrite: delete an existing run in ``out_dir`` instead of refusing to start.
        command: the command line to record in ``command.txt`` (default: ``sys.argv``).
        explicit_keys: config keys the user set explicitly (see :func:`cpcaudio.train.match_dataset`).
        resume_record: ``out_dir/last.pt`` as already read (by :func:`cpcaudio.train.assemble_run_config`),
            so that it is not read twice; None reads it when resuming.

    Returns:
        A :class:`TrainSummary`.

    Raises:
        UsageError: ``out_dir`` holds a run (or files that are not a run's) and neither ``resume`` nor
            ``overwrite`` is set; another process writes there (``OutputLockedError``); bad device.
        ConfigError: the config contradicts the dataset or the checkpoint being resumed.
        DataError: the dataset is unreadable or a split is empty.
        CheckpointError: ``last.pt`` cannot be loaded.
        DivergenceError: the loss, gradients or weights became NaN or infinite (nothing non-finite saved).
        TrainingInterrupted: SIGINT or SIGTERM arrived; ``last.pt`` holds the step reached.
    """
    context = init_distributed(device)
    trainer: Optional[_Trainer] = None
    try:
        with stop_request() as stop:
            trainer = _Trainer(dataset_path, out_dir, context, progress, command, stop)
            with run_dir_lock(trainer.out_dir, context):
                trainer.prepare(config, resume, overwrite, explicit_keys, resume_record)
                summary = trainer.run()
        # Leave together: a rank that destroys its gloo group while a peer still talks to it can make the
        # peer abort at exit ("terminate called without an active exception"). Only on success: after an
        # error a peer may never arrive.
        barrier(context)
        return summary
    except BaseException as error:
        if context.is_distributed:  # the failed frames' locals hold the DDP wrapper: free it (see below)
            traceback.clear_frames(error.__traceback__)
        raise
    finally:
        # DDP's reducer holds the process group. Freed after the group is destroyed, the reducer would
        # destroy it, and gloo's destructor joins its worker thread while holding the GIL, which a worker
        # finishing a collective may wait for: a hang at exit (seen under load after an error on torchrun).
        if trainer is not None:
            trainer.ddp = None
        teardown(context)


class _Trainer:
    """State of one training invocation; :meth:`run` is the loop. Private: use :func:`train`."""

    def __init__(
        self,
        dataset_path: PathLike,
        out_dir: PathLike,
        context: DistributedContext,
        progress: Optional[TrainEventCallback],
        command: Optional[str],
        stop: StopRequest,
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
        self.record: Optional[dict[str, Any]] = None
        self.ddp: Optional[nn.Module] = None
        self.stop = stop
        self.notes: list[str] = []  # shown before the start line
        self.saved_step: Optional[int] = None  # step of the run's last.pt (written or resumed from)

    def prepare(
        self,
        config: Optional[CPCConfig],
        resume: bool,
        overwrite: bool,
        explicit_keys: Optional[Collection[str]],
        resume_record: Optional[dict[str, Any]],
    ) -> None:
        """Resolve the config against the checkpoint and the dataset; check the run can start."""
        last = resumable_checkpoint(self.out_dir, resume)
        if last is not None:
            self.record = resume_record if resume_record is not None else load_checkpoint(last)
            config = resumed_config(self.record, config, last)
            if explicit_keys is not None:
                explicit_keys = set(explicit_keys) | set(DATASET_KEYS)
        else:
            claim_run_dir(self.out_dir, overwrite, self.context.is_main)
            barrier(self.context)
            if resume:
                self.notes.append(
                    f"--resume: {self.out_dir} holds no run yet (no {LAST_CHECKPOINT}); starting a new run at step 0"
                )
        config = config if config is not None else CPCConfig()
        self.config = match_dataset(
            config, self.dataset.sample_rate, self.dataset.num_channels, explicit_keys
        ).validate()
        self.train_split = self.config.train.train_split
        self.validation_split = plan.validation_split(self.dataset, self.config, self.dataset_path)
        self.max_steps = plan.max_steps(self.dataset, self.config, self.context.world_size)
        is_main = self.context.is_main
        plan.check_resources(
            self.dataset, self.dataset_path, self.config, self.device, self.out_dir if is_main else None
        )
        if is_main and self.out_dir.is_dir():
            remove_stale_temporaries(self.out_dir)  # leftovers of a write killed mid-way

    # ---- the run --------------------------------------------------------------------------------------
    def run(self) -> TrainSummary:
        config, context, device = self.config, self.context, self.device
        open_control_group(context)
        model = initial_model(config)
        plan.check_window(config, model.num_frames(config.data.window_size))
        if config.train.sync_batch_norm and context.is_distributed:
            if device.type != "cuda":
                raise ConfigError("train.sync_batch_norm=true needs CUDA devices; set it to false on cpu/mps")
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        model.to(device)
        optimizer = build_optimizer(model.parameters(), config.optim)
        scheduler = build_scheduler(optimizer, config.optim, self.max_steps)
        autocast_dtype, use_scaler = plan.precision(config, device)
        scaler = torch.amp.GradScaler(device.type, enabled=use_scaler)

        start_step = 0
        best: dict[str, Any] = {}
        if self.record is not None:
            start_step, best = restore_training_state(
                self.record, self.out_dir / LAST_CHECKPOINT, self.dataset_path, len(self.dataset),
                model, optimizer, scheduler, scaler,
            )  # fmt: skip
            self.saved_step = start_step
            resumed_from = self.out_dir / LAST_CHECKPOINT
            self._emit("message", start_step, message=f"resuming from {resumed_from} at step {start_step}")
        sampler = self._train_sampler(start_step)
        batches = training_batches(sampler, config, self.dataset.sample_rate, device)  # augment, workers

        network: nn.Module = model
        if context.is_distributed:
            device_ids = [device.index] if device.type == "cuda" else None
            network = nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
            self.ddp = network
        if config.train.compile:
            network = torch.compile(network)

        log = None
        if context.is_main:
            write_run_description(self.out_dir, config, self.command)
            log = MetricsLog(self.out_dir, start_step)
        padding = plan.padding_share(self.dataset, config)
        warning = plan.padding_warning(self.dataset, config, padding)
        for note in self.notes + ([warning] if warning else []):
            self._emit("message", start_step, message=note)
        started = plan.start_metrics(
            self.dataset, config, context, model, start_step, self.max_steps, autocast_dtype,
            self.validation_split, padding,
        )  # fmt: skip
        self._emit("start", start_step, started)

        summary = TrainSummary(
            out_dir=self.out_dir, start_step=start_step, steps=start_step, max_steps=self.max_steps,
            world_size=context.world_size, device=str(device), is_main=context.is_main,
            max_minutes=config.train.max_minutes,
        )  # fmt: skip
        if best:
            summary.best_step = best["step"]
            summary.best_validation_loss = best["loss"]
            summary.best_validation_accuracy = best["accuracy"]
        if start_step >= self.max_steps:
            self._emit("message", start_step, message=f"the run is already at step {start_step} of {self.max_steps}; "
                       "raise train.max_steps (--steps) to train further")  # fmt: skip
        interval = Interval(config.predictor.num_steps, device)
        health = Health(device, gradients_may_overflow=scaler.is_enabled())
        checkpoint_every = config.train.checkpoint_every or config.train.validate_every
        checkpoint_seconds = 60.0 * config.train.checkpoint_minutes
        check_every_step = device.type == "cpu"  # reading the health flag costs nothing there
        last_save = time.monotonic()
        try:
            if self._agreed_signal()[0]:  # asked to stop during set-up: nothing new to save
                raise self._interrupted(start_step, start_step)
            budget = TimeBudget(config.train.max_minutes)  # counts from the first step on
            for step in range(start_step + 1, self.max_steps + 1):
                began = time.perf_counter()
                loss, grad_norm = self._train_step(
                    network, model, optimizer, scheduler, scaler, batches, step, autocast_dtype, interval
                )
                health.observe(step, loss, grad_norm)
                interval.seconds += time.perf_counter() - began
                clock_due = checkpoint_seconds > 0 and time.monotonic() - last_save >= checkpoint_seconds
                signum, due, out_of_time = self._agreed_signal(clock_due, budget.reached())
                final = step == self.max_steps or bool(out_of_time)  # the run ends after this step
                logged = step % config.train.log_every == 0 or final
                validated = step % config.train.validate_every == 0 or final
                saving = validated or step % checkpoint_every == 0 or bool(due) or bool(signum)
                metrics: dict[str, Any] = {}
                if logged:
                    metrics = log_interval(interval, step, optimizer, context, summary, log)
                if logged or saving or check_every_step:
                    self._check_health(health, step, model)
                self._emit("step", step, metrics)
                if validated:
                    validation_batches = plan.window_sampler(
                        self.dataset, config, self.validation_split, config.train.seed, 0, 1
                    )
                    record = validate(model, validation_batches, config, context, step, autocast_dtype)
                    diverged = not math.isfinite(record["loss"])
                    improved = not diverged and (not best or record["loss"] < best["loss"])
                    record["best"] = improved
                    if log is not None:
                        log.write(record)
                    self._emit("validation", step, record)
                    if diverged:
                        raise self._diverged(step, 4)
                    summary.last_validation = record
                    if improved:
                        best = {"step": step, "loss": record["loss"], "accuracy": record["accuracy"]}
                        summary.best_step, summary.best_validation_loss = step, record["loss"]
                        summary.best_validation_accuracy = record["accuracy"]
                if signum:
                    name = signal.Signals(signum).name
                    self._emit("message", step, message=f"{name} received: saving last.pt at step {step}")
                if saving:
                    paths = self._save(
                        model, optimizer, scheduler, scaler, sampler, step, best, summary.last_validation,
                        save_best=validated and best.get("step") == step,
                    )
                    last_save, self.saved_step = time.monotonic(), step
                    if context.is_main:
                        summary.last_checkpoint = paths[0]
                        if paths[1] is not None:
                            summary.best_checkpoint = paths[1]
                summary.steps = step
                if signum and not final:  # (at the last step the run is complete anyway)
                    barrier(context)  # every rank has its state saved before any leaves
                    raise self._interrupted(step, start_step, signum)
                if out_of_time:
                    summary.budget_reached = True
                    break
        finally:
            batches.close()  # stops the loader workers, if any
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

    # ---- early stops ----------------------------------------------------------------------------------
    def _agreed_signal(self, checkpoint_due: bool = False, out_of_time: bool = False) -> tuple[int, int, int]:
        """(any rank's stop signal or 0, rank 0's checkpoint clock due, rank 0's time budget spent), agreed."""
        values = [self.stop.signum or 0, checkpoint_due and self.context.is_main, out_of_time and self.context.is_main]
        signum, due, spent = agree_max([int(value) for value in values], self.context)
        return signum, due, spent

    def _check_health(self, health: Health, step: int, model: CPCModel) -> None:
        """Raise :class:`DivergenceError` on every rank when any rank saw a non-finite value."""
        found = health.check(step, model, self.context)
        if found is not None:
            raise self._diverged(*found)

    def _diverged(self, step: int, what: int) -> DivergenceError:
        rate, default = self.config.optim.learning_rate, type(self.config.optim)().learning_rate
        return DivergenceError(divergence_message(step, what, rate, self.out_dir, self.saved_step, default))

    def _interrupted(self, step: int, start_step: int, signum: int = 0) -> TrainingInterrupted:
        signum = signum or self.stop.signum or int(signal.SIGINT)
        name = signal.Signals(signum).name
        last = self.out_dir / LAST_CHECKPOINT if self.saved_step is not None else None
        hint = continue_hint(self.command, self.context.world_size)
        return TrainingInterrupted(interrupted_message(name, step, start_step, self.max_steps, last, hint), signum)

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
        interval: Interval,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimiser step over ``optim.accumulate`` micro-batches; returns (its loss summed over the
        micro-batches, the gradient norm before clipping), both on the device."""
        config, context, device = self.config, self.context, self.device
        accumulate = config.optim.accumulate
        network.train()
        optimizer.zero_grad(set_to_none=True)
        step_loss = torch.zeros((), device=device)
        for micro_step in range(accumulate):
            batch = next(batches)
            signal_batch, lengths, context_signal = batch.model_inputs(device)  # (B, C, T), (B,), (B, C, T) or None
            generator = negative_generator(negative_seed(config.train.seed, context.rank, step, micro_step), device)
            last_micro = micro_step == accumulate - 1
            synchronise = contextlib.nullcontext() if last_micro or self.ddp is None else self.ddp.no_sync()
            with synchronise:
                with plan.autocast(device, autocast_dtype):
                    views = batch.view_inputs(device)  # the utterance loss's second view, if any
                    output = network(signal_batch, lengths, generator=generator, context_signal=context_signal, **views)
                scaler.scale(output.loss / accumulate).backward()
            step_loss = step_loss + output.loss.detach().float()
            interval.add(output, batch.lengths, config.data.sample_rate, accumulate)
        if scaler.is_enabled():
            scaler.unscale_(optimizer)
        max_norm = config.optim.grad_clip if config.optim.grad_clip > 0 else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm).detach().float()
        interval.grad_norm += grad_norm
        apply_update(model, optimizer, scheduler, scaler)  # optimiser, scaler, schedule, momentum encoder
        return step_loss, grad_norm

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
            {"sampler": sampler.state_dict(), "rng": plain_rng_state(self.device)}, self.context
        )
        if not self.context.is_main:
            return None, None
        payload = training_payload(
            self.config, model, optimizer, scheduler, scaler, step, self.context.world_size, states, best,
            validation, self.dataset_path, self.dataset,
        )  # fmt: skip
        best_path = None
        if save_best:
            best_path = self.out_dir / BEST_CHECKPOINT
            save_checkpoint(best_path, {**payload, "kind": "best"})
            self._emit("checkpoint", step, {}, str(best_path))
        last_path = self.out_dir / LAST_CHECKPOINT
        save_checkpoint(last_path, {**payload, "kind": "last"})
        self._emit("checkpoint", step, {}, str(last_path))
        return last_path, best_path

    def _train_sampler(self, start_step: int) -> Any:
        """This rank's training sampler: fresh, or continuing exactly where ``last.pt`` left it."""
        seed, rank, world_size = self.config.train.seed, self.context.rank, self.context.world_size

        def make_sampler(sampler_seed: int) -> Any:
            return plan.window_sampler(self.dataset, self.config, self.train_split, sampler_seed, rank, world_size)

        reseed = lambda: negative_seed(seed, 0, start_step, 0, stream=RESHARD_STREAM) % (2**31)  # noqa: E731
        sampler, note = continue_sampler(self.record, make_sampler, seed, rank, world_size, reseed, self.device)
        if note is not None:
            self._emit("message", start_step, message=note)
        return sampler

    # ---- reporting ------------------------------------------------------------------------------------
    def _emit(self, kind: str, step: int, metrics: Optional[dict[str, Any]] = None, message: str = "") -> None:
        if self.progress is not None:
            self.progress(TrainEvent(kind, step, self.max_steps, metrics or {}, message))
