"""Partial failure the Bacula way (issue 13) against the in-memory AWS: with abort_on_error=0
an instance or volume that cannot be found, snapshotted or read is a job Error and the
others are backed up and committed; with abort_on_error=1 the first one fails the job and
nothing is kept; resources a restore created are skipped unless named by id. The FD reads
abort_on_error itself: only spellings both read alike are accepted."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bacula_ec2.aws.errors import aws_error
from bacula_ec2.cli import main
from bacula_ec2.formats.blockimage import BLOCK_SIZE, FormatError
from bacula_ec2.jobs import snapshots as snapshots_mod
from bacula_ec2.jobs.backup import BackupJob
from bacula_ec2.jobs.context import JobContext, JobError
from bacula_ec2.jobs.runner import BackupRun
from bacula_ec2.jobs.selection import RESTORED_TAG, select
from bacula_ec2.params import ParameterError, parse_parameters
from devkit.fake_aws import FakeAws
from devkit.helpers import sha256_file
from devkit.jobkit import Recorder, RecordingSink, image_blocks
from devkit.simulator.fixtures import ACCESS_KEY

JOB = "backup-web.2026-12-01_10.00.00_4"
DISKS = [("/dev/xvda", 1), ("/dev/xvdf", 1)]


def fleet(names: tuple[str, ...] = ("web-1", "web-2")) -> tuple[FakeAws, dict[str, str]]:
    aws = FakeAws()
    ids = {}
    for n, name in enumerate(names):
        iid = aws.add_instance(name, devices=DISKS).instance_id
        ids[name] = iid
        for dev, _size in DISKS:
            vid = aws.volume_of(iid, dev)
            for block in range(3):
                aws.write(vid, block * 5, 100 * n + block + 1)
    return aws, ids


def run(
    aws: FakeAws, *pairs: tuple[str, str]
) -> tuple[BackupRun, RecordingSink, Recorder, BaseException | None]:
    params = parse_parameters([("concurrent_threads", "2"), *pairs])
    rec = Recorder()
    ctx = JobContext(params, JOB, 4, "F", rec, "")
    backup = BackupRun(ctx, lambda c: BackupJob(c, aws))
    sink = RecordingSink()
    try:
        backup.backup(sink)
    except (JobError, Exception) as exc:  # the test says which it wants
        return backup, sink, rec, exc
    return backup, sink, rec, None


def images_of(sink: RecordingSink, iid: str) -> list[str]:
    return [p for p in sink.ending(".bimg") if f"/{iid}/" in p]


def base_volumes(aws: FakeAws) -> set[str]:
    return {aws.tags_of(s)["bacula-ec2:volume"] for s in aws.snapshot_ids()}


def assert_exact(aws: FakeAws, sink: RecordingSink, iid: str) -> None:
    """Every volume of the instance is in the job, complete, block for block."""
    paths = images_of(sink, iid)
    assert len(paths) == len(DISKS), sink.order
    for path in paths:
        header, blocks = image_blocks(sink.data(path))
        disk = aws.disk(header.volume_id)
        assert {i: d for i, d in blocks.items() if d is not None} == disk


# ---------------------------------------------------------------- abort_on_error=0


def test_a_missing_instance_is_an_error_and_the_others_are_backed_up_and_committed() -> None:
    aws, ids = fleet()
    backup, sink, rec, exc = run(aws, ("instances", "web-1,nope-1,web-2"))
    assert exc is None
    errors = rec.texts("E")
    assert len(errors) == 1 and "instance nope-1" in errors[0] and "no instance named 'nope-1'" in errors[0]
    assert [str(f) for f in backup.failures] == [errors[0].split("; not backed up")[0]]
    assert sorted(backup.backed_up) == sorted(f"{ids[n]} ({n})" for n in ("web-1", "web-2"))
    for name in ("web-1", "web-2"):
        assert_exact(aws, sink, ids[name])
    states = {aws.tags_of(s)["bacula-ec2:state"] for s in aws.snapshot_ids()}
    assert states == {"base"} and len(aws.snapshot_ids()) == 4
    assert any("NOT backed up (1): instance nope-1" in t for t in rec.texts("I"))


def test_an_instance_whose_snapshot_fails_is_dropped_with_its_snapshots() -> None:
    aws, ids = fleet()
    bad = aws.volume_of(ids["web-2"], "/dev/xvdf")
    aws.fail_snapshots_of(bad)
    backup, sink, _rec, exc = run(aws, ("instances", "web-1,web-2"))
    assert exc is None
    assert_exact(aws, sink, ids["web-1"])
    assert not [p for p in sink.order if ids["web-2"] in p]  # nothing of web-2 in the job
    (failure,) = backup.failures
    assert failure.what == f"instance {ids['web-2']} (web-2)"
    assert "ended in state error" in failure.reason and "deleted" in failure.reason
    # web-2's two snapshots (the good one too) are gone; web-1's are bases.
    assert base_volumes(aws) == {aws.volume_of(ids["web-1"], d) for d, _ in DISKS}
    assert len(aws.deleted) == 2


def test_a_stuck_snapshot_fails_only_its_instance() -> None:
    aws, ids = fleet()
    aws.stall_snapshots_of(aws.volume_of(ids["web-1"], "/dev/xvda"))
    backup, sink, _rec, exc = run(aws, ("instances", "web-1,web-2"), ("snapshot_timeout", "60"))
    assert exc is None
    assert_exact(aws, sink, ids["web-2"])
    assert [f.what for f in backup.failures] == [f"instance {ids['web-1']} (web-1)"]
    assert "no progress" in backup.failures[0].reason
    assert base_volumes(aws) == {aws.volume_of(ids["web-2"], d) for d, _ in DISKS}


def test_a_snapshot_quota_that_does_not_lift_is_waited_out_once_per_job() -> None:
    """Two instances refused by a region-wide quota: the job waits QUOTA_BUDGET seconds in
    all, not once per instance, and backs up the third."""
    aws, ids = fleet(("web-1", "web-2", "web-3"))
    original = aws.create_snapshots
    refused = {ids["web-2"], ids["web-3"]}

    def quota(instance_id, *args):  # type: ignore[no-untyped-def]
        if instance_id in refused:
            aws.fail("CreateSnapshots", "PendingSnapshotLimitExceeded", "too many pending")
        return original(instance_id, *args)

    aws.create_snapshots = quota  # type: ignore[method-assign]
    started = aws.clock.now()
    backup, sink, _rec, exc = run(aws, ("instances", "web-1,web-2,web-3"))
    assert exc is None
    assert_exact(aws, sink, ids["web-1"])
    assert [f.what for f in backup.failures] == [f"instance {ids[n]} ({n})" for n in ("web-2", "web-3")]
    assert all("PendingSnapshotLimitExceeded" in f.reason for f in backup.failures)
    assert "waited" in backup.failures[1].reason and "in all" in backup.failures[1].reason
    assert aws.clock.now() - started <= snapshots_mod.QUOTA_BUDGET + 60


def test_a_refused_listing_fails_the_instance_before_any_of_its_files() -> None:
    aws, ids = fleet()
    web2 = {aws.volume_of(ids["web-2"], d) for d, _ in DISKS}
    original = aws.list_snapshot_blocks

    def refuse_web2(snapshot_id: str, page_size: int = 10000):  # type: ignore[no-untyped-def]
        (snap,) = aws.describe_snapshots(ids=[snapshot_id])
        if snap.volume_id in web2:
            raise aws_error(
                "ListSnapshotBlocks", "AccessDeniedException", "no ebs:ListSnapshotBlocks", status=403
            )
        return original(snapshot_id, page_size)

    aws.list_snapshot_blocks = refuse_web2  # type: ignore[method-assign]
    backup, sink, _rec, exc = run(aws, ("instances", "web-1,web-2"))
    assert exc is None
    assert not [p for p in sink.order if ids["web-2"] in p]
    assert ids["web-2"] + "/" not in " ".join(sink.directories)
    (failure,) = backup.failures
    assert "AccessDeniedException" in failure.reason and "nothing of it is in this job" in failure.reason
    assert base_volumes(aws) == {aws.volume_of(ids["web-1"], d) for d, _ in DISKS}


@pytest.mark.parametrize(("failing", "good"), [("web-2", "web-1"), ("web-1", "web-2")])
def test_a_volume_failing_mid_stream_leaves_an_image_that_never_restores_as_complete(
    failing: str, good: str
) -> None:
    """web-1 is read first: a failure there must not disturb the reading of web-2 either."""
    aws, ids = fleet()
    bad = aws.volume_of(ids[failing], "/dev/xvdf")
    aws.refuse_block(bad, 5)  # its second allocated block: the first is already handed over
    backup, sink, _rec, exc = run(aws, ("instances", "web-1,web-2"))
    assert exc is None
    assert_exact(aws, sink, ids[good])
    (failure,) = backup.failures
    assert (
        failure.what == f"instance {ids[failing]} ({failing})" and "AccessDeniedException" in failure.reason
    )
    (truncated,) = [p for p in images_of(sink, ids[failing]) if bad in p]
    assert f"its image {truncated} in this job is incomplete" in failure.reason
    with pytest.raises(FormatError):
        image_blocks(sink.data(truncated))
    assert len(sink.data(truncated)) > BLOCK_SIZE  # the first block went out before the failure
    assert not [p for p in sink.order if bad in p and p.endswith((".bmp", ".abmp"))]
    assert base_volumes(aws) == {aws.volume_of(ids[good], d) for d, _ in DISKS}


def test_standalone_volumes_fail_one_by_one() -> None:
    aws, _ids = fleet(("web-1",))
    good, bad = aws.add_volume(), aws.add_volume()
    aws.write(good, 0, 7)
    aws.write(bad, 0, 8)
    aws.fail_snapshots_of(bad)
    missing = "vol-00000000000000bad"
    backup, sink, rec, exc = run(aws, ("volumes", f"{good},{missing},{bad}"))
    assert exc is None
    assert [f.what for f in backup.failures] == [f"volume {missing}", f"volume {bad}"]
    assert backup.backed_up == [f"volume {good}"]
    (image,) = sink.ending(".bimg")
    assert good in image and image_blocks(sink.data(image))[1] == {0: aws.disk(good)[0]}
    assert base_volumes(aws) == {good}
    assert len(rec.texts("E")) == 2


def test_standalone_volumes_that_all_fail_fail_the_job() -> None:
    """Every volume of volumes= fails its snapshot: nothing was backed up, so the job fails
    (the emptied standalone target is not "backed up")."""
    aws, _ids = fleet(("web-1",))
    bad1, bad2 = aws.add_volume(), aws.add_volume()
    aws.write(bad1, 0, 1)
    aws.fail("CreateSnapshot", "UnauthorizedOperation", "not allowed", times=2)  # both refused
    backup, sink, _rec, exc = run(aws, ("volumes", f"{bad1},{bad2}"))
    assert isinstance(exc, JobError) and str(exc).startswith("nothing was backed up"), exc
    assert backup.backed_up == []
    assert not sink.ending(".bimg")
    assert aws.snapshot_ids() == set()


def test_nothing_selected_or_nothing_backed_up_fails_and_leaves_nothing() -> None:
    aws, ids = fleet()
    _b, _s, _r, exc = run(aws, ("instances", "nope-1,nope-2"))
    assert isinstance(exc, JobError) and str(exc).startswith("nothing to back up: instance nope-1")
    assert aws.count("CreateSnapshots") == 0
    with pytest.raises(JobError, match="nothing selected"):
        select(aws, parse_parameters([]))
    aws.fail_snapshots_of(aws.volume_of(ids["web-1"], "/dev/xvda"))
    _b, _s, _r, exc = run(aws, ("instances", "web-1,nope-1"))
    assert isinstance(exc, JobError) and str(exc).startswith("nothing was backed up: instance nope-1")
    assert aws.snapshot_ids() == set()


# ---------------------------------------------------------------- abort_on_error=1


@pytest.mark.parametrize("how", ["missing", "snapshot", "mid-stream"])
def test_abort_on_error_fails_at_the_first_and_keeps_nothing(how: str) -> None:
    aws, ids = fleet()
    selection = "web-1,web-2"
    if how == "missing":
        selection += ",nope-1"
    elif how == "snapshot":
        aws.fail_snapshots_of(aws.volume_of(ids["web-2"], "/dev/xvda"))
    else:
        aws.refuse_block(aws.volume_of(ids["web-2"], "/dev/xvdf"), 5)
    backup, _sink, rec, exc = run(aws, ("instances", selection), ("abort_on_error", "1"))
    assert exc is not None
    if how == "missing":
        assert isinstance(exc, JobError) and "instance nope-1" in str(exc) and "abort_on_error=1" in str(exc)
        assert aws.count("CreateSnapshots") == 0
    else:
        assert ("state error" if how == "snapshot" else "AccessDeniedException") in str(exc)
    assert backup.failures == [] and rec.texts("E") == []
    assert aws.snapshot_ids() == set()  # rolled back: web-1's too


# ---------------------------------------------------------------- restored resources


def restored_world() -> tuple[FakeAws, dict[str, str], str, str]:
    aws, ids = fleet(("web-1",))
    copy = aws.add_instance("web-1", devices=DISKS, tags={RESTORED_TAG: ids["web-1"]}).instance_id
    for dev, _ in DISKS:  # as RunInstances' TagSpecifications tag them
        vid = aws.volume_of(copy, dev)
        aws._volumes[vid].volume.tags[RESTORED_TAG] = ids["web-1"]
    extra = aws.add_volume(tags={RESTORED_TAG: "vol-0123456789abcdef0"})
    aws.attach(extra, ids["web-1"], "/dev/sdk")
    return aws, ids, copy, extra


def test_restored_resources_are_skipped_unless_named_by_id() -> None:
    aws, ids, copy, extra = restored_world()
    sel = select(aws, parse_parameters([("instances", "web-1")]))
    [target] = sel.targets
    assert target.instance_id == ids["web-1"]
    assert extra not in [v.volume_id for v in target.volumes]
    assert extra in [v.volume_id for v in target.excluded]
    assert len(sel.skipped) == 2
    assert any(copy in s and "skipped" in s and ids["web-1"] in s for s in sel.skipped)
    assert any(extra in s and "include_restored=yes" in s for s in sel.skipped)
    # Named by id: the restored instance, with its (restored) volumes.
    sel = select(aws, parse_parameters([("instances", copy)]))
    assert [t.instance_id for t in sel.targets] == [copy] and len(sel.targets[0].volumes) == 2
    assert sel.skipped == []
    # The restored volume by id: on its own, not with web-1.
    sel = select(aws, parse_parameters([("instances", "web-1"), ("volumes", extra)]))
    assert [v.volume_id for v in sel.targets[-1].volumes] == [extra] and sel.targets[-1].standalone
    # include_restored=yes: everything.
    sel = select(aws, parse_parameters([("instances", "web-1"), ("include_restored", "yes")]))
    assert sorted(t.instance_id for t in sel.targets) == sorted([ids["web-1"], copy])
    assert extra in [v.volume_id for t in sel.targets for v in t.volumes] and sel.skipped == []
    # Only restored ones match: an error that says why.
    with pytest.raises(JobError, match=r"matched no instance.*skipped, a bacula-ec2 restore created it"):
        select(aws, parse_parameters([("instance_tags", f"{RESTORED_TAG}={ids['web-1']}")]))


def test_a_backup_logs_what_it_skipped_and_does_not_snapshot_it() -> None:
    aws, _ids, copy, extra = restored_world()
    backup, sink, rec, exc = run(aws, ("instances", "web-1"))
    assert exc is None and backup.failures == []
    assert not [p for p in sink.order if copy in p or extra in p]
    assert any(copy in t and "skipped" in t for t in rec.texts("I"))
    assert extra not in base_volumes(aws) and len(aws.snapshot_ids()) == 2


# ---------------------------------------------------------------- abort_on_error spellings


def fd_reads_on(value: str | None) -> bool:
    """The FD (metaplugin.cpp, parse_plugin_command): on unless the value's first character is 0."""
    return not (value is not None and value.startswith("0"))


@given(st.text(max_size=8) | st.sampled_from(["0", "1", "yes", "no", "false", "true", "on", "off", "", "00"]))
def test_abort_on_error_is_read_as_the_fd_reads_it_or_refused(value: str) -> None:
    try:
        params = parse_parameters([("abort_on_error", value)])
    except ParameterError as exc:
        assert "abort_on_error=0" in str(exc) and "abort_on_error=1" in str(exc)
        return
    assert params.abort_on_error == fd_reads_on(value)


def test_abort_on_error_spellings() -> None:
    on = [parse_parameters([("abort_on_error", v)]).abort_on_error for v in ("1", "yes", "true", "on", "y")]
    assert on == [True] * 5
    assert parse_parameters([("abort_on_error", "0")]).abort_on_error is False
    assert parse_parameters([]).abort_on_error is False
    for value in ("no", "false", "off", "n", ""):
        with pytest.raises(ParameterError, match="File Daemon reads abort_on_error as on"):
            parse_parameters([("abort_on_error", value)])


# ---------------------------------------------------------------- bec2


def test_bec2_stores_a_partly_failed_backup_says_what_is_missing_and_exits_1(
    sim: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sim.client.set_options(snapshot_delay=0.02)
    inst = sim.client.create_instance("cli-web", volumes=[{"size_gib": 1, "device": "/dev/sda1"}])
    iid, vid = inst["instance_id"], inst["volume_ids"][0]
    sim.client.write_volume(vid, 0, os.urandom(3 * BLOCK_SIZE))
    want = sim.client.volume_sha256(vid)
    store = tmp_path / "store"
    args = [
        "--region=us-east-1",
        f"--access_key={ACCESS_KEY}",
        "--secret_key=partial/SECRET/key/1234567",
        f"--endpoint_url={sim.endpoint}",
        f"--output={store}",
    ]
    rc = main(["--operation=backup", "--instances=cli-web,nope-1", *args])
    err = capsys.readouterr().err
    assert rc == 1, err
    assert re.search(
        rf"stored under .* is incomplete\. Backed up: {iid} \(cli-web\)\. NOT backed up \(1\): ", err
    )
    assert "instance nope-1: no instance named 'nope-1'" in err
    # What is stored is a complete backup of cli-web: it restores exactly.
    sim.client.write_volume(vid, 0, b"changed")
    target = tmp_path / "restored"
    rc = main(["--operation=restore", f"--output={store}", f"--local_path={target}"])
    assert rc == 0, capsys.readouterr().err
    (image,) = target.rglob("*.img")
    assert sha256_file(image) == want
