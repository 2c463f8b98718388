"""One retry policy for every AWS call we make ourselves.

botocore's own retries are switched off for the EBS data path (nested retries multiply:
coldsnap #437 counted 36 attempts per block). Here attempts are bounded, backed off with
full jitter, counted for the job log, and interrupted by a cancel. When the attempts run
out, the last retryable error is the `__cause__` of `RetriesExhausted` (and its text is in
the message: the operation, the resource, AWS's code and the request id).

Time comes from a `Clock` (real by default), so tests can drive retries and the pacer with
a fake one.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

T = TypeVar("T")


class Retryable(Exception):
    """A failure worth trying again (throttling, 5xx, reset, bad body, not-yet-visible)."""

    def __init__(self, message: str, *, throttled: bool = False, not_found: bool = False) -> None:
        super().__init__(message)
        self.throttled = throttled
        self.not_found = not_found


class RetriesExhausted(Exception):
    """Gave up after the policy's attempts; the message says what kept failing, the last
    failure is the `__cause__`."""


class Cancelled(Exception):
    """The job was cancelled (while waiting to retry, or between two requests)."""


class Clock:
    """Monotonic time and sleeping; tests substitute a fake clock."""

    def now(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    def wait(self, cancel: threading.Event | None, seconds: float) -> bool:
        """Sleep `seconds`, or less if `cancel` is set meanwhile; True if it was."""
        if cancel is None:
            time.sleep(seconds)
            return False
        return cancel.wait(seconds)


REAL_CLOCK = Clock()


@dataclass
class RetryStats:
    """Counts shared by all threads of a job, reported in the job log."""

    retries: int = 0
    throttled: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def note(self, exc: Retryable) -> None:
        self.count(throttled=exc.throttled)

    def count(self, *, throttled: bool = False) -> None:
        """One failed request the job tried again (or recovered from) outside
        `call_with_retry`, e.g. a snapshot creation waiting out a quota."""
        with self._lock:
            self.retries += 1
            if throttled:
                self.throttled += 1

    def add(self, other: RetryStats) -> None:
        """Add another client's counts (a job with AWS clients of several regions)."""
        with other._lock:
            retries, throttled = other.retries, other.throttled
        with self._lock:
            self.retries += retries
            self.throttled += throttled

    def text(self) -> str:
        """The job log's words: "N AWS retries (M throttled)"."""
        return f"{self.retries} AWS retries ({self.throttled} throttled)"


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 8
    base_delay: float = 0.2
    max_delay: float = 20.0
    # "snapshot does not exist" right after creation lasts up to ~2 minutes on AWS
    not_found_window: float = 150.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"RetryPolicy.attempts must be at least 1, not {self.attempts}")
        if not 0 <= self.base_delay <= self.max_delay:
            raise ValueError(
                f"RetryPolicy delays must satisfy 0 <= base_delay ({self.base_delay}) "
                f"<= max_delay ({self.max_delay})"
            )
        if self.not_found_window < 0:
            raise ValueError(
                f"RetryPolicy.not_found_window must not be negative, not {self.not_found_window}"
            )

    def delay(self, attempt: int) -> float:
        """Full jitter: uniform in [0, min(max_delay, base_delay x 2^attempt)]."""
        return random.uniform(0, min(self.max_delay, self.base_delay * 2 ** min(attempt, 16)))


def call_with_retry(
    fn: Callable[[], T],
    *,
    what: str,
    policy: RetryPolicy,
    stats: RetryStats | None = None,
    cancel: threading.Event | None = None,
    clock: Clock = REAL_CLOCK,
) -> T:
    """`fn()` until it returns, raises something not `Retryable`, or the policy gives up.

    Not-yet-visible failures are retried for `policy.not_found_window` seconds, the others
    `policy.attempts` times in all.
    """
    started = clock.now()
    attempt = 0
    while True:
        attempt += 1
        try:
            return fn()
        except Retryable as exc:
            elapsed = clock.now() - started
            if exc.not_found:
                if elapsed > policy.not_found_window:
                    raise RetriesExhausted(f"{what}: {exc} (still failing after {elapsed:.0f} s)") from exc
            elif attempt >= policy.attempts:
                raise RetriesExhausted(f"{what}: {exc} (gave up after {attempt} attempts)") from exc
            if stats is not None:
                stats.note(exc)
            if clock.wait(cancel, policy.delay(attempt)):
                raise Cancelled(f"{what}: cancelled") from exc
