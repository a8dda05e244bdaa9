"""Benchmark the phone probe: training on cached features vs re-encoding the audio in every epoch.

Prints one JSON line on stdout and a summary on stderr::

    python benchmarks/probe.py                              # paper model, synthetic labelled corpus
    python benchmarks/probe.py --dataset data/timit         # a prepared dataset with frame labels
    python benchmarks/probe.py --epochs 20 --device cuda
    python benchmarks/probe.py --tiny                       # seconds; what CI runs

Both arms train the same linear phone classifier (softmax layer, Adam, minibatches of utterances in the
same seeded order, the same number of epochs) on the frozen features of the same model:

* ``reencode``: CPC_audio's way: every minibatch runs the audio through the frozen model again, in
  every epoch;
* ``cached``: cpcaudio's way: the features are extracted once (timed too), then every epoch reads them.

The features are the same, so the two arms reach the same test accuracy (reported, with the difference);
only the time differs. A third figure is :class:`cpcaudio.evaluate.LinearProbe` (L-BFGS with its penalty
grid) on the cached features, the probe ``cpcaudio probe`` runs.

The default corpus is synthetic and needs no files: utterances of tone segments (50-150 ms), each segment
one of ``--classes`` pitches plus noise, labelled per 10 ms frame by its pitch class. The model has random
weights (speed does not depend on them).
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

from cpcaudio import CPCConfig  # noqa: E402
from cpcaudio.presets import load_preset  # noqa: E402
from cpcaudio.evaluate import LinearProbe, align_frame_labels, model_timing  # noqa: E402
from cpcaudio.evaluate.baselines import random_model  # noqa: E402
from cpcaudio.extract.features import extract  # noqa: E402
from cpcaudio.geometry import ceil_div  # noqa: E402

LABEL_HOP = 160  # samples per frame label at 16 kHz


def tiny_config() -> CPCConfig:
    return CPCConfig.from_dict({"encoder": {"hidden_dim": 32}, "context": {"hidden_dim": 32}})


def synthetic_corpus(
    num_utterances: int, seconds: float, num_classes: int, seed: int, sample_rate: int = 16000
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(signal (1, time) float32, frame labels (ceil(time / 160),) int64) per utterance."""
    rng = np.random.default_rng(seed)
    corpus = []
    for _ in range(num_utterances):
        length = int(seconds * sample_rate)
        signal = np.zeros(length, dtype=np.float32)
        labels = np.zeros(ceil_div(length, LABEL_HOP), dtype=np.int64)
        position = 0
        while position < length:
            count = min(int(rng.integers(sample_rate // 20, sample_rate * 3 // 20)), length - position)
            label = int(rng.integers(num_classes))
            t = np.arange(count) / sample_rate
            signal[position : position + count] = 0.4 * np.sin(2 * np.pi * 150.0 * (label + 1) * t + rng.uniform(0, 6.3))
            first, last = position // LABEL_HOP, ceil_div(position + count, LABEL_HOP)
            labels[first:last] = label
            position += count
        signal += 0.05 * rng.standard_normal(length).astype(np.float32)
        corpus.append((signal[None], labels))
    return corpus


def dataset_corpus(path: Path, limit: Optional[int]) -> tuple[list[tuple[np.ndarray, np.ndarray]], list[bool]]:
    """Utterances, frame labels and is-train flags of a prepared dataset with frame labels."""
    from cpcaudio.data import PreparedDataset

    dataset = PreparedDataset.open(path)
    if not dataset.has_frame_labels or dataset.sample_rate != 16000:
        raise SystemExit(f"error: {path} needs frame labels at 16 kHz for this benchmark")
    train, test = dataset.indices("train"), dataset.indices("test")
    if limit is not None:  # keep the train/test proportion
        share = max(1, round(limit * len(test) / (len(train) + len(test))))
        train, test = train[: max(1, limit - share)], test[:share]
    indices = [int(i) for i in np.concatenate([train, test])]
    return [(dataset.signal(i), dataset.frame_labels(i)) for i in indices], [dataset.splits[i] == "train" for i in indices]


def batches_of(count: int, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    order = rng.permutation(count)
    return [order[start : start + batch_size] for start in range(0, count, batch_size)]


def encode(model: Any, signals: list[np.ndarray]) -> list[torch.Tensor]:
    """Frozen context features of a padded batch of signals: one (frames, dim) tensor per signal."""
    longest = max(s.shape[-1] for s in signals)
    padded = np.zeros((len(signals), 1, longest), dtype=np.float32)
    for row, s in enumerate(signals):
        padded[row, :, : s.shape[-1]] = s
    features = extract(model, padded, 16000, lengths=[s.shape[-1] for s in signals], output_device=None)
    return [features.frames[row, : int(features.frame_lengths[row])] for row in range(len(signals))]


def train_linear(
    get_features: Any, frame_labels: list[torch.Tensor], train: list[int], dim: int, num_classes: int,
    epochs: int, batch_size: int, seed: int, device: torch.device,
) -> torch.nn.Linear:
    """Minibatch Adam on a softmax layer; ``get_features(indices)`` gives each utterance's frames."""
    torch.manual_seed(seed)
    classifier = torch.nn.Linear(dim, num_classes).to(device)
    optimizer = torch.optim.Adam(classifier.parameters(), lr=1e-2)
    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        for batch in batches_of(len(train), batch_size, rng):
            indices = [train[b] for b in batch]
            features = get_features(indices)
            x = torch.cat([f for f in features])  # (frames, dim)
            y = torch.cat([frame_labels[i] for i in indices])  # (frames,)
            keep = y >= 0
            loss = torch.nn.functional.cross_entropy(classifier(x[keep]), y[keep])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return classifier


def accuracy(
    classifier: torch.nn.Linear, features: list[torch.Tensor], labels: list[torch.Tensor], test: list[int]
) -> float:
    with torch.no_grad():
        x = torch.cat([features[i] for i in test])
        y = torch.cat([labels[i] for i in test])
        keep = y >= 0
        return float((classifier(x[keep]).argmax(1) == y[keep]).float().mean())


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="cpu, cuda, mps or auto (default).")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: all available cores).")
    parser.add_argument("--dataset", type=Path, default=None, help="A prepared 16 kHz dataset with frame labels.")
    parser.add_argument(
        "--utterances", type=int, default=None,
        help="Synthetic utterances (default 40), or the dataset's first N train + test (default all).",
    )
    parser.add_argument("--seconds", type=float, default=3.0, help="Seconds per synthetic utterance.")
    parser.add_argument("--classes", type=int, default=12, help="Pitch classes of the synthetic corpus.")
    parser.add_argument("--epochs", type=int, default=10, help="Epochs of the minibatch probe in both arms.")
    parser.add_argument("--batch-size", type=int, default=8, help="Utterances per minibatch.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of corpus, model, batch order.")
    parser.add_argument("--tiny", action="store_true", help="A small model, 6 one-second utterances, 2 epochs (CI).")
    args = parser.parse_args(argv)

    device = common.setup_device(args.device, args.threads)
    config = tiny_config() if args.tiny else load_preset("paper")
    utterances, seconds, epochs = (6, 1.0, 2) if args.tiny else (args.utterances, args.seconds, args.epochs)
    model = random_model(config, args.seed).to(device)
    if args.dataset is not None:
        corpus, is_train = dataset_corpus(args.dataset, utterances)
        num_classes = int(max(int(labels.max()) for _, labels in corpus)) + 1
        source = str(args.dataset)
    else:
        corpus = synthetic_corpus(utterances or 40, seconds, args.classes, args.seed)
        is_train = [i % 4 != 0 for i in range(len(corpus))]  # every 4th utterance is a test utterance
        num_classes = args.classes
        source = "synthetic tones"
    signals = [signal for signal, _ in corpus]
    timing = model_timing(model)
    frame_counts = [model.num_frames(s.shape[-1]) for s in signals]
    labels = [
        torch.from_numpy(align_frame_labels(lab, LABEL_HOP, 16000, timing, n)).to(device)
        for (_, lab), n in zip(corpus, frame_counts)
    ]
    train = [i for i, flag in enumerate(is_train) if flag]
    test = [i for i, flag in enumerate(is_train) if not flag]
    dim = config.context.hidden_dim
    audio_seconds = sum(s.shape[-1] for s in signals) / 16000

    # Untimed warm-up of both code paths (first-call costs of extraction, autograd and Adam: ~2 s on CPU).
    train_linear(lambda indices: encode(model, [signals[i] for i in indices]), labels, train[:1], dim, num_classes,
                 1, 1, args.seed, device)
    common.synchronize(device)
    started = time.perf_counter()
    reencoded = train_linear(
        lambda indices: encode(model, [signals[i] for i in indices]), labels, train, dim, num_classes,
        epochs, args.batch_size, args.seed, device,
    )
    common.synchronize(device)
    reencode_seconds = time.perf_counter() - started

    started = time.perf_counter()
    cache: list[torch.Tensor] = []
    for start in range(0, len(signals), args.batch_size):
        cache.extend(encode(model, signals[start : start + args.batch_size]))
    common.synchronize(device)
    extraction_seconds = time.perf_counter() - started
    cached = train_linear(
        lambda indices: [cache[i] for i in indices], labels, train, dim, num_classes,
        epochs, args.batch_size, args.seed, device,
    )
    common.synchronize(device)
    cached_seconds = time.perf_counter() - started

    reencode_accuracy = accuracy(reencoded, cache, labels, test)
    cached_accuracy = accuracy(cached, cache, labels, test)

    def stack(indices: list[int]) -> tuple[np.ndarray, np.ndarray]:
        x = torch.cat([cache[i] for i in indices]).cpu().numpy()
        y = torch.cat([labels[i] for i in indices]).cpu().numpy()
        return x[y >= 0], y[y >= 0]

    train_x, train_y = stack(train)
    test_x, test_y = stack(test)
    started = time.perf_counter()
    probe = LinearProbe(device=str(device), n_jobs=torch.get_num_threads()).fit(train_x, train_y)
    lbfgs_seconds = time.perf_counter() - started
    lbfgs_accuracy = float(probe.score(test_x, test_y))

    payload = {
        "config": "tiny" if args.tiny else "paper",
        "device": str(device),
        "corpus": source,
        "utterances": len(signals),
        "audio_seconds": audio_seconds,
        "train_frames": int(train_y.size),
        "test_frames": int(test_y.size),
        "classes": num_classes,
        "epochs": epochs,
        "reencode": {"seconds": reencode_seconds, "test_accuracy": reencode_accuracy},
        "cached": {
            "seconds": cached_seconds,
            "extraction_seconds": extraction_seconds,
            "test_accuracy": cached_accuracy,
        },
        "speedup": reencode_seconds / cached_seconds if cached_seconds > 0 else float("inf"),
        "accuracy_difference": abs(reencode_accuracy - cached_accuracy),
        "linear_probe_lbfgs": {
            "seconds": lbfgs_seconds,
            "test_accuracy": lbfgs_accuracy,
            "weight_decay": probe.weight_decay_,
        },
        **common.environment(),
    }
    summary = (
        f"probe ({payload['config']} model, {device}, {torch.get_num_threads()} threads, {source}, "
        f"{len(signals)} utterances = {audio_seconds:.0f} s, {epochs} epochs): re-encoding every epoch "
        f"{reencode_seconds:.2f} s (accuracy {100 * reencode_accuracy:.1f}%), cached {cached_seconds:.2f} s "
        f"incl. {extraction_seconds:.2f} s extraction (accuracy {100 * cached_accuracy:.1f}%): "
        f"{payload['speedup']:.1f}x faster; LinearProbe (L-BFGS, penalty grid) on the cache: "
        f"{lbfgs_seconds:.2f} s, accuracy {100 * lbfgs_accuracy:.1f}%"
    )
    common.print_result("probe", payload, summary)


if __name__ == "__main__":
    main()
