"""The end of one optimiser step: the (scaled) optimiser step, the schedule, the momentum encoder.

Called once per optimiser step by the training loop (after the gradients of every micro-batch are
accumulated and clipped), so under ``optim.accumulate > 1`` the momentum encoder of a MoCo queue
(:mod:`cpcaudio.model.queue`), and with ``nt-xent`` the momentum copies of the context network and the
utterance projections that make the utterance keys, still move once per step. Their update follows the
scaler's step even when an fp16 scaler skipped the optimiser step for overflowing gradients: it then pulls
the momentum copies towards unchanged weights.
"""

from __future__ import annotations

import torch

from cpcaudio.model import CPCModel


def apply_update(
    model: CPCModel,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
) -> None:
    """Step ``optimizer`` through ``scaler``, update the scaler, step ``scheduler``, then
    :meth:`CPCModel.momentum_update` (every momentum copy; nothing without ``predictor.queue_size``).

    Args:
        model: the unwrapped model (not its DDP or compiled wrapper).
        optimizer, scheduler, scaler: the run's, with the step's gradients in place (unscaled or not).
    """
    scaler.step(optimizer)
    scaler.update()
    scheduler.step()
    model.momentum_update()
