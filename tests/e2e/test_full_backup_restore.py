"""End to end: real Bacula 15.0.3 DIR/SD/FD -> ec2-fd.so -> ec2-backend -> simulated AWS.

A Full backup of a two-volume instance, checked in the catalog, by estimate, and by a
restore to raw images whose bytes must equal the volumes at snapshot time.
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

from bacula_ec2 import __version__
from devkit.helpers import sha256_file, wait_until

from .common import BLOCK, SECRET, plugin_line


def seed_instance(sim) -> dict:  # type: ignore[no-untyped-def]
    inst = sim.client.create_instance(
        "e2e-web",
        volumes=[{"size_gib": 1, "device": "/dev/sda1"}, {"size_gib": 2, "device": "/dev/xvdf"}],
        tags={"env": "test"},
    )
    root, data = inst["volume_ids"]
    sim.client.write_volume(root, 0, os.urandom(2 * BLOCK + 4096))  # scattered data ...
    sim.client.write_volume(root, 37 * BLOCK + 100, os.urandom(3000))  # ... across blocks
    sim.client.write_volume(root, 600 * BLOCK, os.urandom(BLOCK))
    sim.client.write_volume(root, 20 * BLOCK, bytes(BLOCK))  # written, but all zeros
    sim.client.write_volume(data, (3 << 29) + 12345, os.urandom(200000))  # never-written gaps around it
    return inst


def test_full_backup_and_local_restore_through_real_bacula(sim, bacula_stack, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    inst = seed_instance(sim)
    iid = inst["instance_id"]
    root, data = inst["volume_ids"]
    sim.client.set_options(snapshot_delay=2.0)
    stack = bacula_stack([plugin_line(sim.endpoint, "instances=e2e-web")])

    jobid = stack.run_job(level="Full", wait=False)
    wait_until(sim.client.snapshots, 60, lambda: stack.job_log(jobid))
    # Written after the snapshots were taken: must not be in the backup.
    sim.client.write_volume(root, 0, b"WRITTEN AFTER THE SNAPSHOT" * 100)
    sim.client.write_volume(data, 5 * BLOCK, b"also too late")
    assert stack.wait_job(jobid, timeout=180) == "T", stack.job_log(jobid) + stack.logs()
    log = stack.job_log(jobid)
    assert "Backup OK" in log and "with warnings" not in log, log
    assert "backed up 1 instance" in log

    snaps = {s["volume_id"]: s for s in sim.client.snapshots()}
    assert set(snaps) == {root, data}
    assert all(s["tags"]["bacula-ec2:state"] == "base" for s in snaps.values())
    at_snapshot = {v: sim.client.snapshot_sha256(s["id"]) for v, s in snaps.items()}
    assert at_snapshot[root] != sim.client.volume_sha256(root)

    prefix = f"/@amazon-ec2/{iid}/"
    expected = {
        f"{prefix}{iid}.json",
        f"{prefix}{root}-sda1-1G.json",
        f"{prefix}{root}-sda1-1G.bimg",
        f"{prefix}{root}.bmp",
        f"{prefix}{root}.abmp",
        f"{prefix}{data}-xvdf-2G.json",
        f"{prefix}{data}-xvdf-2G.bimg",
        f"{prefix}{data}.bmp",
        f"{prefix}{data}.abmp",
    }
    files = set(stack.list_files(jobid))
    assert expected <= files, files
    assert files - expected <= {prefix}

    estimate = stack.estimate(listing=True)
    for path in expected:
        assert path in estimate, estimate
    assert len(sim.client.snapshots()) == 2, "estimate must not create snapshots"

    where = tmp_path / "restored"
    rjobid, status = stack.restore(jobid, where=where)
    rlog = stack.job_log(rjobid)
    assert status == "T" and "Restore OK" in rlog, rlog + stack.logs()
    for vid, name, gib in ((root, f"{root}-sda1-1G.img", 1), (data, f"{data}-xvdf-2G.img", 2)):
        image = where / "@amazon-ec2" / iid / name
        assert image.stat().st_size == gib << 30
        assert sha256_file(image) == at_snapshot[vid], f"{image} differs from its snapshot"
    restored_json = where / "@amazon-ec2" / iid / f"{iid}.json"
    assert '"e2e-web"' in restored_json.read_text()

    # The secret is in the FileSet (that is the admin's choice) but nowhere we write.
    fd_log = stack.working["fd"] / "bacula-ec2.log"
    assert fd_log.exists()
    for text in (log, rlog, fd_log.read_text(), stack.messages()):
        assert SECRET not in text
    for path in where.rglob("*.json"):
        assert SECRET not in path.read_text()


def test_missing_instance_fails_the_job_and_leaves_nothing(sim, bacula_stack) -> None:  # type: ignore[no-untyped-def]
    """With abort_on_error=1 (by default the others are backed up: tests/e2e/test_partial_failure.py)."""
    seed_instance(sim)
    line = plugin_line(sim.endpoint, "instances=e2e-web,i-00000000deadbeef0", "abort_on_error=1")
    stack = bacula_stack([line])
    jobid = stack.run_job(level="Full", wait=True, timeout=120)
    assert stack.job_status(jobid) == "f"
    log = stack.job_log(jobid)
    assert "i-00000000deadbeef0: not found" in log, log
    assert sim.client.snapshots() == []


def test_bad_parameter_fails_the_job_naming_it(sim, bacula_stack) -> None:  # type: ignore[no-untyped-def]
    stack = bacula_stack([plugin_line(sim.endpoint, "instances=e2e-web", "bitmap_headers=maybe")])
    jobid = stack.run_job(level="Full", wait=True, timeout=120)
    assert stack.job_status(jobid) == "f"
    assert "parameter bitmap_headers" in stack.job_log(jobid)


def test_cancelled_job_deletes_its_snapshots(sim, bacula_stack) -> None:  # type: ignore[no-untyped-def]
    seed_instance(sim)
    sim.client.set_options(snapshot_delay=30.0)  # the job is still waiting when we cancel
    stack = bacula_stack([plugin_line(sim.endpoint, "instances=e2e-web")])
    jobid = stack.run_job(level="Full", wait=False)
    wait_until(sim.client.snapshots, 60, lambda: stack.job_log(jobid))
    out = stack.bconsole(f"cancel jobid={jobid} yes")
    assert stack.wait_job(jobid, timeout=120) == "A", out + stack.job_log(jobid)
    # deleted by the backend after SIGUSR1
    wait_until(lambda: not sim.client.snapshots(), 30, lambda: str(sim.client.snapshots()))


def test_ls_and_query_through_bconsole(sim, bacula_stack) -> None:  # type: ignore[no-untyped-def]
    inst = seed_instance(sim)
    line = plugin_line(sim.endpoint)
    stack = bacula_stack([line])
    out = stack.bconsole(f'.ls client={stack.client} plugin="{line}" path=/us-east-1')
    assert f"{inst['instance_id']}/" in out, out
    out = stack.bconsole(f'.ls client={stack.client} plugin="{line}" path=/us-east-1/{inst["instance_id"]}')
    assert f"{inst['volume_ids'][1]}-xvdf-2G" in out, out
    out = stack.bconsole(f'.query client={stack.client} plugin="{line}" parameter=instances')
    assert f"instance={inst['instance_id']}" in out and "name=e2e-web" in out, out
    assert sim.client.snapshots() == []


def test_a_backend_of_another_release_fails_the_job_naming_both(sim, bacula_stack, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """ec2-fd.so sends its release in the Hello (`1/<release>`); a backend of another release
    refuses it at the start of the job with one message naming both releases."""
    seed_instance(sim)
    other = tmp_path / "other_release_backend.py"
    other.write_text(
        "import sys\n"
        "import bacula_ec2\n"
        "bacula_ec2.__version__ = '9.9.9'  # as if the backend had been upgraded alone\n"
        "from bacula_ec2.backend import main\n"
        "sys.exit(main())\n"
    )
    cmd = f"{shlex.quote(sys.executable)} {shlex.quote(str(other))}"
    stack = bacula_stack([plugin_line(sim.endpoint, "instances=e2e-web")], backend_cmd=cmd)
    jobid = stack.run_job(level="Full", wait=True, timeout=120)
    assert stack.job_status(jobid) == "f"
    log = stack.job_log(jobid)
    assert f"the FD plugin ec2 is release {__version__}, this backend is release 9.9.9" in log, log
    assert "bacula-ec2-plugin package" in log, log
    assert sim.client.snapshots() == []
