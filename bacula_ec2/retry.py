"""One retry policy for every AWS call we make ourselves.

botocore's own retries are switched off for the EBS data path (nested retries multiply:
coldsnap #437 counted 36 attempts per block). Here attempts are bounded, backed off with
full jitter, counted for the job log, and interrupted by a cancel.
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
    """Gave up after the policy's attempts; the message says what kept failing."""


class Cancelled(Exception):
    """The job was cancelled while waiting to retry."""


@dataclass
class RetryStats:
    """Counts shared by all threads of a job, reported in the job log."""

    retries: int = 0
    throttled: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def note(self, exc: Retryable) -> None:
        with self._lock:
            self.retries += 1
            if exc.throttled:
                self.throttled += 1


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 8
    base_delay: float = 0.2
    max_delay: float = 20.0
    # "snapshot does not exist" right after creation lasts up to ~2 minutes on AWS
    not_found_window: float = 150.0


def call_with_retry(
    fn: Callable[[], T],
    *,
    what: str,
    policy: RetryPolicy,
    stats: RetryStats | None = None,
    cancel: threading.Event | None = None,
) -> T:
    started = time.monotonic()
    attempt = 0
    while True:
        attempt += 1
        try:
            return fn()
        except Retryable as exc:
            elapsed = time.monotonic() - started
            if exc.not_found:
                if elapsed > policy.not_found_window:
                    raise RetriesExhausted(f"{what}: {exc} (still failing after {elapsed:.0f} s)") from None
            elif attempt >= policy.attempts:
                raise RetriesExhausted(f"{what}: {exc} (gave up after {attempt} attempts)") from None
            if stats is not None:
                stats.note(exc)
            delay = random.uniform(0, min(policy.max_delay, policy.base_delay * 2 ** min(attempt, 16)))
            if cancel is not None:
                if cancel.wait(delay):
                    raise Cancelled(f"{what}: cancelled") from None
            else:
                time.sleep(delay)
