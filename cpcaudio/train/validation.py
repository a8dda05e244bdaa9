"""Validation on a fixed set of held-out windows, so that successive validations compare like with like.

The windows are the first ``train.validation_batches`` batches of a sampler over the held-out split with a
fixed seed, and their negatives are drawn from fixed seeds too. Batches are shared out across ranks and
the sums are all-reduced. With an utterance loss the windows get their second view
(:func:`cpcaudio.augment.views.validation_view`) and the record its mean, ``utterance_loss``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Optional

import torch

from cpcaudio.augment.views import validation_view
from cpcaudio.config import CPCConfig
from cpcaudio.model import CPCModel
from cpcaudio.train.distributed import DistributedContext, all_reduce_sum
from cpcaudio.train.metrics import step_counts, sum_dtype
from cpcaudio.train.plan import autocast
from cpcaudio.train.seeding import VALIDATION_STREAM, negative_generator, negative_seed


@torch.no_grad()
def validate(
    model: CPCModel,
    batches: Iterable[Any],
    config: CPCConfig,
    context: DistributedContext,
    step: int,
    autocast_dtype: Optional[torch.dtype],
) -> dict[str, Any]:
    """InfoNCE loss and per-step accuracy on the validation windows (every rank takes part).

    Args:
        model: the (unwrapped) model; put in eval mode for the pass and restored after.
        batches: the validation sampler (batches of ``signal`` (B, C, window) and ``lengths`` (B,));
            the first ``config.train.validation_batches`` are used.
        config: the run's config.
        context: this process's place in the job.
        step: the optimiser step validated (for the record).
        autocast_dtype: mixed-precision dtype, or None for fp32.

    Returns:
        The ``valid`` record: ``kind``, ``step``, ``loss``, ``accuracy`` (K,), ``positions``, and
        ``utterance_loss`` (mean over the batches) when the model computed one.
    """
    device = context.device
    was_training = model.training
    model.eval()
    steps = config.predictor.num_steps
    sums = torch.zeros(2 + 2 * steps, dtype=sum_dtype(device), device=device)  # loss, count, correct, counts
    utterance = torch.zeros(2, dtype=sums.dtype, device=device)  # utterance loss sum, batches
    second_view = validation_view(batches, config)
    for index, batch in zip(range(config.train.validation_batches), batches):
        if index % context.world_size != context.rank:
            continue
        batch = second_view(batch) if second_view is not None else batch
        signal = batch.signal.to(device)  # (B, C, window)
        lengths = batch.lengths.to(device)  # (B,)
        generator = negative_generator(negative_seed(config.train.seed, 0, 0, index, VALIDATION_STREAM), device)
        with autocast(device, autocast_dtype):
            output = model(signal, lengths, generator=generator, **batch.view_inputs(device))
        if output.utterance_loss is not None:
            utterance += torch.stack([output.utterance_loss.detach().to(sums.dtype), torch.ones_like(utterance[1])])
        counts = step_counts(output, steps).to(sums.dtype)
        total = counts.sum()
        sums[0] += output.loss.to(sums.dtype) * total
        sums[1] += total
        sums[2 : 2 + steps] += output.step_accuracy.to(sums.dtype).nan_to_num(0.0) * counts
        sums[2 + steps :] += counts
    all_reduce_sum(sums, context)
    all_reduce_sum(utterance, context)
    model.train(was_training)
    record = {
        "kind": "valid",
        "step": step,
        "loss": float(sums[0] / sums[1].clamp(min=1)),
        "accuracy": (sums[2 : 2 + steps] / sums[2 + steps :].clamp(min=1)).tolist(),
        "positions": int(sums[1]),
    }
    if utterance[1] > 0:
        record["utterance_loss"] = float(utterance[0] / utterance[1])
    return record

