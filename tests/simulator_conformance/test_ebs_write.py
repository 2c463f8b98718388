"""EBS direct write side (ebs-direct-facts.md 1.3, 1.6): StartSnapshot, PutSnapshotBlock,
CompleteSnapshot, status codes, inheritance, idempotency, encryption rules, checksums and
the Timeout auto-cancel."""

from __future__ import annotations

import hashlib
import time
from typing import TYPE_CHECKING

from devkit.simulator import BLOCK_SIZE

from .conftest import (
    ClientFactory,
    b64sha,
    block,
    error_of,
    linear,
    list_blocks,
    list_changed,
    put,
    read,
)

if TYPE_CHECKING:
    from devkit.simulator.fixtures import RunningSimulator

KMS = "arn:aws:kms:us-east-1:123456789012:key/11111111-2222-3333-4444-555555555555"


def test_write_flow_status_codes_and_visibility(sim: RunningSimulator,
                                                aws: ClientFactory) -> None:
    sim.client.set_options(snapshot_delay=0.3)
    ec2, ebs = aws("ec2"), aws("ebs")
    started = ebs.start_snapshot(VolumeSize=2, Description="restore", Timeout=60,
                                 Tags=[{"Key": "job", "Value": "7"}])
    assert started["ResponseMetadata"]["HTTPStatusCode"] == 201
    assert started["Status"] == "pending" and started["BlockSize"] == BLOCK_SIZE
    assert started["VolumeSize"] == 2 and started["SseType"] == "none"
    sid = started["SnapshotId"]
    data = {0: block(0), 4000: block(4000)}
    for index, payload in data.items():
        resp = put(ebs, sid, index, payload, Progress=50)
        assert resp["ResponseMetadata"]["HTTPStatusCode"] == 201
        assert resp["Checksum"] == b64sha(payload) and resp["ChecksumAlgorithm"] == "SHA256"
    put(ebs, sid, 0, block("0b"))  # overwrite: still one changed block
    data[0] = block("0b")
    # Reading a pending snapshot fails as on AWS.
    assert error_of(lambda: ebs.list_snapshot_blocks(SnapshotId=sid))["Reason"] == \
        "INVALID_SNAPSHOT_ID"
    done = ebs.complete_snapshot(SnapshotId=sid, ChangedBlocksCount=2, Checksum=linear(data),
                                 ChecksumAlgorithm="SHA256", ChecksumAggregationMethod="LINEAR")
    assert done["ResponseMetadata"]["HTTPStatusCode"] == 202
    assert done["Status"] == "pending"
    described = ec2.describe_snapshots(SnapshotIds=[sid])["Snapshots"][0]
    assert described["VolumeId"] == "vol-ffffffff" and described["Description"] == "restore"
    assert described["Tags"] == [{"Key": "job", "Value": "7"}]
    ec2.get_waiter("snapshot_completed").wait(SnapshotIds=[sid],
                                              WaiterConfig={"Delay": 1, "MaxAttempts": 5})
    blocks, _ = list_blocks(ebs, sid)
    assert [(b["BlockIndex"]) for b in blocks] == [0, 4000]
    for b in blocks:
        assert read(ebs, sid, b["BlockIndex"], b["BlockToken"]) == data[b["BlockIndex"]]
    # Puts after completion are refused.
    err = error_of(lambda: put(ebs, sid, 1, block(1)))
    assert err["Error"]["Code"] == "ValidationException"
    # A volume created from it holds the data.
    vol = ec2.create_volume(SnapshotId=sid, AvailabilityZone="us-east-1a")["VolumeId"]
    assert sim.client.read_volume(vol, 4000 * BLOCK_SIZE, BLOCK_SIZE) == block(4000)


def test_put_validation(sim: RunningSimulator, aws: ClientFactory) -> None:
    ebs = aws("ebs")
    sid = ebs.start_snapshot(VolumeSize=1)["SnapshotId"]
    short = b"x" * 4096
    err = error_of(lambda: put(ebs, sid, 0, short))
    assert err["Error"]["Code"] == "ValidationException"
    err = error_of(lambda: put(ebs, sid, 0, block(0), Checksum=b64sha(block(1))))
    assert err["Error"]["Code"] == "ValidationException"
    err = error_of(lambda: put(ebs, sid, 2048, block(0)))  # past the end of 1 GiB
    assert err["Error"]["Code"] == "ValidationException"
    err = error_of(lambda: put(ebs, "snap-0123456789abcdef0", 0, block(0)))
    assert err["Error"]["Code"] == "ResourceNotFoundException"
    # Nothing was stored by the refused puts.
    err = error_of(lambda: ebs.complete_snapshot(SnapshotId=sid, ChangedBlocksCount=1))
    assert err["Error"]["Code"] == "ValidationException"
    assert ebs.complete_snapshot(SnapshotId=sid, ChangedBlocksCount=0)["Status"]


def test_complete_checks_count_and_linear_checksum(sim: RunningSimulator,
                                                   aws: ClientFactory) -> None:
    ebs = aws("ebs")
    sid = ebs.start_snapshot(VolumeSize=1)["SnapshotId"]
    data = {3: block(3), 1: block(1)}
    for index, payload in data.items():
        put(ebs, sid, index, payload)
    err = error_of(lambda: ebs.complete_snapshot(SnapshotId=sid, ChangedBlocksCount=3))
    assert err["Error"]["Code"] == "ValidationException"
    # LINEAR is over raw digests in index order, not insertion order nor base64 strings.
    wrong_order = hashlib.sha256(hashlib.sha256(block(3)).digest()
                                 + hashlib.sha256(block(1)).digest()).digest()
    import base64

    err = error_of(lambda: ebs.complete_snapshot(
        SnapshotId=sid, ChangedBlocksCount=2, Checksum=base64.b64encode(wrong_order).decode(),
        ChecksumAlgorithm="SHA256", ChecksumAggregationMethod="LINEAR"))
    assert err["Error"]["Code"] == "ValidationException"
    ebs.complete_snapshot(SnapshotId=sid, ChangedBlocksCount=2, Checksum=linear(data),
                          ChecksumAlgorithm="SHA256", ChecksumAggregationMethod="LINEAR")
    err = error_of(lambda: ebs.complete_snapshot(SnapshotId=sid, ChangedBlocksCount=2))
    assert err["Error"]["Code"] == "ValidationException"  # already completed


def test_parent_inheritance(sim: RunningSimulator, aws: ClientFactory) -> None:
    sim.client.set_options(snapshot_delay=0)
    ebs = aws("ebs")
    parent = ebs.start_snapshot(VolumeSize=1)["SnapshotId"]
    put(ebs, parent, 0, block(0))
    put(ebs, parent, 1, block(1))
    ebs.complete_snapshot(SnapshotId=parent, ChangedBlocksCount=2)
    started = ebs.start_snapshot(VolumeSize=1, ParentSnapshotId=parent)
    assert started["ParentSnapshotId"] == parent
    child = started["SnapshotId"]
    put(ebs, child, 1, block("1b"))
    put(ebs, child, 9, block(9))
    # ChangedBlocksCount counts the blocks put into the child, not inherited ones.
    ebs.complete_snapshot(SnapshotId=child, ChangedBlocksCount=2,
                          Checksum=linear({1: block("1b"), 9: block(9)}),
                          ChecksumAlgorithm="SHA256", ChecksumAggregationMethod="LINEAR")
    blocks, _ = list_blocks(ebs, child)
    got = {b["BlockIndex"]: read(ebs, child, b["BlockIndex"], b["BlockToken"]) for b in blocks}
    assert got == {0: block(0), 1: block("1b"), 9: block(9)}
    image = bytearray(1 << 30)
    for index, payload in got.items():
        image[index * BLOCK_SIZE:(index + 1) * BLOCK_SIZE] = payload
    assert sim.client.snapshot_sha256(child) == hashlib.sha256(image).hexdigest()
    assert [c["BlockIndex"] for c in list_changed(ebs, child, parent)[0]] == [1, 9]
    # A child may not be smaller than its parent; the parent must exist.
    err = error_of(lambda: ebs.start_snapshot(VolumeSize=1, ParentSnapshotId=
                                              "snap-0123456789abcdef0"))
    assert err["Error"]["Code"] == "ResourceNotFoundException"


def test_client_token_idempotency(sim: RunningSimulator, aws: ClientFactory) -> None:
    ebs = aws("ebs")
    one = ebs.start_snapshot(VolumeSize=1, ClientToken="job-42", Description="d")
    two = ebs.start_snapshot(VolumeSize=1, ClientToken="job-42", Description="d")
    assert one["SnapshotId"] == two["SnapshotId"]
    err = error_of(lambda: ebs.start_snapshot(VolumeSize=2, ClientToken="job-42",
                                              Description="d"))
    assert err["ResponseMetadata"]["HTTPStatusCode"] == 409
    assert err["Error"]["Code"] == "ConflictException"
    three = ebs.start_snapshot(VolumeSize=1)  # boto3 generates a fresh token itself
    assert three["SnapshotId"] != one["SnapshotId"]


def test_encryption_rules(sim: RunningSimulator, aws: ClientFactory) -> None:
    sim.client.set_options(snapshot_delay=0)
    ebs = aws("ebs")
    enc = ebs.start_snapshot(VolumeSize=1, Encrypted=True, KmsKeyArn=KMS)
    assert enc["KmsKeyArn"] == KMS and enc["SseType"] == "sse-kms"
    default = ebs.start_snapshot(VolumeSize=1, Encrypted=True)
    assert default["SseType"] == "sse-ebs" and default["KmsKeyArn"].startswith("arn:aws:kms:")
    err = error_of(lambda: ebs.start_snapshot(VolumeSize=1, KmsKeyArn=KMS))
    assert err["Error"]["Code"] == "ValidationException"
    put(ebs, enc["SnapshotId"], 0, block(0))
    ebs.complete_snapshot(SnapshotId=enc["SnapshotId"], ChangedBlocksCount=1)
    err = error_of(lambda: ebs.start_snapshot(VolumeSize=1, Encrypted=True,
                                              ParentSnapshotId=enc["SnapshotId"]))
    assert err["Error"]["Code"] == "ValidationException"
    child = ebs.start_snapshot(VolumeSize=1, ParentSnapshotId=enc["SnapshotId"])
    assert child["KmsKeyArn"] == KMS  # inherits the parent's encryption
    assert aws("ec2").describe_snapshots(SnapshotIds=[child["SnapshotId"]]
                                         )["Snapshots"][0]["Encrypted"] is True


def test_timeout_auto_cancel(sim: RunningSimulator, aws: ClientFactory) -> None:
    """``timeout_minute`` shortens StartSnapshot's Timeout minutes for the test."""
    sim.client.set_options(timeout_minute=0.02)  # Timeout=10 -> 0.2 s
    ec2, ebs = aws("ec2"), aws("ebs")
    idle = ebs.start_snapshot(VolumeSize=1, Timeout=10)["SnapshotId"]
    busy = ebs.start_snapshot(VolumeSize=1, Timeout=10)["SnapshotId"]
    for i in range(3):
        time.sleep(0.1)
        put(ebs, busy, i, block(i))  # each put restarts the clock
    time.sleep(0.15)
    ebs.complete_snapshot(SnapshotId=busy, ChangedBlocksCount=3)
    err = error_of(lambda: put(ebs, idle, 0, block(0)))
    assert err["Error"]["Code"] == "ValidationException"
    assert ec2.describe_snapshots(SnapshotIds=[idle])["Snapshots"][0]["State"] == "error"


def test_pending_snapshot_quota(sim: RunningSimulator, aws: ClientFactory) -> None:
    sim.client.set_options(max_pending_snapshots=2)
    ebs = aws("ebs")
    ebs.start_snapshot(VolumeSize=1)
    ebs.start_snapshot(VolumeSize=1)
    err = error_of(lambda: ebs.start_snapshot(VolumeSize=1))
    assert err["Error"]["Code"] == "ConcurrentLimitExceededException"


def test_ec2_snapshots_readable_and_writes_between_snapshots(sim: RunningSimulator,
                                                             aws: ClientFactory) -> None:
    sim.client.set_options(snapshot_delay=0)
    ec2, ebs = aws("ec2"), aws("ebs")
    inst = sim.client.create_instance("db", [{"size_gib": 1, "device": "/dev/xvda"}])
    vol = inst["volume_ids"][0]
    sim.client.write_volume(vol, 123, b"hello")  # unaligned write
    snap = ec2.create_snapshot(VolumeId=vol)["SnapshotId"]
    sim.client.write_volume(vol, 123, b"HELLO")
    blocks, _ = list_blocks(ebs, snap)
    assert [b["BlockIndex"] for b in blocks] == [0]
    data = read(ebs, snap, 0, blocks[0]["BlockToken"])
    assert data[123:128] == b"hello" and data[:123] == bytes(123)
    assert sim.client.read_volume(vol, 123, 5) == b"HELLO"
