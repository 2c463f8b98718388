"""Progress of a job's long transfers: one mechanism for backup, restore and upload.

A `Tracker` follows one volume's transfer (bytes done of a total known up front, or of an
unknown total), measures its rate over the last `RATE_WINDOW` seconds and from it the time
left, and hands a `Progress` to an `emit` function (the job's `Reporter.progress`):

- at most every `LIVE_EVERY` seconds (bec2 redraws its terminal line from these; the
  backend ignores them),
- with `log=True` at most every `log_interval()` seconds (`LOG_EVERY`, once a minute: the
  Bacula job log shows these, `log_line`),
- once with `final=True` when the volume is done (bec2 prints `summary_line`).

The hot path is `add(n)` / `update(done)`: an integer and one clock reading per block; no
lock, no string, no allocation until a tick is due. Pure: the clock is passed in, nothing
is printed here.
"""

from __future__ import annotations

import math
import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

#: Seconds between two live updates (a terminal line is redrawn at most 4 times a second).
LIVE_EVERY = 0.25
#: Seconds between two job-log progress messages of one volume (see `log_interval`).
LOG_EVERY = 60.0
#: The job-log interval in seconds for tests and diagnostics, read at the start of each
#: transfer (the backend runs in a process of the FD's, so a test sets it in the FD's
#: environment); anything but a positive number means `LOG_EVERY` (`log_interval`).
LOG_EVERY_ENV = "BACULA_EC2_PROGRESS_EVERY"
#: The rate (and so the time left) is measured over this many seconds of recent history.
RATE_WINDOW = 10.0

MIB = 1 << 20
GIB = 1 << 30

Clock = Callable[[], float]


def interval(default: float) -> float:
    """A job-log interval: `default`, or `BACULA_EC2_PROGRESS_EVERY` if that is a positive
    number of seconds (it shortens every progress interval of the job log at once)."""
    raw = os.environ.get(LOG_EVERY_ENV, "")
    try:
        value = float(raw)
    except ValueError:
        return default
    return value if math.isfinite(value) and value > 0 else default


def log_interval() -> float:
    """The job-log interval of a transfer: `LOG_EVERY` (or the environment's, `interval`)."""
    return interval(LOG_EVERY)


@dataclass(frozen=True, slots=True)
class Progress:
    """Where one transfer is: `label` (what moves, e.g. a volume id) and `verb` (what
    happens to it, e.g. "backed up") name it; bytes `done` of `total` (None: not known)
    after `elapsed` seconds at `rate` bytes/s (the recent rate; the average once final)."""

    label: str
    verb: str
    done: int
    total: int | None
    elapsed: float
    rate: float
    log: bool = False  # also for the job log
    final: bool = False  # the transfer is over: a summary

    @property
    def percent(self) -> float | None:
        if self.total is None:
            return None
        if self.total <= 0:
            return 100.0
        return min(100.0, 100.0 * self.done / self.total)

    @property
    def eta(self) -> float | None:
        """Seconds left at the current rate (None: the total or the rate is not known)."""
        if self.total is None:
            return None
        left = max(0, self.total - self.done)
        if left == 0:
            return 0.0
        return left / self.rate if self.rate > 0 else None

    @classmethod
    def summary(cls, label: str, verb: str, done: int, seconds: float) -> Progress:
        """The final word on a transfer that took `seconds` in all."""
        rate = done / seconds if seconds > 0 else 0.0
        return cls(label, verb, done, done, seconds, rate, final=True)


class Tracker:
    """One transfer's progress; `emit` receives the `Progress` updates (see the module).

    `total` may be None (not known) or corrected later (`total=` attribute); a `done` past
    the total makes the total unknown rather than show more than 100 %.
    """

    __slots__ = (
        "_clock",
        "_due",
        "_finished",
        "_live_every",
        "_log_due",
        "_log_every",
        "_samples",
        "done",
        "emit",
        "label",
        "started",
        "total",
        "verb",
    )

    def __init__(
        self,
        label: str,
        verb: str,
        total: int | None,
        emit: Callable[[Progress], None],
        *,
        clock: Clock = time.monotonic,
        live_every: float | None = None,
        log_every: float | None = None,
    ) -> None:
        self.label = label
        self.verb = verb
        self.total = total
        self.emit = emit
        self.done = 0
        self._clock = clock
        self._live_every = LIVE_EVERY if live_every is None else live_every
        self._log_every = log_interval() if log_every is None else log_every
        self.started = clock()
        self._due = self.started + self._live_every
        self._log_due = self.started + self._log_every
        self._samples: deque[tuple[float, int]] = deque([(self.started, 0)])
        self._finished = False

    # ------------------------------------------------------------------ hot path
    def add(self, n: int) -> None:
        """`n` more bytes done."""
        self.done += n
        if self._clock() >= self._due:
            self._tick()

    def update(self, done: int) -> None:
        """`done` bytes done in all."""
        self.done = done
        if self._clock() >= self._due:
            self._tick()

    # ------------------------------------------------------------------ ticks
    def _tick(self) -> None:
        if self._finished:
            return
        now = self._clock()
        self._due = now + self._live_every
        # a job-log line only while something is left: the job's own line ends each volume
        log = now >= self._log_due and (self.total is None or self.done < self.total)
        if log:
            self._log_due = now + self._log_every
        self.emit(self.view(now, log=log))

    def rate(self, now: float) -> float:
        """Bytes per second over the last `RATE_WINDOW` seconds (since the start before)."""
        samples = self._samples
        samples.append((now, self.done))
        while len(samples) > 2 and now - samples[1][0] >= RATE_WINDOW:
            samples.popleft()
        then, done_then = samples[0]
        return (self.done - done_then) / (now - then) if now > then else 0.0

    def view(self, now: float | None = None, *, log: bool = False) -> Progress:
        now = self._clock() if now is None else now
        total = self.total if self.total is not None and self.done <= self.total else None
        return Progress(self.label, self.verb, self.done, total, now - self.started, self.rate(now), log=log)

    def elapsed(self) -> float:
        return self._clock() - self.started

    def stop(self) -> Progress:
        """The transfer is over: no more updates; its summary (not emitted)."""
        self._finished = True
        return Progress.summary(self.label, self.verb, self.done, self.elapsed())

    def finish(self) -> Progress:
        """The transfer is over: emit its summary once (and return it)."""
        if self._finished:
            return Progress.summary(self.label, self.verb, self.done, self.elapsed())
        summary = self.stop()
        self.emit(summary)
        return summary


def emitter(reporter: object) -> Callable[[Progress], None]:
    """The reporter's `progress` method, or a no-op for a reporter without one."""
    progress: Callable[[Progress], None] | None = getattr(reporter, "progress", None)
    return progress if progress is not None else _ignore


def _ignore(_update: Progress) -> None:
    return None


# ---------------------------------------------------------------------- words
def size(n: int) -> str:
    """`680.0 MiB`, `12.50 GiB`."""
    if n >= 10 * GIB:
        return f"{n / GIB:.2f} GiB"
    return f"{n / MIB:.1f} MiB"


def rate(bytes_per_s: float) -> str:
    return f"{bytes_per_s / MIB:.1f} MiB/s"


def duration(seconds: float) -> str:
    """`7.2 s`, `40 s`, `3 min 20 s`, `2 h 05 min`."""
    if seconds < 9.95:
        return f"{max(0.0, seconds):.1f} s"
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def clock_time(seconds: float) -> str:
    """`0:40`, `3:20`, `2:05:00`: the compact form of a terminal line."""
    s = max(0, round(seconds))
    if s < 3600:
        return f"{s // 60}:{s % 60:02d}"
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def log_line(p: Progress) -> str:
    """The job-log message: `volume vol-1: 45% backed up (306.0 MiB of 680.0 MiB), 9.4 MiB/s,
    about 40 s left`."""
    head = f"volume {p.label}: "
    if p.percent is None:
        return f"{head}{size(p.done)} {p.verb} so far, {rate(p.rate)}"
    assert p.total is not None
    text = f"{head}{p.percent:.0f}% {p.verb} ({size(p.done)} of {size(p.total)}), {rate(p.rate)}"
    eta = p.eta
    return text + (f", about {duration(eta)} left" if eta is not None else ", time left not known yet")


def summary_line(p: Progress) -> str:
    """`vol-1: 680.0 MiB backed up in 1 min 12 s (9.4 MiB/s)`."""
    return f"{p.label}: {size(p.done)} {p.verb} in {duration(p.elapsed)} ({rate(p.rate)})"


def live_line(p: Progress) -> str:
    """The terminal line: `vol-1 backed up  45%  306.0 MiB / 680.0 MiB  9.4 MiB/s  ETA 0:40`."""
    if p.percent is None:
        return f"{p.label} {p.verb}  {size(p.done)}  {rate(p.rate)}"
    assert p.total is not None
    eta = p.eta
    left = clock_time(eta) if eta is not None else "?"
    return (
        f"{p.label} {p.verb}  {p.percent:3.0f}%  {size(p.done)} / {size(p.total)}  {rate(p.rate)}  ETA {left}"
    )
