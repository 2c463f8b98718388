"""End to end through real Bacula 15.0.3 with the simulator in hard mode (`aws_hard=true`):
HTTPS with a CA of its own, a service clock 30 s off, EC2 eventual consistency, request
buckets, 50 ms latency, snapshot copy time and Progress, the per-volume snapshot interval
(15 s), filter limits, KMS checks and StartSnapshot's absolute Timeout (docs/SIMULATOR.md,
"Hard mode").

One chain does what the other end-to-end tests do one by one, to keep `make test` short: a
Full, then an Incremental after the data volume grew and part of the root was trimmed, then
a Differential; every point in time restored to local images by Bacula's own selection and
compared byte for byte; the newest one restored into AWS as a new instance and as a new,
encrypted volume; and at the end nothing the jobs created is left but the chain's bases.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import boto3

from devkit.helpers import sha256_file

from .common import BLOCK, end_time, live_instances, plugin_line, restore_before, restore_with_options, tags

KEY = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"


def hard_plugin_line(sim: Any, *extra: str) -> str:
    """The FileSet line for hard mode: the https endpoint, trusting the simulator's CA."""
    return plugin_line(sim.api_endpoint(), f"ca_bundle={sim.ca_path}", *extra)


def test_chain_and_restores_under_aws_hard(sim, bacula_stack, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    sim.client.set_options(aws_hard=True, fault_seed=11)
    assert sim.client.options()["tls"] and sim.api_endpoint().startswith("https://")
    inst = sim.client.create_instance(
        "hard-web",
        volumes=[
            {"size_gib": 1, "device": "/dev/sda1", "volume_type": "gp3"},
            {"size_gib": 1, "device": "/dev/xvdb", "encrypted": True, "kms_key_id": KEY},
        ],
    )
    iid, (root, data) = inst["instance_id"], inst["volume_ids"]
    w = sim.client.write_volume
    w(root, 0, os.urandom(6 * BLOCK))
    w(data, 100 * BLOCK, os.urandom(3 * BLOCK))
    stack = bacula_stack([hard_plugin_line(sim, "instances=hard-web", "keep_full_snapshot=yes")])

    def grow_and_trim() -> None:
        sim.client.modify_volume(data, size_gib=2)
        w(data, (1 << 30) + 5 * BLOCK, os.urandom(2 * BLOCK))  # beyond the old end
        sim.client.trim_volume(root, 2 * BLOCK, 2 * BLOCK)  # two blocks unwritten again
        w(root, 9 * BLOCK + 11, b"incremental")

    def differential() -> None:
        w(root, 0, b"differential")
        w(data, 100 * BLOCK, bytes(BLOCK))

    points = []
    for level, change in (("Full", None), ("Incremental", grow_and_trim), ("Differential", differential)):
        if change is not None:
            change()
        jobid = stack.run_job(level=level, timeout=300)
        log = stack.job_log(jobid)
        assert "Backup OK" in log and "with warnings" not in log, log
        want = {v: sim.client.volume_sha256(v) for v in (root, data)}
        points.append((level, end_time(stack, jobid), want))
        time.sleep(1.1)  # Bacula's times have a one-second resolution

    sizes = {"Full": (1, 1), "Incremental": (1, 2), "Differential": (1, 2)}
    for level, when, want in points:
        where = tmp_path / f"restore-{level}"
        rjobid, status = restore_before(stack, when, where)
        assert status == "T", stack.job_log(rjobid)
        for (vid, dev), gib in zip(((root, "sda1"), (data, "xvdb")), sizes[level], strict=True):
            image = where / "@amazon-ec2" / iid / f"{vid}-{dev}-{gib}G.img"
            assert sha256_file(image) == want[vid], f"{level}: {image.name} differs"

    # The newest point into AWS: a new instance, then a new encrypted volume in another zone.
    _level, _when, want = points[-1]
    ec2 = boto3.client("ec2", **sim.boto3_kwargs("us-east-1"))
    bases = {s["id"] for s in sim.client.snapshots()}
    volumes_before = {v["VolumeId"] for v in ec2.describe_volumes()["Volumes"]}
    before = set(live_instances(sim))
    rjobid, status = restore_with_options(
        stack,
        f"client={stack.client} fileset={stack.fileset} select current",
        {"restore_as": "instance", "restore_availability_zone": "us-east-1b"},
        timeout=400,
    )
    log = stack.job_log(rjobid)
    assert status == "T" and "created instance" in log, log
    (new_id,) = set(live_instances(sim)) - before
    new = live_instances(sim)[new_id]
    assert new["Placement"]["AvailabilityZone"] == "us-east-1b" and new["State"]["Name"] == "running"
    devices = {m["DeviceName"]: m["Ebs"]["VolumeId"] for m in new["BlockDeviceMappings"]}
    assert sim.client.volume_sha256(devices["/dev/sda1"]) == want[root]
    assert sim.client.volume_sha256(devices["/dev/xvdb"]) == want[data]

    rjobid, status = restore_with_options(
        stack,
        f"client={stack.client} fileset={stack.fileset} select current",
        {"restore_as": "volume", "restore_availability_zone": "us-east-1c", "restore_kms_key": KEY},
        timeout=400,
    )
    log = stack.job_log(rjobid)
    assert status == "T", log
    restored = [
        v
        for v in ec2.describe_volumes()["Volumes"]
        if tags(v).get("bacula-ec2:restored-from") in (root, data)
        and v["VolumeId"] not in devices.values()
        and v["VolumeId"] not in volumes_before
    ]
    by_origin = {tags(v)["bacula-ec2:restored-from"]: v for v in restored}
    assert sorted(by_origin) == sorted([root, data]) and len(restored) == 2, restored
    for origin, vol in by_origin.items():
        assert vol["AvailabilityZone"] == "us-east-1c" and vol["Encrypted"] and vol["KmsKeyId"] == KEY
        assert sim.client.volume_sha256(vol["VolumeId"]) == want[origin]

    # Nothing leaked: the chain's bases are the only snapshots, no image is left.
    deadline = time.monotonic() + 30  # deleted snapshots stay listed for up to the window
    while {s["id"] for s in sim.client.snapshots()} != bases and time.monotonic() < deadline:
        time.sleep(0.5)
    assert {s["id"] for s in sim.client.snapshots()} == bases
    assert not ec2.describe_images(Owners=["self"])["Images"]
    # Hard mode was met, not just switched on: EC2 did not yet see resources the jobs created.
    assert sim.client.stats()["not_found_window"], sim.client.stats()
