"""Benchmark the data path: preparation speed, sampler throughput, and memory of a training reader.

Prints one JSON line on stdout and a summary on stderr::

    python benchmarks/loader.py                  # TIMIT sample, 10 min synthetic corpus, 1 h and 10 h corpora
    python benchmarks/loader.py --tiny           # seconds; what CI runs
    python benchmarks/loader.py --timit PATH     # another copy of the TIMIT sample (default ../shared/data)

Figures:

- ``timit_prepare_x_realtime``: seconds of audio prepared per wall second (``prepare("timit", ...)``
  on the NLTK TIMIT sample, all cores; median of ``--repeats`` runs);
- ``synthetic_generate_x_realtime`` and ``synthetic_prepare_x_realtime``: the synthetic corpus's
  generation (espeak-ng) and its preparation (reading, labelling, writing), separately;
- ``sampler_windows_per_s``: windows of 20480 samples (batch 8) per second from a prepared dataset
  whose file is in the page cache, per sampler mode;
- ``peak_rss_mib``: peak resident memory of a fresh process that opens a prepared dataset and draws
  10,000 windows, for a 1-hour and a 10-hour corpus (random content; only the size matters). The
  reader uses ``pread`` into small buffers, so the two must agree within 10 %.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

import common
from cpcaudio.data import PreparedDataset, WindowSampler, prepare
from cpcaudio.data.format import DatasetWriter, prepare_output_dir
from cpcaudio.geometry import ceil_div

REPO = Path(__file__).resolve().parents[1]
DEFAULT_TIMIT = REPO.parent / "shared" / "data" / "timit_sample"
RATE = 16000
WINDOW = 20480
BATCH = 8


def make_corpus(out: Path, hours: float, utterance_seconds: float = 10.0, num_speakers: int = 20) -> Path:
    """A prepared dataset of ``hours`` of random int16 audio (utterances of ``utterance_seconds``)."""
    prepare_output_dir(out, overwrite=True)
    writer = DatasetWriter(out, signal_dtype="int16", num_channels=1, with_frame_labels=False)
    block = np.random.default_rng(0).integers(-3000, 3000, size=(int(utterance_seconds * RATE), 1), dtype=np.int16)
    count = int(round(hours * 3600 / utterance_seconds))
    for number in range(count):
        split = "test" if number % 10 == 0 else "train"
        writer.add(f"utt{number:06d}", f"spk{number % num_speakers:02d}", split, block)
    meta = {
        "format_version": 1,
        "signal_kind": "audio",
        "sample_rate": RATE,
        "num_channels": 1,
        "label_hop": RATE // 100,
        "vocabularies": {"speaker": sorted({f"spk{i % num_speakers:02d}" for i in range(count)})},
        "utterance_labels": [],
        "source": {"kind": "benchmark", "hours": hours},
        "command": "benchmarks/loader.py",
        "counts": {"utterances": count, "total_samples": writer.total_samples},
    }
    writer.finish(meta, {"skipped": []})
    return out


def draw_windows(dataset_path: str, windows: int, mode: str) -> dict[str, float]:
    """Open a dataset, draw ``windows`` windows; time and peak memory of this process (child mode)."""
    before = common.peak_rss_mib()
    dataset = PreparedDataset.open(dataset_path)
    opened = common.peak_rss_mib()
    sampler = WindowSampler(dataset, window_size=WINDOW, batch_size=BATCH, mode=mode, seed=0)
    iterator = iter(sampler)
    checksum = 0.0
    start = time.perf_counter()
    for _ in range(ceil_div(windows, BATCH)):
        batch = next(iterator)
        checksum += float(batch.signal[:, 0, ::4096].sum())
    seconds = time.perf_counter() - start
    return {
        "rss_before_open_mib": before,
        "rss_after_open_mib": opened,
        "peak_rss_mib": common.peak_rss_mib(),
        "windows_per_s": windows / seconds,
        "checksum": checksum,
    }


def _child(dataset: Path, windows: int, mode: str) -> dict[str, float]:
    command = [sys.executable, __file__, "--draw", str(dataset), "--windows", str(windows), "--mode", mode]
    output = subprocess.run(command, check=True, capture_output=True, text=True, env={**os.environ}).stdout
    return json.loads(output.strip().splitlines()[-1])


def _timed_prepare(kind: str, src: Any, out: Path, **options: Any) -> tuple[float, float]:
    """(seconds, audio seconds) of one preparation into ``out`` (overwritten)."""
    start = time.perf_counter()
    result = prepare(kind, src, out, overwrite=True, **options)
    seconds = time.perf_counter() - start
    return seconds, result.meta["counts"]["total_samples"] / result.meta["sample_rate"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny sizes (CI): runs in seconds")
    parser.add_argument("--timit", type=Path, default=DEFAULT_TIMIT, help="the NLTK TIMIT sample")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats (median quoted)")
    parser.add_argument("--workers", type=int, default=0, help="preparation workers (0: one per CPU)")
    parser.add_argument("--workdir", type=Path, default=None, help="where the temporary corpora go")
    parser.add_argument("--draw", help=argparse.SUPPRESS)  # child mode: dataset to draw from
    parser.add_argument("--windows", type=int, default=10_000, help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="uniform", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.draw:
        print(json.dumps(draw_windows(args.draw, args.windows, args.mode)))
        return

    repeats = args.repeats or (1 if args.tiny else 3)
    sizes_hours = (1 / 60, 10 / 60) if args.tiny else (1.0, 10.0)
    num_windows = 400 if args.tiny else 10_000
    payload: dict[str, Any] = {"tiny": args.tiny, "repeats": repeats, "cores": common.available_cores()}
    lines = []
    with tempfile.TemporaryDirectory(dir=args.workdir) as scratch:
        scratch = Path(scratch)

        # Preparation speed: TIMIT sample.
        if args.timit.is_dir():
            options = {"on_error": "skip", "workers": args.workers, "limit": 10 if args.tiny else None}
            runs = [_timed_prepare("timit", args.timit, scratch / "timit", **options) for _ in range(repeats)]
            audio = runs[0][1]
            payload["timit_audio_s"] = audio
            payload["timit_prepare_s"] = common.median([r[0] for r in runs])
            payload["timit_prepare_x_realtime"] = audio / payload["timit_prepare_s"]
            lines.append(
                f"prepare timit sample   {audio / 60:5.1f} min of audio in {payload['timit_prepare_s']:.2f} s: "
                f"{payload['timit_prepare_x_realtime']:.0f}x real time"
            )
        else:
            lines.append(f"prepare timit sample   skipped: {args.timit} not found")

        # Preparation speed: the synthetic corpus (generation and preparation timed separately).
        from cpcaudio.data.synthetic import generate_corpus

        speakers, minutes = (2, 0.2) if args.tiny else (8, 10.0)
        start = time.perf_counter()
        generated = Path(
            generate_corpus(
                scratch / "synthetic_src", num_speakers=speakers, minutes=minutes, seed=0, sample_rate=RATE
            )
        )
        generate_seconds = time.perf_counter() - start
        options = {"label_ext": ".phn", "workers": args.workers}
        runs = [_timed_prepare("textgrid", generated, scratch / "synthetic", **options) for _ in range(repeats)]
        audio = runs[0][1]
        payload["synthetic_audio_s"] = audio
        payload["synthetic_generate_s"] = generate_seconds
        payload["synthetic_generate_x_realtime"] = audio / generate_seconds
        payload["synthetic_prepare_s"] = common.median([r[0] for r in runs])
        payload["synthetic_prepare_x_realtime"] = audio / payload["synthetic_prepare_s"]
        lines.append(
            f"synthetic corpus       {audio / 60:5.1f} min, {speakers} speakers: generated at "
            f"{payload['synthetic_generate_x_realtime']:.0f}x, "
            f"prepared at {payload['synthetic_prepare_x_realtime']:.0f}x real time"
        )

        # Memory and throughput of a reader process, 1 h vs 10 h.
        rss: dict[str, float] = {}
        after_open: dict[str, float] = {}
        child_throughput: dict[str, float] = {}
        for hours in sizes_hours:
            label = f"{hours:g}h" if hours >= 1 else f"{hours * 60:g}min"
            corpus = make_corpus(scratch / f"corpus_{label}", hours)
            results = [_child(corpus, num_windows, "uniform") for _ in range(repeats)]
            rss[label] = common.median([r["peak_rss_mib"] for r in results])
            after_open[label] = common.median([r["rss_after_open_mib"] for r in results])
            child_throughput[label] = common.median([r["windows_per_s"] for r in results])
            lines.append(
                f"reader, {label:>5} corpus   peak RSS {rss[label]:7.1f} MiB after {num_windows} windows "
                f"(after open: {after_open[label]:.1f} MiB; {child_throughput[label]:,.0f} windows/s)"
            )
        payload["peak_rss_windows"] = num_windows
        payload["peak_rss_mib"] = rss
        payload["rss_after_open_mib"] = after_open
        payload["reader_windows_per_s"] = child_throughput
        small, large = rss.values()
        payload["peak_rss_ratio"] = large / small
        payload["peak_rss_within_10_percent"] = abs(large / small - 1.0) <= 0.10
        lines.append(
            f"peak RSS, 10x corpus / 1x corpus = {large / small:.3f} "
            f"(within 10 %: {payload['peak_rss_within_10_percent']})"
        )
        first_corpus = scratch / f"corpus_{next(iter(rss))}"

        # Sampler throughput per mode (in this process, the smaller corpus, page cache warm).
        dataset = PreparedDataset.open(first_corpus)
        throughput = {}
        for mode in ("uniform", "same-speaker", "sequential"):
            sampler = WindowSampler(dataset, window_size=WINDOW, batch_size=BATCH, mode=mode, seed=0)
            iterator = iter(sampler)
            next(iterator)
            steps = max(10, num_windows // BATCH // 4)
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                for _ in range(steps):
                    next(iterator)
                times.append(time.perf_counter() - start)
            throughput[mode] = steps * BATCH / common.median(times)
        payload["sampler_windows_per_s"] = throughput
        lines.append(
            "sampler windows/s      "
            + ", ".join(f"{mode} {value:,.0f}" for mode, value in throughput.items())
            + f" (windows of {WINDOW} samples, batch {BATCH})"
        )
    common.print_result("loader", payload, "\n".join(lines))


if __name__ == "__main__":
    main()
