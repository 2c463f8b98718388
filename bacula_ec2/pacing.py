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

import threading

from .retry import REAL_CLOCK, Clock


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
            lead = 1.0 / self.rate if priority else 0.0
            slot = max(now - self.burst, self._next - lead)
            self._next = max(self._next, slot) + 1.0 / self.rate
        delay = slot - now
        if delay > 0 and not (cancel is not None and cancel.is_set()):
            self.clock.sleep(delay)

    def wait_spare(self, cancel: threading.Event | None = None) -> None:
        """Block until the schedule has a free slot now, then take it; never reserve one ahead.

        For speculative requests (block ranges listed ahead of the consumer): they use what
        the ordinary and `priority` requests leave of the rate, and never make those wait
        longer than one slot."""
        while True:
            with self._lock:
                now = self.clock.now()
                self._recover(now)
                if self._next <= now:
                    self._next = max(now - self.burst, self._next) + 1.0 / self.rate
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
