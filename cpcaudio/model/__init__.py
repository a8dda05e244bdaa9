"""CPC model components: encoder, context network, prediction heads, InfoNCE loss."""

from cpcaudio.model.context import ContextNetwork
from cpcaudio.model.cpc import CPCModel, CPCOutput
from cpcaudio.model.encoder import ChannelNorm, ConvEncoder
from cpcaudio.model.heads import PredictionHeads
from cpcaudio.model.loss import InfoNCEResult, info_nce_loss, sample_negatives, valid_prediction_mask

__all__ = [
    "CPCModel",
    "CPCOutput",
    "ConvEncoder",
    "ChannelNorm",
    "ContextNetwork",
    "PredictionHeads",
    "InfoNCEResult",
    "info_nce_loss",
    "sample_negatives",
    "valid_prediction_mask",
]
