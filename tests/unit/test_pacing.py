"""The pacer: schedules starts at its rate, backs off on throttling, recovers."""

from __future__ import annotations

import itertools
import threading
import time
from typing import Any

from bacula_ec2.pacing import Pacer


class _Recording(Pacer):
    """A pacer that notes every start slot it hands out (under its lock), and the last one
    each thread got."""

    def __init__(self, rate: float, **kw: Any) -> None:
        super().__init__(rate, **kw)
        self.slots: list[float] = []
        self.mine = threading.local()

    def _take(self, now: float, lead: float, spare: bool) -> float | None:
        slot = super()._take(now, lead, spare)
        if slot is not None:
            self.slots.append(slot)
            self.mine.slot = slot
        return slot


def test_rate_is_respected_by_many_threads() -> None:
    """16 threads share a 400/s pacer: the start slots it hands out are never closer than
    1/400 s, whatever the number of threads, and no thread goes before its slot. Checked on
    the slots themselves, so a loaded machine (a test worker beside another) can only make
    the threads later, never make this fail."""
    rate = 400.0
    pacer = _Recording(rate, burst=0.0)
    too_early: list[float] = []
    lock = threading.Lock()
    stop = time.monotonic() + 0.5

    def worker() -> None:
        while time.monotonic() < stop:
            pacer.wait()
            ahead = pacer.mine.slot - time.monotonic()
            if ahead > 1e-4:
                with lock:
                    too_early.append(ahead)

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    slots = sorted(pacer.slots)
    assert len(slots) >= 20, len(slots)
    assert min(b - a for a, b in itertools.pairwise(slots)) >= 1 / rate - 1e-9
    assert not too_early, too_early


def test_throttling_cuts_once_per_cooldown_and_recovers() -> None:
    pacer = Pacer(1000.0, cooldown=10.0, increase_per_second=100000.0)
    for _ in range(50):  # a burst of throttled replies is one signal
        pacer.throttled()
    assert pacer.rate == 700.0 and pacer.throttles == 50
    pacer._last_raise -= 1.0  # a quiet second later
    pacer.wait()
    assert pacer.rate == 1000.0


def test_floor() -> None:
    pacer = Pacer(100.0, floor=50.0, cooldown=0.0)
    for _ in range(20):
        pacer.throttled()
    assert pacer.rate == 50.0
