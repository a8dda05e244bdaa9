"""Benchmark the training step with and without data augmentation, and with augmentation in loader workers.

Prints one JSON line on stdout and a summary on stderr::

    python benchmarks/augment.py                       # default model and batch (8 x 1.28 s at 16 kHz)
    python benchmarks/augment.py --workers 2 --steps 20 --json augment.json
    python benchmarks/augment.py --tiny                # seconds; a quick check of the code paths

Variants, timed on the same prepared corpus (chirping tones, made in a temporary folder) with the same
model, optimiser and batch stream (:class:`cpcaudio.augment.TrainingBatches`, as ``cpcaudio train``):

- ``off``: no augmentation (``augment.enabled = false``), batches made in the training process;
- ``main``: the default augmentation (``augment.enabled = true``: pitch, reverberation and additive noise,
  each with probability 0.5, ``target = past``), batches made in the training process
  (``data.num_workers = 0``);
- ``workers``: the same, made ahead in ``--workers`` DataLoader worker processes.

Figures: ``seconds_per_step`` (median over ``--steps`` steps after ``--warmup`` untimed ones; a step is
fetching the batch, forward, backward and Adam), and ``batch_seconds``: the median time to make one
augmented batch alone in this process. ``past`` costs a second encoder pass on the augmented windows (the
targets stay clean), so ``main`` minus ``off`` is that pass plus the effects; ``workers`` hides the effects
(not the encoder pass) when a core is free for the workers.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
import soundfile
import torch

import common
from cpcaudio import CPCConfig, CPCModel
from cpcaudio.augment import AugmentationChain, TrainingBatches, training_batches
from cpcaudio.data import PreparedDataset, WindowSampler, prepare
from cpcaudio.toy import generated_signal
from cpcaudio.train.seeding import negative_generator, negative_seed

RATE = 16000
TINY = {  # the same code paths in seconds
    "encoder": {"hidden_dim": 32},
    "context": {"hidden_dim": 32},
    "predictor": {"num_steps": 3, "num_negatives": 8},
    "data": {"batch_size": 2, "window_size": 3200},
}
VARIANTS = ("off", "main", "workers")


def make_corpus(root: Path, speakers: int, seconds: float) -> PreparedDataset:
    """A prepared corpus of ``speakers`` x 2 utterances of ``seconds`` of chirping tones (16 kHz)."""
    rng = np.random.default_rng(0)
    for speaker in range(speakers):
        folder = root / "source" / f"spk{speaker}"
        folder.mkdir(parents=True)
        for index in range(2):
            soundfile.write(folder / f"u{index}.wav", generated_signal(int(seconds * RATE), rng, RATE), RATE)
    return PreparedDataset.open(prepare("folder", root / "source", root / "prepared", workers=1).path)


def config_for(tiny: bool, variant: str, workers: int) -> CPCConfig:
    sections: dict[str, dict[str, Any]] = {name: dict(values) for name, values in (TINY if tiny else {}).items()}
    data = sections.setdefault("data", {})
    data.update({"sampler": "uniform", "num_workers": workers if variant == "workers" else 0})
    sections["augment"] = {"enabled": variant != "off"}
    return CPCConfig.from_dict(sections)


def time_steps(
    dataset: PreparedDataset, config: CPCConfig, device: torch.device, steps: int, warmup: int
) -> list[float]:
    """Seconds of ``steps`` training steps (batch fetch + forward + backward + Adam) after ``warmup``."""
    torch.manual_seed(0)
    model = CPCModel(config).to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=config.optim.learning_rate)
    data = config.data
    sampler = WindowSampler(dataset, window_size=data.window_size, batch_size=data.batch_size, mode=data.sampler)
    seconds = []
    with training_batches(sampler, config, dataset.sample_rate, device) as batches:
        for step in range(warmup + steps):
            start = time.perf_counter()
            signal, lengths, context_signal = next(batches).model_inputs(device)
            generator = negative_generator(negative_seed(0, 0, step, 0), device)
            output = model(signal, lengths, generator=generator, context_signal=context_signal)
            optimizer.zero_grad(set_to_none=True)
            output.loss.backward()
            optimizer.step()
            common.synchronize(device)
            if step >= warmup:
                seconds.append(time.perf_counter() - start)
    return seconds


def time_batches(dataset: PreparedDataset, config: CPCConfig, count: int) -> list[float]:
    """Seconds to make each of ``count`` augmented batches in this process (no model)."""
    data = config.data
    sampler = WindowSampler(dataset, window_size=data.window_size, batch_size=data.batch_size, mode=data.sampler)
    batches = TrainingBatches(sampler, AugmentationChain(config.augment, dataset.sample_rate), config.augment.target)
    next(batches)  # first-call costs
    seconds = []
    for _ in range(count):
        start = time.perf_counter()
        next(batches)
        seconds.append(time.perf_counter() - start)
    return seconds


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny model and windows (seconds)")
    parser.add_argument("--workers", type=int, default=2, help="loader workers of the 'workers' variant")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per variant (default 10; tiny 3)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (worker start-up, first calls)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: all cores)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N, mps or auto")
    parser.add_argument("--json", type=Path, default=None, help="also write the JSON record to this file")
    parser.add_argument("--workdir", type=Path, default=None, help="where the temporary corpus goes")
    return parser.parse_args(argv)


def main(argv: Optional[list[str]] = None) -> None:
    args = parse_args(argv)
    if args.workers < 1:
        raise SystemExit("error: --workers must be >= 1 (the 'workers' variant needs loader processes)")
    device = common.setup_device(args.device, args.threads)
    steps = args.steps or (3 if args.tiny else 10)
    with tempfile.TemporaryDirectory(dir=args.workdir) as scratch:
        dataset = make_corpus(Path(scratch), speakers=2 if args.tiny else 4, seconds=2.0 if args.tiny else 20.0)
        timings = {
            variant: time_steps(dataset, config_for(args.tiny, variant, args.workers), device, steps, args.warmup)
            for variant in VARIANTS
        }
        batch_seconds = time_batches(dataset, config_for(args.tiny, "main", 0), steps)
    config = config_for(args.tiny, "main", args.workers)
    payload = {
        "tiny": args.tiny,
        "device": str(device),
        "batch_size": config.data.batch_size,
        "window_size": config.data.window_size,
        "workers": args.workers,
        "steps": steps,
        "augment": dataclasses.asdict(config.augment),
        "seconds_per_step": {variant: common.median(values) for variant, values in timings.items()},
        "seconds_per_step_all": timings,
        "batch_seconds": common.median(batch_seconds),
        **common.environment(),
    }
    per_step = payload["seconds_per_step"]
    summary = "\n".join(
        [
            f"augment: {config.data.batch_size} x {config.data.window_size / RATE:.2f} s windows, {device}, "
            f"{torch.get_num_threads()} threads, median of {steps} steps",
            f"  no augmentation              {per_step['off']:.3f} s/step",
            f"  augmentation, main process   {per_step['main']:.3f} s/step",
            f"  augmentation, {args.workers} workers      {per_step['workers']:.3f} s/step",
            f"  one augmented batch alone    {payload['batch_seconds']:.3f} s",
        ]
    )
    common.print_result("augment", payload, summary)
    if args.json is not None:
        args.json.write_text(json.dumps({"benchmark": "augment", **payload}, indent=2) + "\n")


if __name__ == "__main__":
    main()
