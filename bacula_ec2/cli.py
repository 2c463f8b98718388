"""`bec2`: the backup engine from the command line, with a local folder as the catalog.

Same parameter names as the FileSet line (`--name=value`); backups go into
`<output>/@amazon-ec2/...`, restores read that folder and write raw disk images.
Exit codes: 0 success, 1 the job failed, 2 bad parameters or usage.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time

from . import __version__
from .aws import Aws, AwsError
from .formats.blockimage import FormatError, ImageHeader
from .jobs.backup import BackupJob
from .jobs.context import JobContext, JobError
from .jobs.folder import FolderSink, parse_time, read_header, reference_backup, select_chain, stored_files
from .jobs.restore_aws import AwsRestore
from .jobs.restore_local import LocalRestore
from .jobs.sink import FileInfo, FileWriter
from .logs import REDACTOR
from .params import ParameterError, parameter_docs, parse_parameters
from .retry import Cancelled, RetriesExhausted

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
OPERATIONS = ("backup", "restore", "estimate")
FAILURES = (JobError, AwsError, RetriesExhausted, FormatError, OSError, Cancelled)


class ConsoleReporter:
    """Progress on a terminal, quiet otherwise; warnings and errors always (stderr)."""

    def __init__(self, verbose: bool) -> None:
        self.verbose = verbose
        self.live = verbose and sys.stderr.isatty()
        self._line = False

    def _say(self, level: str, text: str) -> None:
        if self._line:
            print(file=sys.stderr)
            self._line = False
        print(f"bec2: {level}{REDACTOR.scrub(text)}", file=sys.stderr, flush=True)

    def progress(self, text: str) -> None:
        """One line rewritten in place, only on a terminal."""
        if self.live:
            print(f"\rbec2: {text}\033[K", end="", file=sys.stderr, flush=True)
            self._line = True

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
        "--output", default=".", help="folder holding the @amazon-ec2 backup tree (default: .)"
    )
    parser.add_argument(
        "--level", default="F", choices=("F", "I", "D"), help="Full, Incremental or Differential (default F)"
    )
    parser.add_argument(
        "--before", metavar="TIME", help="restore the state of the last backup before TIME (ISO 8601, UTC)"
    )
    parser.add_argument("--job_name", default="bec2", help="chain name recorded in snapshot tags and headers")
    parser.add_argument("--quiet", action="store_true", help="no progress messages")
    parser.add_argument(
        "--verbose", action="store_true", help="progress messages even when not on a terminal"
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
    if args.before is not None:
        try:
            parse_time(args.before)
        except ValueError:
            example = "2026-11-26T16:00:00Z"
            print(
                f"bec2: --before: '{args.before}' is not a time (ISO 8601, e.g. {example})", file=sys.stderr
            )
            return EXIT_USAGE
    REDACTOR.add(*params.secret_values())
    reporter = ConsoleReporter(verbose=not args.quiet and (args.verbose or sys.stderr.isatty()))
    output = os.path.abspath(args.output)
    now = time.time()
    ctx = JobContext(
        params=params,
        job_name=f"{args.job_name}.{time.strftime('%Y-%m-%d_%H.%M.%S', time.gmtime(now))}_{os.getpid() % 100:02d}",  # noqa: E501
        job_id=int(now),
        level=args.level,
        reporter=reporter,
        working_dir=output,
    )
    if args.operation == "backup" and args.level != "F":
        ref = reference_backup(output, args.level)
        if ref is None:
            reporter.warning(f"no Full backup in {output}: doing a Full backup")
            ctx.level = "F"
        else:
            ctx.reference_job = ref.job_name
            ctx.since = int(dt.datetime.fromisoformat(ref.created.replace("Z", "+00:00")).timestamp())
    try:
        if args.operation == "restore":
            return _restore(ctx, output, reporter, args.before)
        return _backup(ctx, output, args.operation, reporter)
    except KeyboardInterrupt:
        reporter.error("interrupted")
        return EXIT_FAILED


def _backup(ctx: JobContext, output: str, operation: str, reporter: ConsoleReporter) -> int:
    job: BackupJob | None = None
    sink = FolderSink(output)
    try:
        job = BackupJob(ctx, Aws(ctx.params, cancel=ctx.cancel))
        if operation == "estimate":
            est = _EstimatePrinter()
            job.estimate(est)
            return EXIT_OK
        os.makedirs(output, exist_ok=True)
        job.run(sink)
        job.commit()
        job.retire()
        reporter.info(
            f"{ {'F': 'Full', 'I': 'Incremental', 'D': 'Differential'}[ctx.level] } backup {ctx.job_name} "
            f"stored under {os.path.join(output, '@amazon-ec2')}"
        )
        return EXIT_OK
    except (*FAILURES, KeyboardInterrupt) as exc:
        sink.abandon()
        if job is not None and job.ledger.created:
            left = job.rollback()
            if left:
                reporter.warning(f"could not delete snapshot(s) {', '.join(left)}")
        if isinstance(exc, KeyboardInterrupt):
            raise
        reporter.error(str(exc))
        return EXIT_FAILED


class _EstimatePrinter:
    """Estimate output: one line per file, like bconsole's `estimate listing`."""

    def file(self, info: FileInfo, data: bytes) -> None:
        print(f"{info.size:>16}  {info.path}")

    def open_file(self, info: FileInfo) -> FileWriter:
        raise RuntimeError("estimate does not write data")

    def directory(self, path: str, mtime: int) -> None:
        print(f"{0:>16}  {path}")


def _restore(ctx: JobContext, source: str, reporter: ConsoleReporter, before: str | None) -> int:
    target = ctx.params.local_path
    restore: LocalRestore | AwsRestore
    if ctx.params.restore_to == "aws":
        try:
            restore = AwsRestore(ctx, os.path.abspath(ctx.params.restore_workdir or source), where=None)
        except FAILURES as exc:
            reporter.error(str(exc))
            return EXIT_FAILED
        target = "AWS"
    elif not target:
        reporter.error("restore needs --local_path=/dir for the raw disk images, or --restore_to=aws")
        return EXIT_USAGE
    else:
        restore = LocalRestore(ctx, os.path.abspath(target), where=None)
    count = 0
    try:
        files = list(stored_files(source))
        parts: dict[str, list[tuple[str, ImageHeader]]] = {}
        for catalog_path, local in files:
            if catalog_path.endswith(".bimg") and (header := read_header(local)) is not None:
                parts.setdefault(header.volume_id, []).append((catalog_path, header))
        chosen = {p for volume_parts in parts.values() for p in select_chain(volume_parts, before)}
        for catalog_path, local in files:
            if catalog_path.endswith(".bimg") and catalog_path not in chosen:
                continue
            if not restore.start(catalog_path):
                continue
            with open(local, "rb") as fh:
                while chunk := fh.read(1 << 20):
                    restore.data(memoryview(chunk))
            restore.end()
            count += 1
        if count == 0:
            raise JobError(f"no bacula-ec2 backup found under {source}")
        restore.finish()
    except (*FAILURES, KeyboardInterrupt) as exc:
        restore.abandon()
        if isinstance(restore, AwsRestore):
            restore.close()
        if isinstance(exc, KeyboardInterrupt):
            raise
        reporter.error(str(exc))
        return EXIT_FAILED
    reporter.info(restore.summary())
    if isinstance(restore, AwsRestore):
        print("\n".join(restore.results))
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
