"""Time-series classification with trained CPC, next to raw values, random init and published figures.

For each of aeon's bundled UEA/UCR sets (they load offline)::

    python benchmarks/timeseries.py                                   # the eight sets, 3 minutes each
    python benchmarks/timeseries.py --datasets BasicMotions,ArrowHead --minutes 2
    python benchmarks/timeseries.py --datasets GunPoint --steps 2000 --set optim.learning_rate=2e-3
    python benchmarks/timeseries.py --tiny                            # seconds: BasicMotions, 3 steps (CI)

What it does, per set:

1. **Data** (TS2Vec's preprocessing, Yue et al. 2022): ``cpcaudio prepare uea NAME`` (the set's own
   train/test split), standardised per channel with the statistics of the train series (all their time
   steps), written as ``.ts`` files and prepared again (``work/data/NAME``); reused by later runs.
2. **Pretraining**: ``cpcaudio train DATA RUN --minutes M`` on the train split, without labels (the
   validation loss is computed on training windows too: the test series are never seen). No encoder
   key is set, so ``cpcaudio train`` picks the ``timeseries`` preset and sizes the window and K from
   the series lengths (its log says so; the line is kept in the record); ``--config`` / ``--set`` are
   passed through.
3. **Features** (TS2Vec's protocol): one vector per series from :func:`cpcaudio.extract.extract` features
   (``--layer``, default ``encoder``: the conv encoder's output, as TS2Vec max-pools its own encoder's;
   ``context`` and ``all`` measured lower on the full run, see the README), max-pooled over the series'
   own frames (TS2Vec's instance vector) and, as a second row, mean-pooled. Every series is encoded at its
   own length (padded batches are exact, and pooling reads valid frames only), so variable-length sets
   (JapaneseVowels, PickupGestureWiimoteZ) carry no padding artefacts. The same architecture with random
   weights (seeded) gives the ``random`` rows. ``raw``: the standardised values themselves, each series
   linearly resampled to the longest training length (a no-op on equal-length sets), flattened.
4. **Probes**: ``svm``: an RBF-SVM with C from {1e-4, ..., 1e4, inf} by 5-fold CV, or C = inf when
   there are fewer than 5 series per class or under 50 series (:class:`cpcaudio.evaluate.SVMProbe`, as
   TS2Vec's ``fit_svm``); ``logistic``: :class:`cpcaudio.evaluate.LinearProbe` (standardised features,
   the L2 penalty chosen on a held-out part of train); ``1nn``: 1-nearest neighbour, Euclidean (raw
   values only, the classic UCR floor). Test accuracy on the set's test split.

Output: a table (rows: sets; columns: model / random / raw under each probe, max-pooled; the published
figure beside) on stderr, and the JSON record (``--json OUT`` too) on stdout: ``rows`` holds one entry
per (dataset, features, protocol, pooling) with its accuracy, plus each run's steps, wall time and
config. Headline figure of a set: ``model`` / ``svm`` / ``max`` (the TS2Vec protocol); ``verdicts`` says
whether it beats the raw-value floor (raw logistic and 1-NN, ours and the issue's), the raw SVM, random
init under the same probe, and whether it reaches the published figure.

Published anchors: TS2Vec (Yue et al. 2022, UEA table): BasicMotions 0.975, JapaneseVowels 0.984.
T-Loss (Franceschi et al. 2019, official ``results_ucr.csv``, "Ours (10)"): GunPoint 0.980,
ItalyPowerDemand 0.954, ArrowHead 0.766, OSULeaf 0.760, ACSF1 0.900, PickupGestureWiimoteZ 0.740.
Raw-value floors measured with cpcaudio's class probe when the issue was filed (logistic / 1-NN) are
printed too; JapaneseVowels and ItalyPowerDemand are too easy for raw values to discriminate.

Not in ``run_all.py`` (its full size is about half an hour); ``tests/integration`` runs ``--tiny``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
import common  # noqa: E402
import quality  # noqa: E402
from quality import Failure, cli, git_commit, machine, prepare_once  # noqa: E402

DATASETS = (
    "BasicMotions", "JapaneseVowels", "GunPoint", "ArrowHead", "ItalyPowerDemand", "OSULeaf", "ACSF1",
    "PickupGestureWiimoteZ",
)  # fmt: skip
# The published figure beside ours: (accuracy, where it comes from).
PUBLISHED = {
    "BasicMotions": (0.975, "TS2Vec"),
    "JapaneseVowels": (0.984, "TS2Vec"),
    "GunPoint": (0.980, "T-Loss"),
    "ItalyPowerDemand": (0.954, "T-Loss"),
    "ArrowHead": (0.766, "T-Loss"),
    "OSULeaf": (0.760, "T-Loss"),
    "ACSF1": (0.900, "T-Loss"),
    "PickupGestureWiimoteZ": (0.740, "T-Loss"),
}
# Raw-value floors measured when the issue was filed (logistic, 1-NN).
ISSUE_FLOORS = {
    "BasicMotions": (0.725, 0.600),
    "GunPoint": (0.853, 0.913),
    "ArrowHead": (0.731, 0.800),
    "OSULeaf": (0.459, 0.521),
    "ACSF1": (0.620, 0.540),
}
# Sets on which raw values are far from the top (JapaneseVowels 0.992, ItalyPowerDemand 0.963 are not).
DISCRIMINATING = ("BasicMotions", "GunPoint", "ArrowHead", "OSULeaf", "ACSF1", "PickupGestureWiimoteZ")
FEATURES = ("model", "random", "raw")
PROTOCOLS = ("svm", "logistic", "1nn")
POOLINGS = ("max", "mean")
HEADLINE = ("svm", "max")
DEFAULT_MINUTES = 3.0
DEFAULT_WORK = HERE / "cache" / "timeseries"
TINY_STEPS = 3
TINY_SET = ("context.hidden_dim=16", "predictor.num_negatives=4", "train.validation_batches=1", "train.log_every=1")
TRAIN_SET = ("train.validation_split=train",)  # the test series stay unseen until the probes


def stage(text: str) -> None:
    print(f"[timeseries] {text}", file=sys.stderr, flush=True)


# ---- data ----------------------------------------------------------------------------------------------


def prepare_set(name: str, work: Path) -> Any:
    """The set standardised per channel with its training statistics (TS2Vec's preprocessing), prepared
    into ``work/data/NAME``: ``cpcaudio prepare uea NAME`` into ``work/original/NAME``, the standardised
    series written as ``work/standardised/NAME/NAME_{TRAIN,TEST}.ts``, then prepared from that folder
    (both reused when already there)."""
    original = prepare_once("uea", name, work / "original" / name, {"kind": "uea", "set": name}, {}, 1)
    train, train_y = split_series(original, "train")
    mean, std = standardiser(train)
    folder = work / "standardised" / name
    folder.mkdir(parents=True, exist_ok=True)
    classes = original.vocabularies["class"]
    for split in ("train", "test"):
        series, labels = split_series(original, split)
        names = [classes[i] for i in labels]
        write_ts(folder / f"{name}_{split.upper()}.ts", name, standardise(series, mean, std), names, classes)
    recipe = {"kind": "uea", "set": name, "standardised": True, "mean": mean.ravel().tolist(),
              "std": std.ravel().tolist()}  # fmt: skip
    return prepare_once("uea", folder, work / "data" / name, recipe, {}, 1)


def write_ts(path: Path, name: str, series: list[np.ndarray], labels: list[str], classes: list[str]) -> None:
    """A ``.ts`` file of (channels, time) series and their class labels."""
    lengths = {s.shape[-1] for s in series}
    header = [
        f"@problemName {name}", "@timeStamps false", f"@univariate {'true' if series[0].shape[0] == 1 else 'false'}",
        f"@dimensions {series[0].shape[0]}", f"@equalLength {'true' if len(lengths) == 1 else 'false'}",
        f"@classLabel true {' '.join(classes)}", "@data",
    ]  # fmt: skip
    lines = [":".join(",".join(f"{v:.7g}" for v in row) for row in s) + f":{label}" for s, label in zip(series, labels)]
    path.write_text("\n".join(header + lines) + "\n")


def split_series(dataset: Any, split: str) -> tuple[list[np.ndarray], np.ndarray]:
    """The (channels, time) float32 series of ``split`` and their class ids (n,)."""
    indices = dataset.indices(split)
    series = [np.asarray(dataset.signal(int(i)), dtype=np.float32) for i in indices]
    return series, np.asarray(dataset.utterance_labels("class"))[indices]


def standardiser(train: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (mean, std) over every time step of the training series, each (channels, 1)."""
    values = np.concatenate(train, axis=1).astype(np.float64)  # (C, total steps)
    mean = values.mean(axis=1, keepdims=True)
    std = values.std(axis=1, keepdims=True)
    return mean, np.where(std > 0, std, 1.0)


def standardise(series: list[np.ndarray], mean: np.ndarray, std: np.ndarray) -> list[np.ndarray]:
    return [((s - mean) / std).astype(np.float32) for s in series]


# ---- pretraining ---------------------------------------------------------------------------------------


def train_arguments(args: argparse.Namespace, dataset: Path, run_dir: Path) -> list[str]:
    """The ``cpcaudio train`` arguments (after ``train``) for one set: quality.py's, with this benchmark's
    ``--set`` assignments and ``--overwrite``."""
    assignments = list(TRAIN_SET + (TINY_SET if args.tiny else ())) + list(args.set)
    return quality.train_arguments(argparse.Namespace(**{**vars(args), "tiny": False, "set": assignments}),
                                   dataset, run_dir) + ["--overwrite"]  # fmt: skip


def pretrain(args: argparse.Namespace, dataset: Path, run_dir: Path) -> dict[str, Any]:
    """Run ``cpcaudio train`` (its log on stderr); returns the command, wall time and the preset line."""
    arguments = train_arguments(args, dataset, run_dir)
    command = shlex.join(["cpcaudio", "train", *arguments])
    info_path = run_dir / "timeseries_run.json"
    previous = json.loads(info_path.read_text()) if info_path.is_file() else {}
    if args.reuse_run and (run_dir / "last.pt").is_file() and previous:
        if previous["command"] == command:
            stage(f"pretraining: reusing {run_dir}")
            return previous
        raise Failure(f"--reuse-run: {run_dir} holds '{previous['command']}', not '{command}'; drop --reuse-run", 2)
    stage(f"pretraining: {command}")
    threads = str(args.threads)
    environment = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    started = time.perf_counter()
    completed = subprocess.run(
        cli("train", *arguments), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=environment,
        cwd=ROOT,
    )  # fmt: skip
    seconds = time.perf_counter() - started
    log = completed.stdout
    (run_dir / "train.log").write_text(log)
    lines = log.splitlines()
    print("\n".join(lines[:3] + (["  ..."] if len(lines) > 8 else []) + lines[max(3, len(lines) - 5):]),
          file=sys.stderr, flush=True)  # fmt: skip
    if completed.returncode != 0:
        raise Failure(f"cpcaudio train failed (exit code {completed.returncode}): {command}")
    preset = next((line for line in lines if "preset" in line and "timeseries" in line), None)
    info = {"command": command, "wall_seconds": round(seconds, 1), "preset_line": preset}
    info_path.write_text(json.dumps(info, indent=1))
    return info


# ---- features and probes -------------------------------------------------------------------------------


def model_vectors(model: Any, series: list[np.ndarray], layer: str) -> dict[str, np.ndarray]:
    """{pooling: (n, dim)}: each series' frames (at its own length) max- and mean-pooled."""
    from cpcaudio.evaluate.sources import model_frames

    frames = model_frames(model, series, int(model.config.data.sample_rate), layer)
    return {
        "max": np.stack([f.max(axis=0) for f in frames]),
        "mean": np.stack([f.mean(axis=0) for f in frames]),
    }


def raw_vectors(series: list[np.ndarray], length: int) -> np.ndarray:
    """(n, channels * length): each series linearly resampled to ``length`` steps, flattened."""
    from cpcaudio.evaluate.problems import pool

    return np.stack([pool(s.T.astype(np.float64), "flatten", length) for s in series])


def fit_score(protocol: str, train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
              seed: int) -> float:  # fmt: skip
    """Test accuracy of ``protocol`` (``svm``, ``logistic`` or ``1nn``) fitted on the training vectors."""
    from sklearn.neighbors import KNeighborsClassifier

    from cpcaudio.evaluate import LinearProbe, SVMProbe

    probes = {
        "svm": lambda: SVMProbe(random_state=seed),
        "logistic": lambda: LinearProbe(random_state=seed, n_jobs=1),
        "1nn": lambda: KNeighborsClassifier(n_neighbors=1, algorithm="brute"),
    }
    probe = probes[protocol]().fit(train_x, train_y)
    return float(np.mean(probe.predict(test_x) == test_y))


def evaluate_set(name: str, dataset: Any, run_dir: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every (features, protocol, pooling) row of one set."""
    from cpcaudio import load
    from cpcaudio.evaluate.baselines import random_model

    train, train_y = split_series(dataset, "train")  # (standardised by prepare_set)
    test, test_y = split_series(dataset, "test")
    model = load(run_dir / "last.pt", device="cpu").eval()
    models = {"model": model, "random": random_model(model.config, args.seed)}
    rows = []
    for features, network in models.items():
        vectors = {"train": model_vectors(network, train, args.layer), "test": model_vectors(network, test, args.layer)}
        for protocol in ("svm", "logistic"):
            for pooling in POOLINGS:
                accuracy = fit_score(protocol, vectors["train"][pooling], train_y, vectors["test"][pooling], test_y,
                                     args.seed)  # fmt: skip
                rows.append(_row(name, features, protocol, pooling, accuracy))
    length = max(s.shape[-1] for s in train)
    raw_train, raw_test = raw_vectors(train, length), raw_vectors(test, length)
    for protocol in PROTOCOLS:
        rows.append(_row(name, "raw", protocol, "flatten", fit_score(protocol, raw_train, train_y, raw_test, test_y,
                                                                     args.seed)))  # fmt: skip
    return rows


def _row(dataset: str, features: str, protocol: str, pooling: str, accuracy: float) -> dict[str, Any]:
    return {"dataset": dataset, "features": features, "protocol": protocol, "pooling": pooling,
            "accuracy": round(accuracy, 4)}  # fmt: skip


def run_record(run_dir: Path, info: dict[str, Any]) -> dict[str, Any]:
    """Steps, wall time, last losses and the config of the run in ``run_dir``."""
    from cpcaudio.train import read_metrics
    from cpcaudio.train.checkpoint import load_checkpoint

    checkpoint = load_checkpoint(run_dir / "last.pt")
    train = [r for r in read_metrics(run_dir) if r.get("kind") == "train"]
    last = train[-1] if train else {}
    return {
        **info, "steps": int(checkpoint.get("step", 0)), "final_loss": last.get("loss"),
        "final_step1_accuracy": (last.get("accuracy") or [None])[0], "config": checkpoint["config"],
    }  # fmt: skip


# ---- the table -----------------------------------------------------------------------------------------

COLUMNS = (  # (title, features, protocol, pooling)
    ("model svm", "model", "svm", "max"),
    ("model logreg", "model", "logistic", "max"),
    ("model svm mean", "model", "svm", "mean"),
    ("random svm", "random", "svm", "max"),
    ("random logreg", "random", "logistic", "max"),
    ("raw svm", "raw", "svm", "flatten"),
    ("raw logreg", "raw", "logistic", "flatten"),
    ("raw 1nn", "raw", "1nn", "flatten"),
)


def accuracy_of(
    rows: list[dict[str, Any]], dataset: str, features: str, protocol: str, pooling: str
) -> Optional[float]:
    """The accuracy of that row, or None when there is none."""
    for row in rows:
        if (row["dataset"], row["features"], row["protocol"], row["pooling"]) == (dataset, features, protocol, pooling):
            return row["accuracy"]
    return None


def verdicts(rows: list[dict[str, Any]], dataset: str) -> dict[str, Optional[bool]]:
    """Whether the headline figure beats the raw-value floor (our raw logistic and 1-NN, and the issue's
    floors; on the discriminating sets), raw values under the SVM, random init under the same probe, and
    reaches the published figure (None: not applicable)."""
    model = accuracy_of(rows, dataset, "model", *HEADLINE)
    if model is None:
        return {}
    floor = [accuracy_of(rows, dataset, "raw", protocol, "flatten") for protocol in ("logistic", "1nn")]
    floor = [value for value in floor + list(ISSUE_FLOORS.get(dataset, ())) if value is not None]
    raw_svm = accuracy_of(rows, dataset, "raw", "svm", "flatten")
    random = accuracy_of(rows, dataset, "random", *HEADLINE)
    discriminating = dataset in DISCRIMINATING
    return {
        "beats_raw_floor": model > max(floor) if discriminating and floor else None,
        "beats_raw_svm": model > raw_svm if discriminating and raw_svm is not None else None,
        "beats_random": model > random if random is not None else None,
        "reaches_published": model >= PUBLISHED[dataset][0] if dataset in PUBLISHED else None,
    }


def format_table(rows: list[dict[str, Any]], datasets: list[str]) -> str:
    first = max(len("dataset"), *(len(d) for d in datasets))
    verdict_title = "beats floor/raw svm/random, >= published"
    titles = [title for title, *_ in COLUMNS] + ["published", "issue floors", verdict_title]
    lines = [f"{'dataset':<{first}}  " + "  ".join(titles)]
    for dataset in datasets:
        cells = []
        for title, features, protocol, pooling in COLUMNS:
            value = accuracy_of(rows, dataset, features, protocol, pooling)
            cells.append(f"{'-' if value is None else f'{value:.3f}':>{len(title)}}")
        published = PUBLISHED.get(dataset)
        cells.append(f"{f'{published[0]:.3f} {published[1]}' if published else '-':>{len('published')}}")
        floors = ISSUE_FLOORS.get(dataset)
        cells.append(f"{f'{floors[0]:.3f}/{floors[1]:.3f}' if floors else '-':>{len('issue floors')}}")
        marks = {True: "yes", False: "no", None: "-"}
        cells.append("/".join(marks[v] for v in verdicts(rows, dataset).values()))
        lines.append(f"{dataset:<{first}}  " + "  ".join(cells))
    found = [verdicts(rows, dataset) for dataset in datasets]
    counts = {key: sum(1 for v in found if v.get(key)) for key in ("beats_raw_floor", "beats_random",
                                                                   "reaches_published")}  # fmt: skip
    lines.append(f"headline: model {HEADLINE[0]} ({HEADLINE[1]}-pooled); logreg: logistic regression; raw: "
                 "standardised values, flattened; issue floors: raw logistic / 1-NN; test accuracy")  # fmt: skip
    lines.append(f"the headline beats the raw floor on {counts['beats_raw_floor']} of "
                 f"{sum(1 for d in datasets if d in DISCRIMINATING)} discriminating sets, random init on "
                 f"{counts['beats_random']} of {len(datasets)}, reaches the published figure on "
                 f"{counts['reaches_published']} of {sum(1 for d in datasets if d in PUBLISHED)}")  # fmt: skip
    return "\n".join(lines)


# ---- main ----------------------------------------------------------------------------------------------


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", default=",".join(DATASETS),
                        help=f"Comma-separated aeon-bundled sets (default: {','.join(DATASETS)}).")
    common.add_pretraining_arguments(
        parser, DEFAULT_MINUTES, DEFAULT_WORK, "Folder of prepared sets (reused) and runs (default benchmarks/cache/timeseries)."
    )
    parser.add_argument("--layer", default="encoder", choices=("context", "encoder", "all"),
                        help="Features probed (default encoder: the conv encoder's frames, as TS2Vec).")
    parser.add_argument("--tiny", action="store_true",
                        help=f"CI size: BasicMotions, {TINY_STEPS} steps of a smaller context (meaningless numbers).")
    args = parser.parse_args(argv)
    names = ("BasicMotions" if args.tiny else args.datasets).split(",")
    args.datasets = [name.strip() for name in names if name.strip()]
    if args.steps is None and args.minutes is None:
        if args.tiny:
            args.steps = TINY_STEPS
        else:
            args.minutes = DEFAULT_MINUTES
    bad_steps = args.steps is not None and args.steps < 1
    if bad_steps or (args.minutes is not None and args.minutes <= 0) or args.threads < 1:
        parser.error("--steps, --minutes and --threads must be positive")
    if not args.datasets:
        parser.error("--datasets names no set")
    return args


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    load_before = machine(args.threads, args.device).get("load_average")
    work = args.work.resolve()
    rows: list[dict[str, Any]] = []
    runs: dict[str, Any] = {}
    for name in args.datasets:
        stage(f"{name}: data")
        dataset = prepare_set(name, work)
        run_dir = work / ("runs_tiny" if args.tiny else "runs") / name
        run_dir.mkdir(parents=True, exist_ok=True)
        info = pretrain(args, dataset.path, run_dir)
        began = time.perf_counter()
        stage(f"{name}: features and probes")
        set_rows = evaluate_set(name, dataset, run_dir, args)
        rows += set_rows
        runs[name] = {**run_record(run_dir, info), "probe_seconds": round(time.perf_counter() - began, 1),
                      "train_series": int(len(dataset.indices("train"))),
                      "test_series": int(len(dataset.indices("test")))}  # fmt: skip
        headline = accuracy_of(set_rows, name, "model", *HEADLINE)
        stage(f"{name}: model {HEADLINE[0]} {headline:.3f} ({runs[name]['steps']} steps)")
    return {
        "settings": {
            "datasets": args.datasets, "tiny": args.tiny, "minutes": args.minutes, "steps": args.steps,
            "config": args.config, "set": list(TRAIN_SET + (TINY_SET if args.tiny else ())) + args.set,
            "layer": args.layer, "seed": args.seed, "threads": args.threads, "device": args.device,
            "work": str(work),
        },
        "headline": {"features": "model", "protocol": HEADLINE[0], "pooling": HEADLINE[1]},
        "rows": rows,
        "verdicts": {name: verdicts(rows, name) for name in args.datasets},
        "published": {name: {"accuracy": value, "source": source} for name, (value, source) in PUBLISHED.items()},
        "issue_floors": {name: {"logistic": a, "1nn": b} for name, (a, b) in ISSUE_FLOORS.items()},
        "runs": runs,
        **git_commit(),
        "machine": {**machine(args.threads, args.device), "load_average_at_start": load_before},
        "command": shlex.join(["python", "benchmarks/timeseries.py", *sys.argv[1:]]),
        "seconds": round(time.perf_counter() - started, 1),
    }


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    from cpcaudio.errors import CPCAudioError

    try:
        record = run(args)
    except Failure as failure:
        print(f"error: {failure}", file=sys.stderr)
        return failure.code
    except CPCAudioError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    budget = f"{args.minutes:g} min per set" if args.minutes is not None else f"{args.steps} steps per set"
    summary = (f"timeseries ({budget}{', tiny' if args.tiny else ''}; {args.threads} threads; "
               f"{record['seconds']:.0f} s in all):\n" + format_table(record["rows"], args.datasets))  # fmt: skip
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"benchmark": "timeseries", **record}, indent=1) + "\n")
    common.print_result("timeseries", record, summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
