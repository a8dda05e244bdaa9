"""cpcaudio: Contrastive Predictive Coding for audio and multichannel time series.

Public API::

    import cpcaudio
    model = cpcaudio.CPCModel(cpcaudio.CPCConfig())
    output = model(signal)              # signal: (batch, channels, time) -> loss, per-step accuracy/loss
    model = cpcaudio.load("run/best.pt")  # a trained model, ready for model.extract(...)

Heavy modules (torch) are imported on first use, so ``import cpcaudio`` and the CLI start fast.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "load": "cpcaudio.train.checkpoint",
    "CPCConfig": "cpcaudio.config",
    "CPCAudioError": "cpcaudio.errors",
    "CPCModel": "cpcaudio.model",
    "CPCOutput": "cpcaudio.model",
}

__all__ = [*_LAZY, "__version__"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'cpcaudio' has no attribute {name!r}")
