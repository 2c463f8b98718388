"""Estimates (jobs/estimate.py) against the in-memory AWS: the figures an admin plans with
are what the backup that follows actually reads, and an estimate changes nothing."""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bacula_ec2.aws import AwsError
from bacula_ec2.formats.blockimage import BLOCK_SIZE, RECORD_SIZE
from bacula_ec2.jobs.backup import BackupJob
from bacula_ec2.jobs.context import JobContext, JobError
from bacula_ec2.jobs.estimate import Basis, chain_job, estimate, size_text
from bacula_ec2.params import parse_parameters
from devkit.fake_aws import FakeAws
from devkit.jobkit import Director, Recorder, RecordingSink

GIB = 1 << 30
CONSOLE = "-Console-.2026-11-26_16.06.34_47"  # the Job name bconsole's estimate runs as
#: What an estimate may call: reads only.
READS = {
    "DescribeInstances",
    "DescribeVolumes",
    "DescribeSnapshots",
    "ListSnapshotBlocks",
    "ListChangedBlocks",
}


def world(size_gib: int = 1, name: str = "web-1") -> tuple[FakeAws, str, str]:
    aws = FakeAws()
    inst = aws.add_instance(name, devices=[("/dev/xvda", size_gib)])
    return aws, inst.instance_id, aws.volume_of(inst.instance_id, "/dev/xvda")


def run_estimate(
    aws: FakeAws,
    level: str = "F",
    *,
    reference: str | None = None,
    name: str = "web-1",
) -> tuple[list, RecordingSink, Recorder]:  # type: ignore[type-arg]
    params = parse_parameters([("instances", name)])
    rec = Recorder()
    ctx = JobContext(params, CONSOLE, 0, level, rec, "", reference_job=reference)
    sink = RecordingSink()
    before = set(aws.snapshot_ids())
    calls = len(aws.calls)
    result = estimate(ctx, aws, sink)
    assert aws.snapshot_ids() == before, "an estimate creates and deletes nothing"
    assert {op for op, _ in aws.calls[calls:]} <= READS, aws.calls[calls:]
    return result.volumes, sink, rec


def bimg_size(sink: RecordingSink) -> int:
    (path,) = sink.ending(".bimg")
    return sink.files[path][0].size


def test_without_a_snapshot_the_provisioned_size_is_reported_as_such() -> None:
    aws, _iid, vid = world(size_gib=3)
    aws.write(vid, 0, 1)
    vols, sink, rec = run_estimate(aws)
    assert [(v.basis, v.bytes) for v in vols] == [(Basis.PROVISIONED, 3 * GIB)]
    assert bimg_size(sink) == 3 * GIB
    assert f"{vid}: no completed snapshot, provisioned size 3 GiB" in rec.texts("I")


def test_the_latest_completed_snapshot_of_any_origin_gives_the_allocated_data() -> None:
    aws, _iid, vid = world()
    for i in range(10):
        aws.write(vid, i, i + 1)
    aws.put_snapshot(vid, {})  # older: 10 blocks
    aws.advance(60)
    for i in range(30, 70):
        aws.write(vid, i, 7)
    newer = aws.put_snapshot(vid, {"made-by": "aws-backup"})  # not ours, completed: 50 blocks
    aws.advance(60)
    aws.write(vid, 500, 9)
    aws.put_snapshot(vid, {}, state="pending")  # newest, but cannot be listed yet
    vols, sink, rec = run_estimate(aws)
    (v,) = vols
    assert (v.basis, v.snapshot.snapshot_id, v.blocks, v.bytes) == (
        Basis.ALLOCATED,
        newer,
        50,
        50 * BLOCK_SIZE,
    )
    assert bimg_size(sink) == 50 * BLOCK_SIZE
    (path,) = sink.ending(".bmp")
    assert sink.files[path][0].size == RECORD_SIZE * 51
    (line,) = [t for t in rec.texts("I") if t.startswith(vid)]
    assert re.fullmatch(
        rf"{vid}: 25 MiB allocated in {newer} "
        r"\(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ; 50 blocks of the volume's 1 GiB\)",
        line,
    ), line


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sets(st.integers(min_value=0, max_value=2047), max_size=40), st.sets(st.integers(0, 2047), max_size=10)
)
def test_a_full_estimate_is_what_the_full_that_follows_reads(written: set[int], zeros: set[int]) -> None:
    """Data and written-as-zeros blocks alike: the estimate (from the last snapshot) equals
    the blocks the next Full reads when nothing was written in between."""
    aws, _iid, vid = world(size_gib=1)
    for i in written:
        aws.write(vid, i, (i % 250) + 1)
    for i in zeros - written:
        aws.write(vid, i, bytes(BLOCK_SIZE))
    aws.put_snapshot(vid, {})
    aws.advance(5)
    (v,), _sink, _rec = run_estimate(aws)
    params = parse_parameters([("instances", "web-1"), ("concurrent_threads", "2")])
    job = BackupJob(JobContext(params, "backup-web.2026-11-26_16.00.00_5", 5, "F", Recorder(), ""), aws)
    job.run(RecordingSink())
    assert v.blocks == job.total.blocks == len(written | zeros)
    assert v.bytes == job.total.blocks * BLOCK_SIZE
    job.rollback()


def chain_of(aws: FakeAws) -> tuple[Director, str]:
    d = Director(aws, [("instances", "web-1")])
    d.backup("F")
    return d, d.confirmed[-1].name


def test_an_incremental_estimate_counts_the_changes_since_the_base_up_to_a_newer_snapshot() -> None:
    aws, _iid, vid = world()
    for i in range(8):
        aws.write(vid, i, 1)
    d, ref = chain_of(aws)
    base = d.confirmed[-1].snapshots[vid]
    aws.advance(30)
    for i in (2, 3, 100, 101, 102):
        aws.write(vid, i, 5)
    aws.discard(vid, 7)  # TRIM: listed as changed, reads as zeros, no data
    newer = aws.put_snapshot(vid, {})
    aws.advance(30)
    (v,), sink, rec = run_estimate(aws, "I", reference=ref)
    assert (v.basis, v.base.snapshot_id, v.snapshot.snapshot_id) == (Basis.CHANGED, base, newer)
    assert (v.blocks, v.zeroed, v.bytes) == (6, 1, 5 * BLOCK_SIZE)
    assert bimg_size(sink) == 5 * BLOCK_SIZE
    (path,) = sink.ending(".bimg")
    assert path.endswith("-xvda-1G.I0.bimg")  # the name of the backup's image (JobId 0: an estimate)
    (line,) = [t for t in rec.texts("I") if t.startswith(vid)]
    assert f"Incremental: 2.5 MiB changed since {base}" in line and f"up to {newer}" in line, line
    assert "1 of them now unallocated" in line
    # The Incremental that follows reads those very blocks (nothing was written since).
    run = d.backup("I")
    assert run.job.total.blocks == v.blocks


def test_without_a_newer_snapshot_than_the_base_the_changes_are_unknown_and_said_so() -> None:
    aws, _iid, vid = world()
    aws.write(vid, 0, 1)
    d, ref = chain_of(aws)
    aws.write(vid, 1, 2)  # after the base: no snapshot has it
    (v,), sink, rec = run_estimate(aws, "D", reference=ref)
    assert (v.basis, v.bytes) == (Basis.NO_NEWER, 0)
    assert bimg_size(sink) == 0
    (warning,) = rec.texts("W")
    assert warning.startswith(f"{vid}: Differential since {d.confirmed[-1].snapshots[vid]} (")
    assert "not known before the backup snapshots the volume; counted as 0 bytes" in warning


def test_an_incremental_without_a_base_reads_everything_and_says_so() -> None:
    aws, _iid, vid = world()
    for i in range(4):
        aws.write(vid, i, 3)
    aws.put_snapshot(vid, {})  # someone's snapshot, not this job's chain
    aws.advance(5)
    (v,), _sink, rec = run_estimate(aws, "I", reference="backup-web.2026-11-26_16.00.00_1")
    assert (v.basis, v.blocks) == (Basis.ALLOCATED, 4)
    (line,) = [t for t in rec.texts("I") if t.startswith(vid)]
    assert line.endswith(
        "(no snapshot of this job's chain to compare with: the Incremental reads every allocated block)"
    )


def test_the_chain_is_the_reference_jobs_not_the_console_job_name() -> None:
    params = parse_parameters([("instances", "web-1")])
    ctx = JobContext(
        params, CONSOLE, 0, "I", Recorder(), "", reference_job="backup-web.2026-11-26_16.01.42_33"
    )
    assert chain_job(ctx) == "backup-web"
    ctx = JobContext(params, "backup-web.2026-11-26_16.01.42_33", 0, "F", Recorder(), "")
    assert chain_job(ctx) == "backup-web"


def test_a_listing_failure_fails_the_estimate_naming_it() -> None:
    aws, _iid, vid = world()
    aws.write(vid, 0, 1)
    aws.put_snapshot(vid, {})
    aws.fail(
        "ListSnapshotBlocks", "AccessDeniedException", "not authorized to perform ebs:ListSnapshotBlocks"
    )
    with pytest.raises(AwsError, match="ListSnapshotBlocks"):
        run_estimate(aws)


def test_totals_add_up_as_bconsole_adds_them() -> None:
    aws = FakeAws()
    inst = aws.add_instance("web-1", devices=[("/dev/xvda", 1), ("/dev/xvdf", 2)])
    a = aws.volume_of(inst.instance_id, "/dev/xvda")
    for i in range(40):
        aws.write(a, i, 1)
    aws.put_snapshot(a, {})
    aws.advance(5)
    params = parse_parameters([("instances", "web-1")])
    sink = RecordingSink()
    result = estimate(JobContext(params, CONSOLE, 0, "F", Recorder(), ""), aws, sink)
    assert result.bytes == sum(info.size for info, _ in sink.files.values())
    assert result.files == len(sink.files) + len(sink.directories)
    assert [v.bytes for v in result.volumes] == [20 << 20, 2 * GIB]
    assert "2 volume(s), 2.0 GiB of block data (allocated, provisioned)" in result.summary


@pytest.mark.parametrize(
    ("n", "text"),
    [(0, "0 bytes"), (512 << 10, "512 KiB"), (20 << 20, "20 MiB"), (3 << 29, "1.5 GiB"), (1 << 40, "1 TiB")],
)
def test_size_text(n: int, text: str) -> None:
    assert size_text(n) == text


def test_what_the_selection_cannot_find_is_named_and_the_rest_estimated_as_the_backup_would() -> None:
    aws, _iid, vid = world()
    params = parse_parameters([("instances", "web-1,nope-1")])
    rec = Recorder()
    result = estimate(JobContext(params, CONSOLE, 0, "F", rec, ""), aws, RecordingSink())
    assert [v.volume_id for v in result.volumes] == [vid]
    assert len(result.failures) == 1 and "nope-1" in result.failures[0]
    (warning,) = rec.texts("W")
    assert "nope-1" in warning and "a backup would report it as an Error" in warning
    strict = parse_parameters([("instances", "web-1,nope-1"), ("abort_on_error", "1")])
    with pytest.raises(JobError, match="nope-1"):
        estimate(JobContext(strict, CONSOLE, 0, "F", Recorder(), ""), aws, RecordingSink())


def test_volumes_selected_on_their_own_are_estimated_under_the_volumes_folder() -> None:
    aws = FakeAws()
    vid = aws.add_volume(2)
    for i in range(6):
        aws.write(vid, i, 2)
    aws.put_snapshot(vid, {})
    aws.advance(5)
    params = parse_parameters([("volumes", vid)])
    sink = RecordingSink()
    result = estimate(JobContext(params, CONSOLE, 0, "F", Recorder(), ""), aws, sink)
    assert [(v.basis, v.bytes) for v in result.volumes] == [(Basis.ALLOCATED, 3 << 20)]
    (path,) = sink.ending(".bimg")
    assert path.startswith("/@amazon-ec2/volumes/") and sink.files[path][0].size == 3 << 20
    assert not sink.ending(f"{'volumes'}.json")
