"""Peak memory of ``prepare`` on one long audio file: it must not grow with the file's length.

    python benchmarks/prepare_memory.py                  # a 10-minute and a 2-hour 16 kHz file (~250 MB of disk)
    python benchmarks/prepare_memory.py --tiny           # 10 s and 60 s (seconds; what CI runs)
    python benchmarks/prepare_memory.py --source-rate 44100 --sample-rate 16000   # with resampling
    python benchmarks/prepare_memory.py --workers 2      # decoding in worker processes

Each file (16-bit WAV, a tone with a little noise) is generated block by block into a temporary folder,
then prepared by a child process running ``cpcaudio.data.prepare("folder", ...)``. The child reports its
peak resident set size (``VmHWM``, which unlike ``ru_maxrss`` does not start from this script's RSS at
fork; ``ru_maxrss`` where there is no ``/proc``) and that of its own children (``ru_maxrss`` of the
decode workers, when ``--workers`` > 1), so the figure is the preparation's alone. The issue-15 target is under 400 MB for
both lengths; before streaming, the 2-hour file peaked at 1.59 GB.

Prints one JSON line (``{"benchmark": "prepare_memory", ...}``) on stdout and a table on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

import numpy as np

TARGET_MB = 400.0
_CHILD = """
import json, resource, sys, time
def peak_kib():  # VmHWM starts afresh at exec; ru_maxrss keeps the parent's RSS at fork (Linux)
    try:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
started = time.perf_counter()
from cpcaudio.data import prepare
imported = peak_kib()
src, out, workers, rate = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
prepare("folder", src, out, workers=workers, sample_rate=int(rate) if rate != "none" else None)
print(json.dumps({
    "self_kib": peak_kib(),
    "workers_kib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
    "import_kib": imported,
    "seconds": time.perf_counter() - started,
}))
"""


def write_long_wav(path: Path, seconds: float, rate: int, block: int = 1 << 20) -> int:
    """A 16-bit mono WAV of ``seconds`` written block by block (constant memory); returns its bytes."""
    import soundfile

    path.parent.mkdir(parents=True, exist_ok=True)
    total = int(seconds * rate)
    noise = np.random.default_rng(0)
    with soundfile.SoundFile(path, "w", samplerate=rate, channels=1, subtype="PCM_16") as file:
        for start in range(0, total, block):
            t = np.arange(start, min(start + block, total)) / rate
            samples = 0.3 * np.sin(2 * np.pi * 220.0 * t) + 0.01 * noise.standard_normal(t.size)
            file.write(samples.astype(np.float32))
    return path.stat().st_size


def measure(seconds: float, source_rate: int, sample_rate: Optional[int], workers: int, folder: Path) -> dict:
    """Generate one file of ``seconds``, prepare it in a child process, return the child's figures."""
    src, out = folder / f"src_{int(seconds)}", folder / f"out_{int(seconds)}"
    size = write_long_wav(src / "speaker" / "long.wav", seconds, source_rate)
    command = [sys.executable, "-c", _CHILD, str(src), str(out), str(workers), str(sample_rate or "none")]
    completed = subprocess.run(command, capture_output=True, text=True)
    if completed.returncode != 0:
        raise SystemExit(f"error: prepare failed on the {seconds:.0f} s file: {completed.stderr.strip()}")
    figures = json.loads(completed.stdout.strip().splitlines()[-1])
    peak = max(figures["self_kib"], figures["workers_kib"]) / 1024
    record = {
        "seconds_of_audio": seconds,
        "file_mb": round(size / 2**20, 1),
        "peak_rss_mb": round(peak, 1),
        "prepare_process_mb": round(figures["self_kib"] / 1024, 1),
        "worker_mb": round(figures["workers_kib"] / 1024, 1),
        "after_import_mb": round(figures["import_kib"] / 1024, 1),
        "wall_s": round(figures["seconds"], 2),
        "under_target": peak < TARGET_MB,
    }
    shutil.rmtree(src, ignore_errors=True)
    shutil.rmtree(out, ignore_errors=True)
    return record


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="10 s and 60 s files instead of 10 min and 2 h")
    parser.add_argument("--source-rate", type=int, default=16000, help="rate of the generated files (Hz)")
    parser.add_argument("--sample-rate", type=int, default=None, help="resample to this rate (default: keep)")
    parser.add_argument("--workers", type=int, default=1, help="prepare's --workers (1: decode in-process)")
    parser.add_argument("--dir", type=Path, default=None, help="folder for the generated files (default: a temporary one)")
    return parser.parse_args(argv)


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    lengths = (10.0, 60.0) if args.tiny else (600.0, 7200.0)
    folder = Path(tempfile.mkdtemp(prefix="prepare_memory_", dir=args.dir))
    started = time.perf_counter()
    try:
        records = [measure(s, args.source_rate, args.sample_rate, args.workers, folder) for s in lengths]
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(f"prepare peak RSS ({args.source_rate} Hz -> {args.sample_rate or args.source_rate} Hz, "
          f"workers {args.workers}; target < {TARGET_MB:.0f} MB):", file=sys.stderr)
    for record in records:
        print(f"  {record['seconds_of_audio'] / 60:6.1f} min  file {record['file_mb']:7.1f} MB  peak "
              f"{record['peak_rss_mb']:6.1f} MB  (after import {record['after_import_mb']:.1f} MB)  "
              f"{record['wall_s']:.1f} s", file=sys.stderr)
    print(json.dumps({
        "benchmark": "prepare_memory",
        "tiny": args.tiny,
        "source_rate": args.source_rate,
        "sample_rate": args.sample_rate or args.source_rate,
        "workers": args.workers,
        "target_mb": TARGET_MB,
        "files": records,
        "wall_s": round(time.perf_counter() - started, 1),
        "cpus": os.cpu_count(),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
