"""`ec2-backend`: the process a metaplugin `ec2-fd.so` starts for every job.

It reads the setup (handshake, Job, Params, start command) through `protocol`, runs the
job from `jobs`, and decides at the end, from END or its absence, whether the job's
snapshots are kept (END: Bacula stored the data) or deleted (EOF: the job failed).
"""

from __future__ import annotations

import logging
import os
import sys
import traceback

from protocol import (
    BackendSession,
    BaseRestoreHandler,
    Connection,
    EndOfStream,
    EndReason,
    FileAttrs,
    ItemStream,
    JobInfo,
    Mode,
    Reply,
    RestoreFile,
    RestoreRefused,
)
from protocol.backup import FileWriter as ProtocolFileWriter

from .aws import Aws, AwsError
from .formats.blockimage import FormatError
from .jobs import browse
from .jobs.backup import BackupJob
from .jobs.context import JobContext, JobError
from .jobs.restore_aws import AwsRestore
from .jobs.restore_local import LocalRestore
from .jobs.sink import DIR_MODE, FILE_MODE, FileInfo
from .logs import REDACTOR, quiet_until_configured, setup_backend_logging
from .params import ParameterError, Parameters, parse_parameters
from .retry import Cancelled, RetriesExhausted

PLUGIN_NAME = "ec2"
PLUGIN_API = "1"
COALESCE = 64 << 10

log = logging.getLogger("bacula-ec2.backend")

#: Failures that carry a message meant for the admin (no traceback needed).
EXPECTED_FAILURES = (JobError, AwsError, ParameterError, RetriesExhausted, FormatError, OSError)


class SessionReporter:
    """Job messages through the FD, secrets scrubbed, and a copy in the log file."""

    def __init__(self, session: BackendSession) -> None:
        self.session = session

    def info(self, text: str) -> None:
        text = REDACTOR.scrub(text)
        log.info("%s", text)
        self.session.info(text)

    def warning(self, text: str) -> None:
        text = REDACTOR.scrub(text)
        log.warning("%s", text)
        self.session.warning(text)

    def error(self, text: str) -> None:
        text = REDACTOR.scrub(text)
        log.error("%s", text)
        self.session.error(text)


class _Writer:
    """Coalesces the 48-byte records of a block image with the block that follows them.

    A record header and its block leave as one D packet (one Bacula record) in one writev;
    runs of small pieces (empty-block records) are gathered up to 64 KiB.
    """

    def __init__(self, inner: ProtocolFileWriter) -> None:
        self.inner = inner
        self.small = bytearray()

    def write(self, *parts: bytes | bytearray | memoryview) -> None:
        if sum(len(p) for p in parts) < COALESCE:
            for part in parts:
                self.small += part
            if len(self.small) >= COALESCE:
                self._flush()
            return
        pending = bytes(self.small)
        self.small.clear()
        self.inner.write(pending, *parts)

    def _flush(self) -> None:
        if self.small:
            self.inner.write(bytes(self.small))
            self.small.clear()

    def close(self) -> None:
        self._flush()
        self.inner.close()


class ProtocolSink:
    """BackupSink on top of the protocol's item stream."""

    def __init__(self, stream: ItemStream) -> None:
        self.stream = stream

    @staticmethod
    def _attrs(info: FileInfo) -> FileAttrs:
        return FileAttrs(
            name=info.path,
            type="F",
            size=info.size,
            mode=FILE_MODE,
            atime=info.mtime,
            mtime=info.mtime,
            ctime=info.mtime,
        )

    def file(self, info: FileInfo, data: bytes) -> None:
        self.stream.file(self._attrs(info), data if self.stream.has_data_phase else None)

    def open_file(self, info: FileInfo) -> _Writer:
        return _Writer(self.stream.open_file(self._attrs(info)))

    def directory(self, path: str, mtime: int) -> None:
        self.stream.directory(path, mtime=mtime, mode=DIR_MODE)


class RestoreAdapter(BaseRestoreHandler):
    """The protocol's restore callbacks, forwarded to a LocalRestore or an AwsRestore."""

    def __init__(
        self, restore: LocalRestore | AwsRestore, failures: list[tuple[str, BaseException]] | None = None
    ) -> None:
        self.restore = restore
        self.failures = failures if failures is not None else []

    def start_file(self, f: RestoreFile) -> Reply:
        try:
            return Reply.OK if self.restore.start(f.name) else Reply.SKIP
        except EXPECTED_FAILURES as exc:
            raise RestoreRefused(f"{f.name}: {exc}") from None

    def file_data(self, chunk: memoryview) -> None:
        try:
            self.restore.data(chunk)
        except EXPECTED_FAILURES as exc:
            self.restore.abandon()
            raise RestoreRefused(f"{exc}; the partial file was removed") from None

    def end_file_data(self) -> None:
        try:
            self.restore.end()
        except EXPECTED_FAILURES as exc:
            self.restore.abandon()
            raise RestoreRefused(f"{exc}; the partial file was removed") from None

    def finish(self) -> None:
        """Before FINISH is answered: a chain with a gap fails the restore (a Fatal)."""
        r = self.restore
        if isinstance(r, AwsRestore) and self.failures:
            r.abandon_all()
            raise RestoreRefused(
                f"nothing was created in AWS: {len(self.failures)} file(s) of the restore failed "
                f"(first: {self.failures[0][0]})"
            )
        try:
            r.finish()
        except Cancelled:
            raise RestoreRefused("restore cancelled; what it had created in AWS was removed") from None
        except EXPECTED_FAILURES as exc:
            raise RestoreRefused(str(exc)) from None
        r.ctx.reporter.info(r.summary())


def _restore_target(job: JobInfo, params: Parameters) -> tuple[str, str]:
    """("local", dir) or ("aws", staging dir); product.md §4, docs/RESTORE.md.

    restore_to= decides when given; otherwise local_path= or where=/dir mean local images,
    and where=/ (or an empty where) means AWS.
    """
    if job.regex_where is not None:
        raise JobError("regexwhere= is not supported by bacula-ec2: use where=/some/dir or where=/")
    where = job.where or ""
    to = params.restore_to or ("local" if params.local_path or where not in ("", "/") else "aws")
    if to == "aws":
        workdir = params.restore_workdir or job.working_dir or ""
        if not workdir or not os.path.isabs(workdir):
            raise JobError(
                f"a restore into AWS stages the volumes in a directory: '{workdir}' is not an absolute "
                "path (set restore_workdir=/some/dir)"
            )
        return "aws", workdir
    base = params.local_path or where
    if base in ("", "/"):
        raise JobError("restore_to=local needs where=/some/dir or local_path=/some/dir")
    if not os.path.isabs(base):
        raise JobError(f"the restore directory '{base}' is not an absolute path")
    return "local", base


class Backend:
    def __init__(self, session: BackendSession) -> None:
        self.session = session
        self.reporter = SessionReporter(session)

    def run(self) -> None:
        s = self.session
        s.handshake()
        job = s.read_job()
        log_path = setup_backend_logging(job.working_dir)
        log.info(
            "job %s (id %s, type %s, level %s) started; log %s",
            job.name,
            job.jobid,
            job.type,
            job.level,
            log_path,
        )
        pairs = s.read_params()
        mode = s.read_start()
        try:
            params = parse_parameters(pairs)
        except ParameterError as exc:
            REDACTOR.add(*[v for k, v in pairs if k in ("secret_key", "session_token")])
            self._fail(f"bad plugin parameters: {exc}")
            return
        REDACTOR.add(*params.secret_values())
        log.info("mode %s, parameters %s", mode.name, params.redacted())
        ctx = JobContext(
            params=params,
            job_name=job.name,
            job_id=job.jobid,
            level=job.level or "F",
            reporter=self.reporter,
            working_dir=job.working_dir or "",
            since=job.since,
            reference_job=job.prev_job_name or None,
            cancel=s.cancelled,
        )
        if mode in (Mode.BACKUP, Mode.ESTIMATE):
            self._backup(ctx, mode)
        elif mode is Mode.RESTORE:
            self._restore(ctx, job)
        elif mode is Mode.LISTING:
            self._listing(ctx)
        else:
            self._query(ctx)

    # ------------------------------------------------------------------ modes
    def _backup(self, ctx: JobContext, mode: Mode) -> None:
        s = self.session
        job: BackupJob | None = None
        try:
            aws = Aws(ctx.params, cancel=ctx.cancel)
            job = BackupJob(ctx, aws)
            stream = s.item_stream()
            sink = ProtocolSink(stream)
            if mode is Mode.ESTIMATE:
                job.estimate(sink)
            else:
                job.run(sink)
            stream.finish()
        except Cancelled:
            log.warning("job cancelled")
            self._rollback(job, quiet=True)
            s.wait_for_end()
            return
        except EXPECTED_FAILURES as exc:
            self._rollback(job)
            self._fail(str(exc))
            return
        except EndOfStream:
            self._rollback(job, quiet=True)
            raise
        except Exception as exc:
            log.exception("internal error")
            self._rollback(job)
            self._fail(f"internal error: {type(exc).__name__}: {exc} (details in the backend log)")
            return
        done = job

        def confirmed() -> None:
            done.commit()
            done.retire()

        on_end = confirmed if mode is Mode.BACKUP else None
        reason = s.wait_for_end(on_end=on_end)
        if mode is Mode.BACKUP and reason is not EndReason.END:
            log.warning("no END from the FD: the job did not finish well; deleting its snapshots")
            self._rollback(job, quiet=True)

    def _listing(self, ctx: JobContext) -> None:
        s = self.session
        try:
            stream = s.item_stream()
            count = browse.listing(
                lambda region: Aws(ctx.params.model_copy(update={"region": region or ctx.params.region})),
                ctx.params.listing or "/",
                ProtocolSink(stream),
            )
            log.info("listed %d entries under %s", count, ctx.params.listing)
            stream.finish()
        except EXPECTED_FAILURES as exc:
            self._fail(str(exc))
            return
        s.wait_for_end()

    def _query(self, ctx: JobContext) -> None:
        """Errors are answered as `error=...` rows: a .query has no job log to read."""
        s = self.session
        q = s.query_stream()
        try:
            rows = browse.query(Aws(ctx.params), ctx.params, (ctx.params.query or "").strip())
        except EXPECTED_FAILURES as exc:
            rows = [[("error", browse.clean(REDACTOR.scrub(str(exc))))]]
        for row in rows:
            q.send_pairs(row)
        if not rows:
            q.send_kv("count", "0")
        q.finish()
        s.wait_for_end()

    def _rollback(self, job: BackupJob | None, quiet: bool = False) -> None:
        if job is None or not job.ledger.created:
            return
        ids = ", ".join(job.ledger.created)
        if not quiet:
            self.reporter.info(f"deleting the snapshots of this failed job: {ids}")
        left = job.rollback()
        if left:
            msg = f"could not delete snapshot(s) {', '.join(left)}: the next job will retry"
            log.error("%s", msg)
            if not quiet:
                self.reporter.warning(msg)

    def _restore(self, ctx: JobContext, job: JobInfo) -> None:
        s = self.session
        try:
            target, path = _restore_target(job, ctx.params)
            restore: LocalRestore | AwsRestore
            if target == "aws":
                restore = AwsRestore(ctx, path, job.where)
            else:
                restore = LocalRestore(ctx, path, job.where, replace=job.replace or "a")
        except EXPECTED_FAILURES as exc:
            self._fail(str(exc))
            return
        try:
            s.run_restore(RestoreAdapter(restore, s.restore_failures))
        finally:
            if isinstance(restore, AwsRestore):
                restore.close()
        s.wait_for_end()

    def _fail(self, text: str) -> None:
        """Fatal for the job: A with the reason, then serve the FD until it lets go."""
        text = REDACTOR.scrub(text)
        log.error("job failed: %s", text)
        self.session.abort(text)
        self.session.wait_for_end()


def main() -> int:
    quiet_until_configured()
    conn = Connection.from_fds(0, 1)
    session = BackendSession(conn, plugin_name=PLUGIN_NAME, plugin_api=PLUGIN_API)
    session.install_signal_handlers()
    try:
        Backend(session).run()
    except EndOfStream:
        log.info("the FD closed the connection")
    except Exception as exc:
        log.error("backend failure: %s", REDACTOR.scrub("".join(traceback.format_exception(exc))))
        try:
            session.abort(REDACTOR.scrub(f"ec2-backend failed: {type(exc).__name__}: {exc}"))
            session.wait_for_end()
        except Exception:
            pass
    logging.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
