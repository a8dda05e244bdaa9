"""Benchmark ``cpcaudio extract`` on one long file: peak resident memory must not grow with its length.

Prints one JSON line on stdout and a summary on stderr::

    python benchmarks/extract_memory.py                       # 10 min and 2 h, a small model
    python benchmarks/extract_memory.py --config paper        # the paper's model (slow on a CPU)
    python benchmarks/extract_memory.py --compare             # also the whole-file path, for scale
    python benchmarks/extract_memory.py --tiny                # 10 s and 60 s, a tiny model (the CI size)

For each length a 16 kHz int16 WAV of generated speech-like tones (:func:`cpcaudio.toy.generated_signal`)
is written block by block, and a fresh child process runs :func:`cpcaudio.extract.extract_to_store` of a
text list naming it into a new store, exactly what ``cpcaudio extract CKPT LIST OUT`` does, and reports
its own peak resident set size (``getrusage(RUSAGE_SELF).ru_maxrss``), its resident size before the
extraction (torch and cpcaudio imported), and the time. The models standardise their input (the default
``input_normalization: sequence``), so long files take the two-pass path (statistics, then frames).
``--stream-seconds`` sets when a file is streamed (default: the library's, 60 s); ``--compare`` adds a
run with streaming off (``inf``: the whole file decoded and extracted at once), the behaviour before.
For scale: 2 hours at 16 kHz is 440 MiB as float32, and its 256-dim context 703 MiB.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

RATE = 16000
CONFIGS: dict[str, dict[str, dict[str, Any]]] = {
    "tiny": {"encoder": {"hidden_dim": 16}, "context": {"hidden_dim": 16}},
    "small": {"encoder": {"hidden_dim": 64}, "context": {"hidden_dim": 64}},
    "paper": {},
}


def write_wav(path: Path, seconds: float, block_seconds: float = 60.0) -> None:
    """A 16 kHz mono int16 WAV of ``seconds`` of generated signal, written block by block."""
    import soundfile

    from cpcaudio.toy import generated_signal

    rng = np.random.default_rng(0)
    total, block = int(seconds * RATE), int(block_seconds * RATE)
    with soundfile.SoundFile(path, "w", samplerate=RATE, channels=1, subtype="PCM_16") as file:
        for start in range(0, total, block):
            file.write(generated_signal(min(block, total - start), rng, RATE))


def write_checkpoint(path: Path, config_name: str) -> None:
    import torch

    from cpcaudio import CPCModel
    from cpcaudio.presets import load_preset
    from cpcaudio.train.checkpoint import save_checkpoint

    torch.manual_seed(0)
    config = load_preset("paper", CONFIGS[config_name])  # sizes over the paper model
    save_checkpoint(path, {"config": config.to_dict(), "model": CPCModel(config).state_dict(), "step": 0})


def rss_now_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def child(arguments: list[str]) -> None:
    """In the child: load the model, extract, print the figures as one JSON line."""
    checkpoint, listing, out, device, stream, threads, malloc = arguments
    import torch

    from cpcaudio.extract import extract_to_store
    from cpcaudio.runtime import keep_freed_memory

    if malloc == "keep":
        keep_freed_memory()
    if int(threads) > 0:
        torch.set_num_threads(int(threads))
    before = rss_now_mib()  # torch and cpcaudio imported
    started = time.perf_counter()
    summary = extract_to_store(checkpoint, listing, out, device=device, stream_seconds=float(stream))
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(json.dumps({
        "rss_before_mib": round(before, 1), "peak_rss_mib": round(peak, 1), "seconds": round(seconds, 2),
        "frames": summary.total_frames, "dim": summary.dim, "audio_seconds": summary.audio_seconds,
    }))


def measure(
    work: Path, checkpoint: Path, seconds: float, device: str, stream: float, threads: int, malloc: str
) -> dict[str, Any]:
    name = f"{int(seconds)}s"
    audio = work / f"{name}.wav"
    if not audio.exists():
        write_wav(audio, seconds)
    listing = work / f"{name}.txt"
    listing.write_text(f"{audio.name}\n")
    out = work / f"store_{name}_{stream}"
    command = [sys.executable, __file__, "--child", str(checkpoint), str(listing), str(out), device, str(stream)]
    command += [str(threads), malloc]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"child failed ({done.returncode}):\n{done.stderr}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    for path in sorted(out.iterdir(), reverse=True):
        path.unlink()  # the store is not needed (a 2-hour paper-model store is 703 MiB)
    out.rmdir()
    return {"audio_seconds": seconds, "stream_seconds": stream if math.isfinite(stream) else "inf", "malloc": malloc,
            **result,
            "x_real_time": round(seconds / max(result["seconds"], 1e-9), 1)}


def main(argv: Optional[list[str]] = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        return child(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", choices=sorted(CONFIGS), default="small", help="Model size (random weights).")
    parser.add_argument("--seconds", type=float, nargs="+", default=[600.0, 7200.0], help="File lengths.")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, mps.")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads of the child (0: torch's default).")
    parser.add_argument("--stream-seconds", type=float, default=None, help="Stream files longer than this.")
    parser.add_argument("--compare", action="store_true", help="Also run with streaming off (the whole file).")
    parser.add_argument("--tiny", action="store_true", help="10 s and 60 s through a tiny model, streaming from 5 s.")
    parser.add_argument("--malloc", choices=("system", "keep"), nargs="+", default=["keep"],
                        help="The child's allocator: keep (default, as cpcaudio extract runs: glibc keeps freed "
                        "memory, cpcaudio.runtime.keep_freed_memory) and/or system (the C library's as it is); "
                        "several: one run per length and setting.")
    parser.add_argument("--work", type=Path, default=None, help="Folder for the audio and stores (default: a temp).")
    args = parser.parse_args(argv)
    from cpcaudio.extract.blocks import STREAM_SECONDS

    config_name, lengths = ("tiny", [10.0, 60.0]) if args.tiny else (args.config, args.seconds)
    stream = args.stream_seconds if args.stream_seconds is not None else (5.0 if args.tiny else STREAM_SECONDS)
    with tempfile.TemporaryDirectory(prefix="extract_memory_", dir=args.work) as folder:
        work = Path(folder)
        checkpoint = work / f"{config_name}.pt"
        write_checkpoint(checkpoint, config_name)
        streams = [stream, math.inf] if args.compare else [stream]
        runs = [
            measure(work, checkpoint, s, args.device, mode, args.threads, malloc)
            for mode in streams
            for malloc in args.malloc
            for s in lengths
        ]
    payload = {"benchmark": "extract_memory", "config": config_name, "device": args.device, "runs": runs}
    print(json.dumps(payload))
    for run in runs:
        mode = "whole file" if run["stream_seconds"] == "inf" else "streamed"
        print(
            f"extract {run['audio_seconds'] / 60:.1f} min ({config_name} model, {args.device}, {mode}, "
            f"malloc {run['malloc']}): peak RSS "
            f"{run['peak_rss_mib']:.0f} MiB ({run['rss_before_mib']:.0f} MiB before extracting), "
            f"{run['seconds']:.1f} s, {run['x_real_time']:.0f}x real time",
            file=sys.stderr,
        )


if __name__ == "__main__":
    main()
