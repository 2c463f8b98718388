"""bec2's stderr: messages, one live progress line on a terminal, a summary line per volume.

On a terminal the current transfer is one line redrawn in place (`\\r`, erased to the end
of the line, cut to the terminal's width so that it never wraps), at most `REDRAW_EVERY`
seconds apart; a message or a volume's summary first erases it, so that nothing of it stays
on screen. Without a terminal there is no live line, only the summaries (a cron job's mail
says what was done). `quiet`: neither.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable
from typing import TextIO

from .jobs.progress import Progress, live_line, summary_line

#: Seconds between two redraws of the live line.
REDRAW_EVERY = 0.2
_ERASE = "\r\033[K"


class Console:
    """Writes to `stream` (None: `sys.stderr` at the time of each write)."""

    def __init__(
        self,
        stream: TextIO | None = None,
        *,
        live: bool,
        summaries: bool,
        prefix: str = "bec2: ",
        scrub: Callable[[str], str] = lambda text: text,
        clock: Callable[[], float] = time.monotonic,
        width: Callable[[], int] | None = None,
    ) -> None:
        self._stream = stream
        self.live = live
        self.summaries = summaries
        self.prefix = prefix
        self.scrub = scrub
        self.clock = clock
        self.width = width or (lambda: shutil.get_terminal_size((80, 24)).columns)
        self._shown = False
        self._drawn = -float("inf")

    @property
    def stream(self) -> TextIO:
        return self._stream if self._stream is not None else sys.stderr

    def clear(self) -> None:
        """Erase the live line, if one is on screen."""
        if self._shown:
            self.stream.write(_ERASE)
            self.stream.flush()
            self._shown = False

    def message(self, text: str) -> None:
        """One line of its own (the live line, if any, is erased first)."""
        self.clear()
        print(self.prefix + self.scrub(text), file=self.stream, flush=True)

    def progress(self, p: Progress) -> None:
        if p.final:
            self.clear()
            if self.summaries:
                print(self.prefix + self.scrub(summary_line(p)), file=self.stream, flush=True)
            return
        if not self.live:
            return
        now = self.clock()
        if now - self._drawn < REDRAW_EVERY:
            return
        self._drawn = now
        line = self.prefix + self.scrub(live_line(p))
        room = max(10, self.width() - 1)  # never the last column: some terminals wrap there
        if len(line) > room:
            line = line[: room - 1] + "…"
        self.stream.write("\r" + line + "\033[K")
        self.stream.flush()
        self._shown = True
