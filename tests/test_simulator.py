"""Conformance tests: plain boto3 against the simulator subprocess.

They prove that botocore parses every response (names, lists, errors) the way it parses
AWS's, and that the simulator keeps the EBS direct semantics the backend relies on.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from hypothesis import given, settings
from hypothesis import strategies as st

from devkit.simulator import BLOCK_SIZE, SimulatorClient, World, start_in_thread, stop

if TYPE_CHECKING:
    from devkit.simulator.fixtures import RunningSimulator

# The `simulator` / `sim` fixtures come from tests/conftest.py (devkit.simulator.fixtures).

ZERO_BLOCK_SHA256_B64 = "B4VNL+8pega6gWheZgwzLeNtXRjVRpJ9MNqtbX/aFUE="
ONE_GIB_OF_ZEROS_SHA256 = "49bc20df15e412a64472421e13fe86ff1c5165e18b2afccf160d4dc19fe68a14"
ClientFactory = Callable[..., Any]


@pytest.fixture(scope="session")
def _boto_session() -> boto3.session.Session:
    return boto3.session.Session()


@pytest.fixture
def aws(sim: RunningSimulator, _boto_session: boto3.session.Session
        ) -> Iterator[ClientFactory]:
    """``aws("ec2", region=..., **config)`` -> a boto3 client aimed at the simulator."""
    cache: dict[tuple[Any, ...], Any] = {}

    def make(service: str, region: str = "us-east-1", **config: Any) -> Any:
        key = (service, region, tuple(sorted(config.items())))
        if key not in cache:
            cache[key] = _boto_session.client(
                service, config=Config(retries={"max_attempts": 1}, **config),
                **sim.boto3_kwargs(region))
        return cache[key]

    yield make


def _instance(client: SimulatorClient, name: str = "web1", sizes: tuple[int, ...] = (1, 1),
              **kwargs: Any) -> dict[str, Any]:
    devices = ["/dev/sda1", "/dev/xvdf", "/dev/xvdg", "/dev/xvdh"]
    return client.create_instance(
        name, [{"size_gib": s, "device": d} for s, d in zip(sizes, devices, strict=False)],
        **kwargs)


def _error(call: Callable[[], Any]) -> dict[str, Any]:
    with pytest.raises(ClientError) as info:
        call()
    response: dict[str, Any] = info.value.response
    return response


def _list_all(ebs: Any, snapshot_id: str, **kwargs: Any) -> tuple[list[int], list[int]]:
    """All block indexes via the NextToken loop, and the size of each page."""
    indexes: list[int] = []
    sizes: list[int] = []
    token: str | None = None
    while True:
        args = dict(kwargs, SnapshotId=snapshot_id)
        if token:
            args["NextToken"] = token
        page = ebs.list_snapshot_blocks(**args)
        assert page["BlockSize"] == BLOCK_SIZE
        indexes += [b["BlockIndex"] for b in page["Blocks"]]
        sizes.append(len(page["Blocks"]))
        token = page.get("NextToken")
        if not token:
            return indexes, sizes


# --------------------------------------------------------------------------- EC2


def test_describe_instances_by_id_and_name_tag(sim: RunningSimulator, aws: ClientFactory
                                               ) -> None:
    made = _instance(sim.client, "web1", (1, 2), tags={"env": "prod"}, instance_type="m5.large")
    _instance(sim.client, "db1", (1,))
    ec2 = aws("ec2")

    by_id = ec2.describe_instances(InstanceIds=[made["instance_id"]])
    [reservation] = by_id["Reservations"]
    [inst] = reservation["Instances"]
    assert inst["InstanceId"] == made["instance_id"]
    assert inst["InstanceType"] == "m5.large"
    assert inst["State"] == {"Code": 16, "Name": "running"}
    assert inst["RootDeviceName"] == "/dev/sda1"
    assert inst["Placement"]["AvailabilityZone"] == "us-east-1a"
    assert {"Key": "Name", "Value": "web1"} in inst["Tags"]
    assert [(m["DeviceName"], m["Ebs"]["VolumeId"]) for m in inst["BlockDeviceMappings"]] == \
        list(zip(made["devices"], made["volume_ids"], strict=True))
    assert inst["NetworkInterfaces"][0]["PrivateIpAddress"] == inst["PrivateIpAddress"]
    assert inst["SecurityGroups"][0]["GroupName"] == "default"
    assert inst["MetadataOptions"]["HttpTokens"] == "required"
    assert by_id["ResponseMetadata"]["RequestId"]

    by_tag = ec2.describe_instances(Filters=[{"Name": "tag:Name", "Values": ["web1"]}])
    assert [i["InstanceId"] for r in by_tag["Reservations"] for i in r["Instances"]] == \
        [made["instance_id"]]
    wild = ec2.describe_instances(Filters=[{"Name": "tag:Name", "Values": ["*1"]},
                                           {"Name": "instance-state-name",
                                            "Values": ["running"]}])
    assert len(wild["Reservations"]) == 2
    assert ec2.describe_instances(Filters=[{"Name": "tag-key", "Values": ["env"]}]
                                  )["Reservations"][0]["Instances"][0]["InstanceId"] == \
        made["instance_id"]
    assert ec2.describe_instances(Filters=[{"Name": "instance-id", "Values": ["i-0"]}]
                                  )["Reservations"] == []
    paginator = ec2.get_paginator("describe_instances")
    pages = list(paginator.paginate(PaginationConfig={"PageSize": 5}))
    assert sum(len(r["Instances"]) for p in pages for r in p["Reservations"]) == 2


def test_instance_errors(sim: RunningSimulator, aws: ClientFactory) -> None:
    ec2 = aws("ec2")
    err = _error(lambda: ec2.describe_instances(InstanceIds=["i-0123456789abcdef0"]))
    assert err["Error"]["Code"] == "InvalidInstanceID.NotFound"
    assert "i-0123456789abcdef0" in err["Error"]["Message"]
    assert err["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert err["ResponseMetadata"]["RequestId"]
    err = _error(lambda: ec2.describe_instances(InstanceIds=["not-an-id"]))
    assert err["Error"]["Code"] == "InvalidInstanceID.Malformed"
    err = _error(lambda: ec2.describe_instances(Filters=[{"Name": "bogus", "Values": ["x"]}]))
    assert err["Error"]["Code"] == "InvalidParameterValue"
    err = _error(lambda: ec2.create_snapshots(
        InstanceSpecification={"InstanceId": "i-0123456789abcdef0"}))
    assert err["Error"]["Code"] == "InvalidInstanceID.NotFound"
    err = _error(lambda: ec2.describe_regions(DryRun=True))
    assert err["Error"]["Code"] == "DryRunOperation"


def test_describe_volumes_and_attributes(sim: RunningSimulator, aws: ClientFactory) -> None:
    made = _instance(sim.client, "web1", (1, 3), user_data="#!/bin/sh\necho hi\n")
    loose = sim.client.create_volume(4, volume_type="io2", iops=5000, encrypted=True)
    ec2 = aws("ec2")

    vols = ec2.describe_volumes(Filters=[{"Name": "attachment.instance-id",
                                          "Values": [made["instance_id"]]}])["Volumes"]
    assert sorted(v["VolumeId"] for v in vols) == sorted(made["volume_ids"])
    data = next(v for v in vols if v["VolumeId"] == made["volume_ids"][1])
    assert data["Size"] == 3 and data["VolumeType"] == "gp3" and data["State"] == "in-use"
    assert data["Attachments"][0]["Device"] == "/dev/xvdf"
    [io2] = ec2.describe_volumes(VolumeIds=[loose])["Volumes"]
    assert (io2["Iops"], io2["Encrypted"], io2["State"]) == (5000, True, "available")
    assert io2["KmsKeyId"].startswith("arn:aws:kms:us-east-1:")
    err = _error(lambda: ec2.describe_volumes(VolumeIds=["vol-0123456789abcdef0"]))
    assert err["Error"]["Code"] == "InvalidVolume.NotFound"

    attr = ec2.describe_instance_attribute(InstanceId=made["instance_id"], Attribute="userData")
    assert base64.b64decode(attr["UserData"]["Value"]) == b"#!/bin/sh\necho hi\n"
    zones = ec2.describe_availability_zones()["AvailabilityZones"]
    assert [z["ZoneName"] for z in zones] == ["us-east-1a", "us-east-1b", "us-east-1c"]
    regions = [r["RegionName"] for r in ec2.describe_regions()["Regions"]]
    assert "eu-west-1" in regions


def test_tags_on_every_resource(sim: RunningSimulator, aws: ClientFactory) -> None:
    made = _instance(sim.client, "web1", (1,))
    ec2 = aws("ec2")
    snap = ec2.create_snapshot(VolumeId=made["volume_ids"][0], Description="one")
    ids = [made["instance_id"], made["volume_ids"][0], snap["SnapshotId"]]
    ec2.create_tags(Resources=ids, Tags=[{"Key": "job", "Value": "42"}, {"Key": "x", "Value": ""}])
    assert {"Key": "job", "Value": "42"} in ec2.describe_volumes(VolumeIds=ids[1:2]
                                                                 )["Volumes"][0]["Tags"]
    found = ec2.describe_snapshots(Filters=[{"Name": "tag:job", "Values": ["42"]}])["Snapshots"]
    assert [s["SnapshotId"] for s in found] == [snap["SnapshotId"]]
    ec2.delete_tags(Resources=ids, Tags=[{"Key": "job"}])
    assert ec2.describe_snapshots(Filters=[{"Name": "tag-key", "Values": ["job"]}]
                                  )["Snapshots"] == []
    inst = ec2.describe_instances(InstanceIds=ids[:1])["Reservations"][0]["Instances"][0]
    assert {t["Key"] for t in inst["Tags"]} == {"Name", "x"}
    err = _error(lambda: ec2.create_tags(Resources=["snap-0123456789abcdef0"],
                                         Tags=[{"Key": "a", "Value": "b"}]))
    assert err["Error"]["Code"] == "InvalidSnapshot.NotFound"


# --------------------------------------------------------------------------- snapshots


def test_create_snapshots_is_crash_consistent(sim: RunningSimulator, aws: ClientFactory
                                              ) -> None:
    sim.client.set_options(snapshot_delay=0)
    made = _instance(sim.client, "web1", (1, 1), tags={"team": "a"})
    root, data = made["volume_ids"]
    sim.client.write_volume(root, 0, b"root-before" * 1000)
    sim.client.write_volume(data, 3 * BLOCK_SIZE + 17, b"data-before")
    ec2, ebs = aws("ec2"), aws("ebs")

    result = ec2.create_snapshots(InstanceSpecification={"InstanceId": made["instance_id"]},
                                  Description="nightly", CopyTagsFromSource="volume",
                                  TagSpecifications=[{"ResourceType": "snapshot", "Tags": [
                                      {"Key": "job", "Value": "7"}]}])
    snaps = result["Snapshots"]
    assert [s["VolumeId"] for s in snaps] == [root, data]
    for s in snaps:
        assert s["SnapshotId"].startswith("snap-") and len(s["SnapshotId"]) == 22
        assert (s["OwnerId"], s["VolumeSize"], s["Description"]) == ("123456789012", 1,
                                                                      "nightly")
        assert s["State"] == "completed" and s["Progress"] == "100%"
        assert {"Key": "job", "Value": "7"} in s["Tags"]
    # after the snapshot: overwrite the data volume's block and write a new one
    sim.client.write_volume(data, 3 * BLOCK_SIZE + 17, b"data-after!")
    sim.client.write_volume(data, 9 * BLOCK_SIZE, b"new")

    sim.client.write_volume(root, 5, b"root-after")
    snap_root, snap_data = snaps[0]["SnapshotId"], snaps[1]["SnapshotId"]

    root_now = sim.client.volume_sha256(root)
    assert sim.client.snapshot_sha256(snap_root) != root_now
    sim.client.write_volume(root, 5, (b"root-before" * 2)[5:15])  # undo: bytes as snapshotted
    assert sim.client.snapshot_sha256(snap_root) == sim.client.volume_sha256(root)
    listed, _ = _list_all(ebs, snap_data)
    assert listed == [3]
    block = ebs.list_snapshot_blocks(SnapshotId=snap_data)["Blocks"][0]
    body = ebs.get_snapshot_block(SnapshotId=snap_data, BlockIndex=3,
                                  BlockToken=block["BlockToken"])["BlockData"].read()
    assert body[17:28] == b"data-before"
    assert sim.client.read_volume(data, 3 * BLOCK_SIZE + 17, 11) == b"data-after!"

    boot_less = ec2.create_snapshots(InstanceSpecification={
        "InstanceId": made["instance_id"], "ExcludeBootVolume": True})["Snapshots"]
    assert [s["VolumeId"] for s in boot_less] == [data]
    assert "Tags" not in boot_less[0]
    none_left = ec2.create_snapshots(InstanceSpecification={
        "InstanceId": made["instance_id"], "ExcludeBootVolume": True,
        "ExcludeDataVolumeIds": [data]})["Snapshots"]
    assert none_left == []


def test_snapshot_pending_then_completed(sim: RunningSimulator, aws: ClientFactory) -> None:
    sim.client.set_options(snapshot_delay=0.3)
    made = _instance(sim.client, "web1", (1,))
    sim.client.write_volume(made["volume_ids"][0], 0, b"x")
    ec2, ebs = aws("ec2"), aws("ebs")
    snap = ec2.create_snapshot(VolumeId=made["volume_ids"][0])
    assert snap["State"] == "pending"
    sid = snap["SnapshotId"]
    err = _error(lambda: ebs.list_snapshot_blocks(SnapshotId=sid))
    assert err["Error"]["Code"] == "ValidationException"
    assert err["Reason"] == "INVALID_SNAPSHOT_ID"
    assert "not in completed state" in err["Error"]["Message"]
    assert ec2.describe_snapshots(Filters=[{"Name": "status", "Values": ["pending"]}]
                                  )["Snapshots"][0]["SnapshotId"] == sid
    ec2.get_waiter("snapshot_completed").wait(SnapshotIds=[sid],
                                              WaiterConfig={"Delay": 0.1, "MaxAttempts": 50})
    [done] = ec2.describe_snapshots(SnapshotIds=[sid])["Snapshots"]
    assert (done["State"], done["Progress"]) == ("completed", "100%")
    assert [b["BlockIndex"] for b in ebs.list_snapshot_blocks(SnapshotId=sid)["Blocks"]] == [0]
    assert sim.client.snapshots()[0]["state"] == "completed"


def test_describe_and_delete_snapshots(sim: RunningSimulator, aws: ClientFactory) -> None:
    sim.client.set_options(snapshot_delay=0)
    made = _instance(sim.client, "web1", (1,))
    ec2, ebs = aws("ec2"), aws("ebs")
    ids = [ec2.create_snapshot(VolumeId=made["volume_ids"][0])["SnapshotId"] for _ in range(7)]
    pages = list(ec2.get_paginator("describe_snapshots").paginate(
        OwnerIds=["self"], PaginationConfig={"PageSize": 5}))
    assert [len(p["Snapshots"]) for p in pages] == [5, 2]
    assert [s["SnapshotId"] for p in pages for s in p["Snapshots"]] == ids
    assert ec2.describe_snapshots(OwnerIds=["amazon"])["Snapshots"] == []
    by_volume = ec2.describe_snapshots(Filters=[{"Name": "volume-id",
                                                 "Values": [made["volume_ids"][0]]}])
    assert len(by_volume["Snapshots"]) == 7

    ec2.delete_snapshot(SnapshotId=ids[0])
    err = _error(lambda: ec2.describe_snapshots(SnapshotIds=[ids[0]]))
    assert err["Error"]["Code"] == "InvalidSnapshot.NotFound"
    err = _error(lambda: ec2.delete_snapshot(SnapshotId=ids[0]))
    assert err["Error"]["Code"] == "InvalidSnapshot.NotFound"
    err = _error(lambda: ebs.list_snapshot_blocks(SnapshotId=ids[0]))
    assert err["Error"]["Code"] == "ResourceNotFoundException"
    assert len(ec2.describe_snapshots()["Snapshots"]) == 6


# --------------------------------------------------------------------------- EBS direct


def test_list_snapshot_blocks_paging(sim: RunningSimulator, aws: ClientFactory) -> None:
    sim.client.set_options(snapshot_delay=0)
    made = _instance(sim.client, "web1", (1,))
    vol = made["volume_ids"][0]
    written = list(range(0, 3 * 230, 3))
    for index in random.Random(7).sample(written, len(written)):  # write out of order
        sim.client.write_volume(vol, index * BLOCK_SIZE + 100, index.to_bytes(4, "big"))
    ebs, ec2 = aws("ebs"), aws("ec2")
    sid = ec2.create_snapshot(VolumeId=vol)["SnapshotId"]

    indexes, sizes = _list_all(ebs, sid, MaxResults=100)
    assert indexes == written and sizes == [100, 100, 30]
    assert _list_all(ebs, sid) == (written, [230])
    loose = aws("ebs", parameter_validation=False)  # botocore itself rejects MaxResults<100
    indexes, sizes = _list_all(loose, sid, MaxResults=10)
    assert indexes == written and sizes == [100, 100, 30]
    page = ebs.list_snapshot_blocks(SnapshotId=sid, StartingBlockIndex=301, MaxResults=100)
    assert page["Blocks"][0]["BlockIndex"] == 303 and page["VolumeSize"] == 1
    assert page["ExpiryTime"].timestamp() > time.time() + 6 * 86400
    # NextToken wins over StartingBlockIndex
    first = ebs.list_snapshot_blocks(SnapshotId=sid, MaxResults=100)
    second = ebs.list_snapshot_blocks(SnapshotId=sid, MaxResults=100, StartingBlockIndex=0,
                                      NextToken=first["NextToken"])
    assert second["Blocks"][0]["BlockIndex"] == 300
    err = _error(lambda: ebs.list_snapshot_blocks(SnapshotId=sid, NextToken="AAAA"))
    assert (err["Error"]["Code"], err["Reason"]) == ("ValidationException",
                                                     "INVALID_PAGE_TOKEN")
    other = ec2.create_snapshot(VolumeId=vol)["SnapshotId"]
    err = _error(lambda: ebs.list_snapshot_blocks(SnapshotId=other,
                                                  NextToken=first["NextToken"]))
    assert err["Reason"] == "INVALID_PAGE_TOKEN"


def test_written_zeros_present_unwritten_absent(sim: RunningSimulator, aws: ClientFactory
                                                ) -> None:
    sim.client.set_options(snapshot_delay=0)
    vol = _instance(sim.client, "web1", (1,))["volume_ids"][0]
    sim.client.write_volume(vol, 5 * BLOCK_SIZE, bytes(BLOCK_SIZE))  # zeros, but written
    sim.client.write_volume(vol, 7 * BLOCK_SIZE - 2, b"ab")  # tail of block 6 only
    sim.client.write_volume(vol, 2047 * BLOCK_SIZE, b"last")
    ebs = aws("ebs")
    sid = aws("ec2").create_snapshot(VolumeId=vol)["SnapshotId"]
    blocks = ebs.list_snapshot_blocks(SnapshotId=sid)["Blocks"]
    assert [b["BlockIndex"] for b in blocks] == [5, 6, 2047]
    zero = ebs.get_snapshot_block(SnapshotId=sid, BlockIndex=5,
                                  BlockToken=blocks[0]["BlockToken"])
    assert zero["Checksum"] == ZERO_BLOCK_SHA256_B64
    assert zero["BlockData"].read() == bytes(BLOCK_SIZE)
    tail = ebs.get_snapshot_block(SnapshotId=sid, BlockIndex=6,
                                  BlockToken=blocks[1]["BlockToken"])["BlockData"].read()
    assert tail == bytes(BLOCK_SIZE - 2) + b"ab"


def test_get_snapshot_block_checksum(sim: RunningSimulator, aws: ClientFactory) -> None:
    sim.client.set_options(snapshot_delay=0)
    vol = _instance(sim.client, "web1", (1,))["volume_ids"][0]
    payload = random.Random(1).randbytes(2 * BLOCK_SIZE)
    sim.client.write_volume(vol, 10 * BLOCK_SIZE, payload)
    ebs = aws("ebs")
    sid = aws("ec2").create_snapshot(VolumeId=vol)["SnapshotId"]
    blocks = ebs.list_snapshot_blocks(SnapshotId=sid)["Blocks"]
    assert [b["BlockIndex"] for b in blocks] == [10, 11]
    for n, block in enumerate(blocks):
        got = ebs.get_snapshot_block(SnapshotId=sid, BlockIndex=block["BlockIndex"],
                                     BlockToken=block["BlockToken"])
        body = got["BlockData"].read()
        assert body == payload[n * BLOCK_SIZE:(n + 1) * BLOCK_SIZE]
        assert got["DataLength"] == BLOCK_SIZE
        assert got["ChecksumAlgorithm"] == "SHA256"
        assert got["Checksum"] == base64.b64encode(hashlib.sha256(body).digest()).decode()
        assert got["ResponseMetadata"]["HTTPHeaders"]["content-type"] == \
            "application/octet-stream"
    again = ebs.list_snapshot_blocks(SnapshotId=sid)["Blocks"]
    assert again[0]["BlockToken"] != blocks[0]["BlockToken"]  # tokens change on re-list
    assert ebs.get_snapshot_block(SnapshotId=sid, BlockIndex=10,
                                  BlockToken=blocks[0]["BlockToken"])["DataLength"] == BLOCK_SIZE


def test_block_token_validation(sim: RunningSimulator, aws: ClientFactory) -> None:
    sim.client.set_options(snapshot_delay=0)
    vol = _instance(sim.client, "web1", (1,))["volume_ids"][0]
    sim.client.write_volume(vol, 0, b"a" * (2 * BLOCK_SIZE))
    ebs, ec2 = aws("ebs"), aws("ec2")
    sid = ec2.create_snapshot(VolumeId=vol)["SnapshotId"]
    other = ec2.create_snapshot(VolumeId=vol)["SnapshotId"]
    token0 = ebs.list_snapshot_blocks(SnapshotId=sid)["Blocks"][0]["BlockToken"]

    def get(snapshot_id: str, index: int, token: str) -> Any:
        return ebs.get_snapshot_block(SnapshotId=snapshot_id, BlockIndex=index,
                                      BlockToken=token)

    for args in [(sid, 1, token0), (sid, 0, "AAAA"), (sid, 0, token0[:-4] + "AAA="),
                 (other, 0, token0)]:
        err = _error(lambda a=args: get(*a))  # type: ignore[misc]
        assert err["Error"]["Code"] == "ValidationException"
        assert err["Reason"] == "INVALID_BLOCK_TOKEN"
        assert err["ResponseMetadata"]["HTTPStatusCode"] == 400
    with pytest.raises(ebs.exceptions.ValidationException):
        ebs.get_snapshot_block(SnapshotId=sid, BlockIndex=1, BlockToken=token0)


def test_unknown_snapshot_is_404(sim: RunningSimulator, aws: ClientFactory) -> None:
    ebs = aws("ebs")
    missing = "snap-0123456789abcdef0"
    with pytest.raises(ebs.exceptions.ResourceNotFoundException) as info:
        ebs.list_snapshot_blocks(SnapshotId=missing)
    response = info.value.response
    assert response["Error"]["Code"] == "ResourceNotFoundException"
    assert response["Reason"] == "SNAPSHOT_NOT_FOUND"
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 404
    assert missing in response["Error"]["Message"]
    err = _error(lambda: ebs.get_snapshot_block(SnapshotId=missing, BlockIndex=0,
                                                BlockToken="AAAA"))
    assert err["Error"]["Code"] == "ResourceNotFoundException"
    err = _error(lambda: ebs.list_snapshot_blocks(SnapshotId="snap-XYZ"))
    assert err["Error"]["Code"] == "ValidationException"


def test_regions_are_isolated(sim: RunningSimulator, aws: ClientFactory) -> None:
    sim.client.set_options(snapshot_delay=0)
    eu = _instance(sim.client, "eu-box", (1,), region="eu-west-1")
    us = _instance(sim.client, "us-box", (1,))
    ec2_eu, ec2_us = aws("ec2", "eu-west-1"), aws("ec2")
    found = ec2_eu.describe_instances()["Reservations"]
    assert [r["Instances"][0]["InstanceId"] for r in found] == [eu["instance_id"]]
    assert found[0]["Instances"][0]["Placement"]["AvailabilityZone"] == "eu-west-1a"
    err = _error(lambda: ec2_us.describe_instances(InstanceIds=[eu["instance_id"]]))
    assert err["Error"]["Code"] == "InvalidInstanceID.NotFound"
    sid = ec2_eu.create_snapshot(VolumeId=eu["volume_ids"][0])["SnapshotId"]
    assert [s["id"] for s in sim.client.snapshots(region="eu-west-1")] == [sid]
    assert sim.client.snapshots() == []
    assert ec2_us.describe_snapshots()["Snapshots"] == []
    err = _error(lambda: aws("ebs").list_snapshot_blocks(SnapshotId=sid))
    assert err["Error"]["Code"] == "ResourceNotFoundException"
    assert aws("ebs", "eu-west-1").list_snapshot_blocks(SnapshotId=sid)["Blocks"] == []
    zones = ec2_eu.describe_availability_zones()["AvailabilityZones"]
    assert zones[0]["ZoneName"] == "eu-west-1a" and us["region"] == "us-east-1"


# --------------------------------------------------------------------------- control, HTTP


def test_unaligned_writes_read_modify_write(sim: RunningSimulator) -> None:
    vol = sim.client.create_volume(1)
    start = BLOCK_SIZE - 3
    sim.client.write_volume(vol, start, b"0123456789")
    sim.client.write_volume(vol, start + 2, b"xy")
    assert sim.client.read_volume(vol, start - 2, 14) == b"\0\x0001xy456789\0\0"
    with pytest.raises(Exception, match="outside volume"):
        sim.client.write_volume(vol, (1 << 30) - 1, b"ab")
    empty = sim.client.create_volume(1)
    assert sim.client.volume_sha256(empty) == ONE_GIB_OF_ZEROS_SHA256


def _raw(endpoint: str, path: str, body: bytes | None, headers: dict[str, str]
         ) -> tuple[int, bytes]:
    req = urllib.request.Request(endpoint + path, data=body, headers=headers,
                                 method="POST" if body is not None else "GET")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, bytes(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, bytes(err.read())


def test_auth_required_and_unknown_action(sim: RunningSimulator) -> None:
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    status, body = _raw(sim.endpoint, "/", b"Action=DescribeRegions&Version=2016-11-15", form)
    assert status == 403 and b"<Code>AuthFailure</Code>" in body
    status, body = _raw(sim.endpoint, "/snapshots/snap-0123456789abcdef0/blocks", None, {})
    assert status == 403 and b"Missing Authentication Token" in body
    auth = {"Authorization": "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261126/us-east-1/ec2/"
                             "aws4_request, SignedHeaders=host, Signature=00"}
    status, body = _raw(sim.endpoint, "/", b"Action=LaunchMissiles&Version=2016-11-15",
                        form | auth)
    assert status == 400 and b"<Code>InvalidAction</Code>" in body
    status, body = _raw(sim.endpoint, "/", b"Action=DescribeRegions&Bogus.1=x", form | auth)
    assert status == 400 and b"<Code>UnknownParameter</Code>" in body
    status, body = _raw(sim.endpoint, "/", b"Action=DeleteSnapshot", form | auth)
    assert status == 400 and b"<Code>MissingParameter</Code>" in body
    status, body = _raw(sim.endpoint, "/_sim/options", None, {})
    assert status == 200 and json.loads(body)["snapshot_delay"] == 0.3


def test_start_in_thread_keep_alive() -> None:
    server, endpoint = start_in_thread(snapshot_delay=0)
    try:
        client = SimulatorClient(endpoint)
        made = _instance(client, "local", (1,))
        ec2 = boto3.client("ec2", endpoint_url=endpoint, region_name="us-east-1",
                           aws_access_key_id="AKIDEXAMPLE", aws_secret_access_key="secret")
        for _ in range(3):  # several calls over one pooled keep-alive connection
            assert ec2.describe_volumes()["Volumes"][0]["VolumeId"] == made["volume_ids"][0]
    finally:
        stop(server)


# --------------------------------------------------------------------------- model properties

_SPAN = 3 * BLOCK_SIZE + 1000  # a few blocks of a 1 GiB volume, with an unaligned tail


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, _SPAN - 1), st.binary(min_size=0, max_size=70000)),
                max_size=6))
def test_model_writes_match_a_flat_image(writes: list[tuple[int, bytes]]) -> None:
    """Any sequence of writes reads back like a bytearray; a snapshot keeps its moment."""
    region = World(snapshot_delay=0).region("us-east-1")
    vol = region.create_volume(1)
    image = bytearray(_SPAN + 70000)
    for n, (offset, data) in enumerate(writes):
        region.write_volume(vol.id, offset, data)
        image[offset:offset + len(data)] = data
        if n == len(writes) // 2:
            snap, frozen = region.create_snapshot(vol.id), bytes(image)
    assert region.read_volume(vol.id, 0, len(image)) == bytes(image)
    touched = {i for off, d in writes for i in range(off // BLOCK_SIZE,
                                                     (off + len(d) - 1) // BLOCK_SIZE + 1)
               if d}
    assert set(vol.blocks) == touched
    for block in vol.blocks.values():
        assert block.checksum == base64.b64encode(hashlib.sha256(block.data).digest()).decode()
        assert len(block.data) == BLOCK_SIZE
    if writes:
        for index in range(len(image) // BLOCK_SIZE + 1):
            want = frozen[index * BLOCK_SIZE:(index + 1) * BLOCK_SIZE]
            got = snap.blocks[index].data[:len(want)] if index in snap.blocks else bytes(
                len(want))
            assert got == want
