"""`bec2`: the backup engine from the command line, with a local folder as the catalog.

Same parameter names as the FileSet line (`--name=value`). The output folder is a catalog
of backups (`jobs/folder.py`, docs/RESTORE.md): every backup gets a directory of its own
under `<output>/backups/`, with a manifest written last; restores pick the backups Bacula
would and check every byte against the manifests.
Exit codes: 0 success, 1 the job failed, 2 bad parameters or usage.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import sys
import time

from . import __version__
from .formats.blockimage import FormatError
from .console import Console
from .jobs import chain
from .jobs.context import JobContext, JobError
from .jobs.folder import (
    BACKUPS,
    DAMAGED,
    INCOMPLETE,
    LEVEL_NAMES,
    BackupDirectory,
    Folder,
    FolderError,
    RestoreItem,
    backup_lock,
    check_plan,
    create_folder,
    listing,
    manifest,
    open_folder,
    parse_time,
    plan_restore,
    reference_backup,
    reference_since,
    scan,
)
from .jobs.restore_aws import AwsRestore
from .jobs.progress import Progress
from .jobs.restore_local import LocalRestore
from .jobs.runner import (
    EXPECTED_FAILURES,
    BackupRun,
    finish_restore,
    open_restore,
    restore_target,
)
from .jobs.sink import FileInfo, FileWriter
from .logs import REDACTOR
from .params import ParameterError, Parameters, parameter_docs, parse_parameters
from .retry import Cancelled

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
OPERATIONS = ("backup", "restore", "list", "estimate")
#: What ends a bec2 job with its message and exit code 1 (anything else is a bug: traceback).
FAILURES: tuple[type[Exception], ...] = (*EXPECTED_FAILURES, Cancelled)
#: What --job_name may be: it goes into snapshot tags (EC2 tag value characters).
_JOB_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:+=@/-]{0,99}$")


class ConsoleReporter:
    """stderr (bacula_ec2/console.py): on a terminal a live progress line, messages
    (`verbose`) and a summary line per volume; otherwise the summaries only; `quiet`: no
    progress and no summaries. Warnings and errors always."""

    def __init__(self, verbose: bool, quiet: bool = False) -> None:
        self.verbose = verbose
        self.console = Console(live=not quiet and sys.stderr.isatty(), summaries=not quiet, scrub=REDACTOR.scrub)

    def _say(self, level: str, text: str) -> None:
        self.console.message(f"{level}{text}")

    def progress(self, update: Progress) -> None:
        """A transfer's progress: the live line, or its summary once it is over."""
        self.console.progress(update)

    def info(self, text: str) -> None:
        if self.verbose:
            self._say("", text)

    def warning(self, text: str) -> None:
        self._say("warning: ", text)

    def error(self, text: str) -> None:
        self._say("error: ", text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bec2",
        description="Back up EC2 instances at block level into a local folder, and restore them.",
        epilog="Exit codes: 0 success, 1 the job failed, 2 bad parameters. See docs/PARAMETERS.md.",
    )
    parser.add_argument("--operation", required=True, choices=OPERATIONS)
    parser.add_argument(
        "--output",
        default=".",
        help="the bec2 folder: backups go into it, restores and list read it (default: .)",
    )
    parser.add_argument(
        "--level", default="F", choices=("F", "I", "D"), help="Full, Incremental or Differential (default F)"
    )
    parser.add_argument(
        "--before",
        metavar="TIME",
        help="restore the state of the backups started before TIME (ISO 8601, UTC), as Bacula selects them",
    )
    parser.add_argument(
        "--job_name",
        help="chain identity recorded in snapshot tags and headers "
        "(default: bec2-<folder id>, unique to the --output folder)",
    )
    parser.add_argument(
        "--quiet", action="store_true", help="no progress and no summary lines (warnings and errors only)"
    )
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="progress messages even when not on a terminal; with list: one line per volume",
    )
    parser.add_argument("--version", action="version", version=f"bec2 {__version__}")
    group = parser.add_argument_group("plugin parameters (same names as the FileSet line)")
    for name, default, text in parameter_docs():
        if name in ("listing", "query", "Accurate"):
            continue
        help_text = f"{text} (default: {default})" if default else text
        group.add_argument(
            f"--{name}", dest=f"p_{name}", metavar="VALUE", nargs="?", const="1", help=help_text
        )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    pairs = [(k[2:], v) for k, v in vars(args).items() if k.startswith("p_") and v is not None]
    try:
        params = parse_parameters(pairs)
    except ParameterError as exc:
        print(f"bec2: {exc}", file=sys.stderr)
        return EXIT_USAGE
    before: float | None = None
    if args.before is not None:
        try:
            before = parse_time(args.before)
        except ValueError:
            example = "2026-11-26T16:00:00Z"
            print(
                f"bec2: --before: '{args.before}' is not a time (ISO 8601, e.g. {example})", file=sys.stderr
            )
            return EXIT_USAGE
    if args.job_name is not None and not _JOB_NAME.match(args.job_name):
        print(
            f"bec2: --job_name: '{args.job_name}' is not a job name (1-100 letters, digits and _.:+=@/-, "
            "starting with a letter or digit)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    REDACTOR.add(*params.secret_values())
    reporter = ConsoleReporter(
        verbose=not args.quiet and (args.verbose or sys.stderr.isatty()), quiet=args.quiet
    )
    output = os.path.abspath(args.output)
    try:
        if args.operation == "list":
            return _list(output, reporter, args.verbose)
        if args.operation == "restore":
            return _restore(params, output, reporter, before)
        if args.operation == "estimate":
            return _estimate(params, args.job_name or "bec2", reporter)
        return _backup(params, output, args.level, args.job_name, reporter)
    except KeyboardInterrupt:
        reporter.error("interrupted")
        return EXIT_FAILED


def _unique_name(job: str, when: float, number: int) -> str:
    """Bacula's unique job name: `<job>.YYYY-MM-DD_HH.MM.SS_NN` (chain.job_resource undoes it)."""
    return f"{job}.{time.strftime('%Y-%m-%d_%H.%M.%S', time.gmtime(when))}_{number:02d}"


def _estimate(params: Parameters, job: str, reporter: ConsoleReporter) -> int:
    """A Full's files and sizes, then what each volume's figure is based on (stdout; the
    same figures as bconsole's estimate, jobs/estimate.py)."""
    from .jobs.context import connect
    from .jobs.estimate import estimate

    now = time.time()
    ctx = JobContext(params, _unique_name(job, now, os.getpid() % 100), int(now), "F", reporter, "")
    try:
        result = estimate(ctx, connect(params, cancel=ctx.cancel), _EstimatePrinter(), report=False)
    except FAILURES as exc:
        reporter.error(str(exc))
        return EXIT_FAILED
    for vol in result.volumes:
        print(vol.text())
    print(result.summary)
    return EXIT_OK


def _backup(
    params: Parameters, output: str, level: str, job_name: str | None, reporter: ConsoleReporter
) -> int:
    try:
        folder = create_folder(output, time.time())
        with backup_lock(folder):
            return _backup_locked(folder, params, level, job_name, reporter)
    except (FolderError, OSError) as exc:
        reporter.error(str(exc))
        return EXIT_FAILED


def _backup_locked(
    folder: Folder, params: Parameters, level: str, job_name: str | None, reporter: ConsoleReporter
) -> int:
    """One backup into its own directory; commit, manifest, retire (docs/SNAPSHOTS.md)."""
    backups = scan(folder)
    for b in backups:
        if b.status == DAMAGED:
            reporter.warning(f"{BACKUPS}/{b.name} is damaged and ignored: {b.problem}")
    job = job_name or folder.default_job
    requested = level
    ref = None
    if level != "F":
        ref = reference_backup(backups, level, job)
        if ref is None:
            what = "backup" if level == "I" else "Full backup"
            reporter.warning(f"no complete {what} of job {job} in {folder.root}: doing a Full backup")
            level = "F"
    started = time.time()
    bdir = BackupDirectory(folder, level, started, backups)
    unique = _unique_name(job, started, bdir.job_id)
    if chain.job_resource(unique) != job:  # the chain identity must survive the round trip
        bdir.remove()
        raise FolderError(f"job name {unique} does not map back to its job {job}")
    ctx = JobContext(params, unique, bdir.job_id, level, reporter, working_dir=folder.root)
    if ref is not None and ref.started is not None:
        ctx.reference_job = ref.job_name
        ctx.since = reference_since(ref, level)
        reporter.info(f"{LEVEL_NAMES[level]} backup against {ref.describe()}")
    run = BackupRun(ctx)

    def write_manifest() -> None:
        """From here on the backup is complete (docs/RESTORE.md "The bec2 folder")."""
        doc = manifest(
            folder,
            bdir,
            job=job,
            job_name=unique,
            level=level,
            requested_level=requested,
            finished=time.time(),
            reference=ref,
            region=params.region,
            version=__version__,
        )
        bdir.write_manifest(doc)

    def stop() -> None:
        ctx.cancel.set()
        bdir.abandon()

    try:
        run.open()
        run.backup(bdir, seal=bdir.sync, final=write_manifest, on_failure=stop)
    except BaseException as exc:
        stop()  # again (idempotent): also when connecting failed, before the runner had a job
        try:
            bdir.remove()
        except FolderError as rm_exc:
            reporter.warning(str(rm_exc))
        if isinstance(exc, FAILURES):
            reporter.error(str(exc))
            return EXIT_FAILED
        raise
    what = f"{LEVEL_NAMES[level]} backup job {bdir.job_id} ({unique})"

    def retire_failed(reason: str) -> str:
        return (
            f"{what} is complete, but retiring the older snapshots failed ({reason}); "
            "the next backup retires them"
        )

    try:
        run.retire(retire_failed)
    except KeyboardInterrupt:
        reporter.warning(retire_failed("interrupted"))
        raise
    reporter.info(f"{what} stored under {bdir.path}")
    return EXIT_OK


class _EstimatePrinter:
    """Estimate output: one line per file, like bconsole's `estimate listing`."""

    def file(self, info: FileInfo, data: bytes) -> None:
        print(f"{info.size:>16}  {info.path}")

    def open_file(self, info: FileInfo) -> FileWriter:
        raise RuntimeError("estimate does not write data")

    def directory(self, path: str, mtime: int) -> None:
        print(f"{0:>16}  {path}")


def _list(output: str, reporter: ConsoleReporter, verbose: bool) -> int:
    try:
        folder = open_folder(output)
        backups = scan(folder)
    except (FolderError, OSError) as exc:
        reporter.error(str(exc))
        return EXIT_FAILED
    print("\n".join(listing(folder, backups, verbose)))
    return EXIT_OK


def _inside(path: str, folder: str) -> bool:
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def _restore(params: Parameters, source: str, reporter: ConsoleReporter, before: float | None) -> int:
    now = time.time()
    ctx = JobContext(params, _unique_name("bec2", now, os.getpid() % 100), int(now), "F", reporter, source)
    target = params.local_path
    if params.restore_to != "aws":
        if not target:
            reporter.error("restore needs --local_path=/dir for the raw disk images, or --restore_to=aws")
            return EXIT_USAGE
        if _inside(target, os.path.join(source, BACKUPS)):
            reporter.error(
                f"--local_path={target} is inside the backups of {source}: choose another directory"
            )
            return EXIT_USAGE
    try:
        folder = open_folder(source)
        backups = scan(folder)
        for b in backups:
            if b.status == INCOMPLETE:
                reporter.info(f"ignoring {BACKUPS}/{b.name}: {b.problem}")
        plan = plan_restore(folder, backups, before)
        check_plan(folder, plan)
    except (FolderError, OSError) as exc:
        reporter.error(str(exc))
        return EXIT_FAILED
    for vid, parts in plan.chains.items():
        reporter.info(f"volume {vid}: " + " + ".join(b.describe() for b, _v in parts))
    restore: LocalRestore | AwsRestore
    try:
        # Relative directories on the command line are relative to the current directory;
        # an AWS restore stages in the folder unless --restore_workdir says otherwise.
        absolute = {
            k: os.path.abspath(v)
            for k, v in (("local_path", target), ("restore_workdir", params.restore_workdir))
            if v
        }
        where = restore_target(
            params.model_copy(update=absolute), where=None, working_dir=source, default="local"
        )
        restore = open_restore(ctx, where, where=None, open_now=False)
    except FAILURES as exc:
        reporter.error(str(exc))
        return EXIT_FAILED
    images: set[str] = set()
    try:
        # Block images first: a damaged one fails the restore before any other file is written.
        items = [i for i in plan.items if i.file.path.endswith(".bimg")]
        items += [i for i in plan.items if not i.file.path.endswith(".bimg")]
        for item in items:
            try:
                if not restore.start(item.file.path, mtime=item.file.mtime):
                    continue
                _stream(restore, folder, item)
                restore.end()
            except (JobError, FormatError) as exc:
                if isinstance(exc, FolderError):
                    raise
                raise FolderError(f"{folder.show(item.local)}: {exc}") from exc
            if item.file.path.endswith(".bimg"):
                images.add(item.file.path)
        if not images:
            raise FolderError("no disk image was restored (every one was skipped)")
        finish_restore(restore)
    except FAILURES as exc:
        reporter.error(str(exc))
        return EXIT_FAILED
    finally:
        restore.close()  # every file not yet installed goes
    if isinstance(restore, AwsRestore):
        print("\n".join(restore.results))
    return EXIT_OK


def _stream(restore: LocalRestore | AwsRestore, folder: Folder, item: RestoreItem) -> None:
    """One stored file into the restore; its bytes must be the ones its manifest lists."""
    digest = hashlib.sha256()
    size = 0
    fd = os.open(item.local, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
            restore.data(memoryview(chunk))
    if size != item.file.size or digest.hexdigest() != item.file.sha256:
        raise FolderError(
            f"{folder.show(item.local)} differs from its manifest ({size} bytes, "
            f"SHA-256 {digest.hexdigest()}; "
            f"the manifest says {item.file.size} bytes, {item.file.sha256}): it was damaged after the "
            "backup; nothing of it is restored"
        )


if __name__ == "__main__":
    sys.exit(main())
