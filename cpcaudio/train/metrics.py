"""Training metrics: the sums kept between log lines, and their records in ``metrics.jsonl`` and TensorBoard.

Each line of ``OUT/metrics.jsonl`` is one JSON object: ``{"kind": "train", "step", "loss", "accuracy"
(per prediction step), "throughput", "lr", "grad_norm", "audio_seconds", "seconds"}`` for a logged step,
``{"kind": "valid", "step", "loss", "accuracy", "positions", "best"}`` for a validation. With an utterance
loss (config ``utterance``) both also hold ``utterance_loss`` (unweighted; ``loss`` is the total trained
on). TensorBoard gets the same numbers as ``train/*`` and ``valid/*`` scalars.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Optional, Union

import torch

from cpcaudio.model.loss import valid_prediction_mask
from cpcaudio.train.checkpoint import atomic_write_bytes
from cpcaudio.train.distributed import DistributedContext, all_reduce_sum
from cpcaudio.train.run_dir import METRICS_FILE, TENSORBOARD_DIR

PathLike = Union[str, os.PathLike]


class MetricsLog:
    """Rank 0's metric files: ``metrics.jsonl`` and the TensorBoard events, cut back to ``start_step``.

    Args:
        out_dir: the run directory (exists).
        start_step: the step the run (re)starts from; records and events after it are dropped (a
            resumed run recomputes them).
    """

    def __init__(self, out_dir: PathLike, start_step: int) -> None:
        out_dir = Path(out_dir)
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
        """Append one ``train`` or ``valid`` record (flushed at once) and its TensorBoard scalars."""
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        prefix, step = record["kind"], record["step"]
        self.writer.add_scalar(f"{prefix}/loss", record["loss"], step)
        for k, accuracy in enumerate(record["accuracy"], start=1):
            self.writer.add_scalar(f"{prefix}/accuracy_step{k}", accuracy, step)
        for key in ("throughput", "lr", "grad_norm", "utterance_loss"):
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


class Interval:
    """Sums over the steps since the last log line, kept on the device (no sync per step)."""

    def __init__(self, num_steps: int, device: torch.device) -> None:
        self.num_steps = num_steps
        self.device = device
        self.total_audio_seconds = 0.0
        self.total_seconds = 0.0
        self.reset()

    def reset(self) -> None:
        dtype = sum_dtype(self.device)
        self.loss = torch.zeros((), dtype=dtype, device=self.device)
        self.correct = torch.zeros(self.num_steps, dtype=dtype, device=self.device)
        self.counts = torch.zeros(self.num_steps, dtype=dtype, device=self.device)
        self.grad_norm = torch.zeros((), dtype=torch.float32, device=self.device)
        self.utterance_loss = torch.zeros((), dtype=dtype, device=self.device)
        self.has_utterance_loss = False  # whether the outputs carry one (then the record does too)
        self.audio_seconds = 0.0
        self.seconds = 0.0
        self.steps = 0
        self.micro_steps = 0

    def add(self, output: Any, lengths: torch.Tensor, sample_rate: int, accumulate: int) -> None:
        """Add one micro-batch (its loss weighs ``1 / accumulate`` of a step).

        Args:
            output: the model's :class:`cpcaudio.model.CPCOutput`.
            lengths: (batch,) valid samples of the micro-batch's windows.
            sample_rate: samples per second (for the audio seconds).
            accumulate: micro-batches per optimiser step.
        """
        dtype = self.loss.dtype
        counts = step_counts(output, self.num_steps).to(dtype)
        self.loss += output.loss.detach().to(dtype) / accumulate
        utterance_loss = getattr(output, "utterance_loss", None)
        if utterance_loss is not None:
            self.utterance_loss += utterance_loss.detach().to(dtype) / accumulate
            self.has_utterance_loss = True
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
                self.utterance_loss.view(1),
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
            "utterance_loss": packed[1 + 2 * k],
            "audio_seconds": packed[-1],
        }

    def record(self, step: int, learning_rate: float, context: DistributedContext) -> dict[str, Any]:
        """The ``train`` record of the steps since the last one (reduced over ranks); resets the sums."""
        sums = self.reduced(context)
        steps = max(self.steps, 1)
        record = {
            "kind": "train",
            "step": step,
            "loss": float(sums["loss"]) / (steps * context.world_size),
            "accuracy": (sums["correct"] / sums["counts"].clamp(min=1)).tolist(),
            "throughput": float(sums["audio_seconds"]) / self.seconds if self.seconds > 0 else 0.0,
            "lr": learning_rate,
            "grad_norm": float(self.grad_norm) / steps,
            "audio_seconds": float(sums["audio_seconds"]),
            "seconds": self.seconds,
        }
        if self.has_utterance_loss:
            record["utterance_loss"] = float(sums["utterance_loss"]) / (steps * context.world_size)
        self.reset()
        return record


def log_interval(
    interval: Interval,
    step: int,
    optimizer: torch.optim.Optimizer,
    context: DistributedContext,
    summary: Any,
    log: Optional[MetricsLog],
) -> dict[str, Any]:
    """Reduce the interval's sums over ranks, write the ``train`` record (rank 0) and reset.

    Args:
        interval: the sums since the last record.
        step: the optimiser step logged.
        optimizer: gives the learning rate.
        context: this process's place in the job.
        summary: the run's :class:`~cpcaudio.train.events.TrainSummary` (its final loss and accuracy are set).
        log: rank 0's metric files, or None.

    Returns:
        The ``train`` record.
    """
    if interval.device.type == "cuda":
        torch.cuda.synchronize(interval.device)
    record = interval.record(step, float(optimizer.param_groups[0]["lr"]), context)
    summary.final_loss, summary.final_accuracy = record["loss"], record["accuracy"]
    if log is not None:
        log.write(record)
    return record


def step_counts(output: Any, num_steps: int) -> torch.Tensor:
    """(K,) number of valid (sequence, frame) positions per prediction step of a model output."""
    frames = output.latents.shape[1]
    return valid_prediction_mask(output.frame_lengths, frames, num_steps).sum(dim=(0, 1))


def sum_dtype(device: torch.device) -> torch.dtype:
    """float64 for metric sums, except on MPS (which has no float64)."""
    return torch.float32 if device.type == "mps" else torch.float64
