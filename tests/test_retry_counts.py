"""The retry counts in the job log match what AWS saw: for a Full, an Incremental, a local
restore and a restore into AWS, the "N AWS retries (M throttled)" of the job's summary line
equals the simulator's failed (faulted) plus throttled answers during that job, and M its
throttled ones (bec2 in-process, --verbose for the job messages)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest

from bacula_ec2.cli import main
from devkit.fake_aws import FakeAws
from devkit.jobkit import Recorder, RecordingSink
from devkit.simulator.fixtures import ACCESS_KEY

from .bec2_common import BLOCK, SECRET

EBS_RATES = {
    "GetSnapshotBlock": 40,
    "PutSnapshotBlock": 40,
    "ListSnapshotBlocks": 4,
    "ListChangedBlocks": 4,
    "StartSnapshot": 10,
    "CompleteSnapshot": 10,
}
#: Faults everywhere except CreateSnapshot(s) (a lost create is looked up for a while: the
#: FakeAws test below covers its count) and DeleteSnapshot/TerminateInstances (cleanup).
FAULTY = [
    "DescribeInstances",
    "DescribeVolumes",
    "DescribeSnapshots",
    "CreateTags",
    "ListSnapshotBlocks",
    "ListChangedBlocks",
    "GetSnapshotBlock",
    "PutSnapshotBlock",
    "StartSnapshot",
    "CompleteSnapshot",
    "CreateVolume",
    "DescribeAvailabilityZones",
]


def _retries(err: str, what: str) -> tuple[int, int]:
    lines = [line for line in err.splitlines() if what in line]
    assert len(lines) == 1, err
    match = re.search(r"(\d+) AWS retries(?: \((\d+) throttled\))?", lines[0])
    assert match, lines[0]
    return int(match.group(1)), int(match.group(2) or 0)


def _aws_saw(sim: Any) -> tuple[int, int]:
    stats = sim.client.stats()
    throttled = sum(stats["throttled"].values())
    return sum(stats["faults_by_operation"].values()) + throttled, throttled


def test_retry_counts_match_the_aws_side(
    sim: Any, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    sim.client.set_options(snapshot_delay=0.02)
    inst = sim.client.create_instance("retry-1", volumes=[{"size_gib": 1, "device": "/dev/sda1"}])
    vid = inst["volume_ids"][0]
    sim.client.write_volume(vid, 0, os.urandom(24 * BLOCK))
    store = tmp_path / "store"
    creds = ["--region=us-east-1", f"--access_key={ACCESS_KEY}", f"--secret_key={SECRET}"]
    common = [*creds, f"--endpoint_url={sim.endpoint}", "--verbose", "--concurrent_threads=8"]

    def job(seed: int, *args: str) -> str:
        sim.client.set_options(
            error_rate=0.08,
            fault_operations=FAULTY,
            fault_seed=seed,
            throttling=True,
            account_rates=EBS_RATES,
            burst_seconds=0.25,
        )
        sim.client.reset_stats()
        rc = main([*args, *common])
        _out, err = capsys.readouterr()
        sim.client.set_options(error_rate=0, throttling=False)
        assert rc == 0, err
        return err

    full = job(1, "--operation=backup", "--instances=retry-1", f"--output={store}")
    counted = _retries(full, "backed up 1 instance(s)")
    assert counted == _aws_saw(sim) and counted[0] > 0, (counted, sim.client.stats(), full)

    sim.client.write_volume(vid, 40 * BLOCK, os.urandom(12 * BLOCK))
    incr = job(2, "--operation=backup", "--level=I", "--instances=retry-1", f"--output={store}")
    counted = _retries(incr, "backed up 1 instance(s)")
    assert counted == _aws_saw(sim) and counted[0] > 0, (counted, sim.client.stats(), incr)

    local = job(3, "--operation=restore", f"--output={store}", f"--local_path={tmp_path / 'local'}")
    assert _retries(local, "restore finished:") == (0, 0) == _aws_saw(sim)

    into = job(
        4, "--operation=restore", "--restore_to=aws", f"--output={store}", f"--restore_workdir={tmp_path}"
    )
    counted = _retries(into, "restore into AWS finished:")
    assert counted == _aws_saw(sim) and counted[0] > 0, (counted, sim.client.stats(), into)


def test_a_lost_create_snapshots_answer_counts_as_a_retry() -> None:
    from bacula_ec2.jobs.backup import BackupJob
    from bacula_ec2.jobs.context import JobContext
    from bacula_ec2.params import parse_parameters

    aws = FakeAws()
    aws.add_instance("web-1")
    aws.ambiguous("CreateSnapshots")
    ctx = JobContext(parse_parameters([("instances", "web-1")]), "retry.1", 1, "F", Recorder(), "")
    BackupJob(ctx, aws).run(RecordingSink())
    assert aws.count("CreateSnapshots") == 1  # its snapshots were found and adopted
    assert aws.stats.retries == 1
