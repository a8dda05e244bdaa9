"""Benchmark feature extraction (``model.extract``): how many times faster than real time.

Prints one JSON line on stdout and a summary on stderr::

    python benchmarks/extract.py                         # paper config, 60 s signal + a batch, all cores
    python benchmarks/extract.py --device cuda --repeats 10
    python benchmarks/extract.py --chunk-seconds 60      # one chunk for the 60 s signal
    python benchmarks/extract.py --tiny                  # seconds; what CI runs

Two workloads, both with the default paper model (random weights: speed does not depend on them):

* ``long``: one ``--seconds`` long signal (default 60 s), chunked with ``--chunk-seconds`` (default the
  library's 10 s), context features returned on the CPU;
* ``batch``: ``--utterances`` utterances of 2 to 8 s (seeded lengths) in padded batches of
  ``--batch-size`` sorted by length, as ``cpcaudio extract`` does.

Figures: median wall seconds over ``--repeats`` timed runs after one warm-up, and x real time =
audio seconds / median seconds.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from cpcaudio import CPCConfig, CPCModel  # noqa: E402
from cpcaudio.presets import load_preset  # noqa: E402
from cpcaudio.extract import DEFAULT_CHUNK_SECONDS, extract  # noqa: E402
from cpcaudio.toy import generated_signal  # noqa: E402


def tiny_config() -> CPCConfig:
    return CPCConfig.from_dict({"encoder": {"hidden_dim": 32}, "context": {"hidden_dim": 32}})


def long_signal_workload(
    model: CPCModel, seconds: float, chunk_seconds: Optional[float], repeats: int, device: torch.device
) -> dict[str, Any]:
    """Median time to extract the context of one ``seconds``-long signal."""
    rate = model.config.data.sample_rate
    signal = torch.from_numpy(generated_signal(int(seconds * rate), np.random.default_rng(0), rate))
    timings = common.time_calls(lambda: extract(model, signal, rate, chunk_seconds=chunk_seconds), repeats, device)
    median = common.median(timings)
    return {
        "audio_seconds": seconds,
        "chunk_seconds": DEFAULT_CHUNK_SECONDS if chunk_seconds is None else chunk_seconds,
        "seconds_median": median,
        "seconds_all": [round(t, 4) for t in timings],
        "x_real_time": seconds / median,
    }


def batch_workload(
    model: CPCModel, num_utterances: int, batch_size: int, repeats: int, device: torch.device, max_seconds: float
) -> dict[str, Any]:
    """Median time to extract ``num_utterances`` utterances of 2..max_seconds s in padded batches."""
    rate = model.config.data.sample_rate
    rng = np.random.default_rng(1)
    lengths = sorted((rng.uniform(min(2.0, max_seconds), max_seconds, num_utterances) * rate).astype(int), reverse=True)
    signals = [generated_signal(int(n), rng, rate) for n in lengths]
    batches = []
    for start in range(0, num_utterances, batch_size):
        group = signals[start : start + batch_size]
        padded = np.zeros((len(group), 1, len(group[0])), dtype=np.float32)
        for row, signal in enumerate(group):
            padded[row, 0, : len(signal)] = signal
        batches.append((torch.from_numpy(padded), [len(s) for s in group]))

    def run() -> None:
        for padded, group_lengths in batches:
            extract(model, padded, rate, lengths=group_lengths)

    timings = common.time_calls(run, repeats, device)
    median = common.median(timings)
    audio_seconds = float(sum(lengths)) / rate
    return {
        "utterances": num_utterances,
        "batch_size": batch_size,
        "audio_seconds": audio_seconds,
        "seconds_median": median,
        "seconds_all": [round(t, 4) for t in timings],
        "x_real_time": audio_seconds / median,
    }


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="cpu, cuda, mps or auto (default).")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: all available cores).")
    parser.add_argument("--seconds", type=float, default=60.0, help="Length of the long signal.")
    parser.add_argument("--chunk-seconds", type=float, default=None, help="Chunk length (default: the library's).")
    parser.add_argument("--utterances", type=int, default=32, help="Utterances of the batch workload.")
    parser.add_argument("--batch-size", type=int, default=8, help="Utterances per padded batch.")
    parser.add_argument("--repeats", type=int, default=5, help="Timed runs per workload (the median is quoted).")
    parser.add_argument("--tiny", action="store_true", help="A small model and short signals (CI).")
    parser.add_argument("--malloc", choices=("system", "keep"), default="keep",
                        help="keep (default, as cpcaudio extract and train run): glibc keeps freed memory "
                        "(cpcaudio.runtime.keep_freed_memory); system: the C library's allocator as it is")
    args = parser.parse_args(argv)
    if args.malloc == "keep":
        common.keep_freed_memory()

    device = common.setup_device(args.device, args.threads)
    torch.manual_seed(0)
    config = tiny_config() if args.tiny else load_preset("paper")
    seconds, utterances, max_seconds, repeats = args.seconds, args.utterances, 8.0, args.repeats
    if args.tiny:
        seconds, utterances, max_seconds, repeats = 3.0, 4, 2.0, 2
    model = CPCModel(config).to(device).eval()
    long = long_signal_workload(model, seconds, args.chunk_seconds, repeats, device)
    batch = batch_workload(model, utterances, args.batch_size, repeats, device, max_seconds)
    payload = {
        "config": "tiny" if args.tiny else "paper",
        "device": str(device),
        "parameters": sum(p.numel() for p in model.parameters()),
        "long": long,
        "batch": batch,
        **common.environment(),
    }
    summary = (
        f"extract ({payload['config']} config, {device}, {torch.get_num_threads()} threads): "
        f"{long['audio_seconds']:.0f} s signal in {long['seconds_median']:.3f} s = {long['x_real_time']:.1f}x real time "
        f"(chunks of {long['chunk_seconds']:g} s); {batch['utterances']} utterances ({batch['audio_seconds']:.0f} s, "
        f"batches of {batch['batch_size']}) in {batch['seconds_median']:.3f} s = {batch['x_real_time']:.1f}x real time"
    )
    common.print_result("extract", payload, summary)


if __name__ == "__main__":
    main()
