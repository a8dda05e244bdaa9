"""Benchmark one CPC training step (forward, backward, Adam) against the machine's measured matmul rate.

Prints one JSON line on stdout and a summary on stderr::

    python benchmarks/train_step.py                      # paper and small configs, all cores
    python benchmarks/train_step.py --config paper --threads 2 --steps 5
    python benchmarks/train_step.py --device cuda --precision bf16 --compile
    python benchmarks/train_step.py --config paper --profile   # where the time goes, by op
    python benchmarks/train_step.py --config paper --malloc system --compare-plain   # before/after
    python benchmarks/train_step.py --config paper --batch-sizes 8,16,32,64   # seconds per sequence
    python benchmarks/train_step.py --config paper --part loss --loss-path pool,sampled --batch-sizes 8,64
    python benchmarks/train_step.py --tiny                 # seconds; what CI runs

Figures per config: median seconds per step, audio seconds trained per wall second, analytic FLOP per
step (see ``common.train_step_flops``), achieved GFLOP/s, and MFU = achieved / the matrix-multiply rate
measured in this same process (``common.peak_of``: the fastest of the samples of timed 2048 x 2048
``torch.mm``, each a median of 7 products, two taken before the configs, one between and after them);
``mfu_best_matmul`` divides by the larger of that and oneDNN's float32 product rate
(on CPUs where PyTorch's BLAS runs narrower vectors than the hardware has, e.g. MKL on AMD with AVX-512,
the ``torch.mm`` rate is half the machine's and MFU against it passes 100%). Minor page faults and
system CPU seconds per step show whether the allocator hands memory back to the kernel between steps: by
default the benchmark keeps freed memory as ``cpcaudio train`` does
(``cpcaudio.runtime.keep_freed_memory``); ``--malloc system`` shows the C library's default.
``--compare-plain`` also times the model with its CPU fast paths off (``cpcaudio.model.cpu_kernels``),
alternating steps in the same process. ``--loss-path pool,sampled`` times the InfoNCE scoring paths
(``cpcaudio.model.loss``) the same way, and ``--part loss`` times the heads and the loss alone
(forward + backward on fixed latents and context). ``--batch-sizes`` repeats everything per batch size:
one JSON line per size, then a ``train_step_scaling`` line with the seconds per sequence of each size and
their ratio to the first. See docs/performance.md.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Optional

import torch

import common
from cpcaudio import CPCConfig, CPCModel
from cpcaudio.model.cpu_kernels import fast_paths
from cpcaudio.model.heads import PredictionHeads
from cpcaudio.model.loss import SCORING_PATHS, heads_info_nce, scoring_path
from cpcaudio.model.negatives import sample_negatives
from cpcaudio.presets import load_preset

PAPER = {  # the CPC paper's model as CPC_audio trains it (batch norm, linear heads)
    "encoder": {"hidden_dim": 512, "normalization": "batch"},
    "context": {"hidden_dim": 256},
    "predictor": {"num_steps": 12, "num_negatives": 128},
    "data": {"batch_size": 8, "window_size": 20480},
}
SMALL = {  # a quarter-width model on the same windows: quick experiments, small corpora
    "encoder": {"hidden_dim": 256, "normalization": "batch"},
    "context": {"hidden_dim": 128},
    "predictor": {"num_steps": 12, "num_negatives": 128},
    "data": {"batch_size": 8, "window_size": 20480},
}
TINY = {  # CI: the same code paths in a fraction of a second
    "encoder": {"hidden_dim": 32, "normalization": "batch"},
    "context": {"hidden_dim": 32},
    "predictor": {"num_steps": 3, "num_negatives": 8},
    "data": {"batch_size": 2, "window_size": 3200},
}
CONFIGS = {"paper": PAPER, "small": SMALL}


def build_config(
    sections: dict[str, dict[str, Any]], normalization: Optional[str], batch_size: Optional[int] = None
) -> CPCConfig:
    """A validated CPCConfig from nested sections, with the encoder normalisation and the batch size
    overridden if given."""
    data = {name: dict(values) for name, values in sections.items()}
    if normalization is not None:
        data["encoder"]["normalization"] = normalization
    if batch_size is not None:
        data["data"]["batch_size"] = batch_size
    return load_preset("paper", data)  # the sections over the paper model (not the learn-fast defaults)


Variant = Callable[[], contextlib.AbstractContextManager]


def variants_of(args: argparse.Namespace) -> dict[str, Variant]:
    """The ways of running the same step that are timed side by side, steps alternating: ``auto`` (or the
    forced ``--loss-path`` paths; ``<path>-predictions`` scores the heads' predictions even where scoring
    through the context is cheaper), plus ``plain`` (fast paths off) with ``--compare-plain``."""
    variants: dict[str, Variant] = {}
    for name in args.loss_path:
        path, _, formulation = name.partition("-")
        through_context = False if formulation == "predictions" else None
        if name == "auto":
            variants[name] = contextlib.nullcontext
        else:
            variants[name] = lambda p=(None if path == "auto" else path), c=through_context: scoring_path(p, c)
    if args.compare_plain:
        variants["plain"] = lambda: fast_paths(False)
    return variants


@dataclass
class TrainStep:
    """A ready-to-call training step and what it trains on."""

    model: CPCModel
    step: Callable[[], None]
    batch_size: int
    window_size: int


def make_train_step(
    config: CPCConfig, device: torch.device, precision: str = "fp32", compile_model: bool = False, seed: int = 0
) -> TrainStep:
    """Model, Adam and a fixed random batch; the returned ``step()`` runs one optimiser step.

    The batch lives in (pinned, on CUDA) host memory and is copied to the device every step with a
    non-blocking transfer, as a training loop does. ``precision="bf16"`` runs the model under bf16
    autocast (the loss itself is always float32).

    Returns:
        :class:`TrainStep`; ``step()`` returns nothing useful to time (the loss stays on the device).
    """
    torch.manual_seed(seed)
    batch_size, window_size = config.data.batch_size, config.data.window_size
    model = CPCModel(config).to(device).train()
    optimizer = torch.optim.Adam(
        model.parameters(), lr=config.optim.learning_rate, betas=config.optim.betas, eps=config.optim.eps
    )
    signal = torch.randn(batch_size, config.encoder.in_channels, window_size)  # (B, C, T)
    if device.type == "cuda":
        signal = signal.pin_memory()
    forward = torch.compile(model) if compile_model else model
    autocast = (
        (lambda: torch.autocast(device_type=device.type, dtype=torch.bfloat16))
        if precision == "bf16"
        else contextlib.nullcontext
    )

    def step() -> None:
        batch = signal.to(device, non_blocking=True)
        with autocast():
            out = forward(batch)
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        optimizer.step()

    return TrainStep(model=model, step=step, batch_size=batch_size, window_size=window_size)


def make_loss_step(config: CPCConfig, device: torch.device, precision: str = "fp32", seed: int = 0) -> TrainStep:
    """The prediction heads and InfoNCE alone, forward and backward, on fixed random latents and context
    of the shapes ``config`` gives its windows; negatives are drawn every step, as the model does.

    Returns:
        :class:`TrainStep` whose ``model`` is the heads module.
    """
    torch.manual_seed(seed)
    batch_size, window_size = config.data.batch_size, config.data.window_size
    frames = CPCModel(config).num_frames(window_size)
    predictor = config.predictor
    heads = PredictionHeads(config.context.hidden_dim, config.encoder.hidden_dim, predictor, frames).to(device)
    latents = torch.randn(batch_size, frames, config.encoder.hidden_dim, device=device, requires_grad=True)
    context = torch.randn(batch_size, frames, config.context.hidden_dim, device=device, requires_grad=True)
    lengths = torch.full((batch_size,), frames, dtype=torch.long, device=device)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32

    def step() -> None:
        negatives = sample_negatives(
            lengths, frames, predictor.num_steps, predictor.num_negatives, predictor.negative_sampling
        )
        with torch.autocast(device_type=device.type, dtype=dtype, enabled=precision == "bf16"):
            result = heads_info_nce(heads, context, latents, negatives, lengths, predictor.negative_sampling)
        heads.zero_grad(set_to_none=True)
        latents.grad = context.grad = None
        result.loss.backward()

    return TrainStep(model=heads, step=step, batch_size=batch_size, window_size=window_size)  # type: ignore[arg-type]


def benchmark_config(
    name: str, config: CPCConfig, device: torch.device, args: argparse.Namespace
) -> dict[str, Any]:
    """Time ``args.steps`` steps of ``config`` per variant (after warm-up), variants alternating step by
    step; the figures of the first variant at the top level, every variant under ``variants``."""
    if args.part == "loss":
        train = make_loss_step(config, device, args.precision)
    else:
        train = make_train_step(config, device, args.precision, args.compile)
    variants = variants_of(args)
    # Warm-up: compilation, oneDNN's primitive cache, and the heap's steady state (three steps).
    for variant in variants.values():
        with variant():
            common.time_calls(train.step, 0, device, warmup=1 if args.tiny else 3)
    common.reset_peak_memory(device)
    faults_before = common.minor_page_faults()
    user_before, system_before = common.cpu_seconds()
    timings: dict[str, list[float]] = {variant: [] for variant in variants}
    for _ in range(args.steps):
        for variant, enter in variants.items():
            with enter():
                timings[variant] += common.time_calls(train.step, 1, device, warmup=0, clock=args.clock)
    steps_run = args.steps * len(variants)
    faults = (common.minor_page_faults() - faults_before) / steps_run
    user_after, system_after = common.cpu_seconds()
    flops = common.train_step_flops(config, train.batch_size, train.window_size)
    flop_total = flops.heads + flops.loss if args.part == "loss" else flops.total
    first = next(iter(timings))
    seconds = timings[first]
    step_seconds = common.median(seconds)
    audio_seconds = train.batch_size * train.window_size / config.data.sample_rate
    plain: dict[str, Any] = {}
    if "plain" in timings:
        plain = {
            "plain_seconds_per_step": common.median(timings["plain"]),
            "plain_seconds_per_step_all": [round(s, 4) for s in timings["plain"]],
            "fast_seconds_per_step_alternating": step_seconds,
            "fast_paths_speedup": common.median(timings["plain"]) / step_seconds,
        }
    return {
        "config": name,
        "part": args.part,
        "batch_size": train.batch_size,
        "window_size": train.window_size,
        "encoder_dim": config.encoder.hidden_dim,
        "context_dim": config.context.hidden_dim,
        "num_steps": config.predictor.num_steps,
        "num_negatives": config.predictor.num_negatives,
        "normalization": config.encoder.normalization,
        "parameters": sum(p.numel() for p in train.model.parameters()),
        "variant": first,
        "seconds_per_step": step_seconds,
        "seconds_per_step_all": [round(s, 4) for s in seconds],
        "seconds_per_sequence": step_seconds / train.batch_size,
        "audio_seconds_per_second": audio_seconds / step_seconds,
        "flop_per_step": flop_total,
        "flop_breakdown": flops.as_dict(),
        "achieved_gflops": flop_total / step_seconds / 1e9,
        "variants": {
            variant: {
                "seconds_per_step": common.median(values),
                "seconds_per_sequence": common.median(values) / train.batch_size,
                "seconds_per_step_all": [round(s, 4) for s in values],
                "relative_to_first": common.median(values) / step_seconds,
            }
            for variant, values in timings.items()
        },
        "minor_faults_per_step": faults,
        "user_cpu_seconds_per_step": (user_after - user_before) / steps_run,
        "system_cpu_seconds_per_step": (system_after - system_before) / steps_run,
        "peak_rss_mib": common.peak_rss_mib(),
        "peak_device_memory_mib": common.peak_device_memory_mib(device),
        **plain,
    }


# ---- profile ---------------------------------------------------------------------------------------

def profile_config(name: str, config: CPCConfig, device: torch.device, args: argparse.Namespace) -> dict:
    """Profile ``args.steps`` steps with torch.profiler; print the per-op table; return the shares."""
    from torch.profiler import ProfilerActivity, profile

    if args.part == "loss":
        train = make_loss_step(config, device, args.precision)
    else:
        train = make_train_step(config, device, args.precision, args.compile)
    variant_name, variant = next(iter(variants_of(args).items()))
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with variant():
        common.time_calls(train.step, 0, device, warmup=1 if args.tiny else 3)
        with profile(activities=activities) as prof:
            for _ in range(args.steps):
                train.step()
            common.synchronize(device)
    averages = prof.key_averages()
    time_key = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    title = f"{name} ({args.part}, batch {train.batch_size}, {variant_name})"
    print(f"== {title}: {args.steps} steps, ops by self time ==", file=sys.stderr)
    print(averages.table(sort_by=time_key, row_limit=args.profile_rows), file=sys.stderr)
    buckets: dict[str, float] = {}
    for event in averages:
        bucket = common.bucket_of(event.key)
        buckets[bucket] = buckets.get(bucket, 0.0) + getattr(event, time_key)
    total = sum(buckets.values()) or 1.0
    shares = {k: round(v / total, 4) for k, v in sorted(buckets.items(), key=lambda kv: -kv[1])}
    print(f"== {name}: share of self time by kind ==", file=sys.stderr)
    for bucket, share in shares.items():
        print(f"  {bucket:<18} {100 * share:5.1f}%", file=sys.stderr)
    return {
        "config": name,
        "part": args.part,
        "batch_size": train.batch_size,
        "variant": variant_name,
        "profiled_steps": args.steps,
        "self_time_share": shares,
    }


# ---- command line ----------------------------------------------------------------------------------


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", choices=["paper", "small", "both"], default="both", help="model size(s) to time")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N, mps, or auto (default)")
    parser.add_argument(
        "--threads", type=int, default=None, help="intra-op threads (default: OMP_NUM_THREADS, else one per core)"
    )
    parser.add_argument("--steps", type=int, default=None, help="timed steps per config (default 5; tiny 2)")
    parser.add_argument(
        "--precision", choices=["fp32", "bf16"], default="fp32", help="bf16 = autocast (CUDA/CPU with bf16)"
    )
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument(
        "--normalization",
        choices=["batch", "channel", "layer", "none"],
        default=None,
        help="encoder normalisation (default: batch, as the reference measurement)",
    )
    parser.add_argument(
        "--malloc",
        choices=["keep", "system"],
        default="keep",
        help="keep (default, as cpcaudio train does): glibc malloc keeps freed memory; "
        "system: the C library's default (a fresh mmap, and page faults, for every large block)",
    )
    parser.add_argument(
        "--compare-plain",
        action="store_true",
        help="also time each config with the model's CPU fast paths off (alternating steps) and print the speedup",
    )
    parser.add_argument(
        "--clock",
        choices=["wall", "cpu"],
        default="wall",
        help="wall (default); cpu: this thread's CPU time, for a shared machine (needs --threads 1)",
    )
    parser.add_argument(
        "--batch-sizes", default=None, help="comma-separated batch sizes, e.g. 8,16,32,64 (default: the config's)"
    )
    parser.add_argument(
        "--part", choices=["step", "loss"], default="step", help="step: the whole training step; loss: heads + InfoNCE"
    )
    parser.add_argument(
        "--loss-path",
        default="auto",
        help="InfoNCE scoring path(s), comma-separated, timed alternately: auto (default), "
        + ", ".join(SCORING_PATHS)
        + "; with -predictions (e.g. pool-predictions, the scoring before issue 18): never through the context",
    )
    parser.add_argument("--tiny", action="store_true", help="a tiny config, 2 steps: checks the script runs")
    parser.add_argument("--profile", action="store_true", help="print the torch.profiler table by op instead")
    parser.add_argument("--profile-rows", type=int, default=25, help="rows of the profiler table")
    args = parser.parse_args(argv)
    if args.steps is None:
        args.steps = 2 if args.tiny else 5
    if args.steps < 1:
        parser.error("--steps must be >= 1")
    try:
        args.batch_sizes = [int(size) for size in args.batch_sizes.split(",")] if args.batch_sizes else [None]
    except ValueError:
        parser.error(f"--batch-sizes must be comma-separated integers, got {args.batch_sizes!r}")
    if any(size is not None and size < 1 for size in args.batch_sizes):
        parser.error("--batch-sizes must be >= 1")
    args.loss_path = [path.strip() for path in args.loss_path.split(",") if path.strip()]
    known = [f"{path}{suffix}" for path in ("auto", *SCORING_PATHS) for suffix in ("", "-predictions")]
    unknown = [path for path in args.loss_path if path not in known]
    if unknown or not args.loss_path or len(set(args.loss_path)) != len(args.loss_path):
        parser.error(f"--loss-path takes distinct names from {', '.join(known)}; got {args.loss_path}")
    return args


def summary_line(r: dict[str, Any]) -> str:
    """One human line per result: time, rate, MFU, the variants side by side."""
    line = (
        f"  {r['config']:<6} batch {r['batch_size']:<3} {r['part']:<4} {r['seconds_per_step']:.3f} s/step "
        f"{1e3 * r['seconds_per_sequence']:.1f} ms/seq  {r['audio_seconds_per_second']:.2f} audio s/s  "
        f"{r['flop_per_step'] / 1e9:.1f} GFLOP/step  {r['achieved_gflops']:.1f} GFLOP/s  "
        f"MFU {100 * r['mfu']:.1f}% (vs best matmul {100 * r['mfu_best_matmul']:.1f}%)  "
        f"{r['minor_faults_per_step']:.0f} minor faults ({r['system_cpu_seconds_per_step']:.2f} s system CPU)/step"
    )
    others = [
        f"{name} {1e3 * v['seconds_per_sequence']:.1f} ms/seq ({v['relative_to_first']:.2f}x)"
        for name, v in r["variants"].items()
        if name != r["variant"]
    ]
    if others:
        line += f"\n         alternating with {r['variant']}: " + ", ".join(others)
    return line


def scaling_summary(results: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Per config, the seconds per sequence of every batch size (and variant) and the ratio to the first."""
    table: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        rows = table.setdefault(r["config"], [])
        first = rows[0]["seconds_per_sequence"] if rows else r["seconds_per_sequence"]
        row = {
            "batch_size": r["batch_size"],
            "seconds_per_sequence": r["seconds_per_sequence"],
            "ratio_to_first": r["seconds_per_sequence"] / first,
            "variants": {name: v["seconds_per_sequence"] for name, v in r["variants"].items()},
            "mfu": r["mfu"],
            "mfu_best_matmul": r["mfu_best_matmul"],
        }
        rows.append(row)
    return table


def main(argv: Optional[list[str]] = None) -> None:
    args = parse_args(argv)
    if args.malloc == "keep":
        common.keep_freed_memory()
    device = common.setup_device(args.device, args.threads)
    common.check_clock(args.clock, device)
    if args.tiny:
        configs = {"tiny": TINY}
    else:
        configs = CONFIGS if args.config == "both" else {args.config: CONFIGS[args.config]}
    runs = [
        (name, build_config(sections, args.normalization, size))
        for name, sections in configs.items()
        for size in args.batch_sizes
    ]
    header = {"device": str(device), "precision": args.precision, "compile": args.compile, "part": args.part}

    if args.profile:
        results = [profile_config(name, config, device, args) for name, config in runs]
        common.print_result(
            "train_step_profile", {**header, **common.environment(), "results": results}, "profile printed above"
        )
        return

    peak_dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32
    peak_size = 256 if args.tiny else 2048
    onednn = device.type == "cpu" and args.precision == "fp32"

    def sample_peaks() -> None:
        peaks.append(common.measure_matmul_peak(device, peak_size, dtype=peak_dtype, clock=args.clock))
        if onednn:
            rate = common.measure_onednn_matmul_peak(peak_size, clock=args.clock)
            if rate is not None:
                onednn_peaks.append(rate)

    peaks: list[float] = []
    onednn_peaks: list[float] = []
    sample_peaks()
    sample_peaks()  # twice: the first can still carry the process's warm-up
    results = []
    for name, config in runs:
        results.append(benchmark_config(name, config, device, args))
        sample_peaks()
    peak = common.peak_of(peaks)
    best_peak = max(peak, common.peak_of(onednn_peaks)) if onednn_peaks else peak
    for result in results:
        result["mfu"] = result["achieved_gflops"] / peak
        result["mfu_best_matmul"] = result["achieved_gflops"] / best_peak
    payload = {
        **header,
        "clock": args.clock,
        **common.environment(),
        "matmul_gflops": peak,
        "matmul_gflops_samples": [round(p, 1) for p in peaks],
        "onednn_matmul_gflops": common.peak_of(onednn_peaks) if onednn_peaks else None,
        "onednn_matmul_gflops_samples": [round(p, 1) for p in onednn_peaks],
        "best_matmul_gflops": best_peak,
    }
    title = (
        f"train_step on {device} ({args.precision}, {torch.get_num_threads()} threads, "
        f"{common.allocator_description()}); matmul peak {peak:.1f} GFLOP/s (torch.mm)"
        + (f", {payload['onednn_matmul_gflops']:.1f} GFLOP/s (oneDNN)" if onednn_peaks else "")
    )
    if args.batch_sizes == [None]:
        lines = [title] + [summary_line(r) for r in results]
        common.print_result("train_step", {**payload, "results": results}, "\n".join(lines))
        return
    for result in results:  # one line per batch size
        common.print_result("train_step", {**payload, "results": [result]}, summary_line(result))
    table = scaling_summary(results)
    lines = [title, "seconds per sequence by batch size (ratio to the first size):"]
    for name, rows in table.items():
        sizes = [
            f"{row['batch_size']}: {1e3 * row['seconds_per_sequence']:.1f} ms ({row['ratio_to_first']:.2f}x)"
            for row in rows
        ]
        lines.append(f"  {name}: " + ", ".join(sizes))
    common.print_result("train_step_scaling", {**payload, "configs": table}, "\n".join(lines))


if __name__ == "__main__":
    main()
