"""Through real Bacula: two Plugin lines of one FileSet selecting the same instance back
each volume up once (no Fatal, job OK); a commit that AWS refuses fails the job, and the
job log names the snapshots (metaplugin-protocol.md §2.3, §3.6, §4.10)."""

from __future__ import annotations

import os
import re
import time

from devkit.helpers import wait_until

from .common import BLOCK, plugin_line


def test_overlapping_plugin_lines_then_a_refused_commit(sim, bacula_stack) -> None:  # type: ignore[no-untyped-def]
    disks = [{"size_gib": 1, "device": "/dev/sda1"}, {"size_gib": 1, "device": "/dev/xvdb"}]
    inst = sim.client.create_instance("overlap-web", volumes=disks)
    iid, vids = inst["instance_id"], inst["volume_ids"]
    for n, vid in enumerate(vids):
        sim.client.write_volume(vid, n * BLOCK, os.urandom(2 * BLOCK))
    stack = bacula_stack(
        [plugin_line(sim.endpoint, "instances=overlap-web"), plugin_line(sim.endpoint, f"instances={iid}")]
    )

    jobid = stack.run_job(level="Full", timeout=180)
    log = stack.job_log(jobid)
    assert stack.job_status(jobid) == "T", log
    assert "Backup OK" in log and "with warnings" not in log and "Fatal" not in log, log
    for vid in vids:
        assert re.search(rf"{vid} .*another Plugin line of this job already backs it up", log), log
    files = stack.list_files(jobid)
    assert len(files) == len(set(files)), f"duplicate catalog entries: {sorted(files)}"
    for vid in vids:
        assert [f for f in files if vid in f and f.endswith(".bimg")] == [
            f"/@amazon-ec2/{iid}/{vid}-{'sda1' if vid == vids[0] else 'xvdb'}-1G.bimg"
        ], files
    bases = sim.client.snapshots()
    assert sorted(s["volume_id"] for s in bases) == sorted(vids)
    assert all(s["tags"]["bacula-ec2:state"] == "base" for s in bases)

    # AWS refuses the commit (an IAM deny on the base tag): the job must not end OK.
    time.sleep(1.1)  # Bacula's times have a one-second resolution
    sim.client.write_volume(vids[0], 9 * BLOCK, b"changed")
    sim.client.set_options(deny_tags=["bacula-ec2:state=base"])
    failed = stack.run_job(level="Incremental", timeout=180)
    log = stack.job_log(failed)
    assert stack.job_status(failed) in ("f", "E"), log
    match = re.search(r"the snapshots of this job \(([^)]*)\) could not be committed", log)
    assert match and "UnauthorizedOperation" in log, log
    named = re.findall(r"snap-[0-9a-f]+", match.group(1))
    assert named and not {s["id"] for s in bases} & set(named), log
    # Rolled back: only the Full's bases are left, still bases.
    wait_until(
        lambda: {s["id"] for s in sim.client.snapshots()} == {s["id"] for s in bases},
        30,
        lambda: str(sim.client.snapshots()),
    )
    assert all(s["tags"]["bacula-ec2:state"] == "base" for s in sim.client.snapshots())
