"""Evaluation of frozen features: linear probes on labelled tasks, next to baselines.

The pieces, in the order data flows through them:

* :mod:`.sources`: feature sources (a checkpoint, a model in memory, a feature store; MFCC, log-mel,
  raw values, random weights) giving (frames, dim) arrays per utterance and per window;
* :mod:`.timing`: where each source's frames sit in time, and the frame label each one takes;
* :mod:`.tasks`: one module per probe task (``phone``, ``speaker``, ``class``) and the ``TASKS`` table;
* :mod:`.problems`: protocols and the training/test samples they make;
* :mod:`.estimators`: :class:`LinearProbe` and :class:`SVMProbe` (scikit-learn estimators);
* :mod:`.metrics`: the scores of a fitted probe;
* :mod:`.verification`: speaker verification without training (trials, cosine scores, EER, minDCF);
* :mod:`.runner`: :func:`run_probe`, which runs all of it and writes the report (:mod:`cpcaudio.report`).

The names below are imported on first use (torch and scikit-learn load only then), so the CLI can read
the task table and start fast.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "LinearProbe": "estimators",
    "SVMProbe": "estimators",
    "DEFAULT_WEIGHT_DECAYS": "estimators",
    "TS2VEC_C_GRID": "estimators",
    "classification_metrics": "metrics",
    "ProbeInputs": "problems",
    "ProbeProblem": "problems",
    "Protocol": "problems",
    "speaker_windows": "problems",
    "REPORT_FORMAT": "runner",
    "REPORT_FORMAT_VERSION": "runner",
    "parse_baselines": "runner",
    "run_probe": "runner",
    "AUDIO_BASELINES": "sources",
    "BASELINES": "sources",
    "LAYERS": "sources",
    "TIMESERIES_BASELINES": "sources",
    "FeatureSource": "sources",
    "StoredFeatures": "sources",
    "baseline_source": "sources",
    "default_model_config": "sources",
    "is_audio": "sources",
    "model_frames": "sources",
    "model_source": "sources",
    "model_timing": "sources",
    "TASKS": "tasks",
    "ProbeTask": "tasks",
    "get_task": "tasks",
    "FrameTiming": "timing",
    "align_frame_labels": "timing",
    "Trials": "verification",
    "UtteranceEmbeddings": "verification",
    "draw_trials": "verification",
    "equal_error_rate": "verification",
    "min_dcf": "verification",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
