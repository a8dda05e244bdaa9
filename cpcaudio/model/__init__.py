"""CPC model components: encoder, context network, prediction heads, InfoNCE loss."""

from cpcaudio.model.context import ContextNetwork
from cpcaudio.model.contrastive import UTTERANCE_LOSSES, margin_loss, nt_xent_loss, triplet_loss
from cpcaudio.model.cpc import CPCModel, CPCOutput
from cpcaudio.model.encoder import ChannelNorm, ConvEncoder
from cpcaudio.model.heads import PredictionHeads
from cpcaudio.model.loss import InfoNCEResult, info_nce_loss, valid_prediction_mask
from cpcaudio.model.negatives import NEGATIVE_SAMPLERS, register_negative_sampler, sample_negatives

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
    "NEGATIVE_SAMPLERS",
    "register_negative_sampler",
    "valid_prediction_mask",
    "UTTERANCE_LOSSES",
    "nt_xent_loss",
    "triplet_loss",
    "margin_loss",
]
