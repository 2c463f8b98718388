"""The job runner both fronts drive (bacula_ec2/jobs/runner.py), against an in-memory job:
commit before the front's final step, rollback on every failure, retention a warning only,
one list of expected failures, and the restore-target policy row by row."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import pytest

from bacula_ec2.aws import AwsError
from bacula_ec2.formats.blockimage import FormatError
from bacula_ec2.jobs.context import JobContext, JobError
from bacula_ec2.jobs.runner import (
    EXPECTED_FAILURES,
    BackupRun,
    CommitFailed,
    RestoreTarget,
    failure_text,
    restore_target,
)
from bacula_ec2.jobs.sink import BackupSink, FileInfo, FileWriter
from bacula_ec2.params import ParameterError, parse_parameters
from bacula_ec2.retry import Cancelled, RetriesExhausted


@dataclass
class Messages:
    seen: list[tuple[str, str]] = field(default_factory=list)

    def info(self, text: str) -> None:
        self.seen.append(("info", text))

    def warning(self, text: str) -> None:
        self.seen.append(("warning", text))

    def error(self, text: str) -> None:
        self.seen.append(("error", text))

    def of(self, level: str) -> list[str]:
        return [t for lv, t in self.seen if lv == level]


@dataclass
class FakeLedger:
    created: list[str] = field(default_factory=list)
    volume_of: dict[str, str] = field(default_factory=dict)


class FakeJob:
    """Creates two snapshots in `run`; each step may be told to fail; records the calls."""

    def __init__(
        self,
        events: list[str],
        fail: dict[str, BaseException] | None = None,
        undeletable: frozenset[str] = frozenset(),
    ) -> None:
        self.ledger = FakeLedger()
        self.events = events
        self.fail = fail or {}
        self.undeletable = undeletable
        self.snapshots: set[str] = set()  # what "AWS" holds
        self.bases: set[str] = set()

    def _step(self, name: str) -> None:
        self.events.append(name)
        if name in self.fail:
            raise self.fail[name]

    def estimate(self, sink: BackupSink) -> None:
        self._step("estimate")

    def run(self, sink: BackupSink) -> None:
        for sid, vid in (("snap-1", "vol-a"), ("snap-2", "vol-b")):
            self.ledger.created.append(sid)
            self.ledger.volume_of[sid] = vid
            self.snapshots.add(sid)
        self._step("run")

    def commit(self) -> None:
        self._step("commit")
        self.bases |= set(self.ledger.created)

    def retire(self) -> None:
        self._step("retire")

    def rollback(self) -> list[str]:
        self._step("rollback")
        left = []
        for sid in list(self.ledger.created):
            if sid in self.undeletable:
                left.append(f"{sid} (AccessDenied)")
                continue
            self.snapshots.discard(sid)
            self.ledger.created.remove(sid)
        return left


class NullSink:
    def file(self, info: FileInfo, data: bytes) -> None: ...
    def open_file(self, info: FileInfo) -> FileWriter:
        raise AssertionError("not used")

    def directory(self, path: str, mtime: int) -> None: ...


def runner(
    fail: dict[str, BaseException] | None = None, undeletable: frozenset[str] = frozenset()
) -> tuple[BackupRun, FakeJob, Messages, list[str]]:
    events: list[str] = []
    msgs = Messages()
    job = FakeJob(events, fail, undeletable)
    ctx = JobContext(parse_parameters([]), "job.2026-01-01_00.00.00_01", 1, "F", msgs, "/tmp")
    return BackupRun(ctx, open_job=lambda _ctx: job), job, msgs, events


def hooks(events: list[str], fail: str | None = None) -> dict[str, object]:
    def step(name: str) -> object:
        def hook() -> None:
            events.append(name)
            if name == fail:
                raise OSError(f"{name} failed")

        return hook

    return {"seal": step("seal"), "final": step("final"), "on_failure": step("on_failure")}


# ---------------------------------------------------------------------- backup


def test_a_good_backup_commits_between_seal_and_final_then_retires_on_confirm() -> None:
    run, job, msgs, events = runner()
    run.backup(NullSink(), **hooks(events))  # type: ignore[arg-type]
    assert events == ["run", "seal", "commit", "final"]
    assert job.bases == {"snap-1", "snap-2"}
    assert run.retire(lambda reason: f"retention failed: {reason}")
    assert events[-1] == "retire" and msgs.of("warning") == []


def test_a_refused_commit_rolls_back_and_raises_one_error_naming_the_snapshots() -> None:
    denied = AwsError("CreateTags", "UnauthorizedOperation", "not allowed", request_id="req-1")
    run, job, msgs, events = runner(fail={"commit": denied})
    with pytest.raises(CommitFailed) as err:
        run.backup(NullSink(), **hooks(events))  # type: ignore[arg-type]
    assert events == ["run", "seal", "commit", "rollback", "on_failure"]  # no final step
    text = str(err.value)
    assert "snap-1 of vol-a, snap-2 of vol-b" in text and "could not be committed" in text
    assert "UnauthorizedOperation" in text and "They were deleted" in text and "ec2:CreateTags" in text
    assert err.value.__cause__ is denied
    assert job.snapshots == set() and job.bases == set()
    assert msgs.seen == []  # the error is the one message; the front reports it


def test_a_refused_commit_names_what_could_not_be_deleted() -> None:
    run, job, _msgs, events = runner(fail={"commit": OSError("boom")}, undeletable=frozenset({"snap-2"}))
    with pytest.raises(CommitFailed) as err:
        run.backup(NullSink(), **hooks(events))  # type: ignore[arg-type]
    text = str(err.value)
    # the ids stay as AWS spells them (the sentence starts with "Snapshot(s)", not "Snap-2")
    assert ". Snapshot(s) snap-2 (AccessDenied) could not be deleted either: delete them by hand" in text, (
        text
    )
    assert job.snapshots == {"snap-2"}


@pytest.mark.parametrize("where", ["run", "seal", "final"])
@pytest.mark.parametrize(
    "exc", [OSError("disk full"), Cancelled("cancelled"), KeyboardInterrupt(), RuntimeError("bug")]
)
def test_every_failure_before_the_end_rolls_back_and_is_raised_again(where: str, exc: BaseException) -> None:
    run, job, msgs, events = runner(fail={"run": exc} if where == "run" else None)
    kwargs = hooks(events, fail=where if where != "run" else None)
    if where != "run":  # the hook raises the very exception under test

        def raising() -> None:
            events.append(where)
            raise exc

        kwargs[where] = raising
    with pytest.raises(type(exc)) as err:
        run.backup(NullSink(), quiet=(Cancelled,), **kwargs)  # type: ignore[arg-type]
    assert err.value is exc
    assert events[-2:] == ["on_failure", "rollback"]
    assert "commit" not in events or where == "final"
    assert job.snapshots == set()
    quiet = isinstance(exc, Cancelled)
    assert bool(msgs.of("info")) is not quiet  # "deleting the snapshots of this failed job"
    if not quiet:
        assert msgs.of("info") == ["deleting the snapshots of this failed job: snap-1, snap-2"]


def test_cancel_rolls_back_quietly() -> None:
    run, job, msgs, events = runner(fail={"run": Cancelled("job cancelled")})
    with pytest.raises(Cancelled):
        run.backup(NullSink(), quiet=(Cancelled,))
    assert events == ["run", "rollback"] and job.snapshots == set() and msgs.seen == []


def test_cancel_during_commit_is_a_cancel_not_a_commit_failure() -> None:
    run, job, _msgs, events = runner(fail={"commit": Cancelled("cancelled")})
    with pytest.raises(Cancelled):
        run.backup(NullSink(), quiet=(Cancelled,))
    assert events == ["run", "commit", "rollback"] and job.snapshots == set()


def test_undeletable_snapshots_are_reported_in_one_wording(caplog: pytest.LogCaptureFixture) -> None:
    run, _job, msgs, _events = runner(fail={"run": OSError("x")}, undeletable=frozenset({"snap-1"}))
    with caplog.at_level(logging.ERROR), pytest.raises(OSError):
        run.backup(NullSink())
    wording = "could not delete snapshot(s) snap-1 (AccessDenied): the next job will retry"
    assert msgs.of("warning") == [wording]
    assert wording in caplog.text
    quiet_run, _job, quiet_msgs, _ = runner(fail={"run": OSError("x")}, undeletable=frozenset({"snap-1"}))
    with pytest.raises(OSError):
        quiet_run.backup(NullSink(), quiet=(OSError,))
    assert quiet_msgs.seen == []  # quiet: the log only


def test_a_rollback_that_raises_keeps_the_jobs_own_failure() -> None:
    run, _job, msgs, _events = runner(fail={"run": OSError("disk full"), "rollback": RuntimeError("lease")})
    with pytest.raises(OSError, match="disk full"):
        run.backup(NullSink())
    assert msgs.of("warning") == ["could not roll back the job's snapshots: lease"]


def test_rollback_after_the_end_without_confirm_deletes_the_bases() -> None:
    """EOF without END: the committed snapshots go too."""
    run, job, _msgs, events = runner()
    run.backup(NullSink())
    assert job.bases
    assert run.rollback(quiet=True) == []
    assert job.snapshots == set() and events[-1] == "rollback"


def test_rollback_without_a_job_or_snapshots_does_nothing() -> None:
    run, _job, msgs, events = runner()
    assert run.rollback() == [] and events == [] and msgs.seen == []
    run.open()
    assert run.rollback() == [] and events == []


def test_a_failed_retire_is_a_warning_only(caplog: pytest.LogCaptureFixture) -> None:
    for exc in (
        AwsError("DeleteSnapshot", "RequestLimitExceeded", "slow down", request_id="req-9"),
        RuntimeError("bug"),
    ):
        run, job, msgs, _events = runner(fail={"retire": exc})
        run.backup(NullSink())
        with caplog.at_level(logging.ERROR):
            assert run.retire(lambda reason: f"retention failed ({reason})") is False
        assert msgs.of("warning") == [f"retention failed ({exc})"]
        assert msgs.of("error") == []
        assert job.bases == {"snap-1", "snap-2"} and job.snapshots == {"snap-1", "snap-2"}
        assert "retention failed" in caplog.text and "Traceback" in caplog.text
        caplog.clear()


def test_a_ctrl_c_during_retire_reaches_the_front() -> None:
    run, _job, _msgs, _events = runner(fail={"retire": KeyboardInterrupt()})
    run.backup(NullSink())
    with pytest.raises(KeyboardInterrupt):
        run.retire(str)


def test_estimate_creates_and_commits_nothing() -> None:
    run, job, _msgs, events = runner()
    run.estimate(NullSink())
    assert events == ["estimate"] and job.snapshots == set()


# ---------------------------------------------------------------------- failures


@pytest.mark.parametrize(
    "exc",
    [
        JobError("volume vol-1 is gone"),
        AwsError("CreateSnapshots", "UnauthorizedOperation", "no", request_id="req-2"),
        ParameterError("bad region"),
        RetriesExhausted("GetSnapshotBlock gave up"),
        FormatError("bad header"),
        OSError(28, "No space left on device"),
    ],
)
def test_expected_failures_are_their_own_message(exc: Exception, caplog: pytest.LogCaptureFixture) -> None:
    assert isinstance(exc, EXPECTED_FAILURES)
    with caplog.at_level(logging.ERROR):
        assert failure_text(exc) == str(exc)
    assert "Traceback" not in caplog.text


def test_anything_else_is_an_internal_error_with_its_traceback_in_the_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    try:
        {}["missing"]
    except KeyError as exc:
        caught = exc
    assert not isinstance(caught, EXPECTED_FAILURES)
    assert not isinstance(Cancelled("x"), EXPECTED_FAILURES)  # a cancel is handled by each front
    with caplog.at_level(logging.ERROR):
        text = failure_text(caught)
    assert text == "internal error: KeyError: 'missing' (details in the backend log)"
    assert "Traceback" in caplog.text and "KeyError" in caplog.text

    class Unprintable(Exception):
        def __str__(self) -> str:
            raise ValueError("no")

    assert failure_text(Unprintable(), details="x") == (
        "internal error: Unprintable: (an unprintable Unprintable) (details in x)"
    )


# ---------------------------------------------------------------------- restore target

WD = "/var/lib/bacula"


@pytest.mark.parametrize(
    ("pairs", "where", "expected"),
    [
        # restore_to= unset: where=/ or an empty where means AWS, staged in the working dir
        ([], "/", RestoreTarget("aws", WD)),
        ([], "", RestoreTarget("aws", WD)),
        ([], None, RestoreTarget("aws", WD)),
        ([("restore_workdir", "/stage")], "/", RestoreTarget("aws", "/stage")),
        # ... where=/dir or local_path= mean local images
        ([], "/tmp/r", RestoreTarget("local", "/tmp/r")),
        ([("local_path", "/images")], "/", RestoreTarget("local", "/images")),
        ([("local_path", "/images")], "/tmp/r", RestoreTarget("local", "/images")),
        # restore_to= decides when given
        ([("restore_to", "aws")], "/tmp/r", RestoreTarget("aws", WD)),
        ([("restore_to", "aws"), ("local_path", "/images")], "/", RestoreTarget("aws", WD)),
        ([("restore_to", "local")], "/tmp/r", RestoreTarget("local", "/tmp/r")),
        ([("restore_to", "local"), ("local_path", "/images")], "/", RestoreTarget("local", "/images")),
    ],
)
def test_restore_target_policy(
    pairs: list[tuple[str, str]], where: str | None, expected: RestoreTarget
) -> None:
    assert restore_target(parse_parameters(pairs), where=where, working_dir=WD) == expected


@pytest.mark.parametrize(
    ("pairs", "where", "working_dir", "message"),
    [
        ([], "/", "", "'' is not an absolute path (set restore_workdir=/some/dir)"),
        ([], "/", "relative", "'relative' is not an absolute path"),
        ([("restore_workdir", "stage")], "/", WD, "'stage' is not an absolute path"),
        (
            [("restore_to", "local")],
            "/",
            WD,
            "restore_to=local needs where=/some/dir or local_path=/some/dir",
        ),
        ([("restore_to", "local")], "", WD, "restore_to=local needs where=/some/dir"),
        ([("local_path", "/")], "", WD, "restore_to=local needs where=/some/dir"),
        ([], "tmp/r", WD, "the restore directory 'tmp/r' is not an absolute path"),
        ([("local_path", "images")], "/", WD, "the restore directory 'images' is not an absolute path"),
    ],
)
def test_restore_target_refusals(
    pairs: list[tuple[str, str]], where: str, working_dir: str, message: str
) -> None:
    with pytest.raises(JobError, match=message.replace("(", r"\(").replace(")", r"\)")):
        restore_target(parse_parameters(pairs), where=where, working_dir=working_dir)


def test_regexwhere_is_refused_whatever_else_is_set() -> None:
    for pairs in ([], [("restore_to", "aws")], [("local_path", "/images")]):
        with pytest.raises(JobError, match="regexwhere= is not supported"):
            restore_target(parse_parameters(pairs), where="/", regex_where="!a!b!", working_dir=WD)


def test_bec2_defaults_to_local_images() -> None:
    """bec2 has no where=: without --restore_to=aws it restores local images."""
    assert restore_target(
        parse_parameters([("local_path", "/images")]), where=None, working_dir="/f", default="local"
    ) == RestoreTarget("local", "/images")
    assert restore_target(
        parse_parameters([("restore_to", "aws")]), where=None, working_dir="/f", default="local"
    ) == RestoreTarget("aws", "/f")
    with pytest.raises(JobError, match="restore_to=local needs"):
        restore_target(parse_parameters([]), where=None, working_dir="/f", default="local")
