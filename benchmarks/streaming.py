"""Benchmark streaming extraction (``StreamingExtractor``): peak memory of a 2-hour file, and speed.

Prints one JSON line on stdout and a summary on stderr::

    python benchmarks/streaming.py                      # 2 hours, the paper's model, all cores
    python benchmarks/streaming.py --hours 2 --config small --threads 1
    python benchmarks/streaming.py --tiny               # 20 s, a tiny model; what CI runs

The signal is generated block by block (``--block-seconds``, default 1 s, with a seeded chirp generator)
and pushed as it is made, so no whole-signal array ever exists; the frames are consumed as they come
(counted and summed, not kept). Figures: the process's peak resident set size (``peak_rss_mib``,
getrusage), its resident size once the model is built (``baseline_rss_mib``), the resident size at each
quarter of the signal (``rss_mib_by_quarter``: flat when memory is constant), and x real time.
For scale: the 2-hour signal alone would take 440 MiB as float32, its 256-dim context 703 MiB.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from cpcaudio import CPCModel  # noqa: E402
from cpcaudio.presets import load_preset  # noqa: E402
from cpcaudio.extract.streaming import StreamingExtractor  # noqa: E402
from cpcaudio.toy import generated_signal  # noqa: E402

CONFIGS = {
    "tiny": {"encoder": {"hidden_dim": 32, "input_normalization": "none"}, "context": {"hidden_dim": 32}},
    "small": {"encoder": {"hidden_dim": 64, "input_normalization": "none"}, "context": {"hidden_dim": 64}},
    "paper": {"encoder": {"input_normalization": "none"}},
}


def current_rss_mib() -> float:
    """Resident set size now, in MiB (Linux /proc; the peak elsewhere)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return common.peak_rss_mib()


def stream_signal(model: CPCModel, seconds: float, block_seconds: float) -> dict[str, Any]:
    """Push ``seconds`` of generated signal in blocks; frames consumed, memory sampled per quarter."""
    rate = model.config.data.sample_rate
    total = int(seconds * rate)
    block = max(1, int(block_seconds * rate))
    rng = np.random.default_rng(0)
    stream = StreamingExtractor(model)
    frames, checksum, pushed = 0, 0.0, 0
    quarters: list[float] = []
    start = time.perf_counter()
    while pushed < total:
        samples = generated_signal(min(block, total - pushed), rng, rate)
        out = stream.push(samples)
        pushed += samples.size
        frames += out.shape[0]
        checksum += float(out.sum())
        if pushed * 4 >= total * (len(quarters) + 1):
            quarters.append(round(current_rss_mib(), 1))
    out = stream.flush()
    frames += out.shape[0]
    checksum += float(out.sum())
    elapsed = time.perf_counter() - start
    assert frames == model.num_frames(total), (frames, model.num_frames(total))
    return {
        "audio_seconds": seconds,
        "block_seconds": block_seconds,
        "frames": frames,
        "checksum": checksum,
        "seconds": elapsed,
        "x_real_time": seconds / elapsed,
        "rss_mib_by_quarter": quarters,
    }


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, mps or auto.")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: all available cores).")
    parser.add_argument("--hours", type=float, default=2.0, help="Length of the streamed signal.")
    parser.add_argument("--block-seconds", type=float, default=1.0, help="Seconds per pushed block.")
    parser.add_argument("--config", choices=sorted(CONFIGS), default="paper", help="Model size (random weights).")
    parser.add_argument("--tiny", action="store_true", help="20 s through the tiny model (CI).")
    args = parser.parse_args(argv)

    device = common.setup_device(args.device, args.threads)
    config_name, seconds = ("tiny", 20.0) if args.tiny else (args.config, args.hours * 3600.0)
    torch.manual_seed(0)
    model = CPCModel(load_preset("paper", CONFIGS[config_name])).to(device).eval()
    baseline = current_rss_mib()
    result = stream_signal(model, seconds, args.block_seconds)
    payload = {
        "config": config_name,
        "device": str(device),
        "parameters": sum(p.numel() for p in model.parameters()),
        "baseline_rss_mib": round(baseline, 1),
        "peak_rss_mib": round(common.peak_rss_mib(), 1),
        **result,
        **common.environment(),
    }
    summary = (
        f"streaming ({config_name} model, {device}, {torch.get_num_threads()} threads): {seconds / 3600:.2f} h in "
        f"{args.block_seconds:g} s blocks -> {result['frames']} frames in {result['seconds']:.1f} s "
        f"({result['x_real_time']:.0f}x real time); RSS {baseline:.0f} MiB after loading, peak "
        f"{payload['peak_rss_mib']:.0f} MiB, by quarter {result['rss_mib_by_quarter']}"
    )
    common.print_result("streaming", payload, summary)


if __name__ == "__main__":
    main()
