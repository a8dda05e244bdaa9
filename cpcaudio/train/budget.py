"""The wall-clock training budget (``train.max_minutes``, ``cpcaudio train --minutes``).

A run with a budget stops after the first step at which the wall time since its first step reaches the
budget, so it overshoots by less than one step (plus the validation and checkpoint that step triggers).
What counts: the wall time of this invocation from the start of its first step, validations and
checkpoints on the way included; the set-up before the first step and the closing validation and
``last.pt`` after the last step do not. ``train.max_steps`` (or ``train.max_epochs``) still bounds the run.

* The budget is per invocation: a ``--resume`` gets the whole budget again (it is in the checkpoint's
  config, so a plain ``--resume`` repeats it; ``--minutes 0`` turns it off).
* The learning-rate schedule stays step-based: warm-up and decay are laid over ``train.max_steps``, so a
  cosine schedule over the default 100,000 steps with a 20-minute budget barely decays. Set
  ``train.max_steps`` near the steps that fit (the summary says how many did) for a schedule that
  completes.
* Under ``torchrun`` rank 0's clock decides and every rank stops at the same step (the decision travels
  with the per-step signal check).
"""

from __future__ import annotations

import time


def clock() -> float:
    """Seconds on a monotonic clock (a seam: tests replace it with a fake one)."""
    return time.monotonic()


class TimeBudget:
    """Whether ``minutes`` of wall time have passed since the budget was made (``minutes <= 0``: never)."""

    def __init__(self, minutes: float) -> None:
        self.minutes = float(minutes)
        self.started = clock()

    @property
    def enabled(self) -> bool:
        return self.minutes > 0

    def elapsed_seconds(self) -> float:
        """Seconds since the budget was made."""
        return clock() - self.started

    def reached(self) -> bool:
        """True once the budget is on and spent."""
        return self.enabled and self.elapsed_seconds() >= 60.0 * self.minutes


def budget_line(minutes: float, steps: int) -> str:
    """The summary's line for a run that the budget ended: ``time budget of 20 min reached after 1,060 steps``."""
    return f"time budget of {minutes:g} min reached after {steps:,} step{'' if steps == 1 else 's'}"
