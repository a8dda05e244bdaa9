"""The demo's sizes: what each one trains on, with which model, for how long.

A :class:`Preset` fixes the synthetic corpus, the model config and a *reference speed* (seconds per
training step, measured once on 2 CPU cores or one GPU), from which the number of training steps is
derived for a time budget: the same budget always trains the same number of steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

SIZES = ("default", "tiny")
WINDOW_SECONDS = 1.28  # training window and speaker-probe window (20480 samples at 16 kHz)


@dataclass(frozen=True)
class Preset:
    """What a demo size trains on and how long.

    Attributes:
        name: ``default``, ``default-gpu`` or ``tiny``.
        num_speakers: voices of the synthetic corpus.
        corpus_minutes: minutes of synthetic audio.
        config: overrides of :class:`cpcaudio.config.CPCConfig` (nested dict).
        seconds_per_step: reference wall time of one training step (2 CPU cores, or one GPU).
        other_seconds: reference wall time of everything but training (data, extraction, probes, report).
        min_steps, max_steps: bounds of the derived step count.
        default_minutes: the time budget when none is given.
        phone_train_seconds: audio of training utterances the phone probe fits on at most (a
            deterministic, speaker-balanced subset; every test utterance is always used).
        units_clusters: K of the k-means units of the ``abx`` stage (fitted on the training frames).
        abx_train_seconds: audio of training utterances the ``abx`` stage takes at most, with every test
            utterance (as ``phone_train_seconds``; the same subset when equal). ABX scores their phones and
            the k-means is fitted on their training part.
        abx_max_size_group: items kept per ABX cell (libri-light: 10; 3 makes the any-context task about
            three times cheaper, and the within-context cells of the synthetic corpus rarely hold more).
    """

    name: str
    num_speakers: int
    corpus_minutes: float
    config: dict[str, Any]
    seconds_per_step: float
    other_seconds: float
    min_steps: int
    max_steps: int
    default_minutes: float
    phone_train_seconds: float
    units_clusters: int
    abx_train_seconds: float
    abx_max_size_group: int

    def steps_for(self, minutes: float) -> int:
        """Training steps that fit ``minutes`` of wall time for the whole demo."""
        budget = minutes * 60.0 - self.other_seconds
        return int(min(self.max_steps, max(self.min_steps, math.floor(budget / self.seconds_per_step))))


def model_config(
    encoder: int, context: int, steps: int, negatives: int, batch: int, window: int, learning_rate: float,
    warmup: int, sampler: str, negatives_from: str = "mixed",
) -> dict[str, Any]:
    """The training config of a preset, as overrides of :class:`cpcaudio.config.CPCConfig` (nested dict).

    Args:
        encoder, context: channels of the conv encoder and units of the GRU.
        steps, negatives: prediction steps K and negatives per prediction.
        batch, window: windows per batch and samples per window.
        learning_rate, warmup: Adam's peak learning rate and its warm-up steps (cosine decay after).
        sampler: how batches are drawn (``uniform``: mixed speakers).
        negatives_from: ``predictor.negative_sampling`` (``mixed``: half from the own window, half from
            the batch).
    """
    return {
        "encoder": {"hidden_dim": encoder},
        "context": {"hidden_dim": context},
        "predictor": {"num_steps": steps, "num_negatives": negatives, "negative_sampling": negatives_from},
        "data": {"window_size": window, "batch_size": batch, "sampler": sampler},
        "optim": {"learning_rate": learning_rate, "warmup_steps": warmup, "schedule": "cosine", "grad_clip": 1.0},
        "train": {"log_every": 5, "validation_batches": 8},
    }


# One row per preset, in the order of Preset's fields:
# name, speakers, corpus minutes, model config (encoder, GRU, K, negatives, batch, window, lr, warm-up,
# sampler), seconds per step, other seconds, min steps, max steps, default minutes, phone-probe seconds,
# k-means units K, ABX training seconds, ABX items per cell.
_ROWS = (
    ("default", 16, 12.0, model_config(128, 256, 12, 128, 8, 20480, 5e-4, 50, "uniform"),
     0.44, 240.0, 50, 20000, 10.0, 200.0, 50, 200.0, 3),
    ("default-gpu", 24, 40.0, model_config(512, 256, 12, 128, 32, 20480, 5e-4, 100, "uniform"),
     0.05, 150.0, 500, 20000, 10.0, 1800.0, 50, 1800.0, 3),
    ("tiny", 4, 1.5, model_config(64, 64, 4, 16, 8, 5120, 1e-3, 5, "uniform"),
     0.1, 40.0, 40, 40, 1.0, 30.0, 16, 600.0, 3),
)
PRESETS: dict[str, Preset] = {row[0]: Preset(*row) for row in _ROWS}


def preset_for(size: str, device_kind: str) -> Preset:
    """The preset of a demo ``size`` on a device of ``device_kind``: ``default`` grows on CUDA."""
    return PRESETS["default-gpu" if size == "default" and device_kind == "cuda" else size]
