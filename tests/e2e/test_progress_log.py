"""Progress in the Bacula job log, through real Bacula 15.0.3: while the snapshots are taken
(each snapshot's Progress) and while a volume is read (percent, MiB/s, time left), then the
upload of a restore into AWS. The interval (once a minute by default) is shortened to 0.3 s
through the FD's environment (BACULA_EC2_PROGRESS_EVERY, jobs/progress.py); the simulator
delays each block request and the plugin reads one block at a time, so that each transfer
lasts a couple of seconds."""

from __future__ import annotations

import os
import re
from pathlib import Path

from devkit.simulator.fixtures import ACCESS_KEY

from .common import BLOCK, SECRET, restore_with_options

BLOCKS = 16  # 8 MiB
PERCENT = (
    r"volume {vid}: (\d+)% {verb} \([0-9.]+ MiB of 8\.0 MiB\), [0-9.]+ MiB/s, "
    r"(about [0-9.]+ s left|time left not known yet)"
)


def test_the_job_log_shows_snapshot_and_volume_progress(sim, bacula_stack, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    inst = sim.client.create_instance("prog-web", volumes=[{"size_gib": 1, "device": "/dev/sda1"}])
    vid = inst["volume_ids"][0]
    for n in range(BLOCKS):
        sim.client.write_volume(vid, n * 11 * BLOCK, os.urandom(BLOCK))
    want = sim.client.volume_sha256(vid)
    sim.client.set_options(
        snapshot_delay=1.0, latency_ms=100, latency_operations=["GetSnapshotBlock", "PutSnapshotBlock"]
    )
    line = " ".join(
        [
            "ec2:",
            "region=us-east-1",
            f"access_key={ACCESS_KEY}",
            f"secret_key={SECRET}",
            f"endpoint_url={sim.endpoint}",
            "concurrent_threads=1",
            "instances=prog-web",
        ]
    )
    stack = bacula_stack([line], fd_env={"BACULA_EC2_PROGRESS_EVERY": "0.3"})
    jobid = stack.run_job(level="Full", timeout=120)
    log = stack.job_log(jobid)
    assert "Backup OK" in log, log
    assert SECRET not in log
    # waiting for the snapshot: its Progress
    assert re.search(rf"snapshots of {inst['instance_id']} \(prog-web\): snap-[0-9a-f]+ \d+%", log), log
    # reading the volume: several lines, percent growing, each with a rate and the time left
    assert f"volume {vid}: {BLOCKS} block(s) to read from snap-" in log, log
    percents = [int(m.group(1)) for m in re.finditer(PERCENT.format(vid=vid, verb="backed up"), log)]
    assert len(percents) >= 2 and percents == sorted(percents) and percents[-1] < 100, log

    rjobid, status = restore_with_options(
        stack, f"jobid={jobid} client={stack.client}", {"restore_as": "snapshot"}
    )
    rlog = stack.job_log(rjobid)
    assert status == "T" and "Restore OK" in rlog, rlog
    pattern = PERCENT.format(vid=rf"{vid} -> snap-[0-9a-f]+", verb="uploaded")
    uploaded = [int(m.group(1)) for m in re.finditer(pattern, rlog)]
    assert len(uploaded) >= 2 and uploaded == sorted(uploaded), rlog
    assert re.search(r"waiting for the new snapshot\(s\) to complete: snap-[0-9a-f]+ \d+%", rlog), rlog
    [new] = [s for s in sim.client.snapshots() if s.get("tags", {}).get("bacula-ec2:restored-from") == vid]
    assert sim.client.snapshot_sha256(new["id"]) == want
