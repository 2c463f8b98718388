"""End to end through real Bacula 15.0.3: restores into AWS (the simulator), with the
restore options set through bconsole's `mod` → Plugin Options dialog."""

from __future__ import annotations

import os
import time
from pathlib import Path

from .common import BLOCK, ec2, live_instances, plugin_line, restore_with_options, tags


def test_instance_chain_restored_as_new_instance_in_other_az(sim, bacula_stack, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    inst = sim.client.create_instance(
        "aws-web",
        volumes=[
            {"size_gib": 1, "device": "/dev/sda1", "volume_type": "gp3"},
            {"size_gib": 1, "device": "/dev/xvdb", "volume_type": "io1", "iops": 800},
        ],
        tags={"env": "prod"},
        instance_type="t3.small",
        user_data="#!/bin/sh\necho e2e\n",
    )
    iid, (root, data) = inst["instance_id"], inst["volume_ids"]
    w = sim.client.write_volume
    w(root, 0, os.urandom(4 * BLOCK))
    w(data, 100 * BLOCK, os.urandom(2 * BLOCK))
    stack = bacula_stack([plugin_line(sim.endpoint, "instances=aws-web")])
    assert stack.wait_job(stack.run_job(level="Full", timeout=180)) == "T"
    for writes in (
        [(root, BLOCK + 3, b"first"), (data, 500 * BLOCK, os.urandom(BLOCK))],
        [(root, 0, bytes(BLOCK))],
    ):
        time.sleep(1.1)
        for vid, offset, payload in writes:
            w(vid, offset, payload)
        jobid = stack.run_job(level="Incremental", timeout=180)
        assert "Backup OK" in stack.job_log(jobid), stack.job_log(jobid)
    want = {root: sim.client.volume_sha256(root), data: sim.client.volume_sha256(data)}
    w(root, 0, b"after the last backup")
    before = set(live_instances(sim))
    snapshots = {s["id"] for s in sim.client.snapshots()}

    rjobid, status = restore_with_options(
        stack,
        f"client={stack.client} fileset={stack.fileset} select current",
        {
            "restore_as": "instance",
            "restore_instance_type": "m5.large",
            "restore_availability_zone": "us-east-1c",
        },
    )
    log = stack.job_log(rjobid)
    assert status == "T", log
    assert "Restore OK" in log and "created instance" in log, log
    (new_id,) = set(live_instances(sim)) - before
    new = live_instances(sim)[new_id]
    old = live_instances(sim)[iid]
    assert new["InstanceType"] == "m5.large" and new["Placement"]["AvailabilityZone"] == "us-east-1c"
    # Everything else as in the JSON: root device, key, groups, architecture, tags, volumes.
    for key in ("RootDeviceName", "KeyName", "Architecture", "VirtualizationType"):
        assert new[key] == old[key], key
    assert [g["GroupId"] for g in new["SecurityGroups"]] == [g["GroupId"] for g in old["SecurityGroups"]]
    assert tags(new)["Name"] == "aws-web" and tags(new)["env"] == "prod"
    assert tags(new)["bacula-ec2:restored-from"] == iid and new["State"]["Name"] == "running"
    c = ec2(sim)
    ud = c.describe_instance_attribute(InstanceId=new_id, Attribute="userData")["UserData"]["Value"]
    assert ud == c.describe_instance_attribute(InstanceId=iid, Attribute="userData")["UserData"]["Value"]
    devices = {m["DeviceName"]: m["Ebs"]["VolumeId"] for m in new["BlockDeviceMappings"]}
    assert set(devices) == {"/dev/sda1", "/dev/xvdb"}
    vols = {v["VolumeId"]: v for v in c.describe_volumes(VolumeIds=list(devices.values()))["Volumes"]}
    assert vols[devices["/dev/xvdb"]]["VolumeType"] == "io1" and vols[devices["/dev/xvdb"]]["Iops"] == 800
    assert sim.client.volume_sha256(devices["/dev/sda1"]) == want[root]
    assert sim.client.volume_sha256(devices["/dev/xvdb"]) == want[data]
    # No temporary image or snapshot left; the original untouched; the staging dir removed.
    assert not c.describe_images(Owners=["self"])["Images"]
    assert {s["id"] for s in sim.client.snapshots()} == snapshots
    assert sim.client.read_volume(root, 0, 21) == b"after the last backup"
    assert not list(stack.working["fd"].glob("bacula-ec2-restore-*"))


def test_volume_restored_into_other_region_and_attached(sim, bacula_stack, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    inst = sim.client.create_instance("aws-db", volumes=[{"size_gib": 2, "device": "/dev/sda1"}])
    vid = inst["volume_ids"][0]
    sim.client.write_volume(vid, (1 << 30) + 7, os.urandom(3 * BLOCK))
    target = sim.client.create_instance(
        "eu-app", volumes=[{"size_gib": 1}], region="eu-west-1", az="eu-west-1b"
    )
    stack = bacula_stack([plugin_line(sim.endpoint, "instances=aws-db")])
    jobid = stack.run_job(level="Full", timeout=180)
    assert stack.wait_job(jobid) == "T"
    want = sim.client.volume_sha256(vid)

    rjobid, status = restore_with_options(
        stack,
        f"jobid={jobid} client={stack.client}",
        {
            "restore_region": "eu-west-1",
            "restore_attach_instance": target["instance_id"],
            "restore_attach_device": "/dev/sdk",
            "restore_tags": "purpose=e2e",
        },
    )
    log = stack.job_log(rjobid)
    assert status == "T", log
    vols = [
        v
        for v in ec2(sim, "eu-west-1").describe_volumes()["Volumes"]
        if tags(v).get("bacula-ec2:restored-from") == vid
    ]
    assert len(vols) == 1, vols
    (new,) = vols
    assert new["State"] == "in-use" and new["AvailabilityZone"] == "eu-west-1b"
    assert new["Attachments"][0]["InstanceId"] == target["instance_id"]
    assert new["Attachments"][0]["Device"] == "/dev/sdk" and tags(new)["purpose"] == "e2e"
    assert sim.client.volume_sha256(new["VolumeId"], region="eu-west-1") == want
    assert not sim.client.snapshots("eu-west-1"), "the temporary snapshot is deleted"


def test_incremental_alone_into_aws_fails_leaving_nothing(sim, bacula_stack, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    inst = sim.client.create_instance("aws-gap", volumes=[{"size_gib": 1, "device": "/dev/sda1"}])
    vid = inst["volume_ids"][0]
    sim.client.write_volume(vid, 0, os.urandom(BLOCK))
    stack = bacula_stack([plugin_line(sim.endpoint, "instances=aws-gap")])
    stack.run_job(level="Full", timeout=180)
    time.sleep(1.1)
    sim.client.write_volume(vid, 9 * BLOCK, b"change")
    ijob = stack.run_job(level="Incremental", timeout=180)
    snapshots = {s["id"] for s in sim.client.snapshots()}
    volumes = {v["VolumeId"] for v in ec2(sim).describe_volumes()["Volumes"]}
    rjobid, status = stack.restore(ijob, where="/")
    log = stack.job_log(rjobid)
    assert status != "T" and "Restore Error" in log and "not the Full backup it builds on" in log, log
    assert {s["id"] for s in sim.client.snapshots()} == snapshots
    assert {v["VolumeId"] for v in ec2(sim).describe_volumes()["Volumes"]} == volumes
