"""Refusing non-finite numbers: a model with NaN/inf weights, and features that came out NaN/inf.

A training run that diverged (a learning rate far too high) leaves NaN weights; a model with finite but
huge weights can still overflow to inf. Either way every feature is garbage, so extraction and probes stop
with one line instead of writing a complete-looking store of NaN or failing deep inside scikit-learn.
"""

from __future__ import annotations

from typing import Optional, Union

import numpy as np
import torch

from cpcaudio.errors import CheckpointError, DataError

DIVERGED_ADVICE = (
    "the training run that wrote it most likely diverged (learning rate too high); use an earlier checkpoint "
    "of the run, or train again with a lower optim.learning_rate"
)


class NonFiniteFeaturesError(DataError):
    """A model gave NaN or infinite features (its weights are finite, its activations overflowed)."""


def non_finite_weights(model: torch.nn.Module) -> Optional[str]:
    """None when every floating-point parameter and buffer of ``model`` is finite; else a short account
    (how many values, and the first tensor holding one)."""
    bad, first = 0, None
    for name, tensor in model.state_dict().items():
        if not torch.is_floating_point(tensor):
            continue
        count = int((~torch.isfinite(tensor.detach())).sum())
        if count:
            bad += count
            first = first or name
    if not bad:
        return None
    return f"{bad} NaN or infinite value{'s' if bad != 1 else ''}, first in {first}"


def check_finite_weights(model: torch.nn.Module, checkpoint: Optional[object] = None) -> None:
    """Refuse a model whose weights are not all finite.

    Args:
        model: the model to check.
        checkpoint: the file it was loaded from (named in the message), or None for a model passed in.

    Raises:
        CheckpointError: naming the checkpoint (or the model) and the likely cause, a diverged run.
    """
    account = non_finite_weights(model)
    if account is None:
        return
    if checkpoint is None:
        raise CheckpointError(
            f"the model given has non-finite weights ({account}); "
            + DIVERGED_ADVICE.replace("wrote it", "trained it")
        )
    raise CheckpointError(f"checkpoint {checkpoint} has non-finite weights ({account}); {DIVERGED_ADVICE}")


def all_finite(frames: Union[np.ndarray, torch.Tensor]) -> bool:
    """Whether every value of ``frames`` is finite (no copy of a float32 numpy array)."""
    if isinstance(frames, torch.Tensor):
        return bool(torch.isfinite(frames).all())
    return bool(np.isfinite(frames).all())


def check_finite_features(frames: Union[np.ndarray, torch.Tensor], where: str, model: str) -> None:
    """Refuse non-finite features of ``where`` (an utterance, a file) computed by ``model`` (its name).

    Raises:
        NonFiniteFeaturesError: one line naming both, and what to do.
    """
    if all_finite(frames):
        return
    raise NonFiniteFeaturesError(
        f"{model} gives non-finite features (NaN or inf) for {where}: its weights are finite but its "
        "activations overflow, so the model is damaged or its training diverged; use an earlier checkpoint "
        "of the run (nothing was written as complete)"
    )
