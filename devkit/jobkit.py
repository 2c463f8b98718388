"""What a job needs around it in a unit test: a sink that records the files a backup hands
over (`jobs.sink.BackupSink`), a reporter that records the job's messages, a decoder of the
block images it wrote, and a `Director` that runs the jobs of one chain against a `FakeAws`
the way Bacula names their references."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from bacula_ec2.formats.blockimage import BLOCK_SIZE, FileKind, ImageHeader, RecordDecoder, RecordKind
from bacula_ec2.jobs.backup import BackupJob
from bacula_ec2.jobs.context import JobContext
from bacula_ec2.jobs.progress import Progress
from bacula_ec2.jobs.sink import FileInfo
from bacula_ec2.params import parse_parameters

from .fake_aws import FakeAws


class Recorder:
    """A `jobs.context.Reporter` keeping (level, text): level I, W or E."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []
        #: Every progress update (jobs.progress.Progress), in order.
        self.updates: list[Progress] = []

    def info(self, text: str) -> None:
        self.lines.append(("I", text))

    def progress(self, update: Progress) -> None:
        self.updates.append(update)

    def warning(self, text: str) -> None:
        self.lines.append(("W", text))

    def error(self, text: str) -> None:
        self.lines.append(("E", text))

    def texts(self, level: str | None = None) -> list[str]:
        return [t for lv, t in self.lines if level is None or lv == level]


@dataclass
class _Writer:
    sink: RecordingSink
    info: FileInfo
    data: bytearray = field(default_factory=bytearray)
    closed: bool = False

    def write(self, *parts: bytes | bytearray | memoryview) -> None:
        if self.closed:
            raise ValueError(f"{self.info.path}: written after close")
        for part in parts:
            self.data += part

    def close(self) -> None:
        if self.closed:
            raise ValueError(f"{self.info.path}: closed twice")
        self.closed = True
        self.sink._store(self.info, bytes(self.data))


class RecordingSink:
    """A `BackupSink` keeping every file (path -> info, bytes) and directory, in order.

    A path handed over twice is an error: the catalog would hold it twice."""

    def __init__(self) -> None:
        self.files: dict[str, tuple[FileInfo, bytes]] = {}
        self.order: list[str] = []
        self.directories: list[str] = []
        self._open: _Writer | None = None

    def _store(self, info: FileInfo, data: bytes) -> None:
        if info.path in self.files:
            raise ValueError(f"{info.path} handed over twice")
        self.files[info.path] = (info, data)
        self.order.append(info.path)
        self._open = None

    def file(self, info: FileInfo, data: bytes) -> None:
        if self._open is not None:
            raise ValueError(f"{info.path} started while {self._open.info.path} is open")
        self._store(info, data)

    def open_file(self, info: FileInfo) -> _Writer:
        if self._open is not None:
            raise ValueError(f"{info.path} opened while {self._open.info.path} is open")
        self._open = _Writer(self, info)
        return self._open

    def directory(self, path: str, mtime: int) -> None:
        if self._open is not None:
            raise ValueError(f"directory {path} while {self._open.info.path} is open")
        self.directories.append(path)

    def data(self, path: str) -> bytes:
        return self.files[path][1]

    def ending(self, suffix: str) -> list[str]:
        return [p for p in self.order if p.endswith(suffix)]


# ------------------------------------------------------------------------- block images


def image_blocks(data: bytes) -> tuple[ImageHeader, dict[int, bytes | None]]:
    """A .bimg's header and its blocks by index (None: a ZERO record), end record verified."""
    dec = RecordDecoder(FileKind.IMAGE)
    header: ImageHeader | None = None
    blocks: dict[int, bytes | None] = {}
    for item in dec.feed(data):
        if isinstance(item, ImageHeader):
            header = item
        else:
            index = item.record.offset // BLOCK_SIZE
            if index in blocks:
                raise ValueError(f"block {index} stored twice")
            blocks[index] = item.data if item.record.kind is RecordKind.DATA else None
    dec.close()
    if header is None:
        raise ValueError("no header")
    return header, blocks


# ------------------------------------------------------------------------- a Director


@dataclass
class Run:
    """One backup job as the Director ran it."""

    name: str
    job_id: int
    level: str
    start: int  # epoch: Bacula's Since= for the jobs that reference this one
    job: BackupJob
    sink: RecordingSink
    reporter: Recorder
    snapshots: dict[str, str] = field(default_factory=dict)  # volume -> its snapshot
    bases: dict[str, str | None] = field(default_factory=dict)  # volume -> the base it used

    def image(self, volume_id: str) -> tuple[ImageHeader, dict[int, bytes | None]]:
        paths = [p for p in self.sink.ending(".bimg") if volume_id in p]
        if len(paths) != 1:
            raise KeyError(f"{self.name}: {len(paths)} images of {volume_id}")
        return image_blocks(self.sink.data(paths[0]))


class Director:
    """Runs the backups of one Job resource as Bacula does: an Incremental's reference is the
    last confirmed job, a Differential's the last confirmed Full (none: Bacula runs a Full);
    `Since=` is the reference job's start. The job commits before its final F and retires
    at END (confirmed)."""

    def __init__(
        self,
        aws: FakeAws,
        pairs: Sequence[tuple[str, str]],
        job: str = "backup-web",
        working_dir: str = "",
    ) -> None:
        self.aws = aws
        self.params = parse_parameters([("concurrent_threads", "4"), *pairs])
        self.job = job
        self.working_dir = working_dir
        self.confirmed: list[Run] = []
        self.runs: list[Run] = []

    def reference(self, level: str) -> Run | None:
        pool = self.confirmed if level == "I" else [r for r in self.confirmed if r.level == "F"]
        return pool[-1] if pool else None

    def start(self, level: str) -> Run:
        """A job up to its last block handed over (nothing committed yet)."""
        ref = self.reference(level) if level != "F" else None
        if ref is None:
            level = "F"
        n = len(self.runs) + 1
        start = int(self.aws.advance(10).timestamp())
        self.aws.advance(1)
        name = f"{self.job}.2026-11-26_16.{n // 60:02d}.{n % 60:02d}_{n}"
        rec = Recorder()
        ctx = JobContext(
            self.params,
            name,
            n,
            level,
            rec,
            self.working_dir,
            reference_job=ref.name if ref else None,
        )
        job = BackupJob(ctx, self.aws)
        sink = RecordingSink()
        run = Run(name, n, level, start, job, sink, rec)
        self.runs.append(run)
        job.run(sink)
        run.snapshots = {v: s for s, v in job.ledger.volume_of.items() if s in job.ledger.created}
        run.bases = {v: c.base.snapshot_id if c.base else None for v, c in job.bases.items()}
        return run

    def confirm(self, run: Run) -> None:
        run.job.retire()
        self.confirmed.append(run)

    def backup(self, level: str) -> Run:
        """A job that goes well: commit, then END."""
        run = self.start(level)
        run.job.commit()
        self.confirm(run)
        return run
