"""Time-domain data augmentation for CPC pretraining (Kharitonov et al., 2020, "Data Augmenting
Contrastive Learning of Speech Representations in the Time Domain").

Five effects (:mod:`~cpcaudio.augment.effects`): pitch shift, reverberation, additive noise (a folder of
noise files or generated coloured noise, :mod:`~cpcaudio.augment.noise`), band-reject filtering and time
dropout. :class:`AugmentationChain` (:mod:`~cpcaudio.augment.chain`) draws which effects each training
window gets and their parameters from the config section ``augment``, seeded per (seed, rank, batch,
position); :class:`TrainingBatches` (:mod:`~cpcaudio.augment.loader`) makes the batches, in
``data.num_workers`` DataLoader worker processes when that is above 0.

By default (``augment.target = past``, the paper's best setting) only the context network's input is
augmented: the model encodes the clean and the augmented window, the context runs on the augmented one,
and the targets ``z_{t+k}`` and the negatives come from the clean one (``CPCModel.forward(...,
context_signal=...)``). ``both`` feeds the augmented window alone (targets and negatives augmented too).
Off by default (``augment.enabled = false``); validation batches are never augmented.

Example::

    cpcaudio train data/timit runs/aug --set augment.enabled=true --set data.num_workers=2
"""

from __future__ import annotations

from cpcaudio.augment.chain import EFFECTS, AugmentationChain, effect_generator
from cpcaudio.augment.loader import BatchMaker, TrainingBatches, training_batches
from cpcaudio.augment.noise import ColouredNoise, NoiseFolder, coloured_noise

__all__ = [
    "EFFECTS",
    "AugmentationChain",
    "BatchMaker",
    "ColouredNoise",
    "NoiseFolder",
    "TrainingBatches",
    "coloured_noise",
    "effect_generator",
    "training_batches",
]
