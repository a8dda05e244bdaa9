"""Moved to :mod:`cpcaudio.train.optim`; this re-export keeps old imports working until the merge."""

from cpcaudio.train.optim import build_optimizer, build_scheduler, learning_rate_multiplier  # noqa: F401
