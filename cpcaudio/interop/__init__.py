"""Models from other toolkits: CPC_audio's ``train.py`` checkpoints and libri-light / torch.hub files.

``load_model(path)`` returns a ready :class:`~cpcaudio.model.CPCModel` for any checkpoint (native ones go
to :func:`cpcaudio.load`); ``load_foreign_checkpoint(path)`` gives ``(config, state_dict, info)``;
``convert_checkpoint(src, out)`` writes a native checkpoint (``cpcaudio convert``).
"""

from cpcaudio.interop.cpc_audio import (
    HUB_LAYOUT,
    TRAIN_LAYOUT,
    ForeignCheckpoint,
    convert_checkpoint,
    foreign_layout,
    load_foreign_checkpoint,
    load_model,
    refuse_training,
)
from cpcaudio.interop.cpc_audio_options import CPC_AUDIO_DEFAULTS, config_from_cpc_audio

__all__ = [
    "CPC_AUDIO_DEFAULTS",
    "HUB_LAYOUT",
    "TRAIN_LAYOUT",
    "ForeignCheckpoint",
    "config_from_cpc_audio",
    "convert_checkpoint",
    "foreign_layout",
    "load_foreign_checkpoint",
    "load_model",
    "refuse_training",
]
