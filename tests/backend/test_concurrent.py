"""Backends that overlap never destroy each other's work (docs/SNAPSHOTS.md, "Concurrent
jobs"): two Plugin lines of one job selecting the same instance back each volume up once,
and a pending snapshot is deleted only when its job is provably over."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import time
from pathlib import Path

import boto3

from bacula_ec2.jobs.lease import LEASE_TAG, OWNER_TAG, Owner, this_process
from devkit.driver import backend
from protocol import Mode

from .common import BLOCK, params


def instance(sim, volumes: int = 2) -> tuple[str, list[str]]:  # type: ignore[no-untyped-def]
    devices = ["/dev/sda1", "/dev/xvdf", "/dev/xvdg"][:volumes]
    inst = sim.client.create_instance("web-1", volumes=[{"size_gib": 1, "device": d} for d in devices])
    for n, vid in enumerate(inst["volume_ids"]):
        sim.client.write_volume(vid, n * BLOCK, os.urandom(BLOCK))
    return inst["instance_id"], inst["volume_ids"]


def test_two_plugin_lines_of_one_job_back_each_volume_up_once(sim, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    iid, vids = instance(sim)
    # Two FileSet lines (two command strings, so two backends), one after the other in the
    # same job (metaplugin §2.3): the first idles, waiting for END, while the second runs.
    with backend(Mode.BACKUP, params(sim.endpoint, "instances=web-1"), tmp_path) as first:
        items1 = first.peer.read_items(data_phase=True)
        with backend(Mode.BACKUP, params(sim.endpoint, f"instances={iid}"), tmp_path) as second:
            items2 = second.peer.read_items(data_phase=True)  # no A: this returns at its F
            first.peer.end()  # END goes to every backend in creation order (§3.6)
            second.peer.end()
            first.peer.terminate()
            second.peer.terminate()
            assert second.stderr() == b""
        assert first.stderr() == b""
    messages = second.peer.messages
    assert not [m for m in first.peer.messages + messages if m[0] in "EAQW"], messages
    for vid in vids:
        said = "another Plugin line of this job already backs it up"
        assert any(vid in t and said in t for _s, t in messages), messages
    assert any(iid in t and "skipping it" in t for _s, t in messages), messages
    assert items2 == [], [it.name for it in items2]  # not even the instance's JSON or directory
    images = [it.name for it in items1 + items2 if it.name.endswith(".bimg")]
    assert len(images) == 2 and all(any(v in n for n in images) for v in vids), images
    snaps = sim.client.snapshots()
    assert sorted(s["volume_id"] for s in snaps) == sorted(vids)
    assert all(s["tags"]["bacula-ec2:state"] == "base" for s in snaps)


def test_a_live_jobs_pending_snapshot_is_left_alone(sim, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    instance(sim, volumes=1)
    sim.client.set_options(snapshot_delay=4.0)
    with backend(Mode.BACKUP, params(sim.endpoint), tmp_path, jobid=1) as a:
        deadline = time.monotonic() + 30
        while not sim.client.snapshots():  # job 1 took its snapshot and waits for it
            assert time.monotonic() < deadline
            time.sleep(0.05)
        (theirs,) = sim.client.snapshots()
        assert theirs["tags"]["bacula-ec2:state"] == "pending"
        with backend(Mode.BACKUP, params(sim.endpoint), tmp_path / "b", jobid=2) as b:
            b.peer.read_items(data_phase=True)
            ids = {s["id"] for s in sim.client.snapshots()}
            assert theirs["id"] in ids, "job 2 deleted the snapshot of a job still running"
            assert any(
                theirs["id"] in t and "left alone" in t and "still running" in t for _s, t in b.peer.messages
            ), b.peer.messages
            items = a.peer.read_items(data_phase=True)  # job 1 ends well all the same
            assert any(it.name.endswith(".bimg") for it in items)
            ours = ids - {theirs["id"]}
            for peer in (a.peer, b.peer):  # job 1 is confirmed first: it retires nothing newer
                peer.end()
                peer.terminate()
    assert not [m for m in a.peer.messages + b.peer.messages if m[0] in "EAQ"]
    assert {s["id"] for s in sim.client.snapshots()} == ours  # job 2's, the newest, is the base


def test_leftovers_of_jobs_that_are_over_are_deleted_live_ones_kept(sim, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _iid, (vid,) = instance(sim, volumes=1)
    ec2 = boto3.client("ec2", **sim.boto3_kwargs())
    me = this_process()
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    now = time.time()

    def iso(t: float) -> str:
        return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    def leftover(job: str, owner: Owner, lease: float) -> str:
        tags = {
            "bacula-ec2:job": "ec2test",
            "bacula-ec2:jobname": job,
            "bacula-ec2:jobid": "90",
            "bacula-ec2:state": "pending",
            OWNER_TAG: owner.tag(),
            LEASE_TAG: iso(lease),
        }
        spec = [{"ResourceType": "snapshot", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}]
        return str(ec2.create_snapshot(VolumeId=vid, TagSpecifications=spec)["SnapshotId"])

    elsewhere = Owner("backup-host-2", "0123456789abcdef", "4026531836", 1234, 99)
    expired = leftover("other.expired", elsewhere, now - 60)
    live_elsewhere = leftover("other.live", elsewhere, now + 600)
    dead_here = leftover("other.dead", Owner(me.host, me.boot, me.pidns, child.pid, 5), now + 600)
    alive_here = leftover("other.alive", me, now - 60)  # the test process: alive, lease or not
    with backend(Mode.BACKUP, params(sim.endpoint), tmp_path, jobid=3) as be:
        be.peer.read_items(data_phase=True)
        left = {s["id"] for s in sim.client.snapshots()}
        be.peer.end()
        be.peer.terminate()
    assert expired not in left and dead_here not in left
    assert live_elsewhere in left and alive_here in left
    text = "\n".join(t for _s, t in be.peer.messages)
    assert f"removed snapshot {expired}" in text and "expired" in text, text
    assert f"removed snapshot {dead_here}" in text and "is gone" in text, text
    assert f"snapshot {live_elsewhere} of volume {vid} is still pending" in text and "backup-host-2" in text
