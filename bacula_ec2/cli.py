"""`bec2`: the backup engine from the command line, with a local folder as the catalog.

Same parameter names as the FileSet line (`--name=value`). The output folder is a catalog
of backups (`jobs/folder.py`, docs/RESTORE.md): every backup gets a directory of its own
under `<output>/backups/`, with a manifest written last; restores pick the backups Bacula
would and check every byte against the manifests.

Exit codes (README.md "bec2"): 0 success; 1 the job failed (or partly failed); 2 usage,
parameter or configuration error (no region, no credentials, nothing selected); 130
interrupted by Ctrl-C (SIGINT), 143 by SIGTERM: both stop the job the same way, and what it
had created (snapshots, the backup directory, staged or new AWS resources) is removed.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import signal
import sys
import threading
import time
from types import FrameType
from typing import Any

from . import __version__, naming
from .aws import AwsError
from .console import Console
from .formats.blockimage import FormatError
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
    RestorePlan,
    backup_lock,
    check_plan,
    create_folder,
    listing,
    manifest,
    open_folder,
    parse_time,
    plan_restore,
    read_header,
    reference_backup,
    scan,
)
from .jobs.progress import Progress
from .jobs.restore_aws import AwsRestore, RestoreOptionRefused
from .jobs.restore_local import LocalRestore
from .jobs.runner import (
    EXPECTED_FAILURES,
    BackupRun,
    finish_restore,
    open_restore,
    restore_target,
)
from .jobs.selection import NothingSelected
from .jobs.sink import FileInfo, FileWriter
from .logs import REDACTOR
from .params import ParameterError, Parameters, parameter_docs, parse_level, parse_parameters
from .retry import Cancelled

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
OPERATIONS = ("backup", "restore", "list", "estimate", "ls-files", "restore-files")
#: What ends a bec2 job with its message and exit code 1 or 2 (anything else is a bug: traceback).
FAILURES: tuple[type[Exception], ...] = (*EXPECTED_FAILURES, Cancelled)
#: What --job_name may be: it goes into snapshot tags and the unique job name (no "/", no
#: white space or line break).
_JOB_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:+=@-]{0,99}")
#: AWS answers (or the missing configuration) that no retry fixes: exit 2, like a bad parameter.
CONFIGURATION_CODES = frozenset(
    {
        "NoRegion",
        "NoCredentials",
        "CredentialsFile",
        "ProfileNotFound",
        "InvalidParameter",
        "AuthFailure",
        "InvalidClientTokenId",
        "UnrecognizedClientException",
        "SignatureDoesNotMatch",
        "OptInRequired",
    }
)
#: Paths bec2 makes absolute against the current directory (the backend refuses relative ones).
PATH_PARAMETERS = ("local_path", "restore_workdir")
#: The selection parameters a restore understands (it selects among the folder's backups).
RESTORE_SELECTION = ("instances", "volumes", "exclude_instances", "exclude_volumes")
RESTORE_REFUSED_SELECTION = ("instance_tags", "instance_regex", "exclude_boot_volume")


class UsageError(JobError):
    """What the command line asks for does not fit (exit 2); the message says what to change."""


def exit_code(exc: BaseException) -> int:
    """2 for a failure the admin fixes in the command or its configuration (a parameter, no
    region, no or refused credentials, a restore option that does not fit, a selection that
    names nothing that exists), else 1."""
    cause: BaseException | None = exc
    seen: set[int] = set()
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, ParameterError | UsageError | RestoreOptionRefused | NothingSelected):
            return EXIT_USAGE
        if isinstance(cause, AwsError) and (
            cause.code in CONFIGURATION_CODES or cause.operation in ("configuration", "credentials")
        ):
            return EXIT_USAGE
        cause = cause.__cause__
    return EXIT_FAILED


class Interrupts:
    """SIGINT and SIGTERM while a job runs: the first one cancels the job (`watch`ed events)
    and raises KeyboardInterrupt in the main thread, so the job's clean-up runs as on any
    failure; later ones only say that the clean-up is still running. bec2 then exits
    128 + the signal's number (130 for Ctrl-C, 143 for SIGTERM)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signum: int | None = None
        self._events: list[threading.Event] = []
        self._previous: dict[int, Any] = {}

    def reset(self) -> None:
        """A fresh state for one run of `main` (tests run it many times in one process)."""
        self.signum = None
        self._events.clear()

    def watch(self, event: threading.Event) -> None:
        self._events.append(event)
        if self.signum is not None:
            event.set()

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # only the main thread may set handlers (bec2 called from a test thread)
        for sig in self.SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None:
            print(
                f"bec2: {signal.Signals(signum).name} again: still removing what this job created; "
                "wait for it (SIGKILL would leave it behind)",
                file=sys.stderr,
                flush=True,
            )
            return
        self.signum = signum
        for event in self._events:
            event.set()
        raise KeyboardInterrupt

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else "KeyboardInterrupt"

    @property
    def code(self) -> int:
        return 128 + self.signum if self.signum is not None else EXIT_INTERRUPTED


_INTERRUPTS = Interrupts()


class ConsoleReporter:
    """stderr (bacula_ec2/console.py): on a terminal a live progress line, messages
    (`verbose`) and a summary line per volume; otherwise the summaries only; `quiet`: no
    progress and no summaries. Warnings and errors always."""

    def __init__(self, verbose: bool, quiet: bool = False) -> None:
        self.verbose = verbose
        self.console = Console(
            live=not quiet and sys.stderr.isatty(), summaries=not quiet, scrub=REDACTOR.scrub
        )

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


_EXAMPLES = """\
examples:
  backup    bec2 --operation=backup --region=eu-west-1 --profile=backup --instances=web-1 --output=/backups
            bec2 --operation=backup --level=Incremental --region=eu-west-1 --profile=backup \\
                 --instances=web-1 --output=/backups
  estimate  bec2 --operation=estimate --region=eu-west-1 --profile=backup --instances=web-1
  list      bec2 --operation=list --output=/backups [--verbose]
  ls-files  bec2 --operation=ls-files --output=/backups --path=/etc [--before=2026-11-20T12:00:00Z] \\
                 [--instances=web-1] [--volumes=vol-0123...]      (--path=p2:/etc: on partition p2)
  restore-files
            bec2 --operation=restore-files --output=/backups --local_path=/srv/restores \\
                 --files=/etc/nginx/**,/home/app/.env [--before=...] [--volumes=vol-0123...]
            (files land under <local_path>/@amazon-ec2/<instance-id>/<volume-id>/<partition>/<path>)
  restore   bec2 --operation=restore --output=/backups --local_path=/srv/restores \\
                 [--before=2026-11-20T12:00:00Z] [--instances=web-1] [--volumes=vol-0123...]
            bec2 --operation=restore --restore_to=aws --output=/backups --region=eu-west-1 --profile=backup
            bec2 --operation=restore --restore_to=aws --output=/backups --restore_as=instance \\
                 --instances=web-1 --restore_start=no

exit codes:
  0    success
  1    the job failed (or partly failed): the messages say what and why
  2    usage, parameter or configuration error (also: no region, no credentials, nothing selected;
       ls-files/restore-files: a path, partition or filesystem the guest does not have, a glob
       that matches nothing)
  130  interrupted (Ctrl-C, SIGINT); 143: SIGTERM. Either way the job stops and what it had
       created (snapshots, its backup directory, staged files, new AWS resources) is removed.

Relative paths (--output, --local_path, --restore_workdir) are taken from the current directory.
Every parameter, its default and meaning: /usr/share/doc/bacula-ec2-plugin/PARAMETERS.md.gz.
"""

#: Where each FileSet parameter is listed in --help (by operation); anything not named here
#: (a new parameter) goes to "backup".
_CONNECTION = (
    "region",
    "access_key",
    "secret_key",
    "session_token",
    "profile",
    "credentials_file",
    "role_arn",
    "external_id",
    "role_session_name",
    "endpoint_url",
    "ec2_endpoint_url",
    "ebs_endpoint_url",
    "ca_bundle",
)
_SELECTION = (
    "instances",
    "instance_tags",
    "instance_regex",
    "exclude_instances",
    "volumes",
    "exclude_volumes",
    "exclude_boot_volume",
    "include_restored",
)
_NOT_ON_COMMAND_LINE = ("listing", "query", "Accurate")


def _parameter_group(name: str) -> str:
    if name in _CONNECTION:
        return "connection"
    if name in _SELECTION:
        return "selection"
    if name.startswith("restore_") or name in ("local_path", "keep_restore_snapshots"):
        return "restore"
    return "backup"


def _level(text: str) -> str:
    try:
        return parse_level(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bec2",
        usage=f"bec2 --operation={{{','.join(OPERATIONS)}}} [--name=value ...]",
        description="Back up EC2 instances at block level into a local folder, and restore them.\n"
        "Parameters have the names of the FileSet's Plugin line (--name=value).",
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,  # the names are the FileSet's: --inst=... must not pass for --instances=
    )
    what = parser.add_argument_group("operation")
    what.add_argument(
        "--operation",
        required=True,
        choices=OPERATIONS,
        help="backup: a new backup into --output; estimate: what a backup would read; list: the "
        "backups in --output; restore: from --output into local images or AWS; ls-files: a directory "
        "of the guest (--path); restore-files: guest files (--files) into --local_path",
    )
    what.add_argument(
        "--path",
        metavar="[PART:]PATH",
        help="ls-files: the guest directory to list, e.g. /etc or p2:/etc (/ lists the partitions too)",
    )
    what.add_argument(
        "--files",
        metavar="GLOBS",
        help="restore-files: paths or globs inside the guest, comma separated, e.g. "
        "/etc/nginx/**,p2:/home/app/.env",
    )
    what.add_argument(
        "--output",
        default=".",
        help="the bec2 folder: backups go into it, list and restore read it (default: .)",
    )
    backup = parser.add_argument_group("backup and estimate")
    backup.add_argument(
        "--level",
        default="F",
        type=_level,
        metavar="LEVEL",
        help="F, I, D or Full, Incremental, Differential, any case (default: F)",
    )
    backup.add_argument(
        "--job_name",
        help="chain identity recorded in snapshot tags and headers: letters, digits and _.:+=@- "
        "(default: bec2-<folder id>, unique to the --output folder)",
    )
    selection = parser.add_argument_group(
        "selection",
        "backup and estimate select in AWS; restore selects among the folder's backups with\n"
        "--instances (id or Name), --volumes, --exclude_instances and --exclude_volumes",
    )
    restore = parser.add_argument_group(
        "restore",
        "into local raw images (--local_path) or, with --restore_to=aws, into AWS: there --region\n"
        "(or --restore_region) is where the new resources go (default: the backup's region)",
    )
    restore.add_argument(
        "--before",
        metavar="TIME",
        help="restore the state of the backups started before TIME (ISO 8601, UTC), as Bacula selects them",
    )
    connection = parser.add_argument_group(
        "AWS connection and credentials (backup, estimate, restore to AWS)"
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
    groups = {"connection": connection, "selection": selection, "restore": restore, "backup": backup}
    for name, default, text in parameter_docs():
        if name in _NOT_ON_COMMAND_LINE:
            continue
        shown = {"True": "yes", "False": "no"}.get(default, default)
        help_text = f"{text} (default: {shown})" if shown else text
        groups[_parameter_group(name)].add_argument(
            f"--{name}", dest=f"p_{name}", metavar="VALUE", nargs="?", const="1", help=help_text
        )
    return parser


def _absolute(name: str, value: str) -> str:
    """A directory of the command line as an absolute path (against the current directory)."""
    if value.startswith("~"):
        raise UsageError(
            f"--{name}={value}: the shell does not expand ~ after '=': write --{name} {value} "
            "(with a space) or use $HOME"
        )
    return os.path.abspath(value)


def _pairs(args: argparse.Namespace) -> tuple[list[tuple[str, str]], str | None]:
    """The FileSet parameters of the command line, relative paths made absolute, and, on a
    restore, --region as the region to restore into. Returns (pairs, note for errors)."""
    given = {k[2:]: v for k, v in vars(args).items() if k.startswith("p_") and v is not None}
    for name in PATH_PARAMETERS:
        if given.get(name, "").strip():
            given[name] = _absolute(name, given[name])
    note = None
    if args.operation == "restore" and given.get("region"):
        region, target = given["region"], given.get("restore_region")
        if target and target != region:
            raise UsageError(
                f"--region={region} and --restore_region={target}: on a restore both name the region "
                "to restore into; give one"
            )
        given["restore_region"] = region
        note = "on a restore --region is the region to restore into, as --restore_region"
    return list(given.items()), note


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        output = _absolute("output", args.output)
        pairs, note = _pairs(args)
    except UsageError as exc:
        print(f"bec2: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        params = parse_parameters(pairs)
    except ParameterError as exc:
        print(f"bec2: {exc}" + (f" ({note})" if note else ""), file=sys.stderr)
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
    if args.job_name is not None and not _JOB_NAME.fullmatch(args.job_name):
        print(
            f"bec2: --job_name: {args.job_name!r} is not a job name: 1 to 100 letters, digits and _.:+=@- "
            "(no '/', space or line break), starting with a letter or digit",
            file=sys.stderr,
        )
        return EXIT_USAGE
    if args.operation in ("backup", "estimate") and not (params.selects_instances() or params.volumes):
        print(
            f"bec2: nothing selected: --operation={args.operation} needs --instances=, --instance_tags=, "
            "--instance_regex= or --volumes=",
            file=sys.stderr,
        )
        return EXIT_USAGE
    REDACTOR.add(*params.secret_values())
    reporter = ConsoleReporter(
        verbose=not args.quiet and (args.verbose or sys.stderr.isatty()), quiet=args.quiet
    )
    interrupts = _INTERRUPTS
    interrupts.reset()
    interrupts.install()
    try:
        code = _operation(args, params, output, before, reporter)
    except KeyboardInterrupt:
        code = EXIT_INTERRUPTED
    finally:
        interrupts.restore()
    if interrupts.signum is not None or code == EXIT_INTERRUPTED:
        reporter.error(
            f"interrupted ({interrupts.name}): the job was stopped and what it had created was removed "
            "(a warning above names anything left behind)"
        )
        return interrupts.code
    return code


def _operation(
    args: argparse.Namespace,
    params: Parameters,
    output: str,
    before: float | None,
    reporter: ConsoleReporter,
) -> int:
    if args.operation == "list":
        return _list(output, reporter, args.verbose)
    if args.operation == "restore":
        return _restore(params, output, reporter, before)
    if args.operation in ("ls-files", "restore-files"):
        return _files(args, params, output, before, reporter)
    if args.operation == "estimate":
        return _estimate(params, args.job_name or "bec2", reporter)
    return _backup(params, output, args.level, args.job_name, reporter)


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
    _INTERRUPTS.watch(ctx.cancel)
    try:
        result = estimate(ctx, connect(params, cancel=ctx.cancel), _EstimatePrinter(), report=False)
    except FAILURES as exc:
        reporter.error(str(exc))
        return exit_code(exc)
    for vol in result.volumes:
        print(vol.text())
    print(result.summary)
    return EXIT_FAILED if result.failures else EXIT_OK  # each named on stderr (a warning)


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
    _INTERRUPTS.watch(ctx.cancel)
    if ref is not None and ref.started is not None:
        ctx.reference_job = ref.job_name
        reporter.info(f"{LEVEL_NAMES[level]} backup against {ref.describe()}")
    # closed at the end: its AWS clients' connections (bec2 shares no list schedule with other
    # processes: one backup per folder at a time, and its folder is the user's, not a spool)
    with contextlib.closing(BackupRun(ctx)) as run:

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
                return exit_code(exc)
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
        if run.failures:  # abort_on_error=0: the rest is backed up and stored; exit 1 all the same
            reporter.error(
                f"{what} stored under {bdir.path} is incomplete. Backed up: "
                f"{', '.join(run.backed_up) or 'nothing'}. NOT backed up ({len(run.failures)}): "
                + "; ".join(str(f) for f in run.failures)
            )
            return EXIT_FAILED
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


def _instance_name(item: RestoreItem) -> str | None:
    """The Name an instance JSON of the folder records (None if unreadable: the restore's
    own check of that file then says what is wrong with it)."""
    try:
        with open(item.local, "rb") as fh:
            doc = json.loads(fh.read(1 << 20))
    except (OSError, ValueError):
        return None
    name = doc.get("name") if isinstance(doc, dict) else None
    return name if isinstance(name, str) else None


def select_restore(plan: RestorePlan, params: Parameters) -> RestorePlan:
    """The part of `plan` that --instances (id or Name), --volumes, --exclude_instances and
    --exclude_volumes (id or device) select. An entry that names nothing in the restore, or a
    selection that leaves no volume, is a UsageError (a typo must not restore something else)."""
    p = params
    if not any(getattr(p, name) for name in RESTORE_SELECTION):
        return plan
    newest = {vid: parts[-1][1] for vid, parts in plan.chains.items()}
    names: dict[str, str | None] = {}
    for item in plan.items:
        cat = naming.parse_catalog_path(item.file.path)
        if cat.kind == "instance":
            names[cat.instance_id] = _instance_name(item)
    for v in newest.values():
        if v.folder != naming.STANDALONE:
            names.setdefault(v.folder, None)

    def held() -> str:
        shown = [f"{iid} ({names[iid]})" if names[iid] else iid for iid in sorted(names)]
        vols = [
            f"{vid} ({v.folder}, {naming.device_short_name(v.device or '') or '-'})"
            for vid, v in newest.items()
        ]
        return f"instances {', '.join(shown) or 'none'}; volumes {', '.join(vols)}"

    def instances_of(option: str, entries: list[str]) -> set[str]:
        found: set[str] = set()
        for entry in entries:
            hits = {iid for iid, name in names.items() if entry in (iid, name)}
            if not hits:
                raise UsageError(
                    f"--{option}: no instance {entry!r} (id or Name) in this restore; it holds {held()}"
                )
            found |= hits
        return found

    chosen = instances_of("instances", p.instances)
    dropped = instances_of("exclude_instances", p.exclude_instances)
    unknown = [vid for vid in p.volumes if vid not in newest]
    if unknown:
        raise UsageError(f"--volumes: {', '.join(unknown)} not in this restore; it holds {held()}")
    devices = {naming.device_short_name(v.device or ""): vid for vid, v in newest.items() if v.device}
    unknown = [e for e in p.exclude_volumes if e not in newest and naming.device_short_name(e) not in devices]
    if unknown:
        raise UsageError(
            f"--exclude_volumes: {', '.join(unknown)} is no volume id or device in this restore; "
            f"it holds {held()}"
        )

    def excluded(vid: str) -> bool:
        v = newest[vid]
        short = naming.device_short_name(v.device or "")
        return v.folder in dropped or any(
            e == vid or naming.device_short_name(e) == short for e in p.exclude_volumes
        )

    if p.instances or p.volumes:
        picked = {vid for vid, v in newest.items() if v.folder in chosen or vid in p.volumes}
        keep = set(chosen)
    else:
        picked = set(newest)
        keep = set(names)
    picked = {vid for vid in picked if not excluded(vid)}
    keep = (keep - dropped) | {newest[vid].folder for vid in picked}
    if not picked:
        raise UsageError(f"the selection leaves no volume to restore; this restore holds {held()}")
    items = []
    for item in plan.items:
        cat = naming.parse_catalog_path(item.file.path)
        if cat.volume_id is not None:
            if cat.volume_id in picked:
                items.append(item)
        elif cat.kind != "instance" or cat.instance_id in keep:
            items.append(item)
    return RestorePlan(
        items=items, chains={vid: parts for vid, parts in plan.chains.items() if vid in picked}
    )


def _check_aws_selection(plan: RestorePlan, params: Parameters) -> None:
    """What the restore into AWS would refuse at its end, said before anything is read, in
    bec2's words (the job logic checks the same again)."""
    if bool(params.restore_attach_instance) != bool(params.restore_attach_device):
        raise UsageError("--restore_attach_instance and --restore_attach_device go together")
    if params.restore_attach_instance and len(plan.chains) != 1:
        raise UsageError(
            f"--restore_attach_instance attaches one volume; the restore holds {len(plan.chains)} "
            f"({', '.join(plan.chains)}): choose one with --volumes=vol-..."
        )
    if params.restore_as == "instance":
        folders = sorted({parts[-1][1].folder for parts in plan.chains.values()})
        if len(folders) != 1 or folders[0] == naming.STANDALONE:
            raise UsageError(
                f"--restore_as=instance restores one instance at a time; the restore holds volumes of "
                f"{', '.join(folders)}: choose one with --instances=i-... (or its Name)"
            )


def _source_regions(plan: RestorePlan) -> set[str | None]:
    """The region each volume of the restore was backed up in (its newest part's header)."""
    return {read_header(parts[-1][0].local(parts[-1][1].image)).region for parts in plan.chains.values()}


def _restore(params: Parameters, source: str, reporter: ConsoleReporter, before: float | None) -> int:
    now = time.time()
    # The restore's ClientTokens come from its job name and id: unique to this run, also for
    # two restores in one second (the same tokens would hand back the other run's snapshots).
    job_id = time.time_ns() // 1000 % 1_000_000_000
    ctx = JobContext(params, _unique_name("bec2", now, os.getpid() % 100), job_id, "F", reporter, source)
    _INTERRUPTS.watch(ctx.cancel)
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
    refused = [f"--{name}" for name in RESTORE_REFUSED_SELECTION if getattr(params, name)]
    if refused:
        reporter.error(
            f"{', '.join(refused)}: a restore selects among the folder's backups with --instances= "
            "(id or Name), --volumes=, --exclude_instances= and --exclude_volumes= only"
        )
        return EXIT_USAGE
    try:
        folder = open_folder(source)
        backups = scan(folder)
        for b in backups:
            if b.status == INCOMPLETE:
                reporter.info(f"ignoring {BACKUPS}/{b.name}: {b.problem}")
        plan = select_restore(plan_restore(folder, backups, before), params)
        check_plan(folder, plan)
        if params.restore_to == "aws":
            _check_aws_selection(plan, params)
    except (FolderError, OSError, UsageError) as exc:
        reporter.error(str(exc))
        return exit_code(exc)
    for vid, parts in plan.chains.items():
        reporter.info(f"volume {vid}: " + " + ".join(b.describe() for b, _v in parts))
    restore: LocalRestore | AwsRestore
    try:
        # An AWS restore stages in the folder unless --restore_workdir says otherwise (the
        # command line's relative directories were made absolute already).
        where = restore_target(params, where=None, working_dir=source, default="local")
        restore = open_restore(ctx, where, where=None, open_now=False)
    except FAILURES as exc:
        reporter.error(str(exc))
        return exit_code(exc)
    images: set[str] = set()
    try:
        if isinstance(restore, AwsRestore):
            # Before anything is staged: the target regions, the zone, the KMS key.
            restore.check_regions(_source_regions(plan))
        # Block images first: a damaged one fails the restore before any other file is written.
        items = [i for i in plan.items if i.file.path.endswith(".bimg")]
        items += [i for i in plan.items if not i.file.path.endswith(".bimg")]
        for item in items:
            try:
                if not restore.start(item.file.path, mtime=item.file.mtime, size=item.file.size):
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
        return exit_code(exc)
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


# ---------------------------------------------------------------------- files of the guest


def _files(
    args: argparse.Namespace, params: Parameters, source: str, before: float | None, reporter: ConsoleReporter
) -> int:
    """ls-files and restore-files: the guest's files at a point in time, read in place from
    the chain's block images (`jobs.chainview`: only the blocks needed, each one checked).

    Exit 2 for what the command asks that the guest does not have (a path, a partition, a
    filesystem this reader cannot read, a glob matching nothing anywhere); 1 for a damaged
    chain or a failed write; a glob that matches nothing on one volume while others were
    restored is a warning."""
    from . import guest
    from .jobs.chainview import open_folder_chain

    listing_op = args.operation == "ls-files"
    if listing_op and not args.path:
        reporter.error("ls-files needs --path=/dir (or --path=p2:/dir for partition p2)")
        return EXIT_USAGE
    if not listing_op:
        if not args.files:
            reporter.error(
                "restore-files needs --files=/etc/nginx/**,/home/app/.env (paths or globs in the guest)"
            )
            return EXIT_USAGE
        if not params.local_path:
            reporter.error("restore-files needs --local_path=/dir: the files land under it")
            return EXIT_USAGE
        if _inside(params.local_path, os.path.join(source, BACKUPS)):
            reporter.error(
                f"--local_path={params.local_path} is inside the backups of {source}: "
                "choose another directory"
            )
            return EXIT_USAGE
    refused = [f"--{name}" for name in RESTORE_REFUSED_SELECTION if getattr(params, name)]
    if refused or params.restore_to == "aws":
        reporter.error(
            f"{', '.join(refused) or '--restore_to=aws'}: {args.operation} reads the folder's backups "
            "and selects with --instances= (id or Name), --volumes=, --exclude_instances= and "
            "--exclude_volumes= only"
        )
        return EXIT_USAGE
    try:
        patterns = guest.parse_patterns(args.files) if not listing_op else []
        folder = open_folder(source)
        plan = select_restore(plan_restore(folder, scan(folder), before), params)
    except (FolderError, OSError, UsageError, guest.GuestError) as exc:
        reporter.error(str(exc))
        return EXIT_USAGE if isinstance(exc, guest.GuestError) else exit_code(exc)
    problems: list[str] = []
    done = 0
    for vid in sorted(plan.chains):
        parts = plan.chains[vid]
        newest = parts[-1][1]
        label = f"volume {vid} ({newest.folder}, {naming.device_short_name(newest.device or '') or '-'})"
        try:
            view = open_folder_chain(source, vid, before)
        except FAILURES as exc:
            reporter.error(f"{label}: {exc}")
            return exit_code(exc)
        try:
            reporter.info(f"{label}: " + " + ".join(b.describe() for b, _v in parts))
            try:
                disk = guest.open_disk(view)
                if listing_op:
                    _ls_volume(disk, args.path, label)
                    done += 1
                    continue
                sel = guest.select(disk, patterns)
            except guest.GuestDamaged:
                raise  # a damaged filesystem fails the volume (below), it is not "not there"
            except guest.GuestError as exc:
                problems.append(f"{label}: {exc}")
                continue
            if not sel.matches:
                problems += [f"{label}: {p}" for p in sel.problems or ["nothing selected"]]
                continue
            dest = _files_dest(params.local_path or "", newest.folder, vid)
            try:
                report = guest.extract(sel, dest)
            finally:
                dest.close()
            done += 1
            problems += [f"{label}: {p}" for p in report.problems]
            for note in (*report.notes, *report.skipped):
                reporter.info(f"{label}: {note}")
            where = os.path.join(params.local_path or "", naming.NAMESPACE, newest.folder, vid)
            print(
                f"{label}: {report.summary()} under {where}; read {view.bytes_read} bytes "
                f"({view.blocks_read} blocks) of the chain's parts"
            )
        except FAILURES as exc:
            # a damaged chain (ChainDamaged), a failed write, or a guest file that cannot be
            # read whole: extract() removed what it had written of this volume
            tail = "" if listing_op else " (nothing of this volume is restored)"
            reporter.error(f"{label}: {exc}{tail}")
            return EXIT_FAILED if isinstance(exc, guest.GuestError) else exit_code(exc)
        finally:
            if listing_op:
                reporter.info(
                    f"{label}: read {view.bytes_read} bytes ({view.blocks_read} blocks) of the chain's parts"
                )
            view.close()
    if not done:
        problems = [" ".join(p.split()) for p in problems]
        reporter.error("nothing to " + ("list" if listing_op else "restore") + ": " + "; ".join(problems))
        return EXIT_USAGE
    problems = [" ".join(p.split()) for p in problems]  # one line each
    for problem in problems:
        reporter.warning(problem if listing_op else f"not restored: {problem}")
    return EXIT_OK


def _files_dest(local_path: str, folder: str, volume_id: str) -> Any:
    """`<local_path>/@amazon-ec2/<folder>/<volume>`, opened through safefs (no link followed)."""
    from .jobs import safefs

    root = safefs.open_target(local_path)
    try:
        here = root.subdir(naming.NAMESPACE)
        assert here is not None
        for name in (folder, volume_id):
            nxt = here.subdir(name)
            here.close()
            assert nxt is not None
            here = nxt
        return here
    finally:
        root.close()


def _ls_volume(disk: Any, path: str, label: str) -> None:
    """One volume's listing on stdout: the partitions when the path is / or found on several."""
    from . import guest

    listed = guest.list_path(disk, path)
    bare = path.split(":", 1)[-1] if ":" in path.split("/", 1)[0] else path
    print(f"{label}:")
    if bare.strip("/") == "" or len(listed) > 1:
        print(f"  {disk.scheme} disk, partitions: " + ", ".join(p.describe() for p in disk.partitions))
    for item in listed:
        print(f"{item.partition} ({item.fstype}) {item.path}:")
        for entry in item.entries:
            print(guest.ls_line(entry))


if __name__ == "__main__":
    sys.exit(main())
