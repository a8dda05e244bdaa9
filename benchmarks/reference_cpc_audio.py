"""Side by side: our training step against the reference implementation, CPC_audio, at the same config.

CPC_audio (github.com/facebookresearch/CPC_audio, MIT) is never vendored or downloaded here: clone it
yourself and pass the checkout (the folder holding ``cpc/``)::

    git clone https://github.com/facebookresearch/CPC_audio /tmp/CPC_audio
    python benchmarks/reference_cpc_audio.py --reference /tmp/CPC_audio --threads 2
    python benchmarks/reference_cpc_audio.py --reference /tmp/CPC_audio --malloc keep   # both, kept memory

Both steps run in this one process, alternating (ours, theirs, ours, ...) for ``--rounds`` rounds of
``--steps`` timed steps each, so a shared machine's slow and fast moments hit both alike; the figures
are medians over all timed steps and the ratio is reference seconds / our seconds. Same config for
both: the paper's encoder (512 channels, batch norm by default), a 256-unit GRU, 12 linear heads, 128
negatives, batch 8 x 20480, Adam. The reference's step is its own training loop body
(``cpc/train.py: trainStep``): ``CPCModel`` + ``CPCUnsupersivedCriterion``, ``losses.sum().backward()``,
``optimizer.step()``.

Only what the import needs is shimmed, at run time and only when missing: ``torchaudio`` (imported by
``cpc/model.py`` for its MFCC encoder, unused here) and ``progressbar`` (imported by the criterion's
sequence-alignment helper, unused here). The checkout itself is never modified.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import types
from pathlib import Path
from typing import Any, Callable, Optional

import torch

import common
import train_step as ours

NORM_MODES = {"batch": "batchNorm", "channel": "layerNorm", "none": "ID"}  # ours -> CPC_audio's names


class ReferenceUnavailable(RuntimeError):
    """The --reference path is not a usable CPC_audio checkout."""


def import_reference(path: Path) -> tuple[types.ModuleType, types.ModuleType]:
    """Import ``cpc.model`` and ``cpc.criterion`` from a CPC_audio checkout, shimming missing imports.

    Raises:
        ReferenceUnavailable: the folder has no ``cpc/model.py`` or the import fails.
    """
    if not (path / "cpc" / "model.py").is_file() or not (path / "cpc" / "criterion").is_dir():
        raise ReferenceUnavailable(
            f"{path} is not a CPC_audio checkout (expected {path / 'cpc' / 'model.py'}); clone "
            "https://github.com/facebookresearch/CPC_audio and pass the clone's folder"
        )
    for name in ("torchaudio", "progressbar"):  # imported at module level, unused by the training step
        try:
            importlib.import_module(name)
        except ImportError:
            sys.modules[name] = types.ModuleType(name)
    sys.path.insert(0, str(path))
    try:
        model = importlib.import_module("cpc.model")
        criterion = importlib.import_module("cpc.criterion")
    except Exception as error:  # an incompatible checkout or torch: say so, don't crash with a traceback
        raise ReferenceUnavailable(f"importing CPC_audio from {path} failed: {error!r}") from error
    return model, criterion


def make_reference_step(
    path: Path, config: Any, device: torch.device, seed: int = 0
) -> tuple[Callable[[], None], int]:
    """CPC_audio's model, criterion and Adam at ``config``; returns ``(step, parameter count)``."""
    cpc_model, cpc_criterion = import_reference(path)
    encoder, context, predictor = config.encoder, config.context, config.predictor
    if encoder.normalization not in NORM_MODES:
        raise ReferenceUnavailable(f"CPC_audio has no '{encoder.normalization}' normalisation to compare")
    if predictor.head != "linear" or predictor.negative_sampling != "batch" or context.kind != "gru":
        raise ReferenceUnavailable("the side-by-side compares linear heads, batch negatives and a GRU only")
    torch.manual_seed(seed)
    model = cpc_model.CPCModel(
        cpc_model.CPCEncoder(encoder.hidden_dim, NORM_MODES[encoder.normalization]),
        cpc_model.CPCAR(encoder.hidden_dim, context.hidden_dim, False, context.num_layers, mode="GRU"),
    ).to(device)
    criterion = cpc_criterion.CPCUnsupersivedCriterion(
        predictor.num_steps,
        context.hidden_dim,
        encoder.hidden_dim,
        predictor.num_negatives,
        mode=None,
        rnnMode=None,  # linear prediction heads
        dropout=False,
        sizeInputSeq=config.data.window_size // 160,
    ).to(device)
    parameters = list(model.parameters()) + list(criterion.parameters())
    optimizer = torch.optim.Adam(
        parameters, lr=config.optim.learning_rate, betas=config.optim.betas, eps=config.optim.eps
    )
    model.train()
    criterion.train()
    signal = torch.randn(config.data.batch_size, 1, config.data.window_size)  # (B, 1, T)
    label = torch.zeros(config.data.batch_size, dtype=torch.long)

    def step() -> None:  # the body of CPC_audio's cpc/train.py trainStep
        batch = signal.to(device, non_blocking=True)
        c_feature, encoded_data, labels = model(batch, label.to(device))
        all_losses, _ = criterion(c_feature, encoded_data, labels)
        all_losses.sum().backward()
        optimizer.step()
        optimizer.zero_grad()

    return step, sum(p.numel() for p in parameters)


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference", type=Path, required=True, help="a CPC_audio checkout (holds cpc/)")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N")
    parser.add_argument(
        "--threads", type=int, default=None, help="intra-op threads (default: OMP_NUM_THREADS, else one per core)"
    )
    parser.add_argument("--steps", type=int, default=None, help="timed steps per round (default 2; tiny 1)")
    parser.add_argument("--rounds", type=int, default=None, help="alternations (default 3; tiny 2)")
    parser.add_argument(
        "--normalization", choices=sorted(NORM_MODES), default="batch", help="encoder normalisation, both"
    )
    parser.add_argument(
        "--malloc",
        choices=["keep", "system"],
        default="system",
        help="system (default): the C library's malloc, as CPC_audio ships; keep: both with cpcaudio's setting",
    )
    parser.add_argument(
        "--clock",
        choices=["wall", "cpu"],
        default="wall",
        help="wall (default); cpu: this thread's CPU time, for a shared machine (needs --threads 1)",
    )
    parser.add_argument("--tiny", action="store_true", help="a tiny config: checks the comparison runs")
    args = parser.parse_args(argv)
    args.steps = args.steps or (1 if args.tiny else 2)
    args.rounds = args.rounds or (2 if args.tiny else 3)
    return args


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    if args.malloc == "keep":
        common.keep_freed_memory()
    device = common.setup_device(args.device, args.threads)
    common.check_clock(args.clock, device)
    sections = ours.TINY if args.tiny else ours.PAPER
    config = ours.build_config(sections, args.normalization)
    try:
        reference_step, reference_parameters = make_reference_step(args.reference, config, device)
    except ReferenceUnavailable as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    our = ours.make_train_step(config, device)
    steps = {"cpcaudio": our.step, "cpc_audio": reference_step}
    for step in steps.values():  # warm-up: the allocator's heap reaches its steady state in two steps
        step()
        step()
    peak_size = 256 if args.tiny else 2048
    peaks: list[float] = []
    onednn_peaks: list[float] = []

    def sample_peaks() -> None:
        peaks.append(common.measure_matmul_peak(device, peak_size, clock=args.clock))
        rate = common.measure_onednn_matmul_peak(peak_size, clock=args.clock) if device.type == "cpu" else None
        if rate is not None:
            onednn_peaks.append(rate)

    sample_peaks()
    seconds: dict[str, list[float]] = {name: [] for name in steps}
    faults = {name: 0 for name in steps}
    system_seconds = {name: 0.0 for name in steps}
    for _ in range(args.rounds):
        for name, step in steps.items():
            faults_before, (_, system_before) = common.minor_page_faults(), common.cpu_seconds()
            seconds[name] += common.time_calls(step, args.steps, device, warmup=0, clock=args.clock)
            faults[name] += common.minor_page_faults() - faults_before
            system_seconds[name] += common.cpu_seconds()[1] - system_before
        sample_peaks()
    peak = common.peak_of(peaks)
    best_peak = max(peak, common.peak_of(onednn_peaks)) if onednn_peaks else peak
    flops = common.train_step_flops(config, our.batch_size, our.window_size).total
    audio_seconds = our.batch_size * our.window_size / config.data.sample_rate
    results = {}
    for name, values in seconds.items():
        step_seconds = common.median(values)
        results[name] = {
            "seconds_per_step": step_seconds,
            "seconds_per_step_all": [round(s, 4) for s in values],
            "audio_seconds_per_second": audio_seconds / step_seconds,
            "achieved_gflops": flops / step_seconds / 1e9,
            "mfu": flops / step_seconds / 1e9 / peak,
            "mfu_best_matmul": flops / step_seconds / 1e9 / best_peak,
            "minor_faults_per_step": faults[name] / len(values),
            "system_cpu_seconds_per_step": system_seconds[name] / len(values),
        }
    results["cpcaudio"]["parameters"] = sum(p.numel() for p in our.model.parameters())
    results["cpc_audio"]["parameters"] = reference_parameters
    speedup = results["cpc_audio"]["seconds_per_step"] / results["cpcaudio"]["seconds_per_step"]
    payload = {
        "device": str(device),
        "config": "tiny" if args.tiny else "paper",
        "normalization": config.encoder.normalization,
        "clock": args.clock,
        **common.environment(),
        "flop_per_step": flops,
        "matmul_gflops": peak,
        "matmul_gflops_samples": [round(p, 1) for p in peaks],
        "onednn_matmul_gflops": common.peak_of(onednn_peaks) if onednn_peaks else None,
        "best_matmul_gflops": best_peak,
        "results": results,
        "speedup": speedup,
    }
    lines = [f"side by side on {device} ({torch.get_num_threads()} threads, {common.allocator_description()}), "
             f"{flops / 1e9:.1f} GFLOP/step, matmul peak {peak:.1f} GFLOP/s (torch.mm), best {best_peak:.1f}"]
    for name, r in results.items():
        lines.append(
            f"  {name:<9} {r['seconds_per_step']:.3f} s/step  {r['audio_seconds_per_second']:.2f} audio s/s  "
            f"MFU {100 * r['mfu']:.1f}% (vs best matmul {100 * r['mfu_best_matmul']:.1f}%)  "
            f"{r['minor_faults_per_step']:.0f} minor faults ({r['system_cpu_seconds_per_step']:.2f} s system CPU)/step"
        )
    lines.append(f"  cpcaudio is {speedup:.2f}x CPC_audio")
    common.print_result("reference_cpc_audio", payload, "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
