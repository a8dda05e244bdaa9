"""cpcaudio: Contrastive Predictive Coding for audio and multichannel time series.

Public API::

    from cpcaudio import CPCConfig, CPCModel
    model = CPCModel(CPCConfig())
    output = model(signal)            # signal: (batch, channels, time) -> loss, per-step accuracy/loss
"""

from __future__ import annotations

__version__ = "0.1.0"

from cpcaudio.checkpoint import load  # noqa: E402
from cpcaudio.config import CPCConfig  # noqa: E402
from cpcaudio.errors import CPCAudioError  # noqa: E402
from cpcaudio.model import CPCModel, CPCOutput  # noqa: E402

__all__ = ["load", "CPCConfig", "CPCModel", "CPCOutput", "CPCAudioError", "__version__"]
