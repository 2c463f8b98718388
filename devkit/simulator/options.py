"""Every knob of the simulator, with its default, in one place (``/_sim/options``).

Defaults keep the test suite fast: no latency, no throttling, no faults, snapshots complete
after ``snapshot_delay``. ``aws_like=True`` switches on AWS's default EBS direct quotas and
a latency distribution around 50 ms; the other knobs shorten AWS's long lifetimes (token
expiry, StartSnapshot Timeout) so tests can reach them in seconds.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from .errors import SimError

# Default EBS direct quotas (requests per second), from the AWS quota table
# (ebs-direct-facts.md section 1.4). Account buckets are per region.
AWS_ACCOUNT_RATES: dict[str, float] = {
    "GetSnapshotBlock": 1000.0, "PutSnapshotBlock": 1000.0,
    "ListSnapshotBlocks": 50.0, "ListChangedBlocks": 50.0,
    "StartSnapshot": 10.0, "CompleteSnapshot": 10.0,
}
AWS_SNAPSHOT_RATES: dict[str, float] = {"GetSnapshotBlock": 1000.0, "PutSnapshotBlock": 1000.0}
EBS_OPERATIONS = ("ListSnapshotBlocks", "ListChangedBlocks", "GetSnapshotBlock",
                  "StartSnapshot", "PutSnapshotBlock", "CompleteSnapshot")
AWS_LIKE_LATENCY_MS = 50.0
AWS_LIKE_JITTER_MS = 10.0

# EC2 request token buckets per action category: (bucket capacity, refill tokens/s), from
# the EC2 "Request throttling" page (docs/SIMULATOR.md, "Hard mode"). Each action has its
# own bucket of its category's size.
EC2_BUCKET_CATEGORIES = ("non_mutating", "unfiltered_non_mutating", "mutating",
                         "resource_intensive")
AWS_EC2_BUCKETS: dict[str, tuple[float, float]] = {
    "non_mutating": (100.0, 20.0),
    "unfiltered_non_mutating": (50.0, 10.0),
    "mutating": (200.0, 5.0),
    "resource_intensive": (50.0, 5.0),
}
# Resource token buckets (instances per call), same page: (capacity, refill/s).
AWS_EC2_RESOURCE_BUCKETS: dict[str, tuple[float, float]] = {
    "RunInstances": (1000.0, 2.0), "StartInstances": (1000.0, 2.0),
    "StopInstances": (1000.0, 20.0), "TerminateInstances": (1000.0, 20.0),
}

# aws_hard: every hard-mode knob at its realistic value (sources in docs/SIMULATOR.md).
AWS_HARD: dict[str, Any] = {
    "ec2_not_found_window": 3.0,
    "snapshot_mib_per_s": 100.0,
    "pending_snapshots_per_region": 100,
    "concurrent_snapshots_per_volume": 5,
    "snapshot_interval_per_volume": 15.0,
    "ec2_request_buckets": True,
    "max_filter_values": 200,
    # transport (S2)
    "tls": True,
    "clock_offset_s": 30.0,
    "start_snapshot_timeout": "absolute",
    "kms": True,
}


@dataclass
class Options:
    """Current knob values; see docs/SIMULATOR.md for what each one models."""

    snapshot_delay: float = 0.3
    not_found_window: float = 0.0
    block_token_ttl: float = 7 * 24 * 3600.0
    page_token_ttl: float = 3600.0
    timeout_minute: float = 60.0
    changed_blocks_window: int = 1024
    list_blocks_window: int = 0
    throttling: bool = False
    account_rates: dict[str, float] = field(default_factory=lambda: dict(AWS_ACCOUNT_RATES))
    snapshot_rates: dict[str, float] = field(default_factory=lambda: dict(AWS_SNAPSHOT_RATES))
    burst_seconds: float = 1.0
    account_throttle_error: str = "ThrottlingException"
    latency_ms: float = 0.0
    latency_jitter_ms: float = 0.0
    latency_operations: list[str] = field(default_factory=list)
    fault_seed: int = 0
    error_rate: float = 0.0
    reset_rate: float = 0.0
    truncate_rate: float = 0.0
    corrupt_rate: float = 0.0
    fault_operations: list[str] = field(default_factory=list)
    max_pending_snapshots: int = 100
    deny_tags: list[str] = field(default_factory=list)
    aws_like: bool = False
    # EC2 hard mode (0/False = off)
    ec2_not_found_window: float = 0.0
    snapshot_mib_per_s: float = 0.0
    pending_snapshots_per_region: int = 0
    concurrent_snapshots_per_volume: int = 0
    snapshot_interval_per_volume: float = 0.0
    ec2_request_buckets: bool | dict[str, list[float]] = False
    max_filter_values: int = 0
    aws_hard: bool = False
    # transport (S2)
    tls: bool = False
    clock_offset_s: float = 0.0
    start_snapshot_timeout: str = "inactivity"
    kms: bool = False
    kms_denied_keys: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def update(self, values: dict[str, Any]) -> None:
        """Validate and apply ``values``; ``aws_like``/``aws_hard`` first, so explicit knobs
        win. ``aws_hard`` implies ``aws_like``; turning it off restores every hard knob's
        default (and turns ``aws_like`` off)."""
        names = {f.name for f in fields(self)}
        unknown = set(values) - names
        if unknown:
            raise SimError("InvalidParameterValue", f"Unknown options: {sorted(unknown)}")
        if "aws_hard" in values:
            hard = bool(values["aws_hard"])
            self.aws_hard = hard
            values = {"aws_like": hard, **values}
            defaults = Options()
            for name, value in AWS_HARD.items():
                setattr(self, name, _check(name, value) if hard else getattr(defaults, name))
        if "aws_like" in values:
            on = bool(values["aws_like"])
            self.aws_like = on
            self.throttling = on
            self.latency_ms = AWS_LIKE_LATENCY_MS if on else 0.0
            self.latency_jitter_ms = AWS_LIKE_JITTER_MS if on else 0.0
            self.account_rates = dict(AWS_ACCOUNT_RATES)
            self.snapshot_rates = dict(AWS_SNAPSHOT_RATES)
        for name, value in values.items():
            if name in ("aws_like", "aws_hard"):
                continue
            setattr(self, name, _check(name, value))


def _check(name: str, value: Any) -> Any:
    def bad(why: str) -> SimError:
        return SimError("InvalidParameterValue", f"option {name}: {why} (got {value!r})")

    if name in ("account_rates", "snapshot_rates"):
        if not isinstance(value, dict) or not all(
                k in EBS_OPERATIONS and isinstance(v, int | float) and v > 0
                for k, v in value.items()):
            raise bad("a map of EBS direct operation -> positive requests per second")
        return {k: float(v) for k, v in value.items()}
    if name in ("latency_operations", "fault_operations"):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise bad("a list of operation names")
        return list(value)
    if name == "deny_tags":
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise bad("a list of tag keys or key=value pairs")
        return list(value)
    if name == "account_throttle_error":
        if value not in ("ThrottlingException", "RequestThrottledException"):
            raise bad("ThrottlingException or RequestThrottledException")
        return value
    if name == "throttling":
        return bool(value)
    if name in ("tls", "kms"):
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if name == "ec2_request_buckets":
        if isinstance(value, bool):
            return value
        if not isinstance(value, dict) or not all(
                k in EC2_BUCKET_CATEGORIES and isinstance(v, list | tuple) and len(v) == 2
                and all(isinstance(x, int | float) and not isinstance(x, bool) and x > 0
                        for x in v) for k, v in value.items()):
            raise bad(f"true/false or a map of {'/'.join(EC2_BUCKET_CATEGORIES)} -> "
                      "[bucket capacity, refill per second] (both > 0)")
        return {k: [float(v[0]), float(v[1])] for k, v in value.items()}
    if name == "kms_denied_keys":
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise bad("a list of KMS key ARNs")
        return list(value)
    if name == "start_snapshot_timeout":
        if value not in ("absolute", "inactivity"):
            raise bad("absolute or inactivity")
        return value
    if name == "clock_offset_s":
        if not isinstance(value, int | float) or isinstance(value, bool) \
                or not math.isfinite(value):
            raise bad("a number of seconds (may be negative)")
        return float(value)
    if name in ("changed_blocks_window", "list_blocks_window", "fault_seed",
                "max_pending_snapshots", "pending_snapshots_per_region",
                "concurrent_snapshots_per_volume", "max_filter_values"):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise bad("an integer >= 0")
        return value
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(
            value) or value < 0:
        raise bad("a number >= 0")
    if name.endswith("_rate") and value > 1:
        raise bad("a probability in [0, 1]")
    if name in ("block_token_ttl", "page_token_ttl", "timeout_minute", "burst_seconds") \
            and value <= 0:
        raise bad("a number > 0")
    return float(value)
