"""The progress events every long-running library function reports, and nothing else.

The library never draws bars or prints: a function that takes a while accepts ``progress``, a callable
that receives :class:`Progress` events, and the CLI turns them into a bar on a terminal or plain lines
in a log (``cpcaudio.cli.progress``). A library user can pass any callable, or nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Optional


@dataclass(frozen=True)
class Progress:
    """One progress report.

    Attributes:
        stage: what is running (``prepare``, ``train``, ``extract``, ``probe-phone`` ...): one bar each.
        done: units finished so far in this stage.
        total: units in the stage, or None when unknown.
        unit: what is counted (``utt``, ``step``, ``frame`` ...).
        fields: short key/value pairs to show beside the bar (``{"loss": "2.61"}``).
        message: a line to print above the bar (a validation result, a stage summary), or None.
        line: how this event reads in a log, where no bar is drawn (e.g. a logged training step); printed
            instead of the periodic counter line, every time; "" logs nothing for this event. None: the
            periodic counter line.
    """

    stage: str
    done: int = 0
    total: Optional[int] = None
    unit: str = "it"
    fields: dict[str, str] = field(default_factory=dict)
    message: Optional[str] = None
    line: Optional[str] = None


ProgressCallback = Callable[[Progress], None]


def report(progress: Optional[ProgressCallback], event: Progress) -> None:
    """Send ``event`` to ``progress`` when there is one."""
    if progress is not None:
        progress(event)
