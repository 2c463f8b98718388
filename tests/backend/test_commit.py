"""The commit (snapshots become bases) happens before the backend's final F, while a
failure can still fail the job: a refused commit ends the backup with an A naming the
snapshots, and nothing is left behind (metaplugin-protocol.md §3.6, §4.10)."""

from __future__ import annotations

import os
from pathlib import Path

import boto3
import pytest

from devkit.driver import backend
from devkit.fdpeer import BackendError
from protocol import Mode

from .common import BLOCK, params


def one_volume(sim) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    inst = sim.client.create_instance("web-1", volumes=[{"size_gib": 1, "device": "/dev/sda1"}])
    vid = inst["volume_ids"][0]
    sim.client.write_volume(vid, 0, os.urandom(2 * BLOCK))
    return inst["instance_id"], vid


def test_refused_commit_fails_the_job_naming_the_snapshots(sim, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    one_volume(sim)
    sim.client.set_options(deny_tags=["bacula-ec2:state=base"])
    with backend(Mode.BACKUP, params(sim.endpoint), tmp_path) as be:
        with pytest.raises(BackendError) as err:
            be.peer.read_items(data_phase=True)  # the A comes where the final F would
        created = {s["id"] for s in sim.client.snapshots()}
        assert not created, "rolled back before the A"
        be.peer.close()  # the FD sends no END after an A: EOF
        assert be.process.wait(timeout=30) == 0
        assert be.stderr() == b""
        log = be.log()
    assert err.value.status == "A"
    text = err.value.text
    ids = [w.strip("(),.:") for w in text.split() if w.startswith("(snap-") or w.startswith("snap-")]
    assert ids and all(i.startswith("snap-") for i in ids), text
    assert "could not be committed" in text and "UnauthorizedOperation" in text, text
    assert "were deleted" in text and "ec2:CreateTags" in text, text
    assert "commit of snap-" in log
    assert sim.client.snapshots() == []


def test_commit_comes_before_the_final_f(sim, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    one_volume(sim)
    with backend(Mode.BACKUP, params(sim.endpoint), tmp_path) as be:
        be.peer.read_items(data_phase=True)
        # The final F was read, END not sent yet: the snapshots are already bases.
        snaps = sim.client.snapshots()
        assert snaps and all(s["tags"]["bacula-ec2:state"] == "base" for s in snaps), snaps
        be.peer.close()  # ... but the job failed after all (no END): they are deleted
        assert be.process.wait(timeout=30) == 0
    assert sim.client.snapshots() == []


def test_retention_failure_at_end_only_warns_and_the_next_job_retires(sim, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    one_volume(sim)

    def full(jobid: int) -> list[tuple[str, str]]:
        with backend(Mode.BACKUP, params(sim.endpoint), tmp_path, jobid=jobid) as be:
            be.peer.read_items(data_phase=True)
            be.peer.end()  # answered with F whatever retention does: the job is over
            be.peer.terminate()
            assert be.process.wait(timeout=30) == 0 and be.stderr() == b""
            return list(be.peer.messages)

    full(1)
    (s1,) = (s["id"] for s in sim.client.snapshots())
    ec2 = boto3.client("ec2", **sim.boto3_kwargs())
    image = ec2.register_image(  # an AMI pins s1: DeleteSnapshot refuses it
        Name="pinned",
        RootDeviceName="/dev/sda1",
        BlockDeviceMappings=[{"DeviceName": "/dev/sda1", "Ebs": {"SnapshotId": s1}}],
    )["ImageId"]
    messages = full(2)
    warnings = [t for st, t in messages if st == "W"]
    assert any("retention" in t and s1 in t and "next confirmed job" in t for t in warnings), messages
    assert not [m for m in messages if m[0] in "EAQ"], messages
    snaps = sim.client.snapshots()
    assert s1 in {s["id"] for s in snaps} and len(snaps) == 2
    assert all(s["tags"]["bacula-ec2:state"] == "base" for s in snaps)
    ec2.deregister_image(ImageId=image)
    full(3)
    (s3,) = sim.client.snapshots()  # the next confirmed job retired both older ones
    assert s3["id"] not in {s["id"] for s in snaps}
