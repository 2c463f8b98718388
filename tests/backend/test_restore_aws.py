"""Restore into AWS through the backend process (real pipes, strict FD peer, simulator):
a Full + Incremental + Incremental chain, parts shuffled, becomes new volumes, a new
instance, or snapshots; failures end in a Fatal and leave nothing behind."""

from __future__ import annotations

import os
from pathlib import Path

from .common import BLOCK, Job
from .restore_aws_kit import ec2, errors, make_chain, new_volumes, restore_aws, tags, world


def test_chain_restores_as_new_volumes_same_and_other_az(sim, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    chain = make_chain(sim, tmp_path)
    before = world(sim)
    messages = restore_aws(sim, tmp_path, chain.jobs, seed=3)
    assert not errors(messages), messages
    made = new_volumes(sim, before["volumes"])
    assert len(made) == 2
    by_origin = {tags(v)["bacula-ec2:restored-from"]: v for v in made.values()}
    for dev, vid in chain.volumes.items():
        new = by_origin[vid]
        assert sim.client.volume_sha256(new["VolumeId"]) == chain.want[vid], dev
        assert new["AvailabilityZone"] == "us-east-1a" and new["State"] == "available"
        assert tags(new)["bacula-ec2:restore-job"].startswith("ec2test.")
    root, data = chain.volumes["/dev/sda1"], chain.volumes["/dev/xvdf"]
    assert (by_origin[root]["VolumeType"], by_origin[root]["Iops"], by_origin[root]["Throughput"]) == (
        "gp3",
        4000,
        250,
    )
    assert (by_origin[data]["VolumeType"], by_origin[data]["Iops"]) == ("io1", 1000)
    assert tags(by_origin[data])["role"] == "db"
    # The temporary snapshots are gone; the originals are untouched.
    after = world(sim)
    assert after["snapshots"] == before["snapshots"] and after["images"] == before["images"]
    assert sim.client.read_volume(root, 0, 29) == b"written after the last backup"
    assert any("MiB/s" in text for _s, text in messages), messages

    # Other AZ, overridden type, extra tags, snapshots kept: the same bytes.
    before = world(sim)
    messages = restore_aws(
        sim,
        tmp_path,
        chain.jobs,
        "restore_availability_zone=us-east-1c",
        "restore_volume_type=gp2",
        "restore_tags=team=ops,ticket=42",
        "keep_restore_snapshots=yes",
        seed=4,
        jobid=51,
    )
    assert not errors(messages), messages
    made = new_volumes(sim, before["volumes"])
    assert {v["AvailabilityZone"] for v in made.values()} == {"us-east-1c"}
    assert {v["VolumeType"] for v in made.values()} == {"gp2"}
    for v in made.values():
        assert tags(v)["team"] == "ops" and tags(v)["ticket"] == "42"
        assert sim.client.volume_sha256(v["VolumeId"]) == chain.want[tags(v)["bacula-ec2:restored-from"]]
    kept = [s for s in sim.client.snapshots() if s["id"] not in before["snapshots"]]
    assert len(kept) == 2 and all(s["state"] == "completed" for s in kept)
    assert {s["tags"]["bacula-ec2:restored-from"] for s in kept} == set(chain.volumes.values())


def test_volume_into_other_region_attached_to_running_instance(sim, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    chain = make_chain(sim, tmp_path)
    target = sim.client.create_instance(
        "target", volumes=[{"size_gib": 1}], region="eu-west-1", az="eu-west-1b"
    )
    data = chain.volumes["/dev/xvdf"]
    only_data = [
        Job(
            j.jobid,
            j.level,
            j.start,
            [it for it in j.items if data in it.name or it.name.endswith(f"{chain.instance_id}.json")],
        )
        for j in chain.jobs
    ]
    before = world(sim, "eu-west-1")
    messages = restore_aws(
        sim,
        tmp_path,
        only_data,
        "restore_region=eu-west-1",
        f"restore_attach_instance={target['instance_id']}",
        "restore_attach_device=/dev/sdh",
    )
    assert not errors(messages), messages
    (new,) = new_volumes(sim, before["volumes"], "eu-west-1").values()
    assert new["AvailabilityZone"] == "eu-west-1b" and new["State"] == "in-use"
    assert new["Attachments"][0]["InstanceId"] == target["instance_id"]
    assert new["Attachments"][0]["Device"] == "/dev/sdh"
    assert sim.client.volume_sha256(new["VolumeId"], region="eu-west-1") == chain.want[data]
    assert world(sim, "eu-west-1")["snapshots"] == before["snapshots"]


def test_chain_restores_as_new_instance_with_overrides(sim, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    chain = make_chain(sim, tmp_path)
    before = world(sim)
    messages = restore_aws(
        sim,
        tmp_path,
        chain.jobs,
        "restore_as=instance",
        "restore_instance_type=m5.large",
        "restore_availability_zone=us-east-1b",
        "restore_name=web-1-restored",
        "restore_start=no",
        seed=7,
    )
    assert not errors(messages), messages
    after = world(sim)
    (new_id,) = after["instances"] - before["instances"]
    c = ec2(sim)
    new = c.describe_instances(InstanceIds=[new_id])["Reservations"][0]["Instances"][0]
    old = c.describe_instances(InstanceIds=[chain.instance_id])["Reservations"][0]["Instances"][0]
    assert new["InstanceType"] == "m5.large" and new["Placement"]["AvailabilityZone"] == "us-east-1b"
    assert new["State"]["Name"] == "stopped"
    assert tags(new)["Name"] == "web-1-restored" and tags(new)["env"] == "prod"
    assert tags(new)["bacula-ec2:restored-from"] == chain.instance_id
    assert new["KeyName"] == old["KeyName"] and new["RootDeviceName"] == old["RootDeviceName"]
    assert [g["GroupId"] for g in new["SecurityGroups"]] == [g["GroupId"] for g in old["SecurityGroups"]]
    assert new["Architecture"] == old["Architecture"]
    ud = c.describe_instance_attribute(InstanceId=new_id, Attribute="userData")["UserData"]["Value"]
    assert (
        ud
        == c.describe_instance_attribute(InstanceId=chain.instance_id, Attribute="userData")["UserData"][
            "Value"
        ]
    )
    devices = {m["DeviceName"]: m["Ebs"]["VolumeId"] for m in new["BlockDeviceMappings"]}
    assert set(devices) == set(chain.volumes)
    vols = {v["VolumeId"]: v for v in c.describe_volumes(VolumeIds=list(devices.values()))["Volumes"]}
    for dev, vid in devices.items():
        assert sim.client.volume_sha256(vid) == chain.want[chain.volumes[dev]], dev
        assert vols[vid]["AvailabilityZone"] == "us-east-1b"
    assert vols[devices["/dev/xvdf"]]["VolumeType"] == "io1"
    # No temporary image or snapshot is left; the original instance is untouched.
    assert after["images"] == before["images"] and after["snapshots"] == before["snapshots"]
    assert old["State"]["Name"] == "running" and old["InstanceType"] == "t3.small"


def test_snapshot_only(sim, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    chain = make_chain(sim, tmp_path)
    before = world(sim)
    messages = restore_aws(sim, tmp_path, chain.jobs, "restore_as=snapshot", "restore_to=aws")
    assert not errors(messages), messages
    after = world(sim)
    assert after["volumes"] == before["volumes"] and after["instances"] == before["instances"]
    made = [s for s in sim.client.snapshots() if s["id"] not in before["snapshots"]]
    assert len(made) == 2
    for snap in made:
        assert snap["state"] == "completed" and "bacula-ec2:restore-temporary" not in snap["tags"]
        assert sim.client.snapshot_sha256(snap["id"]) == chain.want[snap["tags"]["bacula-ec2:restored-from"]]


def test_missing_chain_part_is_fatal_and_leaves_nothing(sim, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    chain = make_chain(sim, tmp_path)
    before = world(sim)
    messages = restore_aws(sim, tmp_path, [chain.jobs[0], chain.jobs[2]], "restore_as=instance")
    fatal = [t for s, t in messages if s == "A"]
    assert fatal and "missing between" in fatal[0], messages
    assert world(sim) == before


def test_aws_failing_mid_way_is_fatal_and_leaves_nothing(sim, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    chain = make_chain(sim, tmp_path)
    before = world(sim)
    # After both snapshots and the image exist: RunInstances fails (no such subnet).
    messages = restore_aws(sim, tmp_path, chain.jobs, "restore_as=instance", "restore_subnet=subnet-0000dead")
    fatal = [t for s, t in messages if s == "A"]
    assert fatal and "RunInstances" in fatal[0], messages
    assert world(sim) == before
    # The data path: every PutSnapshotBlock fails; the pending snapshot is removed.
    sim.client.set_options(error_rate=1.0, fault_operations=["PutSnapshotBlock"])
    messages = restore_aws(sim, tmp_path, chain.jobs, jobid=52)
    fatal = [t for s, t in messages if s == "A"]
    assert fatal and "PutSnapshotBlock" in fatal[0], messages
    sim.client.set_options(error_rate=0.0)
    assert world(sim) == before


def test_where_dir_still_restores_locally(sim, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    chain = make_chain(sim, tmp_path)
    before = world(sim)
    where = tmp_path / "local"
    messages = restore_aws(sim, tmp_path, chain.jobs, where=str(where))
    assert not errors(messages), messages
    assert world(sim) == before
    assert len(list(where.rglob("*.img"))) == 2


def test_bec2_restores_a_folder_into_aws(sim, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import subprocess
    import sys

    from devkit.simulator.fixtures import ACCESS_KEY

    inst = sim.client.create_instance("cli-web", volumes=[{"size_gib": 1, "device": "/dev/sda1"}])
    vid = inst["volume_ids"][0]
    sim.client.write_volume(vid, 0, os.urandom(3 * BLOCK))
    store = tmp_path / "store"
    common = [
        sys.executable,
        "-m",
        "bacula_ec2.cli",
        "--region=us-east-1",
        f"--access_key={ACCESS_KEY}",
        "--secret_key=bec2-secret",
        f"--endpoint_url={sim.endpoint}",
        f"--output={store}",
    ]

    def bec2(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*common, *args], capture_output=True, text=True, timeout=300, check=False)

    assert bec2("--operation=backup", "--instances=cli-web").returncode == 0
    sim.client.write_volume(vid, 50 * BLOCK, b"incremental")
    out = bec2("--operation=backup", "--instances=cli-web", "--level=I")
    assert out.returncode == 0, out.stderr
    want = sim.client.volume_sha256(vid)
    before = world(sim)
    out = bec2(
        "--operation=restore", "--restore_to=aws", "--restore_availability_zone=us-east-1c", "--verbose"
    )
    assert out.returncode == 0, out.stderr
    (new,) = new_volumes(sim, before["volumes"]).values()
    assert new["AvailabilityZone"] == "us-east-1c" and new["VolumeId"] in out.stdout
    assert sim.client.volume_sha256(new["VolumeId"]) == want
    assert world(sim)["snapshots"] == before["snapshots"]
    assert not list(store.glob("bacula-ec2-restore-*"))
