"""Where a run's randomness comes from: the seeded initial model and the per-micro-batch negative seeds.

Public so that tests and scripts can reproduce a step exactly.
"""

from __future__ import annotations

import random

import numpy as np
import torch

from cpcaudio.config import CPCConfig
from cpcaudio.model import CPCModel
from cpcaudio.model.negatives import sample_negatives

# Tags of the seed sequences (the first entry of negative_seed's hash input).
TRAIN_STREAM = 0  # the negatives of training micro-batches
VALIDATION_STREAM = 1  # the negatives of the fixed validation batches
RESHARD_STREAM = 2  # the data stream of a run resumed with another number of processes


def initial_model(config: CPCConfig) -> CPCModel:
    """The model a new run starts from: python, numpy and torch seeded with ``config.train.seed``, then
    ``CPCModel(config)``."""
    seed = config.train.seed
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return CPCModel(config)


def negative_seed(seed: int, rank: int, step: int, micro_step: int, stream: int = TRAIN_STREAM) -> int:
    """Seed of the negatives of one micro-batch: a hash of (stream, seed, rank, step, micro_step)."""
    state = np.random.SeedSequence([stream, seed, rank, step, micro_step]).generate_state(1, dtype=np.uint64)
    return int(state[0] & np.uint64(2**63 - 1))


def negative_generator(seed: int, device: torch.device) -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded with ``seed`` (see :func:`negative_seed`), for
    ``CPCModel.forward(..., generator=...)`` to draw the negatives of one micro-batch from."""
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    return generator


def draw_negatives(
    model: CPCModel, lengths: torch.Tensor, num_samples: int, seed: int, device: torch.device
) -> torch.Tensor:
    """The negative indices ``model(signal, lengths, generator=negative_generator(seed, device))`` draws.

    The trainer never calls this (the model draws its own negatives); it lets a test score a batch
    against exactly the negatives a training step used, e.g. to combine two ranks' batches into one.

    Args:
        model: the (unwrapped) model; gives frame counts and the predictor settings.
        lengths: (batch,) valid samples per window.
        num_samples: the padded window size.
        seed: generator seed (see :func:`negative_seed`).
        device: where the indices are drawn and returned.

    Returns:
        (batch, frames, K, N) long tensor of flat frame indices (see
        :func:`cpcaudio.model.negatives.sample_negatives`).
    """
    frames = model.num_frames(num_samples)
    frame_lengths = model.encoder.frame_lengths(lengths.to(device)).clamp(max=frames)  # (B,)
    predictor = model.config.predictor
    return sample_negatives(
        frame_lengths,
        frames,
        predictor.num_steps,
        predictor.num_negatives,
        predictor.negative_sampling,
        generator=negative_generator(seed, device),
    )
