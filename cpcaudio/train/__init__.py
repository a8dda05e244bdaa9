"""Pretraining: ``train(dataset, out_dir, config)`` turns a prepared dataset into a run directory.

One job per module, in the order a run meets them:

* :mod:`~cpcaudio.train.run_config`: the requested config from defaults, file, ``--set`` and resume base;
* :mod:`~cpcaudio.train.run_dir`: the run directory's files, and whether a run may start there;
* :mod:`~cpcaudio.train.resume`: allowed config changes, the dataset match, restoring saved state;
* :mod:`~cpcaudio.train.plan`: splits, length, precision and samplers of the run;
* :mod:`~cpcaudio.train.seeding`: the seeded initial model and the per-micro-batch negative seeds;
* :mod:`~cpcaudio.train.loop`: :func:`train` and its step loop;
* :mod:`~cpcaudio.train.validation`: the fixed-window validation;
* :mod:`~cpcaudio.train.metrics`: ``metrics.jsonl`` and TensorBoard; :func:`read_metrics`;
* :mod:`~cpcaudio.train.checkpoint`: atomic, ``weights_only`` checkpoints; :func:`load` (``cpcaudio.load``);
* :mod:`~cpcaudio.train.optim`, :mod:`~cpcaudio.train.distributed`: optimiser/schedule, ``torchrun`` set-up;
* :mod:`~cpcaudio.train.events`: what a run reports (:class:`TrainEvent`) and returns (:class:`TrainSummary`).
"""

from cpcaudio.train.checkpoint import load
from cpcaudio.train.events import (
    TrainEvent,
    TrainEventCallback,
    TrainSummary,
    forward_progress,
    progress_event,
    summary_text,
)
from cpcaudio.train.loop import train
from cpcaudio.train.metrics import read_metrics
from cpcaudio.train.resume import RESUMABLE_KEYS, match_dataset
from cpcaudio.train.run_config import RunConfig, assemble_run_config
from cpcaudio.train.run_dir import (
    BEST_CHECKPOINT,
    COMMAND_FILE,
    CONFIG_FILE,
    LAST_CHECKPOINT,
    METRICS_FILE,
    RUN_FILES,
    TENSORBOARD_DIR,
)
from cpcaudio.train.seeding import draw_negatives, initial_model, negative_generator, negative_seed

__all__ = [
    "BEST_CHECKPOINT",
    "COMMAND_FILE",
    "CONFIG_FILE",
    "LAST_CHECKPOINT",
    "METRICS_FILE",
    "RESUMABLE_KEYS",
    "RUN_FILES",
    "TENSORBOARD_DIR",
    "RunConfig",
    "TrainEvent",
    "TrainEventCallback",
    "TrainSummary",
    "assemble_run_config",
    "draw_negatives",
    "forward_progress",
    "initial_model",
    "load",
    "match_dataset",
    "negative_generator",
    "negative_seed",
    "progress_event",
    "read_metrics",
    "summary_text",
    "train",
]
