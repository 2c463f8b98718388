"""A backup's snapshot lifecycle when AWS behaves as it does (issue 11), on a BackupJob
against the in-memory AWS (devkit.fake_aws) with its fake clock:

- pipelining: each instance is read as soon as its own snapshots are completed, in
  completion order, the catalog layout per instance intact and every image exact;
- long snapshots: `snapshot_timeout` is "no progress for N s", with progress in the job log;
- snapshot quotas and throttling on CreateSnapshots: retried 15-30 s apart within a budget;
- a CreateSnapshot(s) without a definite answer: the job's own snapshots are found by their
  tags and adopted, never duplicated;
- eventual consistency: tags on just-created snapshots retried, deletes confirmed by
  DescribeSnapshots, nothing left behind (failure, cancel, still-listed deleted snapshots).
"""

from __future__ import annotations

import itertools
import re

import pytest

from bacula_ec2.aws import AwsError
from bacula_ec2.formats.blockimage import BLOCK_SIZE
from bacula_ec2.jobs import snapshots as snapshots_mod
from bacula_ec2.jobs.backup import BackupJob
from bacula_ec2.jobs.context import JobContext
from bacula_ec2.params import parse_parameters
from bacula_ec2.retry import Cancelled
from devkit.fake_aws import FakeAws
from devkit.jobkit import Recorder, RecordingSink, image_blocks

T = "bacula-ec2:"
ZERO = bytes(BLOCK_SIZE)
JOB = "backup-web.2026-11-26_16.00.00_5"


def fleet(seconds: list[tuple[float, float]], **fake: float) -> tuple[FakeAws, list[str], dict[str, str]]:
    """One instance web-N per entry, two volumes each, whose snapshots take these seconds."""
    aws = FakeAws(**fake)  # type: ignore[arg-type]
    names, volumes = [], {}
    for n, (root, data) in enumerate(seconds, 1):
        inst = aws.add_instance(f"web-{n}", devices=[("/dev/xvda", 1), ("/dev/xvdf", 1)])
        names.append(inst.instance_id)
        for k, (device, secs) in enumerate((("/dev/xvda", root), ("/dev/xvdf", data))):
            vid = aws.volume_of(inst.instance_id, device)
            volumes[vid] = inst.instance_id
            aws.snapshot_seconds_of[vid] = secs
            for i in range(3):
                aws.write(vid, 5 * i + k, 16 * n + 4 * k + i + 1)
    return aws, names, volumes


def job(
    aws: FakeAws, count: int, *pairs: tuple[str, str], wait_all_first: bool = False, job_id: int = 5
) -> tuple[BackupJob, RecordingSink, Recorder]:
    selection = ",".join(f"web-{n}" for n in range(1, count + 1))
    params = parse_parameters([("instances", selection), ("concurrent_threads", "2"), *pairs])
    rec = Recorder()
    ctx = JobContext(params, JOB.replace("_5", f"_{job_id}"), job_id, "F", rec, "")
    bj = BackupJob(ctx, aws, wait_all_first=True) if wait_all_first else BackupJob(ctx, aws)
    return bj, RecordingSink(), rec


def first_reads(aws: FakeAws) -> dict[str, float]:
    """Record (fake clock) when each snapshot's first block is read."""
    seen: dict[str, float] = {}
    original = aws.get_snapshot_block

    def spy(snapshot_id, ref):  # type: ignore[no-untyped-def]
        seen.setdefault(snapshot_id, aws.clock.now())
        return original(snapshot_id, ref)

    aws.get_snapshot_block = spy  # type: ignore[method-assign]
    return seen


def assert_exact(aws: FakeAws, bj: BackupJob, sink: RecordingSink) -> None:
    """Every volume's image holds exactly its snapshot's blocks."""
    for sid, vid in bj.ledger.volume_of.items():
        [path] = [p for p in sink.ending(".bimg") if vid in p]
        header, blocks = image_blocks(sink.data(path))
        assert header.snapshot_id == sid
        got = {i: d for i, d in blocks.items() if d is not None and d != ZERO}
        assert got == {i: d for i, d in aws.content(sid).items() if d != ZERO}


def instance_of_path(path: str, instances: list[str]) -> str:
    [iid] = [i for i in instances if i in path]
    return iid


def read_order(sink: RecordingSink, instances: list[str]) -> list[str]:
    """The instances in the order the job handed them over (their directory entries)."""
    return [instance_of_path(d, instances) for d in sink.directories]


# ---------------------------------------------------------------------------- pipelining
def test_each_instance_is_read_as_soon_as_its_own_snapshots_complete() -> None:
    aws, iids, vols = fleet([(300, 200), (10, 30), (120, 40)])
    reads = first_reads(aws)
    bj, sink, _rec = job(aws, 3)
    bj.run(sink)
    # web-2 (30 s), web-3 (120 s), web-1 (300 s)
    assert read_order(sink, iids) == bj.read_order == [iids[1], iids[2], iids[0]]
    owner_of = {sid: vols[vid] for sid, vid in bj.ledger.volume_of.items()}
    web1_ready = max(aws._snaps[s].ready_at for s, iid in owner_of.items() if iid == iids[0])
    web2_first = min(t for s, t in reads.items() if owner_of[s] == iids[1])
    assert web2_first < web1_ready - 200  # web-2 was read long before web-1's snapshots completed
    # the catalog layout per instance: its JSON, its volumes' files, its directory; one
    # instance after the other, in the order they were read
    owners = [instance_of_path(p, iids) for p in sink.order]
    blocks = [owners[0]] + [b for a, b in itertools.pairwise(owners) if a != b]
    assert blocks == read_order(sink, iids)
    for iid in iids:
        mine = [p for p in sink.order if iid in p]
        assert mine[0].endswith(f"/{iid}.json"), mine  # the instance's configuration first
    assert len(sink.ending(".bimg")) == 6
    assert_exact(aws, bj, sink)


def test_the_old_order_waits_for_every_snapshot_first() -> None:
    aws, iids, _vols = fleet([(300, 200), (10, 30), (120, 40)])
    reads = first_reads(aws)
    bj, sink, _rec = job(aws, 3, wait_all_first=True)
    bj.run(sink)
    assert read_order(sink, iids) == iids  # selection order
    last_ready = max(aws._snaps[s].ready_at for s in bj.ledger.created)
    assert min(reads.values()) >= last_ready
    assert_exact(aws, bj, sink)


def test_a_long_snapshot_whose_progress_grows_is_waited_for_and_shown_in_the_job_log() -> None:
    aws, iids, _vols = fleet([(3600, 1800)])
    bj, sink, rec = job(aws, 1, ("snapshot_timeout", "60"))
    bj.run(sink)
    lines = [t for t in rec.texts("I") if t.startswith("snapshots of ")]
    assert lines, rec.texts()
    pattern = rf"snapshots of {iids[0]} \(web-1\): snap-[0-9a-f]+ (\d+)%, snap-[0-9a-f]+ (\d+|100)%"
    assert all(re.fullmatch(pattern, t) for t in lines), lines
    percents = [int(re.fullmatch(pattern, t).group(1)) for t in lines]  # type: ignore[union-attr]
    assert percents == sorted(percents) and percents[0] < percents[-1]
    assert len(lines) <= 3600 / 30 + 1  # about every 30 s, not every poll
    assert_exact(aws, bj, sink)


def test_a_stuck_snapshot_fails_naming_it_and_its_instance_and_nothing_is_left() -> None:
    aws, iids, _vols = fleet([(10, 10), (20, 20)])
    stuck_vol = aws.volume_of(iids[1], "/dev/xvdf")
    aws.stall_snapshots_of(stuck_vol)
    bj, sink, _rec = job(aws, 2, ("snapshot_timeout", "60"), ("abort_on_error", "1"))
    with pytest.raises(AwsError) as info:
        bj.run(sink)
    pattern = r".*Timeout: snapshot\(s\) (snap-\w+) of i-\w+ \(web-2\): no progress for (\d+) s.*"
    m = re.fullmatch(pattern, str(info.value))
    assert m, info.value
    assert bj.ledger.volume_of[m.group(1)] == stuck_vol and 60 <= int(m.group(2)) <= 60 + 15
    assert read_order(sink, iids) == [iids[0]]  # web-1 was read meanwhile
    assert bj.rollback() == [] and aws.snapshot_ids() == set()


# ---------------------------------------------------------------------------- quotas
@pytest.mark.parametrize(
    "code",
    [
        "PendingSnapshotLimitExceeded",
        "ConcurrentSnapshotLimitExceeded",
        "SnapshotCreationPerVolumeRateExceeded",
    ],
)
def test_a_snapshot_quota_is_waited_out_with_a_job_log_line(code: str) -> None:
    aws, _iids, _vols = fleet([(5, 5), (5, 5)])
    aws.fail(
        "CreateSnapshots", code, "The maximum allowed number of pending snapshots has been exceeded.", times=2
    )
    bj, sink, rec = job(aws, 2)
    before = len(aws.clock.slept)
    bj.run(sink)
    lines = [t for t in rec.texts("I") if t.startswith("AWS refuses more snapshots")]
    assert len(lines) == 2
    for line in lines:
        m = re.fullmatch(
            rf"AWS refuses more snapshots of i-\w+ \(web-1\) now \({code}\): trying again in (\d+) s", line
        )
        assert m and 15 <= int(m.group(1)) <= 30, line
    waits = aws.clock.slept[before : before + 2]
    assert all(15 <= w <= 30 for w in waits)
    assert aws.count("CreateSnapshots") == 4
    assert len(aws.snapshot_ids()) == 4  # one per volume, no more
    assert_exact(aws, bj, sink)


def test_a_quota_that_does_not_lift_fails_within_the_budget_naming_instance_and_code() -> None:
    aws, iids, _vols = fleet([(5, 5), (5, 5)])
    bj, sink, _rec = job(aws, 2, ("abort_on_error", "1"))
    original = aws.create_snapshots

    def refuse_web2(instance_id, *args):  # type: ignore[no-untyped-def]
        if instance_id == iids[1]:
            aws.fail("CreateSnapshots", "PendingSnapshotLimitExceeded", "too many pending")
        return original(instance_id, *args)

    aws.create_snapshots = refuse_web2  # type: ignore[method-assign]
    started = aws.clock.now()
    with pytest.raises(AwsError, match=r"PendingSnapshotLimitExceeded.*web-2.* after \d+ s") as info:
        bj.run(sink)
    assert info.value.code == "PendingSnapshotLimitExceeded" and info.value.resource == iids[1]
    assert isinstance(info.value.__cause__, AwsError)
    assert aws.clock.now() - started <= snapshots_mod.QUOTA_BUDGET + 60
    assert bj.rollback() == [] and aws.snapshot_ids() == set()  # web-1's were deleted


def test_throttled_create_snapshots_is_tried_again() -> None:
    aws, _iids, _vols = fleet([(5, 5)])
    aws.fail("CreateSnapshots", "RequestLimitExceeded", "Request limit exceeded.", status=503, times=3)
    bj, sink, _rec = job(aws, 1)
    bj.run(sink)
    assert aws.count("CreateSnapshots") == 4 and len(aws.snapshot_ids()) == 2


def test_a_cancel_while_waiting_out_a_quota_leaves_nothing() -> None:
    aws, _iids, _vols = fleet([(5, 5), (5, 5)])
    bj, sink, _rec = job(aws, 2)
    original = aws.create_snapshots
    calls = []

    def second_refused(*args):  # type: ignore[no-untyped-def]
        calls.append(args[0])
        if len(calls) == 2:
            bj.ctx.cancel.set()
            aws.fail("CreateSnapshots", "ConcurrentSnapshotLimitExceeded", "too many")
        return original(*args)

    aws.create_snapshots = second_refused  # type: ignore[method-assign]
    with pytest.raises(Cancelled):
        bj.run(sink)
    assert len(bj.ledger.created) == 2
    assert bj.rollback() == [] and aws.snapshot_ids() == set()


# ---------------------------------------------------------------------------- no duplicates
@pytest.mark.parametrize("code", [None, "InternalError"])
@pytest.mark.parametrize("window", [0.0, 20.0])
def test_a_lost_create_snapshots_answer_is_adopted_not_repeated(code: str | None, window: float) -> None:
    aws, _iids, _vols = fleet([(5, 5)], not_found_window=window)
    aws.ambiguous("CreateSnapshots", code)
    bj, sink, rec = job(aws, 1)
    bj.run(sink)
    assert aws.count("CreateSnapshots") == 1
    assert len(aws.snapshot_ids()) == 2 and set(bj.ledger.created) == aws.snapshot_ids()
    assert any("it had created" in t for t in rec.texts("I"))
    bj.commit()
    assert all(aws.tags_of(s)[T + "state"] == "base" for s in aws.snapshot_ids())
    assert_exact(aws, bj, sink)


def test_a_lost_answer_that_created_nothing_is_tried_again_once_the_lookup_is_sure() -> None:
    aws, _iids, _vols = fleet([(5, 5)], not_found_window=10.0)
    aws.fail("CreateSnapshots", "InternalError", "We encountered an internal error.", status=500)
    bj, sink, rec = job(aws, 1)
    started = aws.clock.now()
    bj.run(sink)
    assert aws.count("CreateSnapshots") == 2 and len(aws.snapshot_ids()) == 2
    assert any("it created nothing: trying again" in t for t in rec.texts("I"))
    assert aws.clock.now() - started >= snapshots_mod.ADOPT_WINDOW  # looked for the whole window


def test_a_lost_standalone_create_snapshot_is_adopted() -> None:
    aws = FakeAws()
    vid = aws.add_volume(1)
    aws.write(vid, 2, 7)
    aws.ambiguous("CreateSnapshot")
    rec = Recorder()
    ctx = JobContext(parse_parameters([("volumes", vid)]), JOB, 5, "F", rec, "")
    bj, sink = BackupJob(ctx, aws), RecordingSink()
    bj.run(sink)
    assert aws.count("CreateSnapshot") == 1 and len(aws.snapshot_ids()) == 1
    assert_exact(aws, bj, sink)


def test_an_orphan_seen_too_late_is_removed_at_commit() -> None:
    """The lost call's snapshots become visible only after the lookup gave up: the job made
    a second set; the first is deleted once committed, so nothing of it stays pending."""
    aws, _iids, _vols = fleet([(5, 5)])
    aws.ambiguous("CreateSnapshots", hidden_for=400.0)
    bj, sink, _rec = job(aws, 1)
    bj.run(sink)
    assert len(aws.snapshot_ids()) == 4
    aws.advance(400)
    bj.commit()
    assert aws.snapshot_ids() == set(bj.ledger.created) and len(bj.ledger.created) == 2


# ---------------------------------------------------------------------------- eventual consistency
def test_a_backup_survives_snapshots_ec2_does_not_know_yet() -> None:
    aws, _iids, _vols = fleet([(5, 5), (2, 2)], not_found_window=8.0)
    bj, sink, _rec = job(aws, 2)
    bj.run(sink)
    bj.commit()
    assert all(aws.tags_of(s)[T + "state"] == "base" for s in aws.snapshot_ids())
    assert {aws.tags_of(s)[T + "volume"] for s in aws.snapshot_ids()} == {
        aws._snaps[s].volume_id for s in aws.snapshot_ids()
    }
    assert_exact(aws, bj, sink)


def test_a_rollback_right_after_creation_waits_until_it_can_delete() -> None:
    """CreateTags is refused for good while EC2 does not list the new snapshots yet: the
    rollback's deletes would answer NotFound (taken as gone); it confirms instead."""
    aws, _iids, _vols = fleet([(5, 5)], not_found_window=8.0)
    aws.fail("CreateTags", "UnauthorizedOperation", "You are not authorized to perform this operation.")
    bj, sink, _rec = job(aws, 1)
    with pytest.raises(AwsError, match="UnauthorizedOperation"):
        bj.run(sink)
    assert len(aws.snapshot_ids()) == 2
    assert bj.rollback() == []
    assert aws.snapshot_ids() == set()


def test_a_deleted_snapshot_still_listed_is_confirmed_gone_before_counting() -> None:
    aws, _iids, _vols = fleet([(5, 5)], listed_after_delete=20.0)
    bj, sink, _rec = job(aws, 1)
    bj.run(sink)
    started = aws.clock.now()
    assert bj.rollback() == []
    assert aws.clock.now() - started >= 20 and aws.snapshot_ids() == set() and bj.ledger.created == []


def test_a_delete_never_confirmed_is_named_in_what_the_rollback_left() -> None:
    aws, _iids, _vols = fleet([(5, 5)], listed_after_delete=10_000.0)
    bj, sink, _rec = job(aws, 1)
    bj.run(sink)
    left = bj.rollback()
    assert len(left) == 2 and all(
        re.fullmatch(r"snap-\w+ \(.*still listed \d+ s after it was deleted\)", t) for t in left
    )


def test_retention_confirms_its_deletes_too() -> None:
    aws, _iids, _vols = fleet([(5, 5)], listed_after_delete=20.0)
    first, sink, _rec = job(aws, 1)
    first.run(sink)
    first.commit()
    first.retire()
    aws.advance(60)
    second, sink2, rec = job(aws, 1, job_id=6)
    second.run(sink2)
    second.commit()
    old = set(first.ledger.created)
    mark, started = len(aws.calls), aws.clock.now()
    second.retire()  # a Full: deletes the first's snapshots
    assert aws.snapshot_ids() == set(second.ledger.created)
    assert sum("no longer a base" in t for t in rec.texts("I")) == 2
    # each delete was confirmed: DescribeSnapshots of it after its DeleteSnapshot, until EC2
    # stopped listing it
    calls = aws.calls[mark:]
    for sid in old:
        deleted = calls.index(("DeleteSnapshot", sid))
        assert ("DescribeSnapshots", sid) in calls[deleted:]
    assert aws.clock.now() - started >= 20
