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

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def update(self, values: dict[str, Any]) -> None:
        """Validate and apply ``values``; ``aws_like`` first, so explicit knobs win."""
        names = {f.name for f in fields(self)}
        unknown = set(values) - names
        if unknown:
            raise SimError("InvalidParameterValue", f"Unknown options: {sorted(unknown)}")
        if "aws_like" in values:
            on = bool(values["aws_like"])
            self.aws_like = on
            self.throttling = on
            self.latency_ms = AWS_LIKE_LATENCY_MS if on else 0.0
            self.latency_jitter_ms = AWS_LIKE_JITTER_MS if on else 0.0
            self.account_rates = dict(AWS_ACCOUNT_RATES)
            self.snapshot_rates = dict(AWS_SNAPSHOT_RATES)
        for name, value in values.items():
            if name == "aws_like":
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
    if name in ("changed_blocks_window", "list_blocks_window", "fault_seed",
                "max_pending_snapshots"):
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
