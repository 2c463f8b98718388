"""The pacer: schedules starts at its rate, backs off on throttling, recovers."""

from __future__ import annotations

import threading
import time

from bacula_ec2.pacing import Pacer


def test_rate_is_respected_by_many_threads() -> None:
    pacer = Pacer(400.0, burst=0.0)
    count = [0]
    lock = threading.Lock()
    stop = time.monotonic() + 0.5

    def worker() -> None:
        while time.monotonic() < stop:
            pacer.wait()
            with lock:
                count[0] += 1

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert 150 <= count[0] <= 230  # ~200 in 0.5 s, whatever the number of threads


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
