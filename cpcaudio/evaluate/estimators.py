"""Linear probes on frozen features, in scikit-learn's estimator contract (usable in ``Pipeline`` and
``GridSearchCV``).

* :class:`LinearProbe`: standardisation (fitted on the training samples only) + multinomial logistic
  regression trained with full-batch L-BFGS in torch. Its L2 penalty is chosen on a validation part held
  out from the training samples (whole groups, e.g. utterances, when ``groups`` is given), then the probe
  is refit on all training samples with that penalty.
* :class:`SVMProbe`: the TS2Vec classification protocol (Yue et al., 2022): an RBF-SVM whose ``C`` is
  chosen from ``{1e-4, ..., 1e4, inf}`` by 5-fold grid search (plain ``C = inf`` when there are fewer
  than 5 samples per class or fewer than 50 samples), no standardisation.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from typing import Any, Optional

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.model_selection import GridSearchCV, train_test_split
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data
from torch.nn import functional as F

DEFAULT_WEIGHT_DECAYS = (1e-1, 1e-2, 1e-3, 1e-4, 1e-5)  # L2 penalties on the mean cross-entropy
TS2VEC_C_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0, 10000.0, math.inf)
SMALL_PROBLEM = 5_000_000  # samples x features x classes below which LinearProbe fits on one thread


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


def _store_hyperparameters(estimator: BaseEstimator, values: dict[str, Any]) -> None:
    """``__init__`` of the probes: store each keyword argument unchanged under its own name (the
    estimator contract: no validation, no derived attributes; ``fit`` does those)."""
    for name, value in values.items():
        if name not in ("self", "__class__"):
            setattr(estimator, name, value)


def _fitted_input(estimator: Any, X: Any) -> np.ndarray:
    """``X`` validated against what ``fit`` saw, after checking that ``estimator`` is fitted."""
    check_is_fitted(estimator)
    return validate_data(estimator, X, reset=False, dtype=estimator._dtypes)


def _training_input(estimator: Any, X: Any, y: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """What ``fit`` starts from: validated ``X`` and ``y``, the class index of each sample and the
    sample count of each class; sets ``classes_`` and ``n_features_in_``.

    Raises:
        ValueError: fewer than two classes.
    """
    X, y = validate_data(estimator, X, y, dtype=estimator._dtypes)
    check_classification_targets(y)
    estimator.classes_, targets, counts = np.unique(y, return_inverse=True, return_counts=True)
    if estimator.classes_.shape[0] < 2:
        raise ValueError(
            f"{type(estimator).__name__} needs samples of at least 2 classes; got 1 class "
            f"({estimator.classes_[0]!r})"
        )
    return X, y, targets, counts


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

    _dtypes = [np.float32, np.float64]  # input dtypes kept as they are (others become the first)

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
        _store_hyperparameters(self, locals())

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
        X, _, targets, _ = _training_input(self, X, y)
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
        X = _fitted_input(self, X)
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

    _dtypes = [np.float64, np.float32]

    def __init__(
        self,
        c_grid: Sequence[float] = TS2VEC_C_GRID,
        cv: int = 5,
        max_samples: int = 10000,
        random_state: Optional[int] = 0,
        max_iter: int = 1_000_000,
    ) -> None:
        _store_hyperparameters(self, locals())

    def fit(self, X: Any, y: Any) -> "SVMProbe":
        """Fit on ``X`` (n_samples, n_features) and ``y`` (n_samples,). Returns self."""
        X, y, _, counts = _training_input(self, X, y)
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
        X = _fitted_input(self, X)  # checks fitted first
        return self.estimator_.predict(X)
