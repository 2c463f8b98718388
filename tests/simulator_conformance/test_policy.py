"""Quotas, latency and faults (ebs-direct-facts.md 1.4-1.5): the errors botocore must see
and classify as AWS's, reproducible fault injection, and the counters benchmarks report."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import pytest
from botocore.exceptions import ClientError, ConnectionClosedError, ResponseStreamingError
from botocore.retries.standard import RetryContext, ThrottledRetryableChecker
from urllib3.exceptions import ProtocolError

from devkit.simulator import BLOCK_SIZE

from .conftest import ClientFactory, b64sha, block, error_of, list_blocks

if TYPE_CHECKING:
    from devkit.simulator.fixtures import RunningSimulator


def _snapshot(sim: RunningSimulator, aws: ClientFactory, nblocks: int = 4) -> tuple[str, Any]:
    sim.client.set_options(snapshot_delay=0)
    vol = sim.client.create_volume(1)
    for i in range(nblocks):
        sim.client.write_volume(vol, i * BLOCK_SIZE, block(i))
    snap = aws("ec2").create_snapshot(VolumeId=vol)["SnapshotId"]
    blocks, _ = list_blocks(aws("ebs"), snap)
    return snap, blocks


def _is_throttle(err: ClientError) -> bool:
    """botocore's own standard-retry classifier, as the product's SDK would use it."""
    context = RetryContext(attempt_number=1, parsed_response=err.response)
    return bool(ThrottledRetryableChecker().is_retryable(context))


def test_per_snapshot_and_account_throttles(sim: RunningSimulator, aws: ClientFactory) -> None:
    snap, blocks = _snapshot(sim, aws)
    ebs = aws("ebs")
    sim.client.set_options(throttling=True, snapshot_rates={"GetSnapshotBlock": 1},
                           account_rates={"ListSnapshotBlocks": 1}, burst_seconds=1)
    errors: list[ClientError] = []
    for _ in range(12):
        try:
            ebs.get_snapshot_block(SnapshotId=snap, BlockIndex=0,
                                   BlockToken=blocks[0]["BlockToken"])["BlockData"].read()
        except ClientError as err:
            errors.append(err)
    assert errors, "the per-snapshot bucket never ran dry"
    resp = errors[0].response
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert resp["Error"]["Code"] == "RequestThrottledException"
    assert resp["Reason"] == "RESOURCE_LEVEL_THROTTLE"
    assert _is_throttle(errors[0])

    account: list[ClientError] = []
    for _ in range(8):
        try:
            ebs.list_snapshot_blocks(SnapshotId=snap)
        except ClientError as err:
            account.append(err)
    assert account and account[0].response["Error"]["Code"] == "ThrottlingException"
    assert _is_throttle(account[0])
    sim.client.set_options(account_throttle_error="RequestThrottledException")
    err = error_of(lambda: [ebs.list_snapshot_blocks(SnapshotId=snap) for _ in range(8)])
    assert err["Error"]["Code"] == "RequestThrottledException"
    assert err["Reason"] == "ACCOUNT_THROTTLED"

    stats = sim.client.stats()
    assert stats["throttled"]["GetSnapshotBlock"] == len(errors)
    assert stats["throttled_by_reason"]["RESOURCE_LEVEL_THROTTLE"] == len(errors)
    assert stats["throttled_by_reason"]["ThrottlingException"] == len(account)
    assert stats["requests"]["GetSnapshotBlock"] == 12
    # Buckets refill at their rate.
    time.sleep(1.0)
    ebs.get_snapshot_block(SnapshotId=snap, BlockIndex=0, BlockToken=blocks[0]["BlockToken"])


def test_standard_retry_rides_out_throttling(sim: RunningSimulator, aws: ClientFactory) -> None:
    snap, blocks = _snapshot(sim, aws)
    sim.client.set_options(throttling=True, snapshot_rates={"GetSnapshotBlock": 20},
                           burst_seconds=0.1)
    ebs = aws("ebs", retries={"mode": "standard", "max_attempts": 10})
    for _ in range(10):
        data = ebs.get_snapshot_block(SnapshotId=snap, BlockIndex=1,
                                      BlockToken=blocks[1]["BlockToken"])["BlockData"].read()
        assert data == block(1)
    assert sim.client.stats()["throttled"].get("GetSnapshotBlock", 0) > 0


def test_aws_like_defaults_and_latency(sim: RunningSimulator, aws: ClientFactory) -> None:
    snap, blocks = _snapshot(sim, aws, 1)
    opts = sim.client.set_options(aws_like=True)
    assert opts["throttling"] is True
    assert opts["account_rates"] == {
        "GetSnapshotBlock": 1000, "PutSnapshotBlock": 1000, "ListSnapshotBlocks": 50,
        "ListChangedBlocks": 50, "StartSnapshot": 10, "CompleteSnapshot": 10}
    assert opts["snapshot_rates"] == {"GetSnapshotBlock": 1000, "PutSnapshotBlock": 1000}
    ebs = aws("ebs")
    started = time.monotonic()
    for _ in range(5):
        ebs.get_snapshot_block(SnapshotId=snap, BlockIndex=0,
                               BlockToken=blocks[0]["BlockToken"])["BlockData"].read()
    assert (time.monotonic() - started) / 5 > 0.025
    sim.client.reset()
    assert sim.client.options()["aws_like"] is False


def test_internal_error_and_reset(sim: RunningSimulator, aws: ClientFactory) -> None:
    snap, _blocks = _snapshot(sim, aws)
    ebs = aws("ebs")
    sim.client.set_options(error_rate=1.0)
    err = error_of(lambda: ebs.list_snapshot_blocks(SnapshotId=snap))
    assert err["ResponseMetadata"]["HTTPStatusCode"] == 500
    assert err["Error"]["Code"] == "InternalServerException"
    sim.client.set_options(error_rate=0.0, reset_rate=1.0)
    with pytest.raises((ConnectionClosedError, ProtocolError, ConnectionError)):
        ebs.list_snapshot_blocks(SnapshotId=snap)
    sim.client.set_options(reset_rate=0.0)
    assert ebs.list_snapshot_blocks(SnapshotId=snap)["Blocks"]  # the pool recovered
    faults = sim.client.stats()["faults"]
    assert faults == {"internal_error": 1, "connection_reset": 1}


def test_truncated_and_corrupt_bodies(sim: RunningSimulator, aws: ClientFactory) -> None:
    snap, blocks = _snapshot(sim, aws)
    ebs = aws("ebs")
    tok = blocks[2]["BlockToken"]
    sim.client.set_options(truncate_rate=1.0)
    resp = ebs.get_snapshot_block(SnapshotId=snap, BlockIndex=2, BlockToken=tok)
    assert resp["DataLength"] == BLOCK_SIZE
    with pytest.raises((ResponseStreamingError, ProtocolError, ConnectionError)):
        resp["BlockData"].read()
    sim.client.set_options(truncate_rate=0.0, corrupt_rate=1.0)
    resp = ebs.get_snapshot_block(SnapshotId=snap, BlockIndex=2, BlockToken=tok)
    body = resp["BlockData"].read()
    assert len(body) == BLOCK_SIZE and resp["Checksum"] == b64sha(block(2))
    assert b64sha(body) != resp["Checksum"]  # the client must catch it
    sim.client.set_options(corrupt_rate=0.0)
    body = ebs.get_snapshot_block(SnapshotId=snap, BlockIndex=2, BlockToken=tok)["BlockData"]
    assert body.read() == block(2)


def _fault_pattern(sim: RunningSimulator, aws: ClientFactory, snap: str, blocks: Any,
                   seed: int) -> list[str]:
    sim.client.set_options(fault_seed=seed, error_rate=0.3, corrupt_rate=0.2)
    ebs = aws("ebs")
    out = []
    for attempt in range(3):
        for b in blocks:
            try:
                resp = ebs.get_snapshot_block(SnapshotId=snap, BlockIndex=b["BlockIndex"],
                                              BlockToken=b["BlockToken"])
                body = resp["BlockData"].read()
                out.append("ok" if b64sha(body) == resp["Checksum"] else "corrupt")
            except ClientError as err:
                out.append(err.response["Error"]["Code"])
        del attempt
    return out


def test_faults_reproducible_from_seed(sim: RunningSimulator, aws: ClientFactory) -> None:
    snap, blocks = _snapshot(sim, aws, 8)
    one = _fault_pattern(sim, aws, snap, blocks, seed=7)
    sim.client.reset_stats()  # fault history restarts; options stay
    two = _fault_pattern(sim, aws, snap, blocks, seed=7)
    sim.client.reset_stats()
    other = _fault_pattern(sim, aws, snap, blocks, seed=8)
    assert one == two
    assert one != other
    assert {"ok", "corrupt", "InternalServerException"} <= set(one) | set(other)


def test_fault_operations_filter(sim: RunningSimulator, aws: ClientFactory) -> None:
    snap, _ = _snapshot(sim, aws)
    sim.client.set_options(error_rate=1.0, fault_operations=["GetSnapshotBlock"])
    assert aws("ebs").list_snapshot_blocks(SnapshotId=snap)["Blocks"]
    sim.client.set_options(fault_operations=["DescribeSnapshots"])
    err = error_of(lambda: aws("ec2").describe_snapshots(SnapshotIds=[snap]))
    assert err["Error"]["Code"] == "InternalError"
