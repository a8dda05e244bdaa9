"""Temporary re-export: the probe now lives in :mod:`cpcaudio.evaluate` (removed when imports move)."""

from cpcaudio.evaluate import *  # noqa: F401,F403
from cpcaudio.evaluate import __all__  # noqa: F401
from cpcaudio.evaluate.sources import is_audio as _is_audio  # noqa: F401  (cpcaudio.demo.plan)
