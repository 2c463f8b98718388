"""Through real Bacula 15.0.3 (one stack): a missing instance is a job Error and the others
are backed up (Backup OK -- with warnings), and what was backed up restores exactly; a copy
restored as a new instance keeps the Name but is not in the next Full; with abort_on_error=1
the job fails and leaves no snapshot; and the FD reads abort_on_error as bacula-ec2 does for
every spelling bacula-ec2 accepts (metaplugin-protocol.md §3.4.4, §4.10; docs/PARAMETERS.md).

The FileSet's Plugin line is changed between jobs by rewriting the Director's configuration
and `reload` (cheaper than a stack per line)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from bacula_ec2.params import parse_parameters, restore_option_items

from .common import BLOCK, ec2, live_instances, plugin_line, tags

RESTORED = "bacula-ec2:restored-from"


def use_lines(stack: Any, *lines: str) -> None:
    """A new FileSet for the next jobs: rewrite the configuration, `reload` the Director."""
    stack.plugin_commands = list(lines)
    stack._write_configs()
    out = stack.bconsole("reload")
    assert "rror" not in out, out


def fd_readings(stack: Any, start: int) -> list[bool]:
    """What the FD's metaplugin decided about abort_on_error (its debug line at level 10),
    for each Plugin line it parsed since `start` bytes of its output."""
    text = (stack.log_dir / "bacula-fd.out").read_bytes()[start:].decode(errors="replace")
    return [m == "True" for m in re.findall(r"abort_on_error found: (True|False)", text)]


def restore_as_instance(stack: Any, jobid: int) -> tuple[int, str]:
    """`restore jobid=N all done where=/`, Plugin Options: restore_as=instance."""
    names = [name for name, *_ in restore_option_items()]
    out = stack.bconsole(
        f"restore jobid={jobid} client={stack.client} all done where=/",
        "mod",
        "13",
        "mod",
        str(names.index("restore_as") + 1),
        "instance",
        "yes",
        "yes",
    )
    assert re.search(r"^restore_as:\s+instance\b", out, re.M), out
    match = re.search(r"Job queued\. JobId=(\d+)", out)
    assert match, out
    rjobid = int(match.group(1))
    return rjobid, stack.wait_job(rjobid, timeout=180)


def fd_out_size(stack: Any) -> int:
    return (stack.log_dir / "bacula-fd.out").stat().st_size


def test_partial_failure_restored_copies_and_abort_on_error(sim, bacula_stack, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    inst = sim.client.create_instance("web-1", volumes=[{"size_gib": 1, "device": "/dev/sda1"}])
    iid, (vid,) = inst["instance_id"], inst["volume_ids"]
    sim.client.write_volume(vid, 0, os.urandom(2 * BLOCK))
    sim.client.write_volume(vid, 300 * BLOCK + 11, b"partial failure")
    want = sim.client.volume_sha256(vid)
    selection = "instances=web-1,nope-1"
    stack = bacula_stack([plugin_line(sim.endpoint, selection)], debug_level=10)

    # abort_on_error=0 (the default): nope-1 is an Error, web-1 is backed up and committed.
    jobid = stack.run_job(level="Full", timeout=180)
    log = stack.job_log(jobid)
    assert stack.job_status(jobid) == "T", log
    assert "Backup OK -- with warnings" in log and "Fatal" not in log, log
    assert re.search(r"Error: .*instance nope-1: no instance named 'nope-1'", log), log
    assert re.search(r"NOT backed up \(1\): instance nope-1", log), log
    files = stack.list_files(jobid)
    assert f"/@amazon-ec2/{iid}/{vid}-sda1-1G.bimg" in files and not [f for f in files if "nope" in f]
    snaps = sim.client.snapshots()
    assert [s["volume_id"] for s in snaps] == [vid] and snaps[0]["tags"]["bacula-ec2:state"] == "base"

    # web-1 restored exactly, as a new instance: it keeps the Name web-1, tagged as restored.
    before = set(live_instances(sim))
    sim.client.write_volume(vid, 0, b"after the backup")
    rjobid, status = restore_as_instance(stack, jobid)
    assert status == "T", stack.job_log(rjobid)
    (copy,) = set(live_instances(sim)) - before
    new = live_instances(sim)[copy]
    assert tags(new)["Name"] == "web-1" and tags(new)[RESTORED] == iid
    (new_vid,) = [m["Ebs"]["VolumeId"] for m in new["BlockDeviceMappings"]]
    (new_vol,) = ec2(sim).describe_volumes(VolumeIds=[new_vid])["Volumes"]
    assert tags(new_vol)[RESTORED] == iid
    assert sim.client.volume_sha256(new_vid) == want

    # The next Full of instances=web-1,...: the original only, and the log says why.
    jobid2 = stack.run_job(level="Full", timeout=180)
    log2 = stack.job_log(jobid2)
    assert stack.job_status(jobid2) == "T" and "Backup OK -- with warnings" in log2, log2
    assert re.search(
        rf"instance {copy} \(web-1\): skipped, a bacula-ec2 restore created it \(from {iid}\)", log2
    ), log2
    files2 = stack.list_files(jobid2)
    assert any(iid in f for f in files2) and not any(copy in f or new_vid in f for f in files2), files2
    assert {s["volume_id"] for s in sim.client.snapshots()} == {vid}
    assert fd_readings(stack, 0) == []  # abort_on_error not given: the FD has nothing to say

    # abort_on_error=1: the job fails at nope-1, and no snapshot is left.
    kept = {s["id"] for s in sim.client.snapshots()}
    use_lines(stack, plugin_line(sim.endpoint, selection, "abort_on_error=1"))
    mark = fd_out_size(stack)
    jobid3 = stack.run_job(level="Full", timeout=180)
    log3 = stack.job_log(jobid3)
    assert stack.job_status(jobid3) in ("f", "E"), log3
    fatal = r"Fatal error: .*instance nope-1: no instance named 'nope-1'.*abort_on_error=1"
    assert re.search(fatal, log3), log3
    assert {s["id"] for s in sim.client.snapshots()} == kept
    assert fd_readings(stack, mark) == [True]

    # The spellings: the FD's reading of each equals bacula-ec2's, or bacula-ec2 refuses it.
    spellings = ["abort_on_error=0", "abort_on_error", "abort_on_error=yes", "abort_on_error=no"]
    use_lines(stack, *(plugin_line(sim.endpoint, "instances=web-1", s) for s in spellings))
    mark = fd_out_size(stack)
    out = stack.estimate(listing=True) + stack.messages()
    readings = fd_readings(stack, mark)
    assert readings == [False, True, True, True], (readings, out)
    ours = [
        parse_parameters([("abort_on_error", s.partition("=")[2] if "=" in s else "1")])
        for s in spellings[:3]
    ]
    assert [p.abort_on_error for p in ours] == readings[:3]
    assert "'no' is ambiguous: the File Daemon reads abort_on_error as on" in out, out
