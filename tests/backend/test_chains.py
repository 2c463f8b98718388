"""Incremental and Differential chains through the backend process, Bacula played by the
test: it keeps every job's files, names the reference job, and restores any point in time
with the parts delivered in a shuffled order."""

from __future__ import annotations

import os
import time
from pathlib import Path

import boto3
import pytest

from devkit.driver import backend, job_name
from devkit.helpers import sha256_file
from protocol import Mode

from .common import BLOCK, FakeBacula, Job, params

GIB = 1 << 30


image_sha = sha256_file


def test_full_incremental_differential_chain_restores_every_point(sim, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    inst = sim.client.create_instance("web-1", volumes=[{"size_gib": 1, "device": "/dev/sda1"}])
    iid, vid = inst["instance_id"], inst["volume_ids"][0]
    w = sim.client.write_volume
    w(vid, 0, os.urandom(6 * BLOCK))
    bacula = FakeBacula(sim, tmp_path, ("instances=web-1", "keep_full_snapshot=yes"))
    expected: dict[int, str] = {}
    kept_after: dict[int, set[str]] = {}

    def run(level: str) -> Job:
        job = bacula.backup(level)
        expected[job.jobid] = sim.client.volume_sha256(vid)
        kept_after[job.jobid] = {s["id"] for s in sim.client.snapshots()}
        return job

    f1 = run("F")
    w(vid, 2 * BLOCK + 5, b"incremental one")  # overwrite
    w(vid, 300 * BLOCK, os.urandom(BLOCK))  # new block
    i2 = run("I")
    w(vid, 0, bytes(2 * BLOCK))  # data overwritten with zeros
    w(vid, 500 * BLOCK, b"new")  # new block
    i3 = run("I")
    w(vid, 700 * BLOCK, os.urandom(100))
    d4 = run("D")
    w(vid, 300 * BLOCK, bytes(BLOCK))  # zeroed again
    w(vid, 900 * BLOCK, b"last")
    i5 = run("I")

    # Names: a Full keeps the plain name, every other backup has its own.
    bimgs = {j.jobid: next(it.name for it in j.items if it.name.endswith(".bimg")) for j in bacula.jobs}
    assert bimgs[1].endswith(f"{vid}-sda1-1G.bimg")
    assert bimgs[2].endswith(".I2.bimg") and bimgs[4].endswith(".D4.bimg") and bimgs[5].endswith(".I5.bimg")
    # Incrementals read changed blocks only.
    sizes = {
        j.jobid: len(next(it.data for it in j.items if it.name.endswith(".bimg")) or b"") for j in bacula.jobs
    }
    assert sizes[2] < 3 * BLOCK and sizes[3] < 4 * BLOCK and sizes[5] < 3 * BLOCK

    # Retention, with keep_full_snapshot=yes: the Full's stays; an Incremental keeps its own
    # and retires the previous one; a Differential keeps its own (the next Incremental's
    # reference) and its base, the Full's.
    assert len(kept_after[1]) == 1
    (s_full,) = kept_after[1]
    assert s_full in kept_after[2] and len(kept_after[2]) == 2
    assert s_full in kept_after[3] and len(kept_after[3]) == 2 and kept_after[3] != kept_after[2]
    assert s_full in kept_after[4] and len(kept_after[4]) == 2 and kept_after[4] != kept_after[3]
    assert s_full in kept_after[5] and len(kept_after[5]) == 2 and kept_after[5] != kept_after[4]

    for n, job in enumerate((f1, i2, i3, d4, i5)):
        chain = bacula.chain(job.jobid)
        messages, where = bacula.restore(chain, tmp_path / f"r{job.jobid}", seed=n)
        assert not [m for m in messages if m[0] in "EQA"], messages
        image = where / "@amazon-ec2" / iid / f"{vid}-sda1-1G.img"
        assert image_sha(image) == expected[job.jobid], f"point in time of job {job.jobid}"
    assert [j.jobid for j in bacula.chain(5)] == [1, 4, 5]


def test_incremental_without_its_full_is_refused(sim, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    inst = sim.client.create_instance("web-1", volumes=[{"size_gib": 1, "device": "/dev/sda1"}])
    vid = inst["volume_ids"][0]
    sim.client.write_volume(vid, 0, os.urandom(BLOCK))
    bacula = FakeBacula(sim, tmp_path, ("instances=web-1",))
    bacula.backup("F")
    sim.client.write_volume(vid, 9 * BLOCK, b"x")
    bacula.backup("I")
    sim.client.write_volume(vid, 19 * BLOCK, b"y")
    i3 = bacula.backup("I")
    messages, where = bacula.restore([i3], tmp_path / "only-i3", seed=1)
    fatal = [t for st, t in messages if st == "A"]
    assert fatal and "not the Full backup" in fatal[0] and vid in fatal[0], messages
    assert not list(where.rglob("*.img")), "no misleading image may be left"
    # Full + the second Incremental, without the first one: a gap.
    messages, where = bacula.restore([bacula.jobs[0], i3], tmp_path / "gap", seed=2)
    fatal = [t for st, t in messages if st == "A"]
    assert fatal and "missing between" in fatal[0], messages
    assert not list(where.rglob("*.img"))


def test_failed_job_is_never_a_base(sim, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    inst = sim.client.create_instance("web-1", volumes=[{"size_gib": 1, "device": "/dev/sda1"}])
    iid, vid = inst["instance_id"], inst["volume_ids"][0]
    sim.client.write_volume(vid, 0, os.urandom(2 * BLOCK))
    bacula = FakeBacula(sim, tmp_path, ("instances=web-1",))
    bacula.backup("F")
    sim.client.write_volume(vid, 40 * BLOCK, b"written before the failed job")
    # An Incremental that Bacula never confirms (no END): its snapshot must not be a base.
    with backend(
        Mode.BACKUP,
        params(sim.endpoint, "instances=web-1"),
        tmp_path,
        jobid=2,
        level="I",
        since=bacula.jobs[0].start,
        prev=job_name(1),
    ) as be:
        be.peer.read_items(data_phase=True)
        be.peer.close()
    sim.client.write_volume(vid, 80 * BLOCK, b"after")
    i3 = bacula.backup("I")  # Bacula's reference is still job 1
    want = sim.client.volume_sha256(vid)
    messages, where = bacula.restore([bacula.jobs[0], i3], tmp_path / "r", seed=3)
    assert not [m for m in messages if m[0] in "EQA"], messages
    assert image_sha(where / "@amazon-ec2" / iid / f"{vid}-sda1-1G.img") == want


@pytest.mark.parametrize("level", ["I", "D"])
def test_no_base_left_reads_everything_and_warns(sim, tmp_path: Path, level: str) -> None:  # type: ignore[no-untyped-def]
    inst = sim.client.create_instance("web-1", volumes=[{"size_gib": 1, "device": "/dev/sda1"}])
    iid, vid = inst["instance_id"], inst["volume_ids"][0]
    sim.client.write_volume(vid, 0, os.urandom(3 * BLOCK))
    bacula = FakeBacula(sim, tmp_path, ("instances=web-1",))
    bacula.backup("F")
    ec2 = boto3.client("ec2", **sim.boto3_kwargs())
    for snap in sim.client.snapshots():  # someone deleted our base
        ec2.delete_snapshot(SnapshotId=snap["id"])
    job = bacula.backup(level)
    assert any(st == "W" and "every allocated block" in t for st, t in bacula.messages), bacula.messages
    want = sim.client.volume_sha256(vid)
    messages, where = bacula.restore([job], tmp_path / "r", seed=4)  # restorable on its own
    assert not [m for m in messages if m[0] in "EQA"], messages
    assert image_sha(where / "@amazon-ec2" / iid / f"{vid}-sda1-1G.img") == want


def test_killed_backend_leaves_pending_snapshots_that_the_next_job_removes(sim, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    inst = sim.client.create_instance("web-1", volumes=[{"size_gib": 1, "device": "/dev/sda1"}])
    vid = inst["volume_ids"][0]
    sim.client.write_volume(vid, 0, os.urandom(BLOCK))
    sim.client.set_options(snapshot_delay=30.0)
    with backend(Mode.BACKUP, params(sim.endpoint, "instances=web-1"), tmp_path, jobid=1) as be:
        deadline = time.monotonic() + 30
        while not sim.client.snapshots():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        be.process.kill()  # no chance to clean up
    (orphan,) = sim.client.snapshots()
    assert orphan["tags"]["bacula-ec2:state"] == "pending"
    sim.client.set_options(snapshot_delay=0.0)
    bacula = FakeBacula(sim, tmp_path, ("instances=web-1",))
    bacula.backup("F")
    assert orphan["id"] not in {s["id"] for s in sim.client.snapshots()}
    assert any(orphan["id"] in text and "did not finish" in text for _st, text in bacula.messages)
