"""Linear probes on frozen features, with baselines in the same run: how linearly separable are the labels?

Estimators (scikit-learn's estimator contract, usable in ``Pipeline`` and ``GridSearchCV``):

* :class:`LinearProbe`: standardisation (fitted on the training samples only) + multinomial logistic
  regression trained with full-batch L-BFGS in torch. Its L2 penalty is chosen on a validation part held
  out from the training samples (whole groups, e.g. utterances, when ``groups`` is given), then the probe
  is refit on all training samples with that penalty.
* :class:`SVMProbe`: the TS2Vec classification protocol (Yue et al., 2022): an RBF-SVM whose ``C`` is
  chosen from ``{1e-4, ..., 1e4, inf}`` by 5-fold grid search (plain ``C = inf`` when there are fewer
  than 5 samples per class or fewer than 50 samples), no standardisation.

Tasks of :func:`run_probe` (train and test utterances come from the dataset's own split; utterances of
other splits, e.g. ``valid``, are not used and are listed as such in the report):

* ``phone``: one sample per feature frame, labelled with the frame label at the frame's centre; frames
  with label -1 (no label) are dropped. The validation part holds out whole utterances.
* ``speaker``: two protocols. ``utterance``: features averaged over the utterance. ``window`` (as in
  CPC_audio): the utterance is cut into consecutive non-overlapping windows of the model's training
  window (1.28 s by default; an utterance shorter than one window is one window), each window is
  processed alone, and its vector is the last context frame (``--layer context``) or the mean over the
  window's frames (encoder features and the MFCC/log-mel baselines).
* ``class``: one label per utterance (FSDD digit, UEA class). ``utterance`` protocol as above, plus
  ``utterance-svm``: TS2Vec's protocol, features max-pooled over time into one instance vector, then
  :class:`SVMProbe`.

Test utterances whose speaker/class never occurs in the training split cannot be classified by any probe;
they are left out and counted in the report.

The model's features come from a checkpoint or a model in memory (computed here once, whole utterances
in padded batches, with :func:`cpcaudio.features.extract`), or from a feature store written by
``cpcaudio extract`` (matched to the dataset by utterance id). Each feature set is computed once and kept
in memory while its probes train (extract once, train on the cache: no re-encoding per epoch).

Baselines (:mod:`cpcaudio.baselines`) run with the same split and the same probe: MFCC, log-mel, the
same CPC architecture with random weights and, for time series, the raw values (for utterance-level
protocols the series, linearly resampled to a common length, flattened).
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import accuracy_score, balanced_accuracy_score, confusion_matrix, f1_score
from sklearn.model_selection import GridSearchCV, train_test_split
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data
from torch.nn import functional as F

from cpcaudio import baselines
from cpcaudio.baselines import FrameTiming
from cpcaudio.config import CPCConfig
from cpcaudio.errors import DataError, ResourceError, UsageError

REPORT_FORMAT = "cpcaudio-probe-report"
REPORT_FORMAT_VERSION = 1
TASKS = ("phone", "speaker", "class")
LAYERS = ("context", "encoder")
BASELINES = ("mfcc", "logmel", "random", "raw")
AUDIO_BASELINES = ("mfcc", "logmel", "random")
TIMESERIES_BASELINES = ("raw", "random")
DEFAULT_WEIGHT_DECAYS = (1e-1, 1e-2, 1e-3, 1e-4, 1e-5)  # L2 penalties on the mean cross-entropy
TS2VEC_C_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0, 10000.0, math.inf)
MODEL_BATCH_SECONDS = 2.0  # padded seconds per batch of model features: larger batches only fragment the heap

SMALL_PROBLEM = 5_000_000  # samples x features x classes below which LinearProbe fits on one thread

ProgressCallback = Callable[[str, int, int], None]


# ==== estimators =========================================================================================


def _fit_multinomial(
    features: torch.Tensor,
    targets: torch.Tensor,
    num_classes: int,
    weight_decay: float,
    max_iter: int,
    tol: float,
    init: Optional[tuple[torch.Tensor, torch.Tensor]] = None,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Minimise mean cross-entropy + ``weight_decay / 2 * ||W||^2`` with full-batch L-BFGS.

    Args:
        features: (samples, dim) float32, standardised.
        targets: (samples,) int64 class indices.
        num_classes: number of classes C.
        weight_decay: L2 penalty on the weights (not the bias).
        max_iter: L-BFGS iterations.
        tol: stop when the largest gradient entry is below ``tol``.
        init: (weight (dim, C), bias (C,)) to start from (warm start), or None for zeros.

    Returns:
        weight (dim, C), bias (C,), iterations run.
    """
    dim = features.shape[1]
    if init is None:
        weight = torch.zeros(dim, num_classes, dtype=features.dtype, device=features.device)
        bias = torch.zeros(num_classes, dtype=features.dtype, device=features.device)
    else:
        weight, bias = (tensor.detach().clone() for tensor in init)
    weight.requires_grad_(True)
    bias.requires_grad_(True)
    optimizer = torch.optim.LBFGS(
        [weight, bias], lr=1.0, max_iter=max_iter, tolerance_grad=tol, tolerance_change=1e-10,
        history_size=20, line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        logits = torch.addmm(bias, features, weight)  # (N, C)
        loss = F.cross_entropy(logits, targets) + 0.5 * weight_decay * weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    iterations = int(optimizer.state[optimizer.param_groups[0]["params"][0]].get("n_iter", 0))
    return weight.detach(), bias.detach(), iterations


@contextlib.contextmanager
def _torch_threads(count: Optional[int]) -> Iterator[None]:
    """Let torch use ``count`` CPU threads inside the block (None: leave as is); restore afterwards."""
    if count is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(max(1, int(count)))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


class LinearProbe(ClassifierMixin, BaseEstimator):
    """Multinomial logistic regression on standardised features; L2 penalty chosen on held-out data.

    ``fit`` standardises with a :class:`~sklearn.preprocessing.StandardScaler` fitted on ``X`` (the
    training samples only), holds out ``validation_fraction`` of the samples (of the groups when
    ``groups`` is given; stratified by class otherwise), fits one model per penalty in
    ``weight_decays`` (strongest first, each warm-started from the previous), keeps the penalty with the
    best validation accuracy (ties: lower validation cross-entropy), and refits on all samples with it.
    When the data are too small to hold out a part that leaves every class in training (or only one
    penalty is given), the median penalty of the grid is used without validation.

    Parameters:
        weight_decays: L2 penalties to choose from (on the mean cross-entropy, standardised features).
        validation_fraction: share of the samples (or groups) held out to choose the penalty.
        max_iter: L-BFGS iterations per fit.
        tol: gradient tolerance at which L-BFGS stops.
        random_state: seed of the validation split.
        device: torch device the optimisation runs on (``"cpu"``, ``"cuda"``, ...).
        n_jobs: CPU threads torch may use while fitting (restored afterwards); None: one thread for small
            problems (fewer than ``SMALL_PROBLEM`` sample x feature x class products, where threading
            only adds overhead), torch's setting otherwise.

    Attributes:
        classes_: (n_classes,) the class labels seen in ``fit``.
        n_features_in_: number of features.
        scaler_: the fitted StandardScaler.
        coef_: (n_classes, n_features) weights on standardised features.
        intercept_: (n_classes,) biases.
        weight_decay_: the chosen penalty.
        validation_scores_: {penalty: validation accuracy}; empty when no validation part was held out.
        n_iter_: L-BFGS iterations of the final fit.
    """

    def __init__(
        self,
        weight_decays: Sequence[float] = DEFAULT_WEIGHT_DECAYS,
        validation_fraction: float = 0.2,
        max_iter: int = 200,
        tol: float = 1e-5,
        random_state: Optional[int] = 0,
        device: str = "cpu",
        n_jobs: Optional[int] = None,
    ) -> None:
        self.weight_decays = weight_decays
        self.validation_fraction = validation_fraction
        self.max_iter = max_iter
        self.tol = tol
        self.random_state = random_state
        self.device = device
        self.n_jobs = n_jobs

    def fit(self, X: Any, y: Any, groups: Optional[Any] = None) -> "LinearProbe":
        """Fit on ``X`` (n_samples, n_features) and labels ``y`` (n_samples,).

        Args:
            X: training features.
            y: class labels (any hashable values).
            groups: optional (n_samples,) group ids (e.g. utterance index); the validation part then
                holds out whole groups, so frames of one utterance are never on both sides.

        Returns:
            self.
        """
        X, y = validate_data(self, X, y, dtype=[np.float32, np.float64])
        check_classification_targets(y)
        self.classes_, targets = np.unique(y, return_inverse=True)
        if self.classes_.shape[0] < 2:
            raise ValueError(
                f"LinearProbe needs samples of at least 2 classes; got 1 class ({self.classes_[0]!r})"
            )
        penalties = sorted((float(p) for p in self.weight_decays), reverse=True)
        if not penalties or any(p < 0 for p in penalties):
            raise ValueError(f"weight_decays must be a non-empty list of penalties >= 0, got {self.weight_decays!r}")
        if groups is not None:
            groups = np.asarray(groups)
            if groups.shape[0] != X.shape[0]:
                raise ValueError(f"groups has {groups.shape[0]} entries for {X.shape[0]} samples")
        self.scaler_ = StandardScaler().fit(X)
        threads = self.n_jobs
        if threads is None and X.shape[0] * X.shape[1] * self.classes_.shape[0] < SMALL_PROBLEM:
            threads = 1
        with _torch_threads(threads):
            self._fit_standardised(X, targets, groups, penalties)
        return self

    def _fit_standardised(
        self, X: np.ndarray, targets: np.ndarray, groups: Optional[np.ndarray], penalties: list[float]
    ) -> None:
        device = torch.device(self.device)
        features = torch.as_tensor(self.scaler_.transform(X), dtype=torch.float32, device=device)
        labels = torch.as_tensor(targets, dtype=torch.long, device=device)
        num_classes = self.classes_.shape[0]
        held_out = self._validation_mask(targets, groups) if len(penalties) > 1 else None
        self.validation_scores_ = {}
        if held_out is None:
            chosen = penalties[len(penalties) // 2]
            init = None
        else:
            part = torch.as_tensor(~held_out, device=device)
            scores = []
            init = None
            for penalty in penalties:
                init = _fit_multinomial(
                    features[part], labels[part], num_classes, penalty, self.max_iter, self.tol, init
                )[:2]
                with torch.no_grad():
                    logits = torch.addmm(init[1], features[~part], init[0])  # (validation, C)
                    accuracy = float((logits.argmax(1) == labels[~part]).float().mean())
                    loss = float(F.cross_entropy(logits, labels[~part]))
                self.validation_scores_[penalty] = accuracy
                scores.append((accuracy, -loss, penalty, init))
            _, _, chosen, init = max(scores, key=lambda item: (item[0], item[1]))
        weight, bias, self.n_iter_ = _fit_multinomial(
            features, labels, num_classes, chosen, self.max_iter, self.tol, init
        )
        self.weight_decay_ = chosen
        self.coef_ = weight.T.cpu().double().numpy()  # (C, D)
        self.intercept_ = bias.cpu().double().numpy()  # (C,)

    def _validation_mask(self, targets: np.ndarray, groups: Optional[np.ndarray]) -> Optional[np.ndarray]:
        """Boolean (n_samples,) mask of the held-out part, or None when no sensible split exists."""
        fraction = float(self.validation_fraction)
        if not 0.0 < fraction < 1.0:
            return None
        rng = np.random.default_rng(self.random_state)
        if groups is not None:
            unique = np.unique(groups)
            count = int(round(fraction * unique.shape[0]))
            if count < 1 or count >= unique.shape[0]:
                return None
            mask = np.isin(groups, rng.choice(unique, size=count, replace=False))
        else:
            mask = np.zeros(targets.shape[0], dtype=bool)
            for label in np.unique(targets):
                members = np.flatnonzero(targets == label)
                count = int(round(fraction * members.shape[0]))
                if 1 <= count < members.shape[0]:
                    mask[rng.choice(members, size=count, replace=False)] = True
        if not mask.any() or np.unique(targets[~mask]).shape[0] < np.unique(targets).shape[0]:
            return None
        return mask

    def _logits(self, X: Any) -> np.ndarray:
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=[np.float32, np.float64])
        return self.scaler_.transform(X) @ self.coef_.T + self.intercept_  # (n_samples, C)

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities (n_samples, n_classes), columns in the order of ``classes_``."""
        logits = self._logits(X)
        logits -= logits.max(axis=1, keepdims=True)
        probabilities = np.exp(logits)
        return probabilities / probabilities.sum(axis=1, keepdims=True)

    def predict(self, X: Any) -> np.ndarray:
        """The most probable class of each sample, (n_samples,)."""
        logits = self._logits(X)  # checks fitted first
        return self.classes_[np.argmax(logits, axis=1)]


class SVMProbe(ClassifierMixin, BaseEstimator):
    """TS2Vec's classification protocol: RBF-SVM (``gamma="scale"``) with ``C`` from a grid by k-fold CV.

    As in TS2Vec's ``fit_svm``: with fewer than 5 training samples per class or fewer than 50 samples in
    all, a single SVM with ``C = inf`` (hard margin) is fitted; otherwise ``C`` is chosen from ``c_grid``
    by ``cv``-fold grid search on (at most ``max_samples``, stratified) training samples. Features are
    used as given (no standardisation), as in TS2Vec.

    Parameters:
        c_grid: the values of ``C`` to choose from.
        cv: folds of the grid search.
        max_samples: training samples used by the grid search at most (a stratified subsample).
        random_state: seed of that subsample.
        max_iter: iteration cap of each SVM solve (TS2Vec uses 1e7; ``C = inf`` on data that are not
            separable never converges without a cap).

    Attributes:
        classes_: (n_classes,) class labels.
        n_features_in_: number of features.
        estimator_: the fitted :class:`~sklearn.svm.SVC`.
        C_: the chosen ``C``.
        n_iter_: solver iterations of the final SVM (the largest over its one-vs-one problems).
    """

    def __init__(
        self,
        c_grid: Sequence[float] = TS2VEC_C_GRID,
        cv: int = 5,
        max_samples: int = 10000,
        random_state: Optional[int] = 0,
        max_iter: int = 1_000_000,
    ) -> None:
        self.c_grid = c_grid
        self.cv = cv
        self.max_samples = max_samples
        self.random_state = random_state
        self.max_iter = max_iter

    def fit(self, X: Any, y: Any) -> "SVMProbe":
        """Fit on ``X`` (n_samples, n_features) and ``y`` (n_samples,). Returns self."""
        X, y = validate_data(self, X, y, dtype=[np.float64, np.float32])
        check_classification_targets(y)
        self.classes_, counts = np.unique(y, return_counts=True)
        if self.classes_.shape[0] < 2:
            raise ValueError(f"SVMProbe needs samples of at least 2 classes; got 1 class ({self.classes_[0]!r})")
        svm = SVC(C=math.inf, kernel="rbf", gamma="scale", max_iter=self.max_iter)
        if X.shape[0] // self.classes_.shape[0] < 5 or X.shape[0] < 50 or counts.min() < self.cv:
            self.estimator_ = svm.fit(X, y)
        else:
            if X.shape[0] > self.max_samples:
                X, _, y, _ = train_test_split(
                    X, y, train_size=self.max_samples, random_state=self.random_state, stratify=y
                )
            search = GridSearchCV(svm, {"C": [float(c) for c in self.c_grid]}, cv=self.cv, n_jobs=1)
            self.estimator_ = search.fit(X, y).best_estimator_
        self.C_ = float(self.estimator_.C)
        self.n_iter_ = int(np.max(self.estimator_.n_iter_))
        return self

    def predict(self, X: Any) -> np.ndarray:
        """Predicted class of each sample, (n_samples,)."""
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32])
        return self.estimator_.predict(X)


# ==== metrics ============================================================================================


def classification_metrics(
    y_true: np.ndarray, y_pred: np.ndarray, labels: Sequence[Any], names: Optional[Sequence[str]] = None
) -> dict[str, Any]:
    """Accuracy, balanced accuracy, macro-F1, per-class accuracy and the confusion matrix (scikit-learn).

    Args:
        y_true, y_pred: (n_samples,) true and predicted labels.
        labels: every class label, in the order of the confusion matrix (train and test classes).
        names: display names of ``labels`` (default ``str(label)``).

    Returns:
        A JSON-ready dict. Balanced accuracy, macro-F1 and per-class accuracy (recall) are over the classes
        present in ``y_true``; ``confusion_matrix[i][j]`` counts samples of ``labels[i]`` predicted as
        ``labels[j]``.
    """
    labels = list(labels)
    names = [str(label) for label in labels] if names is None else [str(name) for name in names]
    present = [label for label in labels if np.any(y_true == label)]
    matrix = confusion_matrix(y_true, y_pred, labels=labels)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "y_pred contains classes not in y_true"
        balanced = balanced_accuracy_score(y_true, y_pred)
    per_class = {}
    for row, (label, name) in enumerate(zip(labels, names)):
        total = int(matrix[row].sum())
        if total:
            per_class[name] = float(matrix[row, row] / total)
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "balanced_accuracy": float(balanced),
        "macro_f1": float(f1_score(y_true, y_pred, labels=present, average="macro", zero_division=0)),
        "per_class_accuracy": per_class,
        "labels": names,
        "confusion_matrix": matrix.tolist(),
    }


# ==== feature sources ====================================================================================


class FeatureSource:
    """One row group of a probe report: something that gives frames for utterances and for windows.

    Attributes:
        name: short name in the report (``model``, ``mfcc``, ``logmel``, ``random``, ``raw``).
        description: one line saying what it is.
        timing: where the frames sit in time (for aligning frame labels).
        window_pooling: ``last`` (context features: the last frame summarises the window) or ``mean``.
        utterance_pooling: ``mean``, or ``flatten`` for raw values (resampled to a common length).
    """

    def __init__(
        self,
        name: str,
        description: str,
        compute: Optional[Callable[[list[np.ndarray], int], list[np.ndarray]]],
        timing: FrameTiming,
        window_pooling: str = "mean",
        utterance_pooling: str = "mean",
    ) -> None:
        """Args:
            compute: ``(signals, sample_rate) -> frames``: (channels, time) float32 signals at the dataset's
                rate to (frames, dim) float32 arrays, one per signal (None for stored features).
        """
        self.name = name
        self.description = description
        self.compute = compute
        self.timing = timing
        self.window_pooling = window_pooling
        self.utterance_pooling = utterance_pooling

    def utterance_frames(self, dataset: Any, indices: Sequence[int]) -> list[np.ndarray]:
        """(frames, dim) float32 of each whole utterance ``indices`` of ``dataset``."""
        assert self.compute is not None
        return self.compute([dataset.signal(int(i)) for i in indices], dataset.sample_rate)

    def window_frames(self, dataset: Any, windows: Sequence[tuple[int, int, int]]) -> list[np.ndarray]:
        """(frames, dim) of each ``(utterance, start, stop)`` window (samples), each processed alone."""
        assert self.compute is not None
        signals = [dataset.read(int(i), int(start), int(stop - start)) for i, start, stop in windows]
        return self.compute(signals, dataset.sample_rate)


class StoredFeatures(FeatureSource):
    """Model features read from a feature store written by ``cpcaudio extract`` (matched by utterance id).

    Windows are cut from the stored whole-utterance frames (the frames whose centres fall inside the
    window), so context features there carry the recurrent state from before the window.
    """

    def __init__(self, store: Any, dataset: Any, description: str) -> None:
        from cpcaudio.geometry import frame_geometry

        config = CPCConfig.from_dict(store.meta["config"])
        encoder = config.encoder
        geometry = frame_geometry(encoder.kernel_sizes, encoder.strides, encoder.resolved_paddings())
        rate = int(store.meta["sample_rate"])
        super().__init__(
            "model", description, None,
            FrameTiming(hop=geometry.hop / rate, first_center=(geometry.offset + geometry.receptive_field / 2) / rate),
            window_pooling="last" if store.layer == "context" else "mean",
        )
        self.store = store
        self.config = config
        self._rows = {utterance_id: row for row, utterance_id in enumerate(store.utterance_ids)}
        self._dataset_ids = dataset.utterance_ids

    def _row(self, index: int) -> int:
        utterance_id = self._dataset_ids[int(index)]
        if utterance_id not in self._rows:
            raise DataError(
                f"feature store {self.store.path} has no features for utterance {utterance_id!r} of the "
                "dataset; extract the features from this dataset ('cpcaudio extract CHECKPOINT DATASET OUT')"
            )
        return self._rows[utterance_id]

    def utterance_frames(self, dataset: Any, indices: Sequence[int]) -> list[np.ndarray]:
        return [np.asarray(self.store.features(self._row(i)), dtype=np.float32) for i in indices]

    def window_frames(self, dataset: Any, windows: Sequence[tuple[int, int, int]]) -> list[np.ndarray]:
        out = []
        for index, start, stop in windows:
            frames = np.asarray(self.store.features(self._row(index)), dtype=np.float32)
            centers = self.timing.centers(frames.shape[0]) * dataset.sample_rate  # in dataset samples
            out.append(frames[(centers >= start) & (centers < stop)])
        return out


SignalFunction = Callable[[np.ndarray, int], np.ndarray]  # (signal (channels, time), rate) -> (frames, dim)
BatchFunction = Callable[[list[np.ndarray], int], list[np.ndarray]]


def _signal_function(function: SignalFunction) -> BatchFunction:
    return lambda signals, sample_rate: [function(signal, sample_rate) for signal in signals]


def model_frames(
    model: torch.nn.Module,
    signals: list[np.ndarray],
    sample_rate: int,
    layer: str,
    batch_seconds: float = MODEL_BATCH_SECONDS,
) -> list[np.ndarray]:
    """Frozen model features of whole signals, in padded batches of similar length.

    Args:
        model: a :class:`~cpcaudio.CPCModel`.
        signals: list of (channels, time) float32 signals at ``sample_rate`` (resampled to the model's
            rate; multichannel signals are averaged when the model takes one channel).
        sample_rate: samples per second of ``signals``.
        layer: ``context`` or ``encoder``.
        batch_seconds: signal seconds per padded batch (bounds memory).

    Returns:
        One float32 (frames, dim) array per signal, equal to processing each alone
        (:func:`cpcaudio.features.extract`).
    """
    from cpcaudio.features import extract

    if model.config.encoder.in_channels == 1:
        signals = [s.mean(axis=0, keepdims=True) if s.shape[0] > 1 else s for s in signals]
    # Longest first, and no batch larger (padded) than the first: every later batch's tensors fit in the
    # memory the first one freed, so the allocator reuses it instead of growing the heap batch after batch.
    order = sorted(range(len(signals)), key=lambda i: -signals[i].shape[-1])
    out: list[Optional[np.ndarray]] = [None] * len(signals)
    cap = 0
    start = 0
    while start < len(order):
        longest = max(signals[order[start]].shape[-1], 1)
        if start == 0:
            cap = max(1, int(batch_seconds * sample_rate // longest)) * longest  # padded samples per batch
        stop = start + 1
        while stop < len(order) and (stop + 1 - start) * longest <= cap:
            stop += 1
        chunk = order[start:stop]
        batch = np.zeros((len(chunk), signals[chunk[0]].shape[0], longest), dtype=np.float32)  # (B, C, T)
        for row, i in enumerate(chunk):
            batch[row, :, : signals[i].shape[-1]] = signals[i]
        features = extract(model, batch, sample_rate, layer=layer, lengths=[signals[i].shape[-1] for i in chunk])
        for row, i in enumerate(chunk):
            out[i] = features.frames[row, : int(features.frame_lengths[row])].numpy().copy()
        start += len(chunk)
    return out  # type: ignore[return-value]


def model_timing(model: torch.nn.Module) -> FrameTiming:
    """Frame ``t`` of a CPC encoder is centred on its receptive field: ``offset + t * hop + receptive_field / 2``
    model samples in continuous time (the rule of :func:`cpcaudio.data.frame_labels_for_encoder`)."""
    geometry = model.encoder.geometry
    rate = model.config.data.sample_rate
    return FrameTiming(hop=geometry.hop / rate, first_center=(geometry.offset + geometry.receptive_field / 2) / rate)


def model_source(model: torch.nn.Module, layer: str, name: str, description: str) -> FeatureSource:
    """A :class:`FeatureSource` for a CPC model's ``layer`` (``context`` or ``encoder``)."""
    return FeatureSource(
        name=name,
        description=description,
        compute=lambda signals, sample_rate: model_frames(model, signals, sample_rate, layer),
        timing=model_timing(model),
        window_pooling="last" if layer == "context" else "mean",
    )


def baseline_source(name: str, sample_rate: int) -> FeatureSource:
    """A :class:`FeatureSource` for ``mfcc``, ``logmel`` or ``raw`` at the dataset's ``sample_rate``."""
    if name == "mfcc":
        return FeatureSource(
            "mfcc", "MFCC: 13 + deltas + delta-deltas, 25 ms window, 10 ms hop",
            _signal_function(baselines.mfcc), baselines.spectral_timing(sample_rate),
        )
    if name == "logmel":
        return FeatureSource(
            "logmel", f"log-mel: {baselines.NUM_MELS} bands, 25 ms window, 10 ms hop",
            _signal_function(baselines.log_mel), baselines.spectral_timing(sample_rate),
        )
    if name == "raw":
        return FeatureSource(
            "raw", "raw values (utterance level: the series resampled to a common length, flattened)",
            _signal_function(baselines.raw_values), baselines.raw_timing(sample_rate),
            utterance_pooling="flatten",
        )
    raise UsageError(f"unknown baseline {name!r}; choose from {', '.join(BASELINES)}")


# ==== probe problems =====================================================================================


@dataclass
class ProbeProblem:
    """Training and test samples of one protocol for one feature source."""

    protocol: str  # frame, utterance, window, utterance-svm
    train_x: np.ndarray  # (n_train, dim)
    train_y: np.ndarray  # (n_train,)
    train_groups: np.ndarray  # (n_train,) utterance index of each sample
    test_x: np.ndarray  # (n_test, dim)
    test_y: np.ndarray  # (n_test,)
    excluded: dict[str, int] = field(default_factory=dict)  # what was left out, and why


def align_frame_labels(
    labels: np.ndarray, label_hop: int, sample_rate: int, centers: np.ndarray
) -> np.ndarray:
    """The label at each frame centre.

    Args:
        labels: (num_label_frames,) int64, label ``j`` covering samples ``[j * label_hop, (j + 1) * label_hop)``.
        label_hop: samples per label frame.
        sample_rate: samples per second of the labelled signal.
        centers: (frames,) frame centres in seconds.

    Returns:
        (frames,) int64 labels, -1 where a centre falls outside the labelled span.
    """
    # + 1e-6 label frames: a centre exactly on a boundary (MFCC frame t sits at t * hop) belongs to the
    # frame starting there, whatever the float rounding of seconds * rate.
    index = np.floor(centers * sample_rate / label_hop + 1e-6).astype(np.int64)
    valid = (index >= 0) & (index < labels.shape[0])
    out = np.full(centers.shape[0], -1, dtype=np.int64)
    out[valid] = labels[index[valid]]
    return out


def _pool(frames: np.ndarray, how: str, length: int = 0) -> Optional[np.ndarray]:
    """One vector from (frames, dim): ``mean``, ``max``, ``last``, or ``flatten`` (resampled to ``length``
    frames first); None when there are no frames."""
    if frames.shape[0] == 0:
        return None
    if how == "mean":
        return frames.mean(axis=0)
    if how == "max":
        return frames.max(axis=0)
    if how == "last":
        return frames[-1]
    if how == "flatten":  # (time, channels) -> linearly resampled to ``length`` steps, flattened
        if frames.shape[0] != length:
            old = np.linspace(0.0, 1.0, frames.shape[0]) if frames.shape[0] > 1 else np.zeros(1)
            new = np.linspace(0.0, 1.0, length)
            frames = np.stack([np.interp(new, old, frames[:, c]) for c in range(frames.shape[1])], axis=1)
        return frames.reshape(-1)
    raise ValueError(f"unknown pooling {how!r}")


def speaker_windows(length: int, window: int) -> list[tuple[int, int]]:
    """Consecutive non-overlapping ``(start, stop)`` windows of ``window`` samples; a signal shorter than
    one window is a single window, and a remainder shorter than a window is dropped."""
    if length <= window:
        return [(0, length)]
    return [(start, start + window) for start in range(0, length - window + 1, window)]


# ==== the runner =========================================================================================


def _is_audio(dataset: Any) -> bool:
    kind = dataset.meta.get("signal_kind")
    if kind is not None:
        return str(kind) == "audio"
    return dataset.num_channels == 1 and dataset.sample_rate >= 4000


def default_model_config(dataset: Any) -> CPCConfig:
    """The config of the random-weight model used when neither a checkpoint nor features are given.

    Audio: the default :class:`CPCConfig` (16 kHz; other rates are resampled). Time series: the default
    context network on a 3-layer, stride-1 encoder (kernel 3) over the dataset's channels at its own
    rate, so that series of a hundred steps still give one frame per step.
    """
    if _is_audio(dataset):
        return CPCConfig()
    return CPCConfig.from_dict(
        {
            "encoder": {"in_channels": int(dataset.num_channels), "kernel_sizes": [3, 3, 3], "strides": [1, 1, 1]},
            "data": {"sample_rate": int(dataset.sample_rate)},
        }
    )


def _open_dataset(dataset: Any) -> Any:
    if isinstance(dataset, (str, Path)):
        from cpcaudio.data import PreparedDataset

        return PreparedDataset.open(dataset)
    return dataset


def _labels_for(dataset: Any, task: str, label: Optional[str]) -> tuple[Optional[list[Any]], str]:
    """Per-utterance label names (None where missing; None as a whole for the phone task), label name."""
    if task == "phone":
        if not getattr(dataset, "has_frame_labels", dataset.phone_vocabulary is not None):
            raise DataError(
                f"dataset {dataset.path} has no frame labels; the phone task needs a dataset prepared with "
                "phone alignments (TIMIT .phn, LibriSpeech phone_labels, TextGrid, synthetic)"
            )
        return None, "phone"
    if task == "speaker":
        return list(dataset.speakers), "speaker"
    names = list(dataset.utterance_label_names)
    if label is None:
        if not names:
            raise DataError(
                f"dataset {dataset.path} has no utterance labels for --task class; prepare a dataset with "
                "classes (FSDD digits, UEA classes) or use --task speaker/phone"
            )
        label = names[0]
    elif label not in names:
        raise UsageError(
            f"dataset {dataset.path} has no utterance label {label!r}; it has: {', '.join(names) or 'none'}"
        )
    vocabulary = dataset.vocabularies.get(label, [])
    ids = [dataset.utterance_label(i, label) for i in range(len(dataset))]
    return [vocabulary[i] if 0 <= i < len(vocabulary) else None for i in ids], label


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


def _in_steps(
    items: Sequence[Any], compute: Callable[[Sequence[Any]], list], stage: str, progress: ProgressCallback
) -> list:
    """``compute`` over ``items`` in about 20 steps, reporting progress after each."""
    out: list = []
    step = max(1, -(-len(items) // 20))
    for start in range(0, len(items), step):
        out.extend(compute(items[start : start + step]))
        progress(stage, min(start + step, len(items)), len(items))
    return out


def _build_problems(
    task: str,
    source: FeatureSource,
    dataset: Any,
    train: np.ndarray,
    test: np.ndarray,
    utterance_labels: Optional[list[Any]],
    window_samples: int,
    progress: ProgressCallback,
) -> list[ProbeProblem]:
    """Compute ``source``'s features once and turn them into the task's probe problems."""
    everything = np.concatenate([train, test])
    is_train = np.concatenate([np.ones(train.size, bool), np.zeros(test.size, bool)])
    frames = _in_steps(
        everything, lambda part: source.utterance_frames(dataset, part), f"features: {source.name}", progress
    )
    if task == "phone":
        xs, ys, gs = [], [], []
        for index, utterance_frames in zip(everything, frames):
            labels = dataset.frame_labels(int(index))
            aligned = align_frame_labels(
                labels, int(dataset.meta.get("label_hop", 160)), dataset.sample_rate,
                source.timing.centers(utterance_frames.shape[0]),
            )
            keep = aligned >= 0
            xs.append(utterance_frames[keep])
            ys.append(aligned[keep])
            gs.append(np.full(int(keep.sum()), index, dtype=np.int64))
        return [_assemble_frames("frame", xs, ys, gs, is_train)]
    assert utterance_labels is not None
    labels = [utterance_labels[int(i)] for i in everything]
    length = max((f.shape[0] for f in frames), default=1)
    problems = [
        _assemble_utterances(
            "utterance", [_pool(f, source.utterance_pooling, length) for f in frames], labels, everything, is_train
        )
    ]
    if task == "class":
        how = "flatten" if source.utterance_pooling == "flatten" else "max"
        problems.append(
            _assemble_utterances("utterance-svm", [_pool(f, how, length) for f in frames], labels, everything, is_train)
        )
        return problems
    del frames
    windows = [
        (int(i), start, stop)
        for i in everything
        for start, stop in speaker_windows(int(dataset.lengths[int(i)]), window_samples)
    ]
    window_frames = _in_steps(windows, lambda part: source.window_frames(dataset, part), f"windows: {source.name}", progress)
    length = max((f.shape[0] for f in window_frames), default=1)
    how = "flatten" if source.utterance_pooling == "flatten" else source.window_pooling
    window_index = np.array([i for i, _, _ in windows], dtype=np.int64)
    train_set = set(train.tolist())
    problems.append(
        _assemble_utterances(
            "window", [_pool(f, how, length) for f in window_frames], [utterance_labels[i] for i in window_index],
            window_index, np.array([i in train_set for i in window_index]),
        )
    )
    return problems


def _assemble_frames(protocol: str, xs: list, ys: list, gs: list, is_train: np.ndarray) -> ProbeProblem:
    dim = xs[0].shape[1] if xs else 0

    def stack(parts: list, mask: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        chosen = [p for p, m in zip(parts, mask) if m]
        return np.concatenate(chosen) if chosen else np.zeros(shape)

    return ProbeProblem(
        protocol=protocol,
        train_x=stack(xs, is_train, (0, dim)).astype(np.float32, copy=False),
        train_y=stack(ys, is_train, (0,)).astype(np.int64),
        train_groups=stack(gs, is_train, (0,)).astype(np.int64),
        test_x=stack(xs, ~is_train, (0, dim)).astype(np.float32, copy=False),
        test_y=stack(ys, ~is_train, (0,)).astype(np.int64),
    )


def _assemble_utterances(
    protocol: str, vectors: list, labels: list, groups: np.ndarray, is_train: np.ndarray
) -> ProbeProblem:
    """One sample per vector. Left out: vectors that are None (no frames), labels that are None (missing),
    and test samples whose label never occurs in training (no probe can predict it)."""
    has_vector = np.array([v is not None for v in vectors], dtype=bool)
    has_label = np.array([label is not None for label in labels], dtype=bool)
    keep = has_vector & has_label
    train_labels = {label for label, ok, tr in zip(labels, keep, is_train) if ok and tr}
    unseen = np.array([not tr and label not in train_labels for label, tr in zip(labels, is_train)], dtype=bool)
    excluded = {
        "no_frames": int((~has_vector).sum()),
        "no_label": int((has_vector & ~has_label).sum()),
        "test_label_not_in_train": int((keep & unseen).sum()),
    }
    keep &= ~unseen

    def pick(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rows = np.flatnonzero(mask)
        if rows.size == 0:
            return np.zeros((0, 1), np.float32), np.zeros(0), groups[rows]
        return np.stack([vectors[r] for r in rows]).astype(np.float32), np.asarray([labels[r] for r in rows]), groups[rows]

    train_x, train_y, train_groups = pick(keep & is_train)
    test_x, test_y, _ = pick(keep & ~is_train)
    return ProbeProblem(protocol, train_x, train_y, train_groups, test_x, test_y, excluded)


def _subsample_training(problem: ProbeProblem, max_samples: Optional[int], seed: int) -> int:
    """Keep at most ``max_samples`` training samples (uniform, seeded, order kept); returns the count before."""
    total = int(problem.train_y.size)
    if max_samples is not None and total > max_samples:
        keep = np.sort(np.random.default_rng(seed).choice(total, size=max_samples, replace=False))
        problem.train_x, problem.train_y = problem.train_x[keep], problem.train_y[keep]
        problem.train_groups = problem.train_groups[keep]
    return total


def _fit_and_score(
    problem: ProbeProblem,
    source: FeatureSource,
    seed: int,
    device: str,
    names: Optional[list[str]],
    max_train_frames: Optional[int] = None,
) -> dict[str, Any]:
    """Fit the protocol's probe on ``problem`` and return its result record."""
    available_train = _subsample_training(problem, max_train_frames if problem.protocol == "frame" else None, seed)
    if problem.test_y.size == 0 or np.unique(problem.train_y).size < 2:
        raise DataError(
            f"the {problem.protocol} probe on '{source.name}' features has {problem.train_y.size} training "
            f"samples of {np.unique(problem.train_y).size} class(es) and {problem.test_y.size} test samples; "
            "it needs at least 2 classes in training and one test sample (check the dataset's split and labels)"
        )
    started = time.perf_counter()
    if problem.protocol == "utterance-svm":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # C = inf on non-separable data hits max_iter
            probe: Any = SVMProbe(random_state=seed).fit(problem.train_x, problem.train_y)
        hyperparameters: dict[str, Any] = {"C": _json_number(probe.C_), "kernel": "rbf", "gamma": "scale"}
        probe_name = "svm-rbf"
    else:
        probe = LinearProbe(random_state=seed, device=device).fit(
            problem.train_x, problem.train_y, groups=problem.train_groups if problem.protocol == "frame" else None
        )
        hyperparameters = {
            "weight_decay": probe.weight_decay_,
            "validation_accuracy": {f"{k:g}": v for k, v in probe.validation_scores_.items()},
            "lbfgs_iterations": probe.n_iter_,
        }
        probe_name = "logistic"
    fit_seconds = time.perf_counter() - started
    predicted = probe.predict(problem.test_x)
    labels = sorted(set(problem.train_y.tolist()) | set(problem.test_y.tolist()))
    display = [names[label] if names is not None and 0 <= label < len(names) else label for label in labels]
    classes, counts = np.unique(problem.train_y, return_counts=True)
    return {
        "features": source.name,
        "protocol": problem.protocol,
        "probe": probe_name,
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


def _json_number(value: float) -> Union[float, str]:
    return value if math.isfinite(value) else ("inf" if value > 0 else "-inf")


def parse_baselines(requested: Optional[Union[str, Sequence[str]]], audio: bool, task: str) -> list[str]:
    """Baseline names to run: ``requested`` (comma-separated or a list; ``none`` for none) or the default
    for the data (mfcc, logmel, random for audio; raw, random for time series)."""
    if requested is None:
        return [n for n in (AUDIO_BASELINES if audio else TIMESERIES_BASELINES) if not (task == "phone" and n == "raw")]
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
    if task == "phone" and "raw" in names:
        raise UsageError(
            "the raw baseline has one frame per sample and is meant for time series; leave it out of "
            "--baselines for the phone task (e.g. mfcc,logmel,random)"
        )
    return names


def _resolve_model(
    dataset: Any, checkpoint: Any, features: Any, model: Any, layer: str, seed: int, device: str
) -> tuple[FeatureSource, CPCConfig, dict[str, Any]]:
    """The 'model' feature source, its config, and the report's model record."""
    candidates = (("checkpoint", checkpoint), ("features", features), ("model", model))
    given = [name for name, value in candidates if value is not None]
    if len(given) > 1:
        raise UsageError(f"give one of a checkpoint, a feature store or a model, not {' and '.join(given)}")
    record: dict[str, Any] = {"checkpoint": None, "features": None, "random_init": False, "layer": layer}
    if features is not None:
        from cpcaudio.feature_store import FeatureStore

        store = FeatureStore.open(features)
        if store.layer not in LAYERS:
            raise UsageError(
                f"feature store {features} holds layer {store.layer!r}; the probe takes context or encoder features"
            )
        layer = store.layer
        description = f"features from store {features} ({layer}; checkpoint {store.meta.get('checkpoint')})"
        source = StoredFeatures(store, dataset, description)
        record.update(features=str(features), checkpoint=store.meta.get("checkpoint"), layer=layer)
        return source, source.config, {**record, "description": description}
    if checkpoint is not None:
        from cpcaudio.checkpoint import load

        model = load(checkpoint, device=device)
        description = f"CPC checkpoint {checkpoint}, {layer} features"
        record["checkpoint"] = str(checkpoint)
    elif model is not None:
        model = model.to(device).eval()
        description = f"CPC model given by the caller, {layer} features"
    else:
        model = baselines.random_model(default_model_config(dataset), seed).to(device)
        description = f"CPC default config with RANDOM weights (seed {seed}; no checkpoint given), {layer} features"
        record["random_init"] = True
    return model_source(model, layer, "model", description), model.config, {**record, "description": description}


def run_probe(
    dataset: Any,
    task: str,
    *,
    checkpoint: Optional[Union[str, Path]] = None,
    features: Optional[Union[str, Path]] = None,
    model: Optional[torch.nn.Module] = None,
    layer: str = "context",
    baselines_requested: Optional[Union[str, Sequence[str]]] = None,
    seed: int = 0,
    label: Optional[str] = None,
    utterances: Optional[Sequence[int]] = None,
    max_train_frames: Optional[int] = None,
    device: Optional[str] = None,
    out: Optional[Union[str, Path]] = None,
    progress: Optional[ProgressCallback] = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Probe a model's frozen features and its baselines on one task, with the same split and probe.

    Every feature source is computed once (whole utterances, and for ``speaker`` also the windows), kept
    in memory, and the probes are trained on those cached features.

    Args:
        dataset: a prepared dataset (path or :class:`cpcaudio.data.PreparedDataset`).
        task: ``phone``, ``speaker`` or ``class``.
        checkpoint: a checkpoint written by ``cpcaudio train``.
        features: instead, a feature store written by ``cpcaudio extract`` from this dataset.
        model: instead, a :class:`~cpcaudio.CPCModel` in memory. With none of the three, the model is
            the default config with random weights (``seed``), and the report says so.
        layer: ``context`` (c) or ``encoder`` (z); a feature store brings its own.
        baselines_requested: subset of ``mfcc, logmel, random, raw`` (list or comma-separated; None:
            mfcc, logmel, random for audio; raw, random for time series).
        seed: seeds the random-weight model, the validation split and the SVM subsample.
        label: for ``class``: which utterance label (default: the dataset's first, e.g. ``digit``).
        utterances: restrict to these utterance indices (a quick subset); their split is kept.
        max_train_frames: phone task: train each probe on at most this many training frames, drawn
            uniformly with ``seed`` (None: all); for corpora whose frames do not fit a full-batch fit.
        device: torch device for the model and the probes (default: CUDA when available).
        out: when given, write results.json, results.md and PNG plots there (:mod:`cpcaudio.report`).
        progress: ``progress(stage, done, total)`` callback.
        overwrite: replace a report already in ``out`` (otherwise refused before any work).

    Returns:
        The report (what results.json holds): dataset, task, model, features, protocols, seeds, the exact
        split, and one result per (features, protocol): accuracy, balanced accuracy, macro-F1, per-class
        accuracy, confusion matrix, majority-class accuracy, counts and the chosen hyperparameters.

    Raises:
        UsageError: bad task, layer or baseline names, or more than one model given.
        DataError: the dataset lacks the task's labels or a usable split; a store without these utterances.
        ResourceError: the cached features would not fit in memory (use ``max_train_frames`` or a subset).
        CheckpointError: an unreadable checkpoint.
    """
    if task not in TASKS:
        raise UsageError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    if out is not None:
        from cpcaudio.resources import check_output_dir

        check_output_dir(Path(out), "report directory")
        if (Path(out) / "results.json").exists() and not overwrite:
            raise UsageError(f"{out} already holds a probe report (results.json); pass --overwrite to replace it")
    if layer not in LAYERS:
        raise UsageError(f"unknown layer {layer!r}; choose context or encoder")
    if max_train_frames is not None and max_train_frames < 1:
        raise UsageError(f"max_train_frames must be a positive number of frames, got {max_train_frames}")
    progress = progress or (lambda stage, done, total: None)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dataset = _open_dataset(dataset)
    audio = _is_audio(dataset)
    utterance_labels, label_name = _labels_for(dataset, task, label)
    names = parse_baselines(baselines_requested, audio, task)
    train, test = _split(dataset, utterances)
    if utterance_labels is not None:
        classes = {utterance_labels[int(i)] for i in train} - {None}
        if len(classes) < 2:
            raise DataError(
                f"the '{label_name}' labels of the training utterances of {dataset.path} have {len(classes)} "
                f"class ({', '.join(map(str, classes)) or 'none'}); a probe needs at least 2"
                + (" (UEA sets have no speakers: use --task class)" if task == "speaker" else "")
            )
    model_feature_source, config, model_record = _resolve_model(dataset, checkpoint, features, model, layer, seed, device)
    layer = model_record["layer"]
    sources = [model_feature_source]
    for name in names:
        if name != "random":
            sources.append(baseline_source(name, dataset.sample_rate))
        elif not model_record["random_init"]:  # (a random-init model is itself the random baseline)
            random_weights = baselines.random_model(config, seed).to(device)
            description = f"same architecture, random weights (seed {seed}), {layer} features"
            sources.append(model_source(random_weights, layer, "random", description))

    _check_memory(dataset, train, test, config, task, max_train_frames, device)
    window_seconds = config.data.window_size / config.data.sample_rate
    window_samples = max(1, int(round(window_seconds * dataset.sample_rate)))
    phone_names = dataset.phone_vocabulary if task == "phone" else None
    results = []
    for source in sources:
        problems = _build_problems(task, source, dataset, train, test, utterance_labels, window_samples, progress)
        for problem in problems:
            progress(f"probe: {source.name} / {problem.protocol}", 0, 1)
            results.append(_fit_and_score(problem, source, seed, device, phone_names, max_train_frames))
            progress(f"probe: {source.name} / {problem.protocol}", 1, 1)
    used = set(train.tolist()) | set(test.tolist())
    report = {
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
        "protocols": _protocol_notes(task, window_seconds),
        "seeds": {"seed": seed, "random_weights": seed, "validation_split": seed, "svm_subsample": seed},
        "split": {
            "train": [dataset.utterance_ids[int(i)] for i in train],
            "test": [dataset.utterance_ids[int(i)] for i in test],
            "unused": [dataset.utterance_ids[i] for i in range(len(dataset)) if i not in used],
            "validation": VALIDATION_NOTE,
        },
        "results": results,
    }
    if out is not None:
        from cpcaudio.report import write_report

        write_report(report, out)
    return report


def _check_memory(
    dataset: Any, train: np.ndarray, test: np.ndarray, config: CPCConfig, task: str,
    max_train_frames: Optional[int], device: str,
) -> None:
    """Refuse, before any work, a phone probe whose cached model frames would not fit in memory.

    Counted: the frames of one feature set (float32, the model's width) held once as computed, once
    stacked, once standardised, plus the optimiser's copy on ``device`` of the training part.
    """
    from cpcaudio.resources import available_memory, format_bytes

    if task != "phone":
        return  # one vector per utterance or window: small
    hop_seconds = float(np.prod(config.encoder.strides)) / config.data.sample_rate
    seconds = float(dataset.lengths[np.concatenate([train, test])].sum()) / dataset.sample_rate
    frames = seconds / float(hop_seconds)
    dim = max(config.context.hidden_dim, config.encoder.hidden_dim)
    train_frames = frames * train.size / max(1, train.size + test.size)
    if max_train_frames is not None:
        train_frames = min(train_frames, max_train_frames)
    needed = int(4 * dim * (3 * frames + train_frames))
    available = available_memory("cpu")
    if available is not None and needed > available:
        raise ResourceError(
            f"the phone probe would hold about {format_bytes(needed)} of features ({frames:.3g} frames x {dim}) "
            f"but {format_bytes(available)} of memory is free; pass --max-train-frames (e.g. 1000000) or probe "
            "a subset of the utterances"
        )


VALIDATION_NOTE = (
    "carved from train by LinearProbe to choose the L2 penalty: 20% of the training utterances (frame "
    "protocol) or a stratified 20% of the training samples, drawn with the seed; the final probe is refit "
    "on all of train. The SVM protocol chooses C by 5-fold cross-validation on train."
)


def _protocol_notes(task: str, window_seconds: float) -> dict[str, str]:
    notes = {
        "frame": "one sample per feature frame, labelled by the frame label at its centre; unlabelled frames dropped",
        "utterance": "features averaged over the utterance (raw values: resampled to a common length, flattened)",
        "window": f"consecutive {window_seconds:g} s windows, each processed alone (stored features: cut from "
        "the whole utterance); last frame for context features, mean over frames otherwise",
        "utterance-svm": "TS2Vec protocol: features max-pooled over time (raw values: flattened), RBF-SVM, "
        "C from {1e-4..1e4, inf} by 5-fold CV",
    }
    keep = {"phone": ["frame"], "speaker": ["utterance", "window"], "class": ["utterance", "utterance-svm"]}[task]
    return {name: notes[name] for name in keep}
