"""Client-side pacing under the EBS direct quota, adapting to the account's other users.

GetSnapshotBlock allows 1,000 requests/s per snapshot and, by default, per account. A job
that simply keeps 64 requests in flight overshoots (coldsnap #451) and is throttled; jobs
that share the account must share its budget. So requests pass a pacer: a start-time
schedule at `rate` per second, lowered multiplicatively when AWS throttles and raised
additively while it does not (AIMD, as TCP does): several jobs converge to a fair share,
a lone job stays just under the quota.

Time comes from a `retry.Clock`, so tests can drive the pacer with a fake one.
"""

from __future__ import annotations

import fcntl
import os
import struct
import threading
from collections.abc import Callable

from .retry import REAL_CLOCK, Clock


class SharedSchedule:
    """The next free start slot of pacers in several processes of one host, in a file.

    Two Plugin lines of one job are two backend processes, and every job of the host lists
    under the same account quota: their list pacers keep one schedule here. The slot is a
    CLOCK_MONOTONIC time (one clock for every process of the host), read and advanced under
    an exclusive `flock` (about 10 microseconds a request). Each process keeps its own rate
    (its own AIMD reaction to throttling); the schedule makes their requests take turns.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)

    def read(self) -> float | None:
        raw = os.pread(self._fd, 8, 0)
        return struct.unpack("<d", raw)[0] if len(raw) == 8 else None

    def write(self, value: float) -> None:
        os.pwrite(self._fd, struct.pack("<d", value), 0)

    def __enter__(self) -> SharedSchedule:
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        """Close the file (idempotent)."""
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)


class Pacer:
    def __init__(
        self,
        rate: float,
        *,
        floor: float = 10.0,
        decrease: float = 0.7,
        increase_per_second: float | None = None,
        cooldown: float = 0.25,
        burst: float = 0.1,
        clock: Clock = REAL_CLOCK,
        shared: SharedSchedule | None = None,
    ) -> None:
        if rate <= 0:
            raise ValueError(f"a pacer's rate must be positive, not {rate}")
        self.clock = clock
        self.ceiling = rate
        self.rate = rate
        self.floor = min(floor, rate)
        self.decrease = decrease
        self.increase = increase_per_second if increase_per_second is not None else rate * 0.05
        self.cooldown = cooldown
        self.burst = burst  # seconds of unused schedule that may be caught up
        self._next = clock.now()
        self._last_cut = float("-inf")  # the first throttle always cuts
        self._last_raise = clock.now()
        self._lock = threading.Lock()
        self.throttles = 0
        #: the schedule kept with other processes (None: this pacer's own); real time only
        self.shared = shared if clock is REAL_CLOCK else None

    def _take(self, now: float, lead: float, spare: bool) -> float | None:
        """The next slot, taken (under the lock); None for `spare` while none is free."""
        if self.shared is None:
            return self._take_local(now, lead, spare)
        with self.shared:
            theirs = self.shared.read()
            # A slot more than a minute ahead is not a queue: a file from before a reboot
            # (CLOCK_MONOTONIC starts again at 0) or damaged: ignored, and overwritten.
            if theirs is not None and self._next < theirs < now + 60.0:
                self._next = theirs
            slot = self._take_local(now, lead, spare)
            if slot is not None:
                self.shared.write(self._next)
            return slot

    def _take_local(self, now: float, lead: float, spare: bool) -> float | None:
        if spare and self._next > now:
            return None
        slot = max(now - self.burst, self._next - lead)
        self._next = max(self._next, slot) + 1.0 / self.rate
        return slot

    def close_shared(self) -> None:
        """Stop sharing the schedule and close its file (idempotent): the job is over. A
        request after it is paced by this pacer alone."""
        with self._lock:
            shared, self.shared = self.shared, None
        if shared is not None:
            shared.close()

    def _recover(self, now: float) -> None:
        """The additive increase (under the lock)."""
        if now - self._last_raise >= 1.0 and self.rate < self.ceiling:
            self.rate = min(self.ceiling, self.rate + self.increase * (now - self._last_raise))
            self._last_raise = now
        elif self.rate >= self.ceiling:
            self._last_raise = now

    def wait(self, cancel: threading.Event | None = None, *, priority: bool = False) -> None:
        """Block until this request's start slot.

        `priority`: a request something waits for now (the block range a consumer is reading)
        may start one slot ahead of the schedule, so that `spare` requests filling the rest of
        the schedule delay it by nothing; the schedule still advances one slot per request, so
        the rate stays `rate` (plus that one slot, once)."""
        with self._lock:
            now = self.clock.now()
            self._recover(now)
            slot = self._take(now, 1.0 / self.rate if priority else 0.0, spare=False)
            assert slot is not None
        delay = slot - now
        if delay > 0 and not (cancel is not None and cancel.is_set()):
            self.clock.sleep(delay)

    def wait_spare(
        self, cancel: threading.Event | None = None, promoted: Callable[[], bool] | None = None
    ) -> None:
        """Block until the schedule has a free slot now, then take it; never reserve one ahead.

        For speculative requests (block ranges listed ahead of the consumer): they use what
        the ordinary and `priority` requests leave of the rate, and never make those wait
        longer than one slot. Once `promoted()` says the request is awaited after all (the
        consumer reached its range), it waits as a `priority` one."""
        while True:
            if promoted is not None and promoted():
                self.wait(cancel, priority=True)
                return
            with self._lock:
                now = self.clock.now()
                self._recover(now)
                if self._take(now, 0.0, spare=True) is not None:
                    return
                delay = self._next - now
            if cancel is not None and cancel.is_set():
                return
            self.clock.sleep(delay)

    def throttled(self) -> None:
        """AWS said slow down: cut the rate (once per cooldown, not once per reply)."""
        with self._lock:
            self.throttles += 1
            now = self.clock.now()
            if now - self._last_cut >= self.cooldown:
                self.rate = max(self.floor, self.rate * self.decrease)
                self._last_cut = now
                self._last_raise = now
