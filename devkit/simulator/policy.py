"""Latency, quotas (throttling) and fault injection: the hook every AWS call passes.

Every AWS call passes through :meth:`Policy.admit` once its operation is known and before it
touches the model. The policy may sleep (latency), raise :class:`~.errors.SimError`
(``RequestThrottledException`` / ``ThrottlingException`` from per-snapshot and per-account
token buckets, ``InternalServerException``), or ask for a damaged response through the
returned :class:`Effects` (connection reset, truncated or corrupted GetSnapshotBlock body).
Errors are rendered by each API layer in its own protocol, so the policy never deals with
wire formats.

Faults are reproducible from ``fault_seed`` independently of thread interleaving: the
decision for a call is a hash of (seed, operation, snapshot, block index, how many times this
same call was seen before), not a draw from a shared random stream.
"""

from __future__ import annotations

import hashlib
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import DropConnection, SimError
from .options import AWS_EC2_BUCKETS, AWS_EC2_RESOURCE_BUCKETS, EBS_OPERATIONS

if TYPE_CHECKING:
    from .model import World

FAULT_KINDS = ("internal_error", "connection_reset", "truncated_body", "corrupt_body")
_BODY_FAULT_OPS = ("GetSnapshotBlock",)


@dataclass(frozen=True, slots=True)
class Call:
    api: str  # "ec2" | "ebs" | "sts"
    operation: str  # e.g. "GetSnapshotBlock"
    region: str
    resource: str | None = None  # e.g. the snapshot id, for per-resource quotas
    detail: str | None = None  # e.g. the block index, to key reproducible faults
    category: str | None = None  # EC2: the request-throttling category of the action
    instances: int = 0  # EC2: instances the call launches/starts/stops/terminates


@dataclass(frozen=True, slots=True)
class Effects:
    """What the policy wants done to an admitted call's response."""

    fault: str | None = None  # "connection_reset" | "truncated_body" | "corrupt_body"


NO_EFFECTS = Effects()


class _Bucket:
    """A token bucket: ``rate`` tokens per second, at most ``capacity`` saved up."""

    __slots__ = ("capacity", "last", "rate", "tokens")

    def __init__(self, rate: float, capacity: float, now: float) -> None:
        self.rate = rate
        self.capacity = capacity
        self.tokens = capacity
        self.last = now

    def refill(self, now: float) -> float:
        self.tokens = min(self.capacity, self.tokens + (now - self.last) * self.rate)
        self.last = now
        return self.tokens


class Policy:
    """Reads the world's options on every call, so knobs take effect immediately."""

    def __init__(self, world: World | None = None) -> None:
        self.world = world
        self._lock = threading.Lock()
        self._buckets: dict[tuple[Any, ...], _Bucket] = {}
        self._seen: Counter[tuple[Any, ...]] = Counter()
        self._rng = random.Random()
        self.requests: Counter[str] = Counter()
        self.throttled: Counter[str] = Counter()
        self.throttled_by_reason: Counter[str] = Counter()
        self.faults: Counter[str] = Counter()
        self.faults_by_operation: Counter[str] = Counter()
        self.not_found: Counter[str] = Counter()
        #: operation -> time.time() its first request since the last reset arrived (before
        #: any latency): the bench's "process start to first GetSnapshotBlock".
        self.first_request_at: dict[str, float] = {}
        if world is not None:
            world.on_reset.append(self.reset)

    def reset(self) -> None:
        """Empty the buckets, fault history and counters (``/_sim/reset``, ``reset_stats``)."""
        with self._lock:
            self._buckets.clear()
            self._seen.clear()
            for counter in (self.requests, self.throttled, self.throttled_by_reason,
                            self.faults, self.faults_by_operation, self.not_found):
                counter.clear()
            self.first_request_at.clear()

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "requests": dict(self.requests),
                "throttled": dict(self.throttled),
                "throttled_by_reason": dict(self.throttled_by_reason),
                "faults": dict(self.faults),
                "faults_by_operation": dict(self.faults_by_operation),
                "not_found_window": dict(self.not_found),
                "first_request_at": dict(self.first_request_at),
            }

    def count_not_found(self, operation: str) -> None:
        with self._lock:
            self.not_found[operation] += 1

    def admit(self, call: Call) -> Effects:
        if self.world is None:
            return NO_EFFECTS
        opts = self.world.opts
        arrived = time.time()
        with self._lock:
            self.requests[call.operation] += 1
            self.first_request_at.setdefault(call.operation, arrived)
        if opts.latency_ms > 0 and (not opts.latency_operations
                                    or call.operation in opts.latency_operations):
            delay = self._rng.gauss(opts.latency_ms, opts.latency_jitter_ms) \
                if opts.latency_jitter_ms else opts.latency_ms
            time.sleep(max(0.0, delay) / 1000.0)
        if opts.throttling and call.api == "ebs":
            self._throttle(call)
        if opts.ec2_request_buckets and call.api == "ec2" and call.category:
            self._ec2_throttle(call)
        if opts.error_rate or opts.reset_rate or opts.truncate_rate or opts.corrupt_rate:
            return self._fault(call)
        return NO_EFFECTS

    def _throttle(self, call: Call) -> None:
        """Per-snapshot then per-account token buckets, with AWS's error for each."""
        opts = self.world.opts  # type: ignore[union-attr]
        op = call.operation
        now = time.monotonic()
        with self._lock:
            wanted: list[tuple[str, _Bucket]] = []
            snap_rate = opts.snapshot_rates.get(op)
            if snap_rate and call.resource:
                wanted.append(("snapshot", self._bucket(
                    ("s", call.region, op, call.resource, snap_rate), snap_rate, now)))
            acct_rate = opts.account_rates.get(op)
            if acct_rate:
                wanted.append(("account", self._bucket(
                    ("a", call.region, op, acct_rate), acct_rate, now)))
            for level, bucket in wanted:
                if bucket.refill(now) < 1.0:
                    err = self._throttle_error(level, op)
                    self.throttled[op] += 1
                    self.throttled_by_reason[err.reason or err.code] += 1
                    raise err
            for _, bucket in wanted:
                bucket.tokens -= 1.0

    def _ec2_throttle(self, call: Call) -> None:
        """EC2 request token buckets: one bucket per (region, action), sized by the action's
        category; RunInstances & co. also take one resource token per instance."""
        opts = self.world.opts  # type: ignore[union-attr]
        sizes = dict(AWS_EC2_BUCKETS)
        if isinstance(opts.ec2_request_buckets, dict):
            sizes.update({k: (v[0], v[1]) for k, v in opts.ec2_request_buckets.items()})
        capacity, rate = sizes[call.category or "mutating"]
        now = time.monotonic()
        with self._lock:
            wanted = [(1.0, self._sized_bucket(
                ("ec2", call.region, call.operation, call.category, capacity, rate),
                capacity, rate, now))]
            resource = AWS_EC2_RESOURCE_BUCKETS.get(call.operation)
            if resource is not None and call.instances > 0:
                wanted.append((float(call.instances), self._sized_bucket(
                    ("ec2-res", call.region, call.operation), *resource, now)))
            for need, bucket in wanted:
                if bucket.refill(now) < need:
                    self.throttled[call.operation] += 1
                    self.throttled_by_reason["RequestLimitExceeded"] += 1
                    raise SimError("RequestLimitExceeded", "Request limit exceeded.", 503)
            for need, bucket in wanted:
                bucket.tokens -= need

    def _sized_bucket(self, key: tuple[Any, ...], capacity: float, rate: float,
                      now: float) -> _Bucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(rate, capacity, now)
        return bucket

    def _bucket(self, key: tuple[Any, ...], rate: float, now: float) -> _Bucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            capacity = max(1.0, rate * self.world.opts.burst_seconds)  # type: ignore[union-attr]
            bucket = self._buckets[key] = _Bucket(rate, capacity, now)
        return bucket

    def _throttle_error(self, level: str, op: str) -> SimError:
        if level == "snapshot":
            return SimError("RequestThrottledException",
                            f"The request rate for {op} on this snapshot is too high.", 400,
                            "RESOURCE_LEVEL_THROTTLE")
        if self.world.opts.account_throttle_error == "ThrottlingException":  # type: ignore[union-attr]
            return SimError("ThrottlingException", "Rate exceeded", 400)
        return SimError("RequestThrottledException",
                        f"The request rate for {op} on this account is too high.", 400,
                        "ACCOUNT_THROTTLED")

    def _fault(self, call: Call) -> Effects:
        opts = self.world.opts  # type: ignore[union-attr]
        if opts.fault_operations:
            if call.operation not in opts.fault_operations:
                return NO_EFFECTS
        elif call.operation not in EBS_OPERATIONS:
            return NO_EFFECTS
        key = (call.operation, call.region, call.resource, call.detail)
        with self._lock:
            nth = self._seen[key]
            self._seen[key] = nth + 1
        digest = hashlib.blake2b(f"{opts.fault_seed}|{key}|{nth}".encode(),
                                 digest_size=8).digest()
        u = int.from_bytes(digest, "big") / 2.0 ** 64
        body_ok = call.operation in _BODY_FAULT_OPS
        kind: str | None = None
        for name, rate in (("internal_error", opts.error_rate),
                           ("connection_reset", opts.reset_rate),
                           ("truncated_body", opts.truncate_rate if body_ok else 0.0),
                           ("corrupt_body", opts.corrupt_rate if body_ok else 0.0)):
            if u < rate:
                kind = name
                break
            u -= rate
        if kind is None:
            return NO_EFFECTS
        with self._lock:
            self.faults[kind] += 1
            self.faults_by_operation[call.operation] += 1
        if kind == "internal_error":
            if call.api == "ec2":
                raise SimError("InternalError", "An internal error has occurred", 500)
            raise SimError("InternalServerException", "An internal error has occurred.", 500)
        if kind == "connection_reset":
            raise DropConnection
        return Effects(kind)
