"""Scores of a fitted probe on its test samples, as a JSON-ready record (scikit-learn's metrics)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any, Optional

import numpy as np
from sklearn.metrics import accuracy_score, balanced_accuracy_score, confusion_matrix, f1_score


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
