"""Resource guards: refuse, before any work starts, what cannot fit in memory or on disk.

Every check here is cheap (arithmetic on the config and a few ``stat`` calls) and raises a
:class:`~cpcaudio.errors.CPCAudioError` whose one-line message names the number that does not fit and the
option that fixes it. The estimates are deliberately on the low side of what a run really needs (what
the tensors of one step must hold at once, without the allocator's slack), so a refusal means the run
would certainly fail; a run that passes can still run out of memory and is then stopped by the
operating system or by torch as usual.

Set the environment variable ``CPCAUDIO_SKIP_RESOURCE_CHECKS=1`` to skip the memory and disk checks
(for example where the free memory reported by the system is misleading); the dataset/window check and
the output-directory check are about correctness and always run.

Functions:

* :func:`estimate_training_memory` / :func:`check_training_fits`: model, gradients, Adam moments and the
  activations of one micro-batch of ``data.batch_size`` windows of ``data.window_size`` samples, against
  the free memory of the training device; checkpoints against the free disk of the run directory.
* :func:`check_dataset_covers_window`: a dataset split must hold at least one window of signal and one
  utterance long enough to predict ``predictor.num_steps`` frames ahead.
* :func:`estimate_extraction_memory` / :func:`check_extraction_fits`: one batch of the longest utterances.
* :func:`check_disk_space`: bytes a command will write against the free space where it writes them.
* :func:`check_output_dir`: an output path that can be created (not below a file, not read-only).
"""

from __future__ import annotations

import dataclasses
import errno
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

from cpcaudio.config import CPCConfig
from cpcaudio.errors import DataError, ResourceError, UsageError
from cpcaudio.geometry import frame_geometry, layer_lengths

PathLike = Union[str, os.PathLike]
SKIP_ENVIRONMENT_VARIABLE = "CPCAUDIO_SKIP_RESOURCE_CHECKS"
FLOAT_BYTES = 4
INDEX_BYTES = 8
GIB = 1024**3
# A checkpoint holds the weights and Adam's two moments; last.pt, best.pt and one temporary copy
# (atomic write) can exist at once.
CHECKPOINT_COPIES = 3
DISK_ERRNOS = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


def checks_skipped() -> bool:
    """Whether ``CPCAUDIO_SKIP_RESOURCE_CHECKS`` turns the memory and disk checks off."""
    return os.environ.get(SKIP_ENVIRONMENT_VARIABLE, "").strip().lower() not in ("", "0", "false", "no")


def format_bytes(size: float) -> str:
    """``1536`` -> ``1.5 KiB``; binary units, one decimal."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


# ---- memory estimates -------------------------------------------------------------------------------


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes one training (or extraction) step needs at once.

    Attributes:
        parameters: number of model parameters.
        model_bytes: the weights (float32).
        optimizer_bytes: gradients and Adam's two moments (0 for extraction).
        activation_bytes: tensors of one (micro-)batch kept for the backward pass, plus the largest
            transient ones (score matrix, negative indices).
        total_bytes: the sum.
        per_item_bytes: the part of ``activation_bytes`` that grows with each window (or utterance) of
            the batch, used to say how large a batch would fit.
    """

    parameters: int
    model_bytes: int
    optimizer_bytes: int
    activation_bytes: int
    per_item_bytes: int

    @property
    def total_bytes(self) -> int:
        return self.model_bytes + self.optimizer_bytes + self.activation_bytes


def count_parameters(config: CPCConfig) -> int:
    """Number of parameters of ``CPCModel(config)``, from the config alone (no model is built).

    Encoder convolutions (weights and biases) and their normalisation scales and shifts, the GRU/LSTM
    (torch's layout: two bias vectors per gate), and the prediction heads.
    """
    encoder, context, predictor = config.encoder, config.context, config.predictor
    total = 0
    channels = encoder.in_channels
    for kernel in encoder.kernel_sizes:
        total += channels * encoder.hidden_dim * kernel + encoder.hidden_dim
        if encoder.normalization != "none":
            total += 2 * encoder.hidden_dim
        channels = encoder.hidden_dim
    gates = {"gru": 3, "lstm": 4}[context.kind]
    size = encoder.hidden_dim
    for _ in range(context.num_layers):
        total += gates * context.hidden_dim * (size + context.hidden_dim + 2)
        size = context.hidden_dim
    steps, latent = predictor.num_steps, encoder.hidden_dim
    if predictor.head == "linear":
        total += steps * (context.hidden_dim * latent + latent)
    else:
        hidden = predictor.head_hidden_dim
        total += steps * (context.hidden_dim * hidden + hidden + hidden * latent + latent)
    return total


def _layer_lengths(config: CPCConfig, num_samples: int) -> list[int]:
    """Time steps after each encoder layer for ``num_samples`` input samples."""
    encoder = config.encoder
    return layer_lengths(num_samples, encoder.kernel_sizes, encoder.strides, encoder.resolved_paddings())


def estimate_training_memory(config: CPCConfig) -> MemoryEstimate:
    """Memory one optimiser micro-step of ``config`` needs (float32), without allocating anything.

    Per window of ``W = data.window_size`` samples giving ``T`` frames: the input; per encoder layer the
    convolution output and the activation kept for backward plus one gradient of that size; the
    recurrent network's gates and outputs; the K predictions; the (1 + N) scores per (t, k) with their
    softmax gradient; the int64 negative indices (drawn, ranked, gathered). Per batch: the (B*T)^2 score
    matrix of one step (``batch`` negatives; B*T^2 for ``same-sequence``).

    Args:
        config: the full configuration (``data.batch_size`` is the micro-batch).

    Returns:
        A :class:`MemoryEstimate`.
    """
    encoder, context, predictor, data = config.encoder, config.context, config.predictor, config.data
    parameters = count_parameters(config)
    layer_lengths = _layer_lengths(config, data.window_size)
    frames = layer_lengths[-1] if layer_lengths else 0
    steps, negatives = predictor.num_steps, predictor.num_negatives
    gates = {"gru": 3, "lstm": 4}[context.kind]
    per_window = data.window_size * encoder.in_channels * FLOAT_BYTES
    per_window += sum(3 * encoder.hidden_dim * length * FLOAT_BYTES for length in layer_lengths)
    per_window += context.num_layers * (gates + 2) * context.hidden_dim * frames * FLOAT_BYTES
    per_window += 2 * steps * encoder.hidden_dim * frames * FLOAT_BYTES
    per_window += 3 * steps * (1 + negatives) * frames * FLOAT_BYTES
    per_window += 3 * steps * negatives * frames * INDEX_BYTES
    rows = data.batch_size * frames
    from cpcaudio.model.negatives import negative_sampler  # torch: imported only when estimating

    pooled_over_batch = negative_sampler(predictor.negative_sampling).pool == "batch"
    score_matrix = rows * rows if pooled_over_batch else data.batch_size * frames * frames
    activations = data.batch_size * per_window + score_matrix * FLOAT_BYTES
    return MemoryEstimate(
        parameters=parameters,
        model_bytes=parameters * FLOAT_BYTES,
        optimizer_bytes=3 * parameters * FLOAT_BYTES,
        activation_bytes=activations,
        per_item_bytes=per_window,
    )


def estimate_extraction_memory(
    config: CPCConfig, longest_samples: int, batch_size: int, chunk_samples: Optional[int] = None
) -> MemoryEstimate:
    """Memory of the first (largest) batch of an extraction: ``batch_size`` utterances of ``longest_samples``.

    The padded input batch, the encoder outputs and context of whole utterances (kept until the batch is
    written, plus one copy), and the per-layer activations of one chunk of ``chunk_samples`` (the whole
    utterance when None) under inference mode (two tensors per layer at a time).
    """
    encoder, context = config.encoder, config.context
    parameters = count_parameters(config)
    frames = (_layer_lengths(config, longest_samples) or [0])[-1]
    chunk = longest_samples if chunk_samples is None else min(longest_samples, chunk_samples)
    per_item = longest_samples * encoder.in_channels * FLOAT_BYTES
    per_item += 2 * frames * (encoder.hidden_dim + context.hidden_dim) * FLOAT_BYTES
    chunk_layers = _layer_lengths(config, chunk)
    per_item += max((2 * encoder.hidden_dim * length * FLOAT_BYTES for length in chunk_layers), default=0)
    return MemoryEstimate(
        parameters=parameters,
        model_bytes=parameters * FLOAT_BYTES,
        optimizer_bytes=0,
        activation_bytes=batch_size * per_item,
        per_item_bytes=per_item,
    )


# ---- what is available --------------------------------------------------------------------------------


def available_memory(device: Any = "cpu") -> Optional[int]:
    """Free bytes for tensors on ``device``; None when it cannot be told (then nothing is checked).

    CUDA: ``torch.cuda.mem_get_info``. CPU: ``MemAvailable`` of ``/proc/meminfo``, lowered to what the
    process's cgroup (container) limit still allows. Other devices (MPS): None.
    """
    kind = getattr(device, "type", None) or str(device or "cpu").split(":")[0]
    if kind == "cuda":
        try:
            import torch

            free, _total = torch.cuda.mem_get_info(torch.device(device))
            return int(free)
        except Exception:  # no CUDA, a bad index: the caller's device check reports it
            return None
    if kind != "cpu":
        return None
    candidates = [value for value in (_meminfo_available(), _cgroup_available()) if value is not None]
    return min(candidates) if candidates else None


def _meminfo_available() -> Optional[int]:
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _cgroup_available() -> Optional[int]:
    pairs = (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),  # cgroup v2
        ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"),  # v1
    )
    for limit_path, usage_path in pairs:
        try:
            limit_text = Path(limit_path).read_text().strip()
            usage = int(Path(usage_path).read_text().strip())
        except (OSError, ValueError):
            continue
        if limit_text == "max" or not limit_text.isdigit() or int(limit_text) >= 1 << 60:
            return None
        return max(0, int(limit_text) - usage)
    return None


def free_disk_space(path: PathLike) -> int:
    """Free bytes (for an unprivileged user) on the file system that holds ``path`` or would hold it."""
    return shutil.disk_usage(_existing_ancestor(Path(path))).free


def _existing_ancestor(path: Path) -> Path:
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


# ---- checks ----------------------------------------------------------------------------------------------


def check_output_dir(path: PathLike, what: str = "output directory") -> None:
    """Refuse an output directory that cannot be created or written, before any work starts.

    Raises:
        UsageError: ``path`` is a file, lies below a file, or its nearest existing folder is not
            writable (a read-only mount, or missing permissions for a non-root user).
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UsageError(f"{what} {path} exists and is a file; choose a directory path")
    ancestor = _existing_ancestor(path)
    if not ancestor.is_dir():
        raise UsageError(f"cannot create {what} {path}: {ancestor} is a file, not a folder; choose another path")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise UsageError(f"cannot write {what} {path}: {ancestor} is read-only; choose a writable path")


def check_disk_space(
    path: PathLike, needed_bytes: int, what: str, fix: str = "free some space or choose another disk"
) -> None:
    """Raise :class:`ResourceError` when ``needed_bytes`` will not fit on the file system of ``path``."""
    if checks_skipped() or needed_bytes <= 0:
        return
    free = free_disk_space(path)
    if needed_bytes > free:
        raise ResourceError(
            f"{what} needs about {format_bytes(needed_bytes)} on disk at {path} but only {format_bytes(free)} "
            f"is free; {fix}"
        )


def check_training_fits(
    config: CPCConfig, device: Any = "cpu", out_dir: Optional[PathLike] = None
) -> MemoryEstimate:
    """Refuse a training whose micro-batch cannot fit in the device's free memory, or whose checkpoints
    cannot fit on the run directory's disk. Call it before the model is built.

    Args:
        config: the resolved configuration (window, batch, model sizes).
        device: the training device (``cpu``, ``cuda:0``, a ``torch.device``).
        out_dir: the run directory (its disk must hold ``last.pt``, ``best.pt`` and a temporary copy).

    Returns:
        The :class:`MemoryEstimate` (also when the checks are skipped).

    Raises:
        ResourceError: not enough memory (the message says how large a batch would fit) or disk.
    """
    estimate = estimate_training_memory(config)
    if checks_skipped():
        return estimate
    available = available_memory(device)
    if available is not None and estimate.total_bytes > available:
        data = config.data
        fitting = _largest_batch(config, available)
        hint = (
            f"at most about {fitting} windows of this size fit: --set data.batch_size={fitting}"
            if fitting >= 1
            else "even one window does not fit: lower data.window_size or the model size"
        )
        raise ResourceError(
            f"training needs about {format_bytes(estimate.total_bytes)} of memory on {device} "
            f"(model and optimizer {format_bytes(estimate.model_bytes + estimate.optimizer_bytes)}, "
            f"{data.batch_size} windows of {data.window_size} samples "
            f"{format_bytes(estimate.activation_bytes)}) but {format_bytes(available)} is available; {hint} "
            f"(or set {SKIP_ENVIRONMENT_VARIABLE}=1 to try anyway)"
        )
    if out_dir is not None:
        checkpoint_bytes = estimate.model_bytes * 3  # weights + two Adam moments
        check_disk_space(
            out_dir,
            CHECKPOINT_COPIES * checkpoint_bytes,
            f"the run's checkpoints ({format_bytes(checkpoint_bytes)} each, last.pt, best.pt and a temporary copy)",
        )
    return estimate


def _largest_batch(config: CPCConfig, available: int) -> int:
    """The largest ``data.batch_size`` (below the requested one) whose estimate fits in ``available``."""
    low, high = 0, config.data.batch_size  # estimate(low) fits (0: nothing), estimate(high) does not
    while high - low > 1:
        middle = (low + high) // 2
        trial = dataclasses.replace(config, data=dataclasses.replace(config.data, batch_size=middle))
        if estimate_training_memory(trial).total_bytes <= available:
            low = middle
        else:
            high = middle
    return low


def check_extraction_fits(
    config: CPCConfig,
    longest_samples: int,
    batch_size: int,
    device: Any = "cpu",
    chunk_samples: Optional[int] = None,
) -> MemoryEstimate:
    """Refuse an extraction whose largest batch cannot fit in the device's free memory.

    Raises:
        ResourceError: naming ``--batch-size`` and ``--chunk-seconds`` as the fix.
    """
    estimate = estimate_extraction_memory(config, longest_samples, batch_size, chunk_samples)
    if checks_skipped():
        return estimate
    available = available_memory(device)
    if available is not None and estimate.total_bytes > available:
        fitting = max(0, (available - estimate.model_bytes) // max(1, estimate.per_item_bytes))
        raise ResourceError(
            f"extraction needs about {format_bytes(estimate.total_bytes)} of memory on {device} for a batch of "
            f"{batch_size} utterances of {longest_samples} samples but {format_bytes(available)} is available; "
            + (f"use --batch-size {fitting}" if fitting >= 1 else "use a smaller --chunk-seconds or a shorter input")
            + f" (or set {SKIP_ENVIRONMENT_VARIABLE}=1 to try anyway)"
        )
    return estimate


def check_dataset_covers_window(
    lengths: Sequence[int], config: CPCConfig, split: str = "train", dataset_path: PathLike = "dataset"
) -> None:
    """Refuse a dataset split too short for the window: every step would be mostly padding, or nothing
    could be predicted.

    Args:
        lengths: samples of every utterance of the split.
        config: gives ``data.window_size``, the encoder geometry and ``predictor.num_steps``.
        split: the split's name (for the message).
        dataset_path: the dataset (for the message).

    Raises:
        DataError: the split holds fewer samples than one window; or its longest utterance gives no more
            than ``predictor.num_steps`` frames (no frame has a target); or, with
            ``data.short_utterances = skip``, no utterance is as long as a window.
    """
    encoder, data = config.encoder, config.data
    geometry = frame_geometry(encoder.kernel_sizes, encoder.strides, encoder.resolved_paddings())
    lengths = [int(n) for n in lengths]
    window = data.window_size
    window_frames = _frames(config, window)
    longest = max(lengths, default=0)
    total = sum(lengths)
    suggestion = _window_suggestion(config, longest, geometry.hop)
    if total < window:
        raise DataError(
            f"split '{split}' of {dataset_path} holds {total} samples ({_frames(config, total)} frames) in "
            f"{len(lengths)} utterance(s), fewer than one window of data.window_size={window} samples "
            f"({window_frames} frames); {suggestion}"
        )
    steps = config.predictor.num_steps
    if _frames(config, longest) <= steps:
        raise DataError(
            f"the longest utterance of split '{split}' of {dataset_path} has {longest} samples "
            f"({_frames(config, longest)} frames), too few to predict predictor.num_steps={steps} frames ahead; "
            "use longer utterances or a smaller predictor.num_steps"
        )
    if data.short_utterances == "skip" and longest < window:
        raise DataError(
            f"no utterance of split '{split}' of {dataset_path} is as long as a window of "
            f"data.window_size={window} samples (the longest has {longest}) and data.short_utterances=skip; "
            f"{suggestion}, or set data.short_utterances=pad"
        )


def _frames(config: CPCConfig, num_samples: int) -> int:
    return (_layer_lengths(config, num_samples) or [0])[-1]


def _window_suggestion(config: CPCConfig, longest: int, hop: int) -> str:
    size = (longest // hop) * hop
    if size > 0 and _frames(config, size) > config.predictor.num_steps:
        return f"use a smaller window, e.g. --set data.window_size={size}"
    return "use a smaller window or more data"


def is_disk_full(error: BaseException) -> bool:
    """Whether an ``OSError`` means the disk (or the user's quota) is full."""
    return isinstance(error, OSError) and error.errno in DISK_ERRNOS


def disk_full_error(path: PathLike, error: OSError, what: str) -> ResourceError:
    """The :class:`ResourceError` to raise instead of ``error`` (no space left while writing ``what``)."""
    return ResourceError(
        f"no space left on the disk of {path} while writing {what} ({os.strerror(error.errno or 0)}); "
        "free some space or choose another output directory, then run the same command again"
    )


__all__ = [
    "MemoryEstimate",
    "available_memory",
    "check_dataset_covers_window",
    "check_disk_space",
    "check_extraction_fits",
    "check_output_dir",
    "check_training_fits",
    "checks_skipped",
    "count_parameters",
    "disk_full_error",
    "estimate_extraction_memory",
    "estimate_training_memory",
    "format_bytes",
    "free_disk_space",
    "is_disk_full",
]
