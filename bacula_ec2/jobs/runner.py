"""One job runner for both fronts: `ec2-backend` (Bacula) and `bec2` (a folder).

Both drive the same flow and word its failures the same way:

- a backup runs (select, snapshot, read: `BackupJob`), is sealed by its front (bec2 syncs
  its directory), commits (its snapshots become bases; docs/SNAPSHOTS.md step 4), then its
  front makes it final (the backend's last F, bec2's manifest); every failure, cancel or
  end-of-file before that rolls the snapshots back. Once the front confirms the job (END,
  the manifest written), retention applies; a failure there is only a warning.
- a restore goes into local images or into AWS by one policy (`restore_target`), and
  ends by one rule (`finish_restore`): nothing is created in AWS when a file failed, a
  cancel says what was removed, a success reports the summary.

The expected failures (`EXPECTED_FAILURES`) carry a message for the admin; anything else is
an internal error: its traceback goes to the log and its message says so.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

from ..aws import AwsError
from ..formats.blockimage import FormatError
from ..guest import GuestError
from ..params import ParameterError, Parameters
from ..retry import Cancelled, RetriesExhausted
from .backup import BackupJob
from .context import JobContext, JobError, connect
from .selection import Failure
from .sink import BackupSink

if TYPE_CHECKING:
    # A backup never needs them: imported by the restore functions that use them (start-up
    # time of every backup job, tests/unit/test_startup.py).
    from .restore_aws import AwsRestore
    from .restore_local import LocalRestore

log = logging.getLogger("bacula-ec2.runner")

#: Failures whose message is meant for the admin (no traceback needed).
EXPECTED_FAILURES: tuple[type[Exception], ...] = (
    JobError,
    AwsError,
    ParameterError,
    RetriesExhausted,
    FormatError,
    GuestError,  # a file-level restore: a path, partition or filesystem of the guest
    OSError,
)


def text_of(exc: BaseException) -> str:
    """str(exc), even for an exception whose __str__ fails."""
    try:
        return str(exc)
    except Exception:
        return f"(an unprintable {type(exc).__name__})"


def failure_text(exc: BaseException, details: str = "the backend log") -> str:
    """The job message for a failure: an expected one's own text; anything else is an
    internal error, whose traceback goes to the log (`details` says where that is)."""
    if isinstance(exc, EXPECTED_FAILURES):
        text = text_of(exc)
        # The message says what to do; the traceback (with its causes) is for the log only.
        log.info("job failed: %s", text, exc_info=exc)
        return text
    log.error("internal error", exc_info=exc)
    return f"internal error: {type(exc).__name__}: {text_of(exc)} (details in {details})"


# ---------------------------------------------------------------------- backup


class Ledger(Protocol):
    """What the runner reads of a job's snapshots."""

    @property
    def created(self) -> list[str]: ...
    @property
    def volume_of(self) -> dict[str, str]: ...


class Job(Protocol):
    """What the runner drives (`BackupJob`; an in-memory fake in the unit tests)."""

    @property
    def ledger(self) -> Ledger: ...
    def estimate(self, sink: BackupSink) -> None: ...
    def run(self, sink: BackupSink) -> None: ...
    def commit(self) -> None: ...
    def retire(self) -> None: ...
    def rollback(self) -> list[str]: ...


class CommitFailed(JobError):
    """The job's snapshots could not become bases; they were rolled back already. The
    message names them, says whether they are gone, and what to do."""


def open_backup(ctx: JobContext, pace_dir: str | None = None) -> Job:
    """The product's backup job: AWS clients of the job's region, then `BackupJob`.

    `pace_dir`: the directory where the list pacers of this host's backends keep one
    schedule (`AwsSettings.pace_dir`; the backend's is the FD's working directory)."""
    return BackupJob(ctx, connect(ctx.params, cancel=ctx.cancel, pace_dir=pace_dir))


def _nothing() -> None:
    return None


class BackupRun:
    """One backup, as both fronts drive it (docs/SNAPSHOTS.md "Commit or roll back").

    `open()`, then `backup(sink, ...)` (or `estimate(sink)`); once the front's job is
    confirmed, `retire(...)`; if it is not after all (EOF without END), `rollback()`;
    at last `close()`.
    """

    def __init__(self, ctx: JobContext, open_job: Callable[[JobContext], Job] = open_backup) -> None:
        self.ctx = ctx
        self._open_job = open_job
        self.job: Job | None = None

    def open(self) -> Job:
        """Connect and build the job (a failure here has created nothing)."""
        if self.job is None:
            self.job = self._open_job(self.ctx)
        return self.job

    def estimate(self, sink: BackupSink) -> None:
        self.open().estimate(sink)

    @property
    def failures(self) -> list[Failure]:
        """What the backup could not back up (abort_on_error=0; jobs/backup.py): the job
        still committed the rest, and the front reports it (bec2: exit 1)."""
        return list(getattr(self.job, "failures", []))

    @property
    def backed_up(self) -> list[str]:
        """What the backup did back up: instance labels, "volume vol-..." for standalone ones."""
        return list(getattr(self.job, "backed_up", []))

    def backup(
        self,
        sink: BackupSink,
        *,
        seal: Callable[[], None] = _nothing,
        final: Callable[[], None] = _nothing,
        on_failure: Callable[[], None] = _nothing,
        quiet: tuple[type[BaseException], ...] = (),
    ) -> None:
        """run, `seal()`, commit, `final()` (the backend's last F, bec2's manifest).

        Any failure (Ctrl-C and EOF too) calls `on_failure()`, rolls the snapshots back and
        is raised again; a failed commit is raised as CommitFailed, rolled back already.
        A failure of a `quiet` class rolls back without job messages (the job is cancelled,
        or its FD is gone).
        """
        job = self.open()
        try:
            job.run(sink)
            seal()
            self.commit()
            final()
        except CommitFailed:
            on_failure()
            raise
        except BaseException as exc:
            on_failure()
            self.rollback(quiet=isinstance(exc, quiet))
            raise

    def commit(self) -> None:
        """The job's snapshots become bases. On failure: roll back, raise CommitFailed."""
        job = self.open()
        ids = list(job.ledger.created)
        named = ", ".join(f"{sid} of {job.ledger.volume_of.get(sid, '?')}" for sid in ids)
        try:
            job.commit()
            return
        except Cancelled:
            raise
        except Exception as exc:
            log.error("commit of %s failed: %s", named, exc, exc_info=not isinstance(exc, EXPECTED_FAILURES))
            cause = text_of(exc).rstrip(". ")
            error: Exception = exc
        left = job.rollback()
        if left:
            after = (
                f"snapshot(s) {', '.join(left)} could not be deleted either: delete them by hand (they "
                "are never used as a base while pending; the next job on these volumes removes pending "
                "ones once their lease has expired)"
            )
        else:
            after = "they were deleted"
        raise CommitFailed(
            f"the snapshots of this job ({named}) could not be committed as bases for the next "
            f"backups, so the job fails: {cause}. {after[0].upper()}{after[1:]}. Check that the job's AWS "
            "credentials may call ec2:CreateTags on snapshots (/usr/share/doc/bacula-ec2-plugin/IAM.md), "
            "then run the job again."
        ) from error

    def rollback(self, quiet: bool = False) -> list[str]:
        """The job failed: delete every snapshot it created. Returns what is left; unless
        `quiet`, says so in job messages (the log has it either way)."""
        job = self.job
        if job is None or not job.ledger.created:
            return []
        reporter = self.ctx.reporter
        if not quiet:
            reporter.info(f"deleting the snapshots of this failed job: {', '.join(job.ledger.created)}")
        try:
            left = job.rollback()
        except Exception as exc:  # report it, keep the job's own failure
            log.error("rollback failed", exc_info=exc)
            if not quiet:
                reporter.warning(f"could not roll back the job's snapshots: {text_of(exc)}")
            return list(job.ledger.created)
        if left:
            msg = f"could not delete snapshot(s) {', '.join(left)}: the next job will retry"
            log.error("%s", msg)
            if not quiet:
                reporter.warning(msg)
        return left

    def close(self) -> None:
        """The front is done with the job: its AWS clients' connections and files (the
        shared list schedule) are closed. Idempotent; nothing to do if it never opened."""
        close: Callable[[], None] | None = getattr(self.job, "close", None)  # a fake job may have none
        if close is not None:
            close()

    def retire(self, warning: Callable[[str], str]) -> bool:
        """The job is confirmed: retention. Nothing here can fail the job any more: a
        failure is a warning (`warning(reason)` words it), the next confirmed job retires
        what is left. Returns whether retention ran through."""
        job = self.open()
        try:
            job.retire()
        except Exception as exc:
            log.error("retention failed", exc_info=exc)
            self.ctx.reporter.warning(warning(text_of(exc)))
            return False
        return True


# ---------------------------------------------------------------------- restore


@dataclass(frozen=True)
class RestoreTarget:
    """Where a restore goes: raw images under `path` ("local"), or into AWS with its
    volumes staged under `path` ("aws")."""

    kind: Literal["local", "aws"]
    path: str


def restore_target(
    params: Parameters,
    *,
    where: str | None,
    regex_where: str | None = None,
    working_dir: str = "",
    default: Literal["local", "aws"] | None = None,
) -> RestoreTarget:
    """The restore-target policy (product.md §4, docs/RESTORE.md).

    restore_to= decides when given (then `default`, bec2's local); otherwise
    local_path= or where=/dir mean local images, and where=/ (or an empty where) means AWS.
    A restore into AWS stages in restore_workdir=, else the job's working directory; every
    directory must be an absolute path; regexwhere= is refused.
    """
    if regex_where is not None:
        raise JobError("regexwhere= is not supported by bacula-ec2: use where=/some/dir or where=/")
    where = where or ""
    to = params.restore_to or default or ("local" if params.local_path or where not in ("", "/") else "aws")
    if to == "aws":
        workdir = params.restore_workdir or working_dir or ""
        if not workdir or not os.path.isabs(workdir):
            raise JobError(
                f"a restore into AWS stages the volumes in a directory: '{workdir}' is not an absolute "
                "path (set restore_workdir=/some/dir)"
            )
        return RestoreTarget("aws", workdir)
    base = params.local_path or where
    if base in ("", "/"):
        raise JobError("restore_to=local needs where=/some/dir or local_path=/some/dir")
    if not os.path.isabs(base):
        raise JobError(f"the restore directory '{base}' is not an absolute path")
    return RestoreTarget("local", base)


def open_restore(
    ctx: JobContext, target: RestoreTarget, where: str | None, replace: str = "a", open_now: bool = True
) -> LocalRestore | AwsRestore:
    """The restore for `target`; `open_now`: a link as the local target fails the job
    before any file."""
    from .restore_aws import AwsRestore
    from .restore_local import FilesRestore, LocalRestore

    restore: LocalRestore
    if ctx.params.restore_as == "files":
        if target.kind == "aws":
            raise JobError(
                "restore_as=files restores guest files into a directory: give where=/some/dir "
                "(where=/ means a restore into AWS)"
            )
        restore = FilesRestore(
            ctx,
            target.path,
            where,
            target_dir=target.path,
            stage_parent=ctx.params.restore_workdir or target.path,
            patterns=list(ctx.params.restore_files),
        )
        if replace != "a":
            ctx.reporter.warning(
                f"Replace={replace}: restore_as=files replaces an existing file of the same name "
                "(Replace= applies to disk images only)"
            )
    elif target.kind == "aws":
        return AwsRestore(ctx, target.path, where)
    else:
        restore = LocalRestore(ctx, target.path, where, replace=replace)
    if open_now:
        restore.open_target()
    return restore


def finish_restore(
    restore: LocalRestore | AwsRestore, failed: Sequence[tuple[str, BaseException]] = ()
) -> None:
    """End of the restore stream: build what the restore makes (images, AWS resources),
    then report its summary. Raises a JobError (or another expected failure) when the
    restore is not exact; the caller then closes it, which removes what is not installed.

    `failed`: files the front already saw fail; an AWS restore then creates nothing.
    """
    from .restore_aws import AwsRestore

    if isinstance(restore, AwsRestore) and failed:
        restore.abandon_all()
        raise JobError(
            f"nothing was created in AWS: {len(failed)} file(s) of the restore failed "
            f"(first: {failed[0][0]}: {failed[0][1]})"
        )
    try:
        restore.finish()
    except Cancelled as exc:
        raise JobError("restore cancelled; what it had created in AWS was removed") from exc
    restore.ctx.reporter.info(restore.summary())
