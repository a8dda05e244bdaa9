"""Shared helpers for the benchmark scripts: timing, the measured matmul peak, FLOP counts, output.

Every benchmark prints one JSON line (``{"benchmark": name, ...}``) that machines parse, and a short
human summary on stderr. Scripts import this module as ``common`` (they run as ``python
benchmarks/<name>.py``, so this folder is on ``sys.path``).

FLOP convention: multiply-adds count as 2 FLOP; only the matrix-product-like work is counted
(convolutions, recurrent and linear layers, the InfoNCE scores), as is usual for MFU. Normalisation,
activations, the optimiser and memory traffic are not counted: they are the overhead MFU exposes.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Optional

import torch

from cpcaudio.config import CPCConfig
from cpcaudio.geometry import conv_output_length
from cpcaudio.runtime import freed_memory_kept, keep_freed_memory  # noqa: F401  (re-exported for scripts)

# ---- devices and threads ---------------------------------------------------------------------------


def available_cores() -> int:
    """CPU cores this process may run on (respects taskset/cgroup affinity)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def setup_device(device: str, threads: Optional[int]) -> torch.device:
    """Set the intra-op thread count (default: all available cores) and return the torch device.

    Args:
        device: ``cpu``, ``cuda``, ``cuda:1``, ``mps`` or ``auto`` (CUDA if available, else CPU).
        threads: intra-op threads; None means ``OMP_NUM_THREADS`` if set, else one per available core.
    """
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if threads is None:
        configured = os.environ.get("OMP_NUM_THREADS", "")
        threads = int(configured) if configured.isdigit() and int(configured) > 0 else available_cores()
    torch.set_num_threads(threads)
    resolved = torch.device(device)
    if resolved.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32; bf16 is asked for explicitly
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cudnn.benchmark = True
    return resolved


def synchronize(device: torch.device) -> None:
    """Wait for queued work on ``device`` (no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


# ---- timing ----------------------------------------------------------------------------------------


CLOCKS = {"wall": time.perf_counter, "cpu": time.thread_time}


def check_clock(clock: str, device: torch.device) -> None:
    """``cpu`` (this thread's CPU time) measures the work only when all of it runs on this thread."""
    if clock == "cpu" and (device.type != "cpu" or torch.get_num_threads() != 1):
        raise SystemExit("error: --clock cpu needs --device cpu --threads 1 (it counts this thread's CPU time)")


def time_calls(
    fn: Callable[[], Any], repeats: int, device: torch.device, warmup: int = 1, clock: str = "wall"
) -> list[float]:
    """Seconds of ``repeats`` calls of ``fn`` after ``warmup`` untimed ones.

    ``clock="wall"``: elapsed time. ``clock="cpu"``: CPU time of the calling thread, which on a shared
    machine does not count the time other processes hold the core (only valid with one thread).
    """
    timer = CLOCKS[clock]
    for _ in range(warmup):
        fn()
    synchronize(device)
    seconds = []
    for _ in range(repeats):
        start = timer()
        fn()
        synchronize(device)
        seconds.append(timer() - start)
    return seconds


def median(values: list[float]) -> float:
    """Median of a non-empty list (the figure we quote: robust to a noisy shared machine)."""
    return float(statistics.median(values))


def peak_of(rates: list[float]) -> float:
    """The matrix-multiply peak that MFU divides by: the fastest of the rates sampled in this process
    (each sample a median of timed products). On a machine whose speed varies (shared cores, turbo) a
    median of a few samples can fall on a slow moment and flatter MFU; the fastest is the stricter
    denominator."""
    return float(max(rates))


def measure_matmul_peak(
    device: torch.device,
    size: int = 2048,
    repeats: int = 7,
    dtype: torch.dtype = torch.float32,
    clock: str = "wall",
) -> float:
    """Measured matrix-multiply rate in GFLOP/s: median of timed ``size x size`` products.

    Run in the same process, at the current thread count, right next to what it normalises, so that
    MFU compares like with like on a machine whose speed varies (shared cores, turbo, thermals).
    """
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    out = torch.empty(size, size, device=device, dtype=dtype)
    seconds = time_calls(lambda: torch.mm(a, b, out=out), repeats, device, warmup=2, clock=clock)
    return 2.0 * size**3 / median(seconds) / 1e9


def measure_onednn_matmul_peak(size: int = 2048, repeats: int = 7, clock: str = "wall") -> Optional[float]:
    """Measured float32 matrix-multiply rate of oneDNN on CPU in GFLOP/s (None where unavailable).

    ``torch.mm`` runs on the BLAS PyTorch was built with (MKL in the x86 wheels); on some CPUs, e.g.
    AMD processors with AVX-512, MKL runs its AVX2 kernels and oneDNN (PyTorch's convolution library,
    also behind ``cpcaudio.model.cpu_kernels.linear``) multiplies about twice as fast. MFU against the
    larger of the two rates is the honest one where they differ.
    """
    from cpcaudio.model.cpu_kernels import onednn_available

    if not onednn_available():
        return None
    a = torch.randn(size, size)
    b = torch.randn(size, size)
    seconds = time_calls(
        lambda: torch.ops.mkldnn._linear_pointwise(a, b, None, "none", [], ""),
        repeats,
        torch.device("cpu"),
        warmup=2,
        clock=clock,
    )
    return 2.0 * size**3 / median(seconds) / 1e9


def minor_page_faults() -> int:
    """Minor page faults of this process so far (the kernel zero-filling fresh pages)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def cpu_seconds() -> tuple[float, float]:
    """(user, system) CPU seconds of this process so far, all threads. System time is mostly the
    kernel serving page faults here; unlike wall time it barely moves when other processes share
    the cores, so it measures the allocator's cost even on a busy machine."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime


def peak_rss_mib() -> float:
    """Peak resident set size of this process in MiB (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def reset_peak_memory(device: torch.device) -> None:
    """Start a fresh peak of the device allocator (CUDA; a no-op elsewhere)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_device_memory_mib(device: torch.device) -> Optional[float]:
    """Peak memory the CUDA caching allocator handed out since :func:`reset_peak_memory`, in MiB (None
    on other devices, where ``peak_rss_mib`` is the figure)."""
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2**20


def allocator_description() -> str:
    """Which malloc the process runs on: an LD_PRELOADed library, else the C library's."""
    preload = os.environ.get("LD_PRELOAD", "")
    names = [os.path.basename(p) for p in preload.replace(":", " ").split() if p]
    tuned = [f"{key}={os.environ[key]}" for key in sorted(os.environ) if key.startswith("MALLOC_")]
    described = ",".join(names) if names else "libc"
    if freed_memory_kept():
        tuned.append("mallopt:keep-freed")
    return described + (f" ({' '.join(tuned)})" if tuned else "")


# ---- profiles ----------------------------------------------------------------------------------------

BUCKETS = (  # (bucket, substrings of op names), first match wins; op names are lower-cased
    ("conv", ("conv",)),
    ("recurrent", ("gru", "lstm", "rnn")),
    ("sampled scores", ("sampled_addmm", "embedding_bag", "sort", "searchsorted")),
    ("optimizer", ("adam", "_foreach", "optimizer")),
    ("norm", ("norm",)),
    ("matmul", ("mm", "matmul", "linear", "dot")),
    ("gather/scatter", ("gather", "scatter", "index", "take")),
    ("sampling", ("randint", "remainder", "random")),
    ("copy/alloc", ("copy", "clone", "contiguous", "empty", "zero", "cat", "stack", "pad", "fill", "to")),
)


def bucket_of(op_name: str) -> str:
    """Which broad kind of work an op (by its profiler name) belongs to."""
    lowered = op_name.lower()
    for bucket, keys in BUCKETS:
        if any(key in lowered for key in keys):
            return bucket
    return "elementwise/other"


# ---- output ----------------------------------------------------------------------------------------


def print_result(name: str, payload: dict[str, Any], summary: str) -> None:
    """Print the JSON line on stdout and the human summary on stderr."""
    record = {"benchmark": name, **payload}
    print(json.dumps(record, sort_keys=False), flush=True)
    print(summary, file=sys.stderr, flush=True)


def environment() -> dict[str, Any]:
    """What the figures depend on: torch version, device threads, allocator."""
    return {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cores": available_cores(),
        "allocator": allocator_description(),
    }


# ---- analytic FLOP count of a CPC training step ----------------------------------------------------


@dataclass
class StepFlops:
    """FLOP of one training step (forward + backward), by component.

    Attributes:
        encoder / context / heads / loss: forward + backward FLOP of each part.
        forward: forward-only FLOP of the whole model (what inference costs).
    """

    encoder: float
    context: float
    heads: float
    loss: float
    forward: float

    @property
    def total(self) -> float:
        return self.encoder + self.context + self.heads + self.loss

    def as_dict(self) -> dict[str, float]:
        return {
            "encoder": self.encoder,
            "context": self.context,
            "heads": self.heads,
            "loss": self.loss,
            "total": self.total,
            "forward": self.forward,
        }


def train_step_flops(config: CPCConfig, batch_size: int, num_samples: int) -> StepFlops:
    """Analytic FLOP of one training step of ``config`` on ``batch_size`` windows of ``num_samples``.

    Backward costs twice the forward (gradients for inputs and weights), except for the first conv
    layer whose input, the signal, needs no gradient. The InfoNCE term counts what the loss needs: the
    1 + N candidate scores of every valid (b, t, k), i.e. t + k < T; the scoring strategy does not
    change the count (a dense matrix product against the pool does more work than this, and that extra
    shows up as lower MFU, as any other overhead does; scoring linear heads through the context does
    (H + 1) / C of it, which raises MFU by at most 1.4% of the paper step).
    """
    encoder = config.encoder
    length = num_samples
    in_channels = encoder.in_channels
    encoder_forward = 0.0
    encoder_total = 0.0
    for layer, (kernel, stride, padding) in enumerate(
        zip(encoder.kernel_sizes, encoder.strides, encoder.resolved_paddings())
    ):
        length = conv_output_length(length, kernel, stride, padding)
        forward = 2.0 * batch_size * length * encoder.hidden_dim * in_channels * kernel
        encoder_forward += forward
        encoder_total += forward * (2 if layer == 0 else 3)
        in_channels = encoder.hidden_dim
    frames = length

    gates = {"gru": 3, "lstm": 4}[config.context.kind]
    hidden = config.context.hidden_dim
    context_forward = 0.0
    input_dim = encoder.hidden_dim
    for _ in range(config.context.num_layers):
        context_forward += 2.0 * batch_size * frames * gates * hidden * (input_dim + hidden)
        input_dim = hidden

    predictor = config.predictor
    steps = predictor.num_steps
    if predictor.head == "linear":
        heads_forward = 2.0 * batch_size * frames * hidden * steps * encoder.hidden_dim
    else:
        heads_forward = 2.0 * batch_size * frames * steps * predictor.head_hidden_dim * (
            hidden + encoder.hidden_dim
        )

    valid_positions = batch_size * sum(max(frames - k, 0) for k in range(1, steps + 1))
    loss_forward = 2.0 * valid_positions * (1 + predictor.num_negatives) * encoder.hidden_dim

    return StepFlops(
        encoder=encoder_total,
        context=3 * context_forward,
        heads=3 * heads_forward,
        loss=3 * loss_forward,
        forward=encoder_forward + context_forward + heads_forward + loss_forward,
    )


def add_pretraining_arguments(parser: Any, default_minutes: float, default_work: Any, work_help: str) -> None:
    """The options of a benchmark that pretrains with ``cpcaudio train`` and probes: the budget
    (``--minutes``/``--steps``), ``--config``, ``--set``, ``--seed``, ``--threads``, ``--device``, ``--work``,
    ``--reuse-run`` and ``--json`` (``benchmarks/quality.py``, ``benchmarks/timeseries.py``)."""
    from pathlib import Path

    parser.add_argument("--minutes", type=float, default=None,
                        help=f"Training budget in minutes (cpcaudio train --minutes; default {default_minutes:g} "
                        "unless --steps is given).")
    parser.add_argument("--steps", type=int, default=None, help="Training steps (cpcaudio train --steps).")
    parser.add_argument("--config", default=None, help="Config file or preset name passed to cpcaudio train --config.")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="A config override passed to cpcaudio train (repeatable).")
    parser.add_argument("--seed", type=int, default=0, help="Seed of training, random init and probes (default 0).")
    parser.add_argument("--threads", type=int, default=2,
                        help="Torch threads for training and probes (default 2: the reference machine's cores).")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:N or mps (default: the CLI's choice).")
    parser.add_argument("--work", type=Path, default=default_work, help=work_help)
    parser.add_argument("--reuse-run", action="store_true",
                        help="Probe the run(s) already in --work (trained with the same arguments) instead of training.")
    parser.add_argument("--json", type=Path, default=None, help="Also write the JSON record to this file.")
