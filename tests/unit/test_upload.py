"""The EBS direct write engine against a fake EBS client: LINEAR checksum in index order
whatever the completion order, zero blocks skipped, bounded reads, retries, failures."""

from __future__ import annotations

import base64
import hashlib
import random
import threading
import time
from typing import Any

import pytest
from botocore.exceptions import ClientError
from hypothesis import given, settings
from hypothesis import strategies as st

from bacula_ec2.aws import AwsError
from bacula_ec2.aws.upload import (
    BLOCK_SIZE,
    TIMEOUT_MAX_MINUTES,
    TIMEOUT_MIN_MINUTES,
    SnapshotWriter,
    start_timeout_minutes,
    upload_fits,
)
from bacula_ec2.retry import RetriesExhausted, RetryPolicy, RetryStats

FAST = RetryPolicy(attempts=3, base_delay=0.001, max_delay=0.01, not_found_window=1.0)


def client_error(code: str, status: int, op: str) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, op
    )


class FakeEbs:
    def __init__(self) -> None:
        self.blocks: dict[int, bytes] = {}
        self.lock = threading.Lock()
        self.completed: dict[str, Any] = {}
        self.fail: dict[int, list[Exception]] = {}
        self.started: list[dict[str, Any]] = []

    def start_snapshot(self, **kw: Any) -> dict[str, Any]:
        self.started.append(kw)
        return {"SnapshotId": "snap-new", "Status": "pending"}

    def put_snapshot_block(self, **kw: Any) -> dict[str, Any]:
        index = kw["BlockIndex"]
        with self.lock:
            errs = self.fail.get(index)
            if errs:
                raise errs.pop(0)
        time.sleep(random.uniform(0, 0.003))  # completions out of order
        data = kw["BlockData"]
        assert kw["DataLength"] == BLOCK_SIZE == len(data)
        assert kw["Checksum"] == base64.b64encode(hashlib.sha256(data).digest()).decode()
        with self.lock:
            self.blocks[index] = data
        return {}

    def complete_snapshot(self, **kw: Any) -> dict[str, Any]:
        self.completed = kw
        return {"Status": "pending"}


class FakeAws:
    def __init__(self) -> None:
        self.ebs = FakeEbs()
        self.stats = RetryStats()
        self.cancel: threading.Event | None = None
        self.region = "us-east-1"


def block(index: int) -> bytes:
    return hashlib.sha256(str(index).encode()).digest() * (BLOCK_SIZE // 32)


def test_blocks_put_with_linear_checksum_in_index_order_and_zeros_skipped() -> None:
    aws = FakeAws()
    indexes = [0, 3, 4, 9, 100, 101, 5000]
    zero = {4, 101}
    in_flight = 0
    peak = 0
    lock = threading.Lock()

    def read(i: int) -> bytes:
        nonlocal in_flight, peak
        with lock:
            in_flight += 1
            peak = max(peak, in_flight)
        time.sleep(0.002)
        with lock:
            in_flight -= 1
        return bytes(BLOCK_SIZE) if i in zero else block(i)

    writer = SnapshotWriter(aws, 4, rate=None, policy=FAST)  # type: ignore[arg-type]
    sid = writer.start(8, client_token="tok", description="d", tags={"k": "v"})
    done: list[int] = []
    result = writer.upload(sid, iter(indexes), read, progress=done.append)
    data_indexes = [i for i in indexes if i not in zero]
    assert sorted(aws.ebs.blocks) == data_indexes
    linear = hashlib.sha256(b"".join(hashlib.sha256(block(i)).digest() for i in data_indexes)).digest()
    assert result.linear_checksum == base64.b64encode(linear).decode()
    assert (result.blocks, result.skipped_zero) == (len(data_indexes), 2)
    assert aws.ebs.completed == {
        "SnapshotId": "snap-new",
        "ChangedBlocksCount": len(data_indexes),
        "Checksum": result.linear_checksum,
        "ChecksumAlgorithm": "SHA256",
        "ChecksumAggregationMethod": "LINEAR",
    }
    assert done[-1] == len(indexes)
    assert peak <= 4, "reads (memory) bounded by the workers"
    assert aws.ebs.started[0]["ClientToken"] == "tok" and aws.ebs.started[0]["Tags"] == [
        {"Key": "k", "Value": "v"}
    ]


def test_not_found_after_start_and_throttling_are_retried() -> None:
    aws = FakeAws()
    aws.ebs.fail = {
        1: [client_error("ResourceNotFoundException", 404, "PutSnapshotBlock")] * 4,
        2: [client_error("RequestThrottledException", 400, "PutSnapshotBlock")],
    }
    writer = SnapshotWriter(aws, 2, rate=None, policy=FAST)  # type: ignore[arg-type]
    result = writer.upload("snap-new", [1, 2, 3], block)
    assert result.blocks == 3 and sorted(aws.ebs.blocks) == [1, 2, 3]
    assert aws.stats.retries == 5 and aws.stats.throttled == 1


def test_a_block_that_cannot_be_put_fails_the_upload() -> None:
    aws = FakeAws()
    aws.ebs.fail = {7: [client_error("InternalServerException", 500, "PutSnapshotBlock")] * 10}
    writer = SnapshotWriter(aws, 2, rate=None, policy=FAST)  # type: ignore[arg-type]
    with pytest.raises(RetriesExhausted, match="PutSnapshotBlock snap-new block 7"):
        writer.upload("snap-new", range(20), block)
    assert not aws.ebs.completed
    aws.ebs.fail = {3: [client_error("ValidationException", 400, "PutSnapshotBlock")]}
    with pytest.raises(AwsError, match="ValidationException"):
        writer.upload("snap-new", range(5), block)


def test_indexes_must_ascend() -> None:
    writer = SnapshotWriter(FakeAws(), 2, rate=None, policy=FAST)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ascend"):
        writer.upload("snap-new", [3, 1], block)


def test_empty_volume_completes_without_checksum() -> None:
    aws = FakeAws()
    writer = SnapshotWriter(aws, 2, rate=None, policy=FAST)  # type: ignore[arg-type]
    result = writer.upload("snap-new", [], block)
    assert result.blocks == 0 and aws.ebs.completed == {"SnapshotId": "snap-new", "ChangedBlocksCount": 0}


# ---------------------------------------------------------------- StartSnapshot Timeout

MIB = 1 << 20


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0, max_value=64 << 40), st.integers(min_value=1, max_value=1 << 30))
def test_start_timeout_covers_the_upload_at_the_slowest_rate(data: int, rate: int) -> None:
    """Within StartSnapshot's 10..4320 minutes; when not cut at 72 h, the whole upload at the
    slowest rate fits in it with at least 30 minutes and half the upload's time to spare (so
    it holds counted from StartSnapshot as well as from the last put); more data never gets
    less time."""
    minutes = start_timeout_minutes(data, rate)
    assert TIMEOUT_MIN_MINUTES <= minutes <= TIMEOUT_MAX_MINUTES
    upload_minutes = data / rate / 60
    if upload_fits(data, rate):
        assert minutes >= 30 + 1.5 * upload_minutes
        assert minutes < 30 + 1.5 * upload_minutes + 1
    else:
        assert minutes == TIMEOUT_MAX_MINUTES and 30 + 1.5 * upload_minutes > TIMEOUT_MAX_MINUTES
    assert start_timeout_minutes(data + BLOCK_SIZE, rate) >= minutes


def test_start_timeout_examples() -> None:
    assert start_timeout_minutes(0, 4 * MIB) == 30
    assert start_timeout_minutes(12 * MIB, 1024) == 338  # 12 MiB at 1 KiB/s: 204.8 min x 1.5 + 30
    assert start_timeout_minutes(100 << 30, 4 * MIB) == 670  # 100 GiB at 4 MiB/s: 426.7 min
    assert start_timeout_minutes(2 << 40, 4 * MIB) == TIMEOUT_MAX_MINUTES
    assert not upload_fits(2 << 40, 4 * MIB) and upload_fits(1 << 40, 8 * MIB)
    with pytest.raises(ValueError, match="positive"):
        start_timeout_minutes(1, 0)


def test_start_sends_the_timeout_and_refuses_one_aws_would() -> None:
    aws = FakeAws()
    writer = SnapshotWriter(aws, 2, policy=FAST)  # type: ignore[arg-type]
    writer.start(1, client_token="t", description="d", tags={}, timeout_minutes=338)
    assert aws.ebs.started[-1]["Timeout"] == 338
    for bad in (9, 4321):
        with pytest.raises(ValueError, match=r"outside 10\.\.4320"):
            writer.start(1, client_token="t", description="d", tags={}, timeout_minutes=bad)
    assert len(aws.ebs.started) == 1
