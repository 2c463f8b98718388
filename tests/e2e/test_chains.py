"""End to end through real Bacula: Full, Incremental, Incremental, Differential,
Incremental, with writes between jobs; every point in time restored by Bacula's own job
selection (`before=... select current`) and compared byte for byte."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

from devkit.helpers import sha256_file, wait_until

from .common import BLOCK, end_time, plugin_line, restore_before

LEVELS = {"F": "Full", "I": "Incremental", "D": "Differential"}


def seed(sim) -> tuple[str, list[str]]:  # type: ignore[no-untyped-def]
    inst = sim.client.create_instance(
        "chain-web", volumes=[{"size_gib": 1, "device": "/dev/sda1"}, {"size_gib": 1, "device": "/dev/xvdb"}]
    )
    root, data = inst["volume_ids"]
    sim.client.write_volume(root, 0, os.urandom(5 * BLOCK))
    sim.client.write_volume(data, 100 * BLOCK, os.urandom(3 * BLOCK))
    return inst["instance_id"], [root, data]


def test_chain_of_five_restores_every_point_in_time(sim, bacula_stack, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    iid, (root, data) = seed(sim)
    stack = bacula_stack([plugin_line(sim.endpoint, "instances=chain-web", "keep_full_snapshot=yes")])
    w = sim.client.write_volume
    writes = {
        "F": [],
        "I1": [(root, 2 * BLOCK + 7, b"first incremental"), (data, 500 * BLOCK, os.urandom(BLOCK))],
        "I2": [(root, 0, bytes(2 * BLOCK)), (data, 100 * BLOCK, bytes(BLOCK))],  # data -> zeros
        "D": [(root, 900 * BLOCK, b"differential"), (data, 7 * BLOCK, b"d")],
        "I3": [(root, 0, b"after the differential"), (data, 500 * BLOCK, bytes(BLOCK))],
    }
    points = []
    for step, level in (("F", "F"), ("I1", "I"), ("I2", "I"), ("D", "D"), ("I3", "I")):
        for vid, offset, payload in writes[step]:
            w(vid, offset, payload)
        jobid = stack.run_job(level=LEVELS[level], timeout=180)
        log = stack.job_log(jobid)
        assert "Backup OK" in log and "with warnings" not in log, log
        want = {v: sim.client.volume_sha256(v) for v in (root, data)}
        snaps = sim.client.snapshots()
        points.append((step, jobid, end_time(stack, jobid), want, snaps))
        time.sleep(1.1)  # Bacula's times have a one-second resolution

    # Retention (keep_full_snapshot=yes): per volume the Full's snapshot, plus the last
    # backup's (a Differential keeps its own: the next Incremental compares with it).
    per_volume = {step: sorted(s["volume_id"] for s in snaps) for step, _j, _t, _w, snaps in points}
    assert per_volume["F"] == sorted([root, data])
    for step in ("I1", "I2", "D", "I3"):
        assert per_volume[step] == sorted([root, data, root, data]), (step, per_volume[step])
    full_ids = {s["id"] for s in points[0][4]}
    for step, _j, _t, _w, snaps in points[1:]:
        assert full_ids <= {s["id"] for s in snaps}, step
    after_i2, after_d = ({s["id"] for s in points[k][4]} for k in (2, 3))
    assert after_d - full_ids and not (after_d - full_ids) & after_i2, "the Differential keeps its own"

    # Files: a name of its own per backup.
    files = set(stack.list_files(points[1][1]))
    assert f"/@amazon-ec2/{iid}/{root}-sda1-1G.I{points[1][1]}.bimg" in files, files

    for step, _jobid, when, want, _snaps in points:
        where = tmp_path / f"restore-{step}"
        rjobid, status = restore_before(stack, when, where)
        assert status == "T", stack.job_log(rjobid)
        for vid, dev in ((root, "sda1"), (data, "xvdb")):
            image = where / "@amazon-ec2" / iid / f"{vid}-{dev}-1G.img"
            assert sha256_file(image) == want[vid], f"{step}: {image.name} differs"


def test_incremental_without_full_fails_naming_it(sim, bacula_stack, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _iid, (root, _data) = seed(sim)
    stack = bacula_stack([plugin_line(sim.endpoint, "instances=chain-web")])
    stack.run_job(level="Full", timeout=180)
    sim.client.write_volume(root, 3 * BLOCK, b"change")
    ijob = stack.run_job(level="Incremental", timeout=180)
    rjobid, status = stack.restore(ijob, where=tmp_path / "only-incremental")
    log = stack.job_log(rjobid)
    assert status != "T" and "Restore Error" in log, log
    assert "not the Full backup it builds on" in log and root in log, log
    assert not list((tmp_path / "only-incremental").rglob("*.img"))


def test_cancelled_incremental_then_incremental_restores_exactly(sim, bacula_stack, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    iid, (root, data) = seed(sim)
    stack = bacula_stack([plugin_line(sim.endpoint, "instances=chain-web")])
    stack.run_job(level="Full", timeout=180)
    time.sleep(1.1)
    sim.client.write_volume(root, 40 * BLOCK, b"before the cancelled job")
    sim.client.set_options(snapshot_delay=30.0)
    before = {s["id"] for s in sim.client.snapshots()}
    jobid = stack.run_job(level="Incremental", wait=False)
    wait_until(lambda: len(sim.client.snapshots()) > len(before), 60, lambda: stack.job_log(jobid))
    stack.bconsole(f"cancel jobid={jobid} yes")
    assert stack.wait_job(jobid, timeout=120) == "A"
    wait_until(
        lambda: {s["id"] for s in sim.client.snapshots()} == before, 30, lambda: str(sim.client.snapshots())
    )
    sim.client.set_options(snapshot_delay=0.3)
    sim.client.write_volume(data, 60 * BLOCK, b"after the cancelled job")
    time.sleep(1.1)
    last = stack.run_job(level="Incremental", timeout=180)
    assert "Backup OK" in stack.job_log(last)
    want = {v: sim.client.volume_sha256(v) for v in (root, data)}
    time.sleep(1.1)
    where = tmp_path / "latest"
    rjobid, status = restore_before(stack, time.strftime("%Y-%m-%d %H:%M:%S"), where)
    assert status == "T", stack.job_log(rjobid)
    for vid, dev in ((root, "sda1"), (data, "xvdb")):
        assert sha256_file(where / "@amazon-ec2" / iid / f"{vid}-{dev}-1G.img") == want[vid]


def test_chain_survives_five_percent_faults(sim, bacula_stack, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    inst = sim.client.create_instance("faulty", volumes=[{"size_gib": 1, "device": "/dev/sda1"}])
    iid, vid = inst["instance_id"], inst["volume_ids"][0]
    sim.client.write_volume(vid, 0, os.urandom(160 * BLOCK))
    sim.client.set_options(
        fault_seed=7,
        error_rate=0.0125,
        reset_rate=0.0125,
        truncate_rate=0.0125,
        corrupt_rate=0.0125,
        throttling=True,
        account_rates={"GetSnapshotBlock": 40.0, "ListSnapshotBlocks": 50.0, "ListChangedBlocks": 50.0},
    )
    stack = bacula_stack([plugin_line(sim.endpoint, "instances=faulty")])
    logs = []
    for level, offset in (("Full", None), ("Incremental", 3 * BLOCK), ("Incremental", 90 * BLOCK)):
        if offset is not None:
            sim.client.write_volume(vid, offset, os.urandom(40 * BLOCK))
        jobid = stack.run_job(level=level, timeout=300)
        log = stack.job_log(jobid)
        assert "Backup OK" in log and "with warnings" not in log, log
        logs.append(log)
        time.sleep(1.1)
    want = sim.client.volume_sha256(vid)
    stats = sim.client.stats()
    # About 5% of some 250 requests; which ones depends on the threads' order: a few at least.
    assert sum(stats["faults"].values()) >= 3 and sum(stats["throttled"].values()) > 0, stats
    retries = [int(m) for log in logs for m in re.findall(r"(\d+) AWS retries", log)]
    assert sum(retries) > 0, logs
    sim.client.set_options(
        error_rate=0.0, reset_rate=0.0, truncate_rate=0.0, corrupt_rate=0.0, throttling=False
    )
    where = tmp_path / "latest"
    rjobid, status = restore_before(stack, time.strftime("%Y-%m-%d %H:%M:%S"), where)
    assert status == "T", stack.job_log(rjobid)
    assert sha256_file(where / "@amazon-ec2" / iid / f"{vid}-sda1-1G.img") == want
