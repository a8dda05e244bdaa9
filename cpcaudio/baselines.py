"""Temporary re-export: the baselines now live in :mod:`cpcaudio.evaluate.baselines` (removed when
imports move)."""

from cpcaudio.evaluate.baselines import (  # noqa: F401
    HOP_SECONDS,
    LOG_FLOOR,
    NUM_MELS,
    NUM_MFCC,
    WINDOW_SECONDS,
    log_mel,
    mfcc,
    random_model,
    raw_timing,
    raw_values,
    spectral_sizes,
    spectral_timing,
)
from cpcaudio.evaluate.timing import FrameTiming  # noqa: F401
