"""The one waiter: poll something in AWS until it is done, with a growing interval, a
"no progress" timeout, an overall cap, and the job's cancel.

Every wait of the product goes through here: snapshots to complete (a backup, a restore's
uploaded snapshots), volumes and instances to reach a state (the restore into AWS). A wait
is described once by `WaitParams` (validated when built), and run by `wait_until` or, when
the caller does work between two polls (the backup reads an instance's volumes while the
other instances' snapshots go on), step by step with a `Waiter`.

What counts as progress is the caller's: `check()` returns a `Step` whose `progress` is any
comparable token (a snapshot's Progress percentages, a state name). The wait fails with
`AwsError(..., "Timeout", ...)` when that token has not changed for `no_progress` seconds,
or when the whole wait has lasted `overall` seconds, whichever comes first. A long first
snapshot of a large volume can take hours and is fine as long as its Progress grows; one
that is stuck fails after `no_progress`.

Two lessons from coldsnap's waiter (src/wait.rs): a state seen once can be a stale answer of
an eventually consistent API, so `successes_required` consecutive "done" answers may be
asked for; and the interval between polls is part of the wait's definition, not a constant
of each caller.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from ..retry import REAL_CLOCK, Cancelled, Clock
from .errors import AwsError
from .model import Snapshot

T = TypeVar("T")

#: A snapshot may take hours (a first Full of a large volume), but not days.
SNAPSHOT_OVERALL_CAP = 24 * 3600.0
#: The overall cap is at least this many times the "no progress" timeout.
OVERALL_PER_NO_PROGRESS = 4


@dataclass(frozen=True)
class WaitParams:
    """How a wait polls and when it gives up.

    - `first_interval` (0.2 s): the first pause; a small snapshot or volume is ready fast;
    - `growth` (1.5): each pause is that much longer than the one before ...
    - `max_interval` (15 s): ... up to this (a snapshot that takes an hour is not worth
      polling every second; DescribeSnapshots counts against the EC2 request quota);
    - `no_progress` (3600 s, None: never): fail when the progress token has not changed for
      that long;
    - `overall` (24 h): fail when the wait has lasted that long in all;
    - `successes_required` (1): consecutive "done" answers needed before the wait ends.
    """

    first_interval: float = 0.2
    growth: float = 1.5
    max_interval: float = 15.0
    no_progress: float | None = 3600.0
    overall: float = SNAPSHOT_OVERALL_CAP
    successes_required: int = 1

    def __post_init__(self) -> None:
        if not 0 < self.first_interval <= self.max_interval:
            raise ValueError(
                f"WaitParams: need 0 < first_interval ({self.first_interval}) <= max_interval "
                f"({self.max_interval})"
            )
        if self.growth < 1:
            raise ValueError(f"WaitParams.growth must be at least 1, not {self.growth}")
        if self.no_progress is not None and self.no_progress <= 0:
            raise ValueError(f"WaitParams.no_progress must be positive, not {self.no_progress}")
        if self.overall <= 0:
            raise ValueError(f"WaitParams.overall must be positive, not {self.overall}")
        if self.no_progress is not None and self.overall < self.no_progress:
            raise ValueError(
                f"WaitParams.overall ({self.overall}) must not be shorter than "
                f"no_progress ({self.no_progress})"
            )
        if self.successes_required < 1:
            raise ValueError(
                f"WaitParams.successes_required must be at least 1, not {self.successes_required}"
            )

    @classmethod
    def for_snapshots(cls, no_progress: float) -> WaitParams:
        """`snapshot_timeout=N`: no progress for N s; in all at most max(24 h, 4 x N)."""
        return cls(
            no_progress=no_progress, overall=max(SNAPSHOT_OVERALL_CAP, OVERALL_PER_NO_PROGRESS * no_progress)
        )

    @classmethod
    def for_state(cls, timeout: float) -> WaitParams:
        """A volume or an instance reaching a state: `timeout` in all, polled up to every 5 s
        (a state has no progress to watch)."""
        return cls(first_interval=0.1, max_interval=5.0, no_progress=None, overall=timeout)


@dataclass(frozen=True)
class Step(Generic[T]):
    """One poll's answer: done (with the value to return) or not, and how far it got."""

    done: bool
    value: T | None = None
    progress: Hashable = None


class Waiter:
    """A wait in progress: `observe` each poll's progress, `pause` between polls. Its clocks
    (started, last progress) survive work the caller does between two polls."""

    def __init__(
        self,
        operation: str,
        what: str,
        params: WaitParams,
        *,
        clock: Clock = REAL_CLOCK,
        cancel: threading.Event | None = None,
        hint: str = "",
    ) -> None:
        self.operation = operation
        self.what = what
        self.params = params
        self.clock = clock
        self.cancel = cancel
        self.hint = hint
        self.started = clock.now()
        self.changed = self.started
        self.interval = params.first_interval
        self.polls = 0
        self._token: Hashable = None
        self._seen_token = False

    @property
    def elapsed(self) -> float:
        return self.clock.now() - self.started

    def observe(self, progress: Hashable) -> None:
        """A poll that was not done: note its progress; AwsError Timeout when there has been
        none for `no_progress` seconds or the wait has lasted `overall` seconds."""
        now = self.clock.now()
        self.polls += 1
        if not self._seen_token or progress != self._token:
            self._token, self._seen_token = progress, True
            self.changed = now
        p = self.params
        if now - self.started >= p.overall:
            raise AwsError(
                self.operation,
                "Timeout",
                f"{self.what}: not done after {now - self.started:.0f} s "
                f"(the limit is {p.overall:.0f} s){self.hint}",
            )
        if p.no_progress is not None and now - self.changed >= p.no_progress:
            raise AwsError(
                self.operation,
                "Timeout",
                f"{self.what}: no progress for {now - self.changed:.0f} s{self.hint}",
            )

    def pause(self) -> None:
        """Sleep the current interval (then grow it); Cancelled if the job is cancelled."""
        if self.clock.wait(self.cancel, self.interval):
            raise Cancelled(f"cancelled while waiting: {self.what}")
        self.interval = min(self.params.max_interval, self.interval * self.params.growth)

    def again_soon(self) -> None:
        """Something finished: poll at the first interval again."""
        self.interval = self.params.first_interval


def wait_until(
    check: Callable[[], Step[T]],
    *,
    operation: str,
    what: str,
    params: WaitParams,
    clock: Clock = REAL_CLOCK,
    cancel: threading.Event | None = None,
    hint: str = "",
) -> T:
    """Call `check()` until it is done `params.successes_required` times in a row; its value.

    `check` raises to fail the wait at once (a snapshot in state `error`). AwsError Timeout
    (see `Waiter.observe`), Cancelled on cancel.
    """
    waiter = Waiter(operation, what, params, clock=clock, cancel=cancel, hint=hint)
    successes = 0
    while True:
        step = check()
        if step.done:
            successes += 1
            if successes >= params.successes_required:
                return step.value  # type: ignore[return-value]
        else:
            successes = 0
            waiter.observe(step.progress)
        waiter.pause()


# ---------------------------------------------------------------------------- snapshots
#: EC2's eventual consistency: how long an id CreateSnapshot(s) just returned may be unknown
#: to DescribeSnapshots (EC2 "Eventual consistency"; a few seconds usually, minutes rarely).
NOT_VISIBLE_WINDOW = 150.0


def snapshot_progress(snaps: Sequence[Snapshot]) -> tuple[tuple[str, str, str], ...]:
    """The progress token of some snapshots: each one's state and Progress."""
    return tuple(sorted((s.snapshot_id, s.state or "", s.progress or "") for s in snaps))


def failed_snapshots(snaps: Sequence[Snapshot]) -> list[str]:
    return [s.snapshot_id for s in snaps if s.state == "error"]


class SnapshotPoll:
    """DescribeSnapshots of ids this job has just been given by EC2. An answer
    `InvalidSnapshot.NotFound` within `window` seconds of the first poll means "not visible
    yet" (None); after that it is the answer (raised)."""

    def __init__(
        self,
        describe: Callable[[list[str]], list[Snapshot]],
        *,
        clock: Clock = REAL_CLOCK,
        window: float = NOT_VISIBLE_WINDOW,
    ) -> None:
        self.describe = describe
        self.clock = clock
        self.window = window
        self.started = clock.now()

    def __call__(self, ids: Sequence[str]) -> dict[str, Snapshot] | None:
        try:
            snaps = self.describe(list(ids))
        except AwsError as exc:
            if exc.code != "InvalidSnapshot.NotFound" or self.clock.now() - self.started > self.window:
                raise
            return None
        return {s.snapshot_id: s for s in snaps}


def wait_snapshots(
    describe: Callable[[list[str]], list[Snapshot]],
    snapshot_ids: Sequence[str],
    params: WaitParams,
    *,
    clock: Clock = REAL_CLOCK,
    cancel: threading.Event | None = None,
    progress: Callable[[list[Snapshot]], None] | None = None,
    window: float = NOT_VISIBLE_WINDOW,
) -> list[Snapshot]:
    """Until every snapshot is `completed`; AwsError SnapshotError as soon as one is in state
    `error`, Timeout when their Progress has not grown for `params.no_progress` seconds."""
    ids = list(dict.fromkeys(snapshot_ids))
    poll = SnapshotPoll(describe, clock=clock, window=window)
    last: list[tuple[tuple[str, str, str], ...]] = [()]

    def check() -> Step[list[Snapshot]]:
        found = poll(ids)
        if found is None:
            return Step(False, progress=last[0])
        snaps = [found[s] for s in ids if s in found]
        failed = failed_snapshots(snaps)
        if failed:
            raise AwsError(
                "CreateSnapshots", "SnapshotError", f"snapshot(s) {', '.join(failed)} ended in state error"
            )
        if len(snaps) == len(ids) and all(s.state == "completed" for s in snaps):
            return Step(True, snaps)
        if progress is not None:
            progress(snaps)
        last[0] = snapshot_progress(snaps)
        return Step(False, progress=last[0])

    return wait_until(
        check,
        operation="CreateSnapshots",
        what=f"snapshot(s) {', '.join(ids)}",
        params=params,
        clock=clock,
        cancel=cancel,
        hint=" (raise snapshot_timeout=)",
    )
