"""Optimiser and learning-rate schedule built from an :class:`~cpcaudio.config.OptimConfig`.

* Optimiser: Adam with the paper's settings (lr 2e-4, betas (0.9, 0.999), eps 1e-8); AdamW (decoupled
  weight decay) when ``weight_decay > 0``.
* Schedule: a multiplier of the base learning rate as a function of the optimiser step, applied with
  :class:`torch.optim.lr_scheduler.LambdaLR` (whose ``state_dict`` holds only numbers, so it travels in a
  ``weights_only`` checkpoint). Optimiser step ``s`` (1-based) uses ``learning_rate * multiplier(s - 1)``:

  - warm-up (``warmup_steps = W > 0``): ``multiplier(i) = (i + 1) / W`` for ``i < W``, so the first step
    uses ``lr / W`` and step ``W`` the full rate;
  - then ``constant``: 1; ``cosine``: ``0.5 * (1 + cos(pi * (i - W) / (max_steps - W)))``, reaching 0 at
    ``max_steps``; ``step``: ``step_gamma ** ((i - W) // step_size)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch

from cpcaudio.config import OptimConfig


def build_optimizer(parameters: Iterable[torch.nn.Parameter], config: OptimConfig) -> torch.optim.Optimizer:
    """Adam (or AdamW when ``config.weight_decay > 0``) over ``parameters``."""
    options = dict(lr=config.learning_rate, betas=tuple(config.betas), eps=config.eps)
    if config.weight_decay > 0:
        return torch.optim.AdamW(parameters, weight_decay=config.weight_decay, **options)
    return torch.optim.Adam(parameters, **options)


def learning_rate_multiplier(config: OptimConfig, max_steps: int) -> Callable[[int], float]:
    """The schedule as a function of the 0-based scheduler position (see the module docstring)."""
    warmup = config.warmup_steps
    decay_steps = max(max_steps - warmup, 1)

    def multiplier(index: int) -> float:
        if index < warmup:
            return (index + 1) / warmup
        since = index - warmup
        if config.schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * min(since, decay_steps) / decay_steps))
        if config.schedule == "step":
            return config.step_gamma ** (since // config.step_size)
        return 1.0

    return multiplier


def build_scheduler(
    optimizer: torch.optim.Optimizer, config: OptimConfig, max_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` applying :func:`learning_rate_multiplier`; call ``step()`` after each optimiser step."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, learning_rate_multiplier(config, max_steps))
