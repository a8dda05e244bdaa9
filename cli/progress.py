"""One progress adapter for every command: library :class:`~cpcaudio.progress.Progress` events in, a
tqdm bar per stage on a terminal out, or plain periodic lines when stderr is a file or a pipe (so that
logs hold no carriage returns and ``grep '^error:'`` finds the error line)."""

from __future__ import annotations

import sys
import time
from typing import Any, Optional

from cpcaudio.progress import Progress


class ProgressPrinter:
    """Callable that draws :class:`Progress` events on stderr.

    Args:
        quiet: draw nothing at all.
        bars: draw tqdm bars (default: when stderr is a terminal); otherwise print a plain line per
            stage at most every ``line_interval`` seconds, plus its last one.
        line_interval: seconds between plain lines of one stage.
    """

    def __init__(self, quiet: bool = False, bars: Optional[bool] = None, line_interval: float = 10.0) -> None:
        self.quiet = quiet
        self.bars = sys.stderr.isatty() if bars is None else bars
        self.line_interval = line_interval
        self._bar: Any = None
        self._bar_stage: Optional[str] = None
        self._last_line: dict[str, float] = {}

    def __call__(self, event: Progress) -> None:
        if self.quiet:
            return
        if event.message is not None:
            self.write(event.message)
        if event.total is None and event.done == 0 and not event.fields and event.line is None:
            return
        if self.bars:
            self._draw_bar(event)
        else:
            self._draw_line(event)

    def write(self, text: str) -> None:
        """Print one line above the bar (or plainly)."""
        if self.quiet:
            return
        if self._bar is not None:
            from tqdm import tqdm

            tqdm.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr, flush=True)

    def close(self) -> None:
        """Close the open bar, if any."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
            self._bar_stage = None

    def __enter__(self) -> "ProgressPrinter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _draw_bar(self, event: Progress) -> None:
        from tqdm import tqdm

        if self._bar_stage != event.stage or (self._bar is not None and self._bar.total != event.total):
            self.close()
            self._bar = tqdm(
                total=event.total, initial=event.done, unit=event.unit, desc=event.stage,
                leave=False, dynamic_ncols=True, file=sys.stderr,
            )
            self._bar_stage = event.stage
        self._bar.n = event.done
        if event.fields:
            self._bar.set_postfix_str("  ".join(f"{k} {v}" for k, v in event.fields.items()), refresh=False)
        self._bar.refresh()

    def _draw_line(self, event: Progress) -> None:
        if event.line is not None:  # the producer's own log line ("" = nothing to log for this event)
            if event.line:
                print(event.line, file=sys.stderr, flush=True)
            return
        now = time.monotonic()
        finished = event.total is not None and event.done >= event.total
        last = self._last_line.get(event.stage)
        if not finished and last is not None and now - last < self.line_interval:
            return
        self._last_line[event.stage] = now
        count = f"{event.done}/{event.total}" if event.total is not None else str(event.done)
        extra = "".join(f"  {k} {v}" for k, v in event.fields.items())
        print(f"{event.stage}: {count} {event.unit}{extra}", file=sys.stderr, flush=True)
