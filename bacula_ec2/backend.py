"""`ec2-backend`: the process a metaplugin `ec2-fd.so` starts for every job.

It reads the setup (handshake, Job, Params, start command) through `protocol` and runs the
job from `jobs`. A backup commits its snapshots (they become bases) after its last file
and before the final F of its item stream, while a failure can still fail the job (an A
packet); END means Bacula confirmed the job (retention then applies), EOF without END means
the job failed after all, and the snapshots are deleted (docs/SNAPSHOTS.md).

Whatever arrives, the process never writes to fd 2, never shows a secret, answers a
failure with an A packet, and exits 0 (metaplugin-protocol.md §1.10, §2.4, §4.10).
"""

from __future__ import annotations

import contextlib
import logging
import sys
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING

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
    ProtocolError,
    Reply,
    RestoreFile,
    RestoreRefused,
)
from protocol.backup import FileWriter as ProtocolFileWriter
from protocol.text import has_undecodable, looks_secret, printable, set_message_scrubber

from . import __version__, fdpipe
from .jobs.context import JobContext, connect
from .jobs.progress import Progress, log_line
from .jobs.runner import (
    EXPECTED_FAILURES,
    BackupRun,
    CommitFailed,
    failure_text,
    finish_restore,
    open_backup,
    open_restore,
    restore_target,
    text_of,
)
from .jobs.sink import DIR_MODE, FILE_MODE, FileInfo
from .logs import REDACTOR, quiet_until_configured, setup_backend_logging
from .params import ParameterError, parse_parameters
from .retry import Cancelled

if TYPE_CHECKING:
    # A backup never needs these: imported where a restore, .ls or .query uses them (each
    # costs start-up time, tests/unit/test_startup.py).
    from .jobs.restore_aws import AwsRestore
    from .jobs.restore_local import LocalRestore

PLUGIN_NAME = "ec2"
#: The Hello's second word: the protocol API and this release. ec2-fd.so sends its own
#: (packaging/ec2-fd.c, from the generated ec2-fd-params.h): a .so of another release is
#: refused at the start of the job, naming both releases.
PLUGIN_API = f"1/{__version__}"
RELEASE_HINT = (
    "install ec2-fd.so and ec2-backend of one release (the bacula-ec2-plugin package ships "
    "both; a hand-built ec2-fd.so: packaging/build-plugin.sh, "
    "/usr/share/doc/bacula-ec2-plugin/INSTALL.md.gz)"
)
COALESCE = 64 << 10
#: Appended to every A: the FD always follows our Fatal line with its own "PTCOMM cannot get
#: packet header from backend." (docs/TROUBLESHOOTING.md, "One error, then PTCOMM").
PTCOMM_NOTE = "(the FD's following 'PTCOMM cannot get packet header' line is a consequence of this error)"

log = logging.getLogger("bacula-ec2.backend")


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

    def progress(self, update: Progress) -> None:
        """A transfer's progress: into the job log at most once a minute per volume (the
        updates marked `log`); the job's own message ends each volume."""
        if update.log and not update.final:
            self.info(log_line(update))


class _Writer:
    """Coalesces the 48-byte records of a block image with the block that follows them.

    A record header and its block leave as one D packet (one Bacula record) in one writev;
    runs of small pieces (empty-block records) are gathered up to 64 KiB. With a smaller
    packet size (BACULA_EC2_DATA_PACKET, diagnostic: bacula_ec2/fdpipe.py) the same bytes
    leave as D packets of that size, still in one writev per write.
    """

    def __init__(self, inner: ProtocolFileWriter) -> None:
        self.inner = inner
        self.small = bytearray()
        self.packet = fdpipe.current().packet

    def write(self, *parts: bytes | bytearray | memoryview) -> None:
        if sum(len(p) for p in parts) < COALESCE:
            for part in parts:
                self.small += part
            if len(self.small) >= COALESCE:
                self._flush()
            return
        pending = bytes(self.small)
        self.small.clear()
        self.inner.write(pending, *parts, packet_size=self.packet)

    def _flush(self) -> None:
        if self.small:
            self.inner.write(bytes(self.small), packet_size=self.packet)
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
    """The protocol's restore callbacks, forwarded to a LocalRestore or an AwsRestore.

    A failing file has been cleaned up by the restore before its exception arrives here (a
    failed block image fails its whole volume, which leaves no image); the protocol answers
    it with E, an Error for the FD, so the job ends "Restore Error". A failure the restore
    finds at FINISH (a chain with a gap, a failed volume reported again) becomes the A that
    answers FINISH.
    """

    def __init__(
        self, restore: LocalRestore | AwsRestore, failures: list[tuple[str, BaseException]] | None = None
    ) -> None:
        self.restore = restore
        self.failures = failures if failures is not None else []

    @staticmethod
    def _refused(name: str, exc: BaseException) -> RestoreRefused:
        from .jobs.restore_local import RestoreFailed

        text = str(exc) if isinstance(exc, RestoreFailed) else f"{name}: {exc}"
        return RestoreRefused(text)

    def start_file(self, f: RestoreFile) -> Reply:
        try:
            return Reply.OK if self.restore.start(f.name, mtime=f.mtime) else Reply.SKIP
        except EXPECTED_FAILURES as exc:
            raise self._refused(f.name, exc) from exc

    def file_data(self, chunk: memoryview) -> None:
        try:
            self.restore.data(chunk)
        except EXPECTED_FAILURES as exc:
            raise self._refused("restore data", exc) from exc

    def end_file_data(self) -> None:
        try:
            self.restore.end()
        except EXPECTED_FAILURES as exc:
            raise self._refused("end of restore file", exc) from exc

    def finish(self) -> None:
        """Before FINISH is answered: a failed volume or a chain with a gap is a Fatal."""
        try:
            finish_restore(self.restore, self.failures)
        except EXPECTED_FAILURES as exc:
            raise RestoreRefused(str(exc)) from exc


def _not_text(job: JobInfo, pairs: list[tuple[str, str]]) -> str | None:
    """Names and parameters go into AWS tags and requests: they must be UTF-8 text (paths
    and file names may hold any bytes). Returns the reason to fail, or None."""
    for key, value in (("Name", job.name), ("PrevJobName", job.prev_job_name or "")):
        if has_undecodable(value):
            return f"the Job block's {key}='{printable(value)}' is not UTF-8 text"
    for key, value in pairs:
        if has_undecodable(key):
            return f"plugin parameter name '{printable(key)}' is not UTF-8 text: check the Plugin line"
        if has_undecodable(value):
            shown = "***" if looks_secret(key) else f"'{printable(value)}'"
            return f"plugin parameter {key}: the value {shown} is not UTF-8 text: check the Plugin line"
    return None


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
        # Before anything can show them: secrets as given, parsed or not.
        REDACTOR.add(*[v for k, v in pairs if looks_secret(k)])
        mode = s.read_start()
        bad_text = _not_text(job, pairs)
        if bad_text:
            self._fail(bad_text)
            return
        try:
            params = parse_parameters(pairs)
        except ParameterError as exc:
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
        # The list pacers of every backend of this host (two Plugin lines of a job, other
        # jobs) keep one schedule in the FD's working directory (docs/PERFORMANCE.md).
        run = BackupRun(ctx, lambda c: open_backup(c, pace_dir=c.working_dir or None))
        try:
            self._run_backup(run, mode)
        finally:
            run.close()

    def _run_backup(self, run: BackupRun, mode: Mode) -> None:
        s = self.session
        try:
            run.open()
            stream = s.item_stream()
            sink = ProtocolSink(stream)
            if mode is Mode.ESTIMATE:
                run.estimate(sink)
                stream.finish()
            else:
                # The commit comes after every block is handed over and before the final F:
                # the last moment a failure can still fail the job (§3.6: at END the
                # status is already sent). Any failure rolls the snapshots back.
                try:
                    run.backup(sink, final=stream.finish, quiet=(Cancelled, EndOfStream))
                except CommitFailed as exc:
                    self._fail(str(exc))
                    return
        except Cancelled:
            log.warning("job cancelled")
            s.wait_for_end()
            return
        except EXPECTED_FAILURES as exc:
            self._fail(text_of(exc))
            return
        except EndOfStream:
            raise
        except Exception as exc:
            self._fail(failure_text(exc))
            return
        if mode is not Mode.BACKUP:
            s.wait_for_end()
            return

        def confirmed() -> None:
            """END: Bacula confirmed the job. Nothing here can fail it any more (§3.6)."""
            run.retire(
                lambda reason: (
                    f"retention: older snapshots of this job's chain could not be deleted ({reason}); "
                    "the next confirmed job of this chain deletes them"
                )
            )

        reason = s.wait_for_end(on_end=confirmed)
        if reason is not EndReason.END:
            log.warning("no END from the FD: the job did not finish well; deleting its snapshots")
            run.rollback(quiet=True)

    def _listing(self, ctx: JobContext) -> None:
        from .jobs import browse

        s = self.session
        try:
            stream = s.item_stream()
            entries = browse.listing(
                lambda region: connect(ctx.params, region=region), ctx.params.listing or "/"
            )
            for e in entries:
                # A named directory goes as a link to its Name: bconsole shows the mode given
                # (a directory) and appends " -> <Name>" (docs/LISTING.md).
                kind = ("S" if e.label else "D") if e.directory else "F"
                mode = DIR_MODE if e.directory else FILE_MODE
                stream.file(
                    FileAttrs(
                        e.name, kind, e.size, mode, atime=e.mtime, mtime=e.mtime, ctime=e.mtime, link=e.label
                    )
                )
            log.info("listed %d entries under %s", len(entries), ctx.params.listing)
            stream.finish()
        except EXPECTED_FAILURES as exc:
            self._fail(text_of(exc))
            return
        s.wait_for_end()

    def _query(self, ctx: JobContext) -> None:
        """Errors are answered as `error=...` rows: a .query has no job log to read."""
        from .jobs import browse

        s = self.session
        q = s.query_stream()
        try:
            rows = browse.query(lambda: connect(ctx.params), ctx.params, (ctx.params.query or "").strip())
        except EXPECTED_FAILURES as exc:
            rows = [[("error", browse.clean(REDACTOR.scrub(str(exc))))]]
        for row in rows:
            q.send_pairs(row)
        if not rows:
            q.send_kv("count", "0")
        q.finish()
        s.wait_for_end()

    def _restore(self, ctx: JobContext, job: JobInfo) -> None:
        s = self.session
        try:
            target = restore_target(
                ctx.params, where=job.where, regex_where=job.regex_where, working_dir=job.working_dir or ""
            )
            restore = open_restore(ctx, target, job.where, replace=job.replace or "a")
        except EXPECTED_FAILURES as exc:
            self._fail(str(exc))
            return
        try:
            s.run_restore(RestoreAdapter(restore, s.restore_failures))
        finally:
            restore.close()  # whatever was not installed (EOF, cancel, failure) is removed
        s.wait_for_end()

    def _fail(self, text: str) -> None:
        """Fatal for the job: A with the reason, then serve the FD until it lets go.

        The FD logs the A's text as a Fatal line, and then, whatever the packets around it,
        its own Fatal "PTCOMM cannot get packet header from backend." (ptcomm.cpp: every read
        goes through handle_read_header, which logs it for any A): the session appends
        PTCOMM_NOTE to every A, so our line says so."""
        text = REDACTOR.scrub(text)
        log.error("job failed: %s", text)
        self.session.abort(text)
        self.session.wait_for_end()


#: The installed documentation (packaging/build-deb.sh; files over 4 KiB are gzipped).
DOC_DIR = "/usr/share/doc/bacula-ec2-plugin"

HELP_TEXT = f"""\
ec2-backend {{version}}: the backend of the Bacula File Daemon plugin ec2-fd.so
(Amazon EC2 instances and EBS volumes through EBS snapshots).

Not a command to run by hand. The File Daemon starts it for every job that has an
"ec2:" Plugin line in its FileSet (backup, estimate, restore, .ls, .query) and talks
to it over stdin/stdout in Bacula's metaplugin protocol; run with no argument, it
waits for that protocol on stdin.

Options (for a person at a shell):
  --version   print the release (ec2-fd.so must be of the same release)
  --help      print this text

Log: bacula-ec2.log in the File Daemon's working directory (its WorkingDirectory,
for Debian's bacula-fd /var/lib/bacula/bacula-ec2.log), or $BACULA_EC2_LOG;
level $BACULA_EC2_LOG_LEVEL (INFO by default). Job messages go to the Bacula job log.

Parameters of the Plugin line, IAM permissions, restores and error messages:
  {DOC_DIR}/ (PARAMETERS.md.gz, IAM.md, RESTORE.md.gz,
  TROUBLESHOOTING.md.gz, INSTALL.md.gz).
"""


def _quietly(fn: Callable[[], object]) -> None:
    """Last-resort paths: nothing may escape (it would reach fd 2 or a non-zero exit)."""
    with contextlib.suppress(Exception):
        fn()


def _abort_and_drain(session: BackendSession | None, text: str) -> None:
    """A with `text` (secrets masked), then read stdin to EOF (§4.10)."""
    if session is None:
        return
    _quietly(lambda: session.abort(REDACTOR.scrub(text)))
    try:
        session.wait_for_end()
    except Exception:
        _quietly(session.drain)


def main() -> int:
    """Always returns 0 (§2.4): every failure is reported with an A packet instead.

    `ec2-backend --version` and `--help` (a person at a shell, not the FD, which passes no
    argument) print the release or what this program is; with no argument it is always a
    protocol backend."""
    if sys.argv[1:] == ["--version"]:
        print(f"ec2-backend {__version__}")
        return 0
    if sys.argv[1:] and sys.argv[1] in ("--help", "-h"):
        print(HELP_TEXT.format(version=__version__), end="")
        return 0
    _quietly(quiet_until_configured)
    set_message_scrubber(REDACTOR.scrub)  # every message packet, from any module
    session: BackendSession | None = None
    try:
        conn = Connection.from_fds(0, 1)
        session = BackendSession(
            conn,
            plugin_name=PLUGIN_NAME,
            plugin_api=PLUGIN_API,
            mismatch_hint=RELEASE_HINT,
            abort_note=PTCOMM_NOTE,
        )
        session.install_signal_handlers()
        # fd 1's pipe to the FD: 1 MiB unless BACULA_EC2_PIPE_SIZE says otherwise (a bad
        # value: an A naming it); a pipe that cannot grow stays as it is (fdpipe.py).
        fdpipe.apply(fdpipe.from_environ(), 1)
        Backend(session).run()
    except EndOfStream:
        _quietly(lambda: log.info("the FD closed the connection"))
    except ProtocolError as exc:
        with contextlib.suppress(Exception):
            log.error("protocol error: %s", exc)
        _abort_and_drain(session, f"ec2-backend: protocol error: {text_of(exc)}")
    except Exception as exc:
        with contextlib.suppress(Exception):
            log.error("backend failure: %s", "".join(traceback.format_exception(exc)))
        _abort_and_drain(
            session, f"ec2-backend failed: {type(exc).__name__}: {text_of(exc)} (see the backend log)"
        )
    _quietly(logging.shutdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
