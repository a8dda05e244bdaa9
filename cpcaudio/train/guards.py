"""What stops a run early: a signal (SIGINT, SIGTERM) or divergence (a NaN or infinite loss, gradient or
weight), and the one line that says what happened and how to go on.

Signals. While :func:`stop_request` is held (``cpcaudio train`` holds it for the whole command,
:func:`cpcaudio.train.train` for the run), SIGINT and SIGTERM do not kill the process: they set a flag
that the loop reads after every step. The loop then writes ``last.pt`` at that step (atomically, only
finite weights) and raises :class:`cpcaudio.errors.TrainingInterrupted` (exit 130 / 143), whose message
holds the command that continues the run. Under ``torchrun`` the ranks agree on the flag after every step
(:func:`cpcaudio.train.distributed.agree_max`), so they all stop at the same step. The same signal
arriving again within :data:`DUPLICATE_SECONDS` is the same request (a terminal's Ctrl-C reaches torchrun
and its workers); a later one stops at once (``KeyboardInterrupt``), keeping the previous ``last.pt``.

Divergence. :class:`Health` records, on the device and without a synchronisation, the first step whose
loss (or gradient norm, unless an fp16 gradient scaler is active, which skips such steps by design) is
not finite. The loop reads it before every checkpoint and at every logged step (every step on the CPU,
where reading costs nothing), together with the finiteness of the weights, and raises
:class:`cpcaudio.errors.DivergenceError` (exit 5) on all ranks at once, so no non-finite checkpoint is
ever written and the last one written is kept.
"""

from __future__ import annotations

import contextlib
import shlex
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

import torch

from cpcaudio.train.distributed import DistributedContext, agree_max

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
DUPLICATE_SECONDS = 2.0

# What became non-finite, by code (the order is the order the loop meets them).
NON_FINITE = {
    1: "the training loss became NaN or infinite",
    2: "the gradients became NaN or infinite",
    3: "the weights became NaN or infinite",
    4: "the validation loss became NaN or infinite",
}
_NO_STEP = 2**40


class StopRequest:
    """The SIGINT/SIGTERM flag (one per process, shared by nested :func:`stop_request` blocks).

    Attributes:
        signum: the first stop signal received (None: none).
    """

    def __init__(self) -> None:
        self.signum: Optional[int] = None
        self._first_at = 0.0
        self._depth = 0
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else "a signal"

    def request(self, signum: int) -> None:
        """Ask the loop to stop after the current step, as if ``signum`` had arrived (the first one counts)."""
        if self.signum is None:
            self.signum, self._first_at = signum, time.monotonic()

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is None:
            self.request(signum)
        elif time.monotonic() - self._first_at >= DUPLICATE_SECONDS:
            raise KeyboardInterrupt  # asked twice: stop now, without the final checkpoint

    def _enter(self) -> None:
        if self._depth == 0 and threading.current_thread() is threading.main_thread():
            for number in STOP_SIGNALS:
                self._previous[number] = signal.signal(number, self._handle)
        self._depth += 1

    def _exit(self) -> None:
        self._depth -= 1
        if self._depth == 0:
            for number, handler in self._previous.items():
                signal.signal(number, handler if handler is not None else signal.SIG_DFL)
            self._previous.clear()
            self.signum = None


_STOP = StopRequest()


@contextlib.contextmanager
def stop_request() -> Iterator[StopRequest]:
    """Catch SIGINT and SIGTERM as a request to stop after the current step (main thread only; nested
    blocks share one flag; the previous handlers come back when the outermost block ends)."""
    _STOP._enter()
    try:
        yield _STOP
    finally:
        _STOP._exit()


class Health:
    """The first step with a non-finite loss or gradient norm, kept on the device (no sync per step).

    Args:
        device: the training device.
        gradients_may_overflow: an fp16 gradient scaler is active (it skips steps whose gradients
            overflow and lowers its scale), so only the loss counts.
    """

    def __init__(self, device: torch.device, gradients_may_overflow: bool) -> None:
        self.first = torch.zeros((), dtype=torch.int64, device=device)
        self.what = torch.zeros((), dtype=torch.int64, device=device)
        self.gradients_may_overflow = gradients_may_overflow

    def observe(self, step: int, loss: torch.Tensor, grad_norm: torch.Tensor) -> None:
        """Record ``step`` if its (summed) loss or its gradient norm is not finite and none was before."""
        bad_loss = ~torch.isfinite(loss.detach())
        bad = bad_loss if self.gradients_may_overflow else bad_loss | ~torch.isfinite(grad_norm.detach())
        new = bad & (self.first == 0)
        self.first = torch.where(new, step, self.first)
        self.what = torch.where(new, torch.where(bad_loss, 1, 2), self.what)

    def check(self, step: int, model: torch.nn.Module, context: DistributedContext) -> Optional[tuple[int, int]]:
        """(first non-finite step, what) agreed by all ranks, or None when all is finite (synchronises).

        The weights are checked too: a non-finite weight counts at ``step``.
        """
        first, what = int(self.first), int(self.what)
        if first == 0 and not weights_finite(model):
            first, what = step, 3
        return agree_non_finite(first, what, context)


def agree_non_finite(first: int, what: int, context: DistributedContext) -> Optional[tuple[int, int]]:
    """The earliest non-finite step of any rank and what it was (``first`` 0: none on this rank)."""
    encoded = (_NO_STEP - first) * 8 + what if first else 0
    agreed = agree_max([encoded], context)[0]
    if agreed == 0:
        return None
    return _NO_STEP - agreed // 8, agreed % 8


def weights_finite(model: torch.nn.Module) -> bool:
    """Whether every parameter and buffer of ``model`` is finite."""
    tensors = [t for t in model.state_dict().values() if torch.is_floating_point(t)]
    if not tensors:
        return True
    return bool(torch.stack([torch.isfinite(t).all() for t in tensors]).all())


# ---- messages -------------------------------------------------------------------------------------------


def divergence_message(
    step: int, what: int, learning_rate: float, out_dir: Path, saved_step: Optional[int], default_rate: float
) -> str:
    """The one line of a :class:`DivergenceError`: the step, what broke, the likely cause, what was kept."""
    if saved_step is not None:
        kept = f"{out_dir / 'last.pt'} (step {saved_step}) is the last finite checkpoint and is kept"
    else:
        kept = "no checkpoint had been written yet, and none with non-finite weights ever is"
    return (
        f"training diverged at step {step}: {NON_FINITE.get(what, 'a value became NaN or infinite')}; the likely "
        f"cause is the learning rate optim.learning_rate={learning_rate:g} (the default is {default_rate:g}): "
        "lower it or set optim.grad_clip (e.g. 1.0), then start again with --overwrite or in another folder; "
        f"{kept}"
    )


def resume_command(command: str) -> Optional[str]:
    """``command`` (a recorded ``cpcaudio train ...`` line) with ``--resume`` and without ``--overwrite``;
    None when ``command`` is not a ``cpcaudio train`` command."""
    try:
        tokens = shlex.split(command)
    except ValueError:
        return None
    if len(tokens) < 2 or Path(tokens[0]).name != "cpcaudio" or tokens[1] != "train":
        return None
    tokens = [token for token in tokens if token != "--overwrite"]
    if "--resume" not in tokens:
        tokens.append("--resume")
    return shlex.join(tokens)


def continue_hint(command: str, world_size: int = 1) -> str:
    """How to continue the run that ``command`` started: the exact command when it is a ``cpcaudio train``
    line, else the same command (``cpcaudio demo`` resumes by itself), else the library call."""
    resumed = resume_command(command)
    if resumed is not None:
        if world_size > 1:
            return f"continue by relaunching the same torchrun job with: {resumed}"
        return f"continue with: {resumed}"
    tokens = command.split()
    if tokens and Path(tokens[0]).name == "cpcaudio":
        return f"continue with the same command: {command}"
    return "continue with train(..., resume=True) and the same arguments"


def interrupted_message(
    signal_name: str, step: int, start_step: int, max_steps: int, last: Optional[Path], hint: str
) -> str:
    """The one line of a :class:`TrainingInterrupted`."""
    if step > start_step and last is not None:
        return f"stopped by {signal_name} at step {step} of {max_steps}; saved {last} at step {step}; {hint}"
    held = f"{last} holds step {start_step}" if last is not None else "no checkpoint was written yet"
    return f"stopped by {signal_name} before step {start_step + 1} of {max_steps}; nothing new to save ({held}); {hint}"
