"""``run_probe``: a model's frozen features and its baselines, probed on one task with the same split and
the same probe; the report that ``results.json`` holds.

Train and test utterances come from the dataset's own split; utterances of other splits (e.g. ``valid``)
are not used and are listed as such in the report. Test utterances whose speaker/class never occurs in
the training split cannot be classified by any probe; they are left out and counted in the report.

Each feature set is computed once and kept in memory while its probes train (extract once, train on the
cache: no re-encoding per epoch).

A task that gives utterance embeddings (``speaker``) is also scored as speaker verification on trials
of test utterances (:mod:`.verification`): the report's ``verification`` entry, with ``eer`` and
``min_dcf`` per feature source.
"""

from __future__ import annotations

import copy
import math
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import accuracy_score

from cpcaudio.devices import resolve_device
from cpcaudio.errors import DataError, UsageError
from cpcaudio.evaluate.estimators import LinearProbe, SVMProbe
from cpcaudio.evaluate.metrics import classification_metrics
from cpcaudio.evaluate.problems import TEST_WINDOW_OFFSETS, ProbeInputs, ProbeProblem, subsample_training
from cpcaudio.evaluate.sources import (
    BASELINES,
    LAYERS,
    FeatureSource,
    baseline_sources,
    is_audio,
    resolve_model_source,
)
from cpcaudio.evaluate.tasks import get_task
from cpcaudio.evaluate.verification import Trials, draw_trials, verification_result, verification_section
from cpcaudio.progress import Progress, ProgressCallback, report

REPORT_FORMAT = "cpcaudio-probe-report"
REPORT_FORMAT_VERSION = 1

VALIDATION_NOTE = (
    "carved from train by LinearProbe to choose the L2 penalty: 20% of the training utterances (frame "
    "protocol) or a stratified 20% of the training samples, drawn with the seed; the final probe is refit "
    "on all of train. The SVM protocol chooses C by 5-fold cross-validation on train."
)

PathLike = Union[str, Path]


def parse_baselines(requested: Optional[Union[str, Sequence[str]]], audio: bool, task: str) -> list[str]:
    """Baseline names to run: ``requested`` (comma-separated or a list; ``none`` for none) or the task's
    default for the data (mfcc, logmel, random for audio; raw, random for time series)."""
    probe_task = get_task(task)
    if requested is None:
        return probe_task.default_baselines(audio)
    items = requested.split(",") if isinstance(requested, str) else list(requested)
    names: list[str] = []
    for name in items:
        name = name.strip().lower()
        if not name or name == "none":
            continue
        if name not in BASELINES:
            raise UsageError(f"unknown baseline {name!r}; choose from {', '.join(BASELINES)} (or none)")
        if name not in names:
            names.append(name)
    probe_task.check_baselines(names)
    return names


def _open_dataset(dataset: Any) -> Any:
    if isinstance(dataset, (str, Path)):
        from cpcaudio.data import PreparedDataset

        return PreparedDataset.open(dataset)
    return dataset


def _split(dataset: Any, utterances: Optional[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    chosen = None if utterances is None else {int(i) for i in utterances}
    parts = []
    for name in ("train", "test"):
        indices = np.asarray(dataset.indices(name), dtype=np.int64)
        if chosen is not None:
            indices = np.asarray([i for i in indices if int(i) in chosen], dtype=np.int64)
        if indices.size == 0:
            raise DataError(
                f"dataset {dataset.path} has no '{name}' utterances"
                + (" among the chosen ones" if chosen is not None else "")
                + "; the probe trains on the 'train' split and tests on the 'test' split"
            )
        parts.append(indices)
    return parts[0], parts[1]


def _json_number(value: float) -> Union[float, str]:
    return value if math.isfinite(value) else ("inf" if value > 0 else "-inf")


def _fit_and_score(
    problem: ProbeProblem,
    source: FeatureSource,
    seed: int,
    device: torch.device,
    names: Optional[list[str]],
    max_train_frames: Optional[int] = None,
) -> dict[str, Any]:
    """Fit the protocol's probe on ``problem`` and return its result record."""
    protocol = problem.protocol
    available_train = subsample_training(problem, max_train_frames if protocol.frame_level else None, seed)
    if problem.test_y.size == 0 or np.unique(problem.train_y).size < 2:
        raise DataError(
            f"the {protocol.name} probe on '{source.name}' features has {problem.train_y.size} training "
            f"samples of {np.unique(problem.train_y).size} class(es) and {problem.test_y.size} test samples; "
            "it needs at least 2 classes in training and one test sample (check the dataset's split and labels)"
        )
    started = time.perf_counter()
    if protocol.probe == "svm-rbf":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # C = inf on non-separable data hits max_iter
            probe: Any = SVMProbe(random_state=seed).fit(problem.train_x, problem.train_y)
        hyperparameters: dict[str, Any] = {"C": _json_number(probe.C_), "kernel": "rbf", "gamma": "scale"}
    else:
        probe = LinearProbe(random_state=seed, device=str(device)).fit(
            problem.train_x, problem.train_y, groups=problem.train_groups if protocol.by_utterance else None
        )
        hyperparameters = {
            "weight_decay": probe.weight_decay_,
            "validation_accuracy": {f"{k:g}": v for k, v in probe.validation_scores_.items()},
            "lbfgs_iterations": probe.n_iter_,
        }
    fit_seconds = time.perf_counter() - started
    predicted = probe.predict(problem.test_x)
    labels = sorted(set(problem.train_y.tolist()) | set(problem.test_y.tolist()))
    display = [names[label] if names is not None and 0 <= label < len(names) else label for label in labels]
    classes, counts = np.unique(problem.train_y, return_counts=True)
    return {
        "features": source.name,
        "protocol": protocol.name,
        "probe": protocol.probe,
        **classification_metrics(problem.test_y, predicted, labels, display),
        "train_accuracy": float(accuracy_score(problem.train_y, probe.predict(problem.train_x))),
        "majority_class_accuracy": float(np.mean(problem.test_y == classes[np.argmax(counts)])),
        "counts": {
            "train_samples": int(problem.train_y.size),
            "train_samples_available": available_train,
            "test_samples": int(problem.test_y.size),
            "feature_dim": int(problem.train_x.shape[1]),
            "classes": len(labels),
            "excluded": problem.excluded,
        },
        "hyperparameters": hyperparameters,
        "fit_seconds": round(fit_seconds, 3),
    }


def _same_problem_result(result: dict[str, Any], protocol: str) -> dict[str, Any]:
    """``result`` (the fit of another protocol on the very same samples) reported under ``protocol``, with
    ``same_problem_as`` naming the protocol that was fitted (no fit time of its own)."""
    return {**copy.deepcopy(result), "protocol": protocol, "same_problem_as": result["protocol"], "fit_seconds": 0.0}


def _check_output(out: Optional[PathLike], overwrite: bool) -> None:
    """Refuse, before any work, an output directory that cannot be one or already holds a report."""
    if out is None:
        return
    from cpcaudio.resources import check_output_dir

    check_output_dir(Path(out), "report directory")
    if (Path(out) / "results.json").exists() and not overwrite:
        raise UsageError(f"{out} already holds a probe report (results.json); pass --overwrite to replace it")


def run_probe(
    dataset: Any,
    task: str,
    *,
    checkpoint: Optional[PathLike] = None,
    features: Optional[PathLike] = None,
    model: Optional[torch.nn.Module] = None,
    layer: str = "context",
    baselines_requested: Optional[Union[str, Sequence[str]]] = None,
    seed: int = 0,
    label: Optional[str] = None,
    utterances: Optional[Sequence[int]] = None,
    max_train_frames: Optional[int] = None,
    device: Optional[Union[str, torch.device]] = None,
    out: Optional[PathLike] = None,
    progress: Optional[ProgressCallback] = None,
    overwrite: bool = False,
    test_window_offsets: int = TEST_WINDOW_OFFSETS,
) -> dict[str, Any]:
    """Probe a model's frozen features and its baselines on one task, with the same split and probe.

    Every feature source is computed once (whole utterances, and for ``speaker`` also the windows), kept
    in memory, and the probes are trained on those cached features.

    Args:
        dataset: a prepared dataset (path or :class:`cpcaudio.data.PreparedDataset`).
        task: a name of :data:`cpcaudio.evaluate.tasks.TASKS`: ``phone``, ``speaker`` or ``class``.
        checkpoint: a checkpoint written by ``cpcaudio train``.
        features: instead, a feature store written by ``cpcaudio extract`` from this dataset.
        model: instead, a :class:`~cpcaudio.CPCModel` in memory. With none of the three, the model is
            the default config with random weights (``seed``), and the report says so.
        layer: ``context`` (c) or ``encoder`` (z); a feature store brings its own.
        baselines_requested: subset of ``mfcc, logmel, random, raw`` (list or comma-separated; None:
            the task's default, mfcc, logmel, random for audio; raw, random for time series).
        seed: seeds the random-weight model, the validation split and the SVM subsample.
        label: for ``class``: which utterance label (default: the dataset's first, e.g. ``digit``).
        utterances: restrict to these utterance indices (a quick subset); their split is kept.
        max_train_frames: phone task: train each probe on at most this many training frames, drawn
            uniformly with ``seed`` (None: all); for corpora whose frames do not fit a full-batch fit.
        device: torch device for the model and the probes (:func:`cpcaudio.devices.resolve_device`;
            default: CUDA, else MPS, else CPU).
        out: when given, write results.json, results.md and PNG plots there (:mod:`cpcaudio.report`).
        progress: receives :class:`~cpcaudio.progress.Progress` events (stages ``features: NAME``,
            ``windows: NAME`` and ``probe: NAME / PROTOCOL``).
        overwrite: replace a report already in ``out`` (otherwise refused before any work).
        test_window_offsets: ``speaker``: test windows start every 1/N window (1, the default:
            consecutive, CPC_audio's; 8 scores each test utterance at 8 shifts, a less noisy accuracy on a
            small test set). Training windows always start every 1/8 window.

    Returns:
        The report (what results.json holds): dataset, task, model, features, protocols, seeds, the exact
        split, and one result per (features, protocol): accuracy, balanced accuracy, macro-F1, per-class
        accuracy, confusion matrix, majority-class accuracy, counts and the chosen hyperparameters. A
        result with ``same_problem_as`` (``window-mean`` of features the ``window`` protocol already
        averages) repeats that protocol's fit: the samples are the same, so it is not fitted again.
        For ``speaker`` also ``verification`` (:func:`~cpcaudio.evaluate.verification.verification_section`):
        the embedding, scoring, trial and cost rules, the trial counts, and per feature source ``eer``
        and ``min_dcf`` (None without same- and different-speaker trials) with the DET curve.

    Raises:
        UsageError: bad task, layer, baseline or device names, or more than one model given.
        DataError: the dataset lacks the task's labels or a usable split; a store without these utterances.
        ResourceError: the cached features would not fit in memory (use ``max_train_frames`` or a subset).
        CheckpointError: an unreadable checkpoint.
    """
    probe_task = get_task(task)
    _check_output(out, overwrite)
    if layer not in LAYERS:
        raise UsageError(f"unknown layer {layer!r}; choose context or encoder")
    if isinstance(test_window_offsets, bool) or not isinstance(test_window_offsets, int) or test_window_offsets < 1:
        raise UsageError(f"test_window_offsets must be a positive whole number, got {test_window_offsets!r}")
    if max_train_frames is not None and max_train_frames < 1:
        raise UsageError(f"max_train_frames must be a positive number of frames, got {max_train_frames}")
    resolved = resolve_device(device)
    dataset = _open_dataset(dataset)
    audio = is_audio(dataset)
    utterance_labels, label_name = probe_task.utterance_labels(dataset, label)
    names = parse_baselines(baselines_requested, audio, task)
    train, test = _split(dataset, utterances)
    if utterance_labels is not None:
        classes = {utterance_labels[int(i)] for i in train} - {None}
        if len(classes) < 2:
            raise DataError(
                f"the '{label_name}' labels of the training utterances of {dataset.path} have {len(classes)} "
                f"class ({', '.join(map(str, classes)) or 'none'}); a probe needs at least 2"
                + probe_task.few_classes_advice
            )
    model_feature_source, config, model_record = resolve_model_source(
        dataset, checkpoint, features, model, layer, seed, resolved
    )
    sources = [model_feature_source, *baseline_sources(names, dataset.sample_rate, config, model_record, seed, resolved)]

    probe_task.check_memory(dataset, train, test, config, max_train_frames, resolved)
    window_seconds = config.data.window_size / config.data.sample_rate
    inputs = ProbeInputs(
        dataset, train, test, utterance_labels,
        window_samples=max(1, int(round(window_seconds * dataset.sample_rate))), progress=progress,
        test_window_offsets=test_window_offsets,
    )
    label_names = probe_task.label_names(dataset)
    results = []
    trials: Optional[Trials] = None  # drawn once: the same trials score every source
    verification: list[dict[str, Any]] = []
    for source in sources:
        fitted: dict[str, dict[str, Any]] = {}
        problems, embeddings = probe_task.build_problems_and_embeddings(source, inputs)
        if embeddings is not None:
            if trials is None:
                trials = draw_trials(test, inputs.labels_of(test), seed)
            verification.append(verification_result(source.name, embeddings, trials))
            del embeddings
        for problem in problems:
            if problem.same_as is not None:  # the very samples of an earlier protocol: its fit, not a second one
                results.append(_same_problem_result(fitted[problem.same_as], problem.protocol.name))
                continue
            stage = f"probe: {source.name} / {problem.protocol.name}"
            report(progress, Progress(stage, 0, 1, "fit"))
            fitted[problem.protocol.name] = _fit_and_score(
                problem, source, seed, resolved, label_names, max_train_frames
            )
            results.append(fitted[problem.protocol.name])
            report(progress, Progress(stage, 1, 1, "fit"))
    used = set(train.tolist()) | set(test.tolist())
    probe_report = {
        "format": REPORT_FORMAT,
        "format_version": REPORT_FORMAT_VERSION,
        "task": task,
        "label": label_name,
        "dataset": {
            "path": str(dataset.path),
            "source": dataset.meta.get("source"),
            "sample_rate": int(dataset.sample_rate),
            "num_channels": int(dataset.num_channels),
            "utterances": len(dataset),
            "audio": audio,
            "split_rule": dataset.meta.get("split_rule"),
        },
        "model": {**model_record, "config": config.to_dict()},
        "features": {source.name: source.description for source in sources},
        "protocols": probe_task.protocol_notes(window_seconds, test_window_offsets),
        "seeds": {"seed": seed, "random_weights": seed, "validation_split": seed, "svm_subsample": seed},
        "split": {
            "train": [dataset.utterance_ids[int(i)] for i in train],
            "test": [dataset.utterance_ids[int(i)] for i in test],
            "unused": [dataset.utterance_ids[i] for i in range(len(dataset)) if i not in used],
            "validation": VALIDATION_NOTE,
        },
        "results": results,
    }
    if trials is not None:
        probe_report["verification"] = verification_section(trials, verification, dataset.utterance_ids)
    if out is not None:
        from cpcaudio.report.tables import write_report

        write_report(probe_report, out)
    return probe_report

