"""Estimates (bconsole `estimate`, `bec2 --operation=estimate`): what a backup of the
selection would store, from what AWS already holds. Nothing is created or changed.

For each volume the figure is one of (`Basis`):

- ALLOCATED: the blocks of the volume's latest completed snapshot (this plugin's, or any
  other of this account), counted with ListSnapshotBlocks: count x 512 KiB. A Full reads
  every allocated block, so this is what it stores (blocks written since that snapshot are
  not in it; the message gives the snapshot's date);
- CHANGED: an Incremental/Differential with a base (the chain's snapshot the backup would
  compare with): the blocks ListChangedBlocks lists between the base and the volume's
  latest completed snapshot newer than it;
- NO_NEWER: an Incremental/Differential with a base, but no completed snapshot newer than
  it: what changed since the base cannot be known before the backup snapshots the volume.
  Counted as 0 bytes, and the message says so;
- PROVISIONED: no completed snapshot of the volume at all: the volume's size (an upper
  bound: a Full reads only the written blocks).

Every figure is reported in a job message naming the volume, the snapshot(s) and their
dates; the listing's `.bimg` entry carries it as its size (bconsole adds the sizes up).
"""

from __future__ import annotations

import datetime as dt
import enum
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from .. import naming, timefmt
from ..aws import Aws
from ..aws.model import Snapshot
from ..formats import config
from ..formats.blockimage import BLOCK_SIZE, RECORD_SIZE
from . import chain
from .chain import Kept
from .context import JobContext
from .selection import InstanceTarget, VolumeTarget, select
from .sink import BackupSink, FileInfo

MIB = 1 << 20


class Basis(enum.Enum):
    ALLOCATED = "allocated"
    CHANGED = "changed"
    NO_NEWER = "no-newer-snapshot"
    PROVISIONED = "provisioned"


def size_text(n: int) -> str:
    """`20 MiB`, `1.5 GiB`, `512 KiB`: whole units when exact, else one decimal."""
    for unit, factor in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", MIB), ("KiB", 1 << 10)):
        if n >= factor:
            value = n / factor
            return f"{value:.0f} {unit}" if n % factor == 0 else f"{value:.1f} {unit}"
    return f"{n} bytes"


def _when(snap: Snapshot | Kept) -> str:
    start = snap.start if isinstance(snap, Kept) else snap.start_time
    return timefmt.utc_iso(start, "seconds") if start is not None else "time unknown"


@dataclass(frozen=True)
class VolumeEstimate:
    """What a backup would read of one volume, and what the figure is based on."""

    volume_id: str
    size_gib: int
    basis: Basis
    bytes: int
    level: str = "F"
    snapshot: Snapshot | None = None  # the snapshot listed (the newer one for CHANGED)
    base: Kept | None = None  # the chain's base (CHANGED, NO_NEWER)
    blocks: int = 0  # entries listed (CHANGED: also the blocks that now read as zeros)
    zeroed: int = 0  # CHANGED: blocks absent from the newer snapshot (read as zeros)

    def text(self) -> str:
        vid, size = self.volume_id, size_text(self.size_gib * naming.GIB)
        what = naming.LEVEL_NAMES.get(self.level, self.level)
        whole = (
            f" (no snapshot of this job's chain to compare with: the {what} reads every allocated block)"
            if self.level != "F" and self.base is None
            else ""
        )
        if self.basis is Basis.PROVISIONED:
            return f"{vid}: no completed snapshot, provisioned size {size}{whole}"
        if self.basis is Basis.ALLOCATED:
            assert self.snapshot is not None
            sid = self.snapshot.snapshot_id
            return (
                f"{vid}: {size_text(self.bytes)} allocated in {sid} ({_when(self.snapshot)}; "
                f"{self.blocks} blocks of the volume's {size}){whole}"
            )
        assert self.base is not None
        base = f"{self.base.snapshot_id} ({_when(self.base)})"
        if self.basis is Basis.NO_NEWER:
            return (
                f"{vid}: {what} since {base}: no completed snapshot is newer than it, so what "
                "changed since then is not known before the backup snapshots the volume; "
                "counted as 0 bytes"
            )
        assert self.snapshot is not None
        zeroed = f", {self.zeroed} of them now unallocated" if self.zeroed else ""
        return (
            f"{vid}: {what}: {size_text(self.bytes)} changed since {base} up to "
            f"{self.snapshot.snapshot_id} ({_when(self.snapshot)}; {self.blocks} blocks{zeroed})"
        )


@dataclass
class EstimateResult:
    volumes: list[VolumeEstimate]
    files: int = 0  # entries sent to the sink (directories included)
    bytes: int = 0  # the sum of their sizes, as bconsole adds them up
    #: What the selection could not resolve (abort_on_error=0), as the backup would name it.
    failures: list[str] = field(default_factory=list)

    @property
    def summary(self) -> str:
        bases = sorted({v.basis.value for v in self.volumes})
        return (
            f"estimate: {len(self.volumes)} volume(s), {size_text(sum(v.bytes for v in self.volumes))} "
            f"of block data ({', '.join(bases) or 'nothing'}); {self.files} files, {self.bytes} bytes"
        )


def latest_completed(
    snaps: Iterable[Snapshot], volume_id: str, after: dt.datetime | None = None
) -> Snapshot | None:
    """The newest completed snapshot of the volume (newer than `after`, when given)."""
    found = [
        s
        for s in snaps
        if s.volume_id == volume_id
        and s.state == "completed"
        and s.start_time is not None
        and (after is None or s.start_time > after)
    ]
    return max(found, key=lambda s: (s.start_time, s.snapshot_id)) if found else None


def chain_job(ctx: JobContext) -> str:
    """The Job resource whose chain an estimate compares with: bconsole's estimate runs as
    `-Console-.<time>`, and names the Job's last backup in PrevJobName."""
    return chain.job_resource(ctx.reference_job or ctx.job_name)


class Estimate:
    """One estimate of the selection (read-only: Describe*, ListSnapshotBlocks,
    ListChangedBlocks and nothing else)."""

    def __init__(self, ctx: JobContext, aws: Aws, *, report: bool = True) -> None:
        """`report`: each volume's figure and the total as job messages (bec2 prints them
        itself); what the selection skipped or could not resolve is reported either way."""
        self.ctx = ctx
        self.aws = aws
        self.report = report

    def volume(self, vol: VolumeTarget, snaps: list[Snapshot], job: str) -> VolumeEstimate:
        ctx, vid = self.ctx, vol.volume_id
        level = ctx.level if ctx.level in ("I", "D") else "F"
        if level != "F":
            kept = chain.committed(snaps, job, vid)
            base = chain.choose_base(level, vid, kept, ctx.reference_job).base
            if base is not None:
                newer = latest_completed(snaps, vid, after=base.start)
                if newer is None:
                    return VolumeEstimate(vid, vol.size_gib, Basis.NO_NEWER, 0, level, base=base)
                blocks = zeroed = 0
                for ref in self.aws.list_changed_blocks(base.snapshot_id, newer.snapshot_id):
                    blocks += 1
                    zeroed += ref.token is None
                return VolumeEstimate(
                    vid,
                    vol.size_gib,
                    Basis.CHANGED,
                    (blocks - zeroed) * BLOCK_SIZE,
                    level,
                    snapshot=newer,
                    base=base,
                    blocks=blocks,
                    zeroed=zeroed,
                )
        latest = latest_completed(snaps, vid)
        if latest is None:
            return VolumeEstimate(vid, vol.size_gib, Basis.PROVISIONED, vol.size_gib * naming.GIB, level)
        count = sum(1 for _ in self.aws.list_snapshot_blocks(latest.snapshot_id))
        return VolumeEstimate(
            vid, vol.size_gib, Basis.ALLOCATED, count * BLOCK_SIZE, level, snapshot=latest, blocks=count
        )

    def run(self, sink: BackupSink) -> EstimateResult:
        ctx = self.ctx
        # As the backup selects: with abort_on_error=1 what cannot be found fails the
        # estimate, else it is named and the others are estimated.
        sel = select(self.aws, ctx.params, strict=ctx.params.abort_on_error)
        targets = sel.targets
        for note in sel.skipped:
            ctx.reporter.info(note)
        for failure in sel.failures:
            ctx.reporter.warning(f"{failure}; a backup would report it as an Error and back up the others")
        result_failures = [str(f) for f in sel.failures]
        volume_ids = [v.volume_id for t in targets for v in t.volumes]
        snaps = self.aws.describe_snapshots(volume_ids=volume_ids) if volume_ids else []
        job = chain_job(ctx)
        result = EstimateResult([], failures=result_failures)
        now = int(time.time())
        counted = _Counting(sink, result)
        for target in targets:
            if not target.standalone:
                doc = config.instance_document(
                    target.instance, region=self.aws.region, user_data=None, snapshots=[], job=ctx.job_info
                )
                counted.file(FileInfo(naming.instance_json(target.instance_id), len(config.encode(doc)), now))
            for vol in target.volumes:
                est = self.volume(vol, snaps, job)
                result.volumes.append(est)
                if self.report:
                    (ctx.reporter.warning if est.basis is Basis.NO_NEWER else ctx.reporter.info)(est.text())
                self._volume_files(counted, target, vol, est, now)
            counted.directory(naming.instance_dir(target.instance_id), now)
        if self.report:
            ctx.reporter.info(result.summary)
        return result

    def _volume_files(
        self, sink: _Counting, target: InstanceTarget, vol: VolumeTarget, est: VolumeEstimate, mtime: int
    ) -> None:
        iid, vid, ctx = target.instance_id, vol.volume_id, self.ctx
        sink.file(FileInfo(naming.volume_json(iid, vid, vol.device, vol.size_gib), 0, mtime))
        image = naming.volume_image(iid, vid, vol.device, vol.size_gib, ctx.level, ctx.job_id)
        sink.file(FileInfo(image, est.bytes, mtime))
        if ctx.params.bitmap_headers:
            # One 48-byte record per block listed, and the end record (headers not counted).
            sink.file(FileInfo(naming.volume_map(iid, vid), RECORD_SIZE * (est.blocks + 1), mtime))
            sink.file(FileInfo(naming.volume_empty_map(iid, vid), RECORD_SIZE, mtime))


class _Counting:
    """Sends the estimate's entries and adds them up as bconsole does (files, bytes)."""

    def __init__(self, sink: BackupSink, result: EstimateResult) -> None:
        self.sink = sink
        self.result = result

    def file(self, info: FileInfo) -> None:
        self.sink.file(info, b"")
        self.result.files += 1
        self.result.bytes += info.size

    def directory(self, path: str, mtime: int) -> None:
        self.sink.directory(path, mtime)
        self.result.files += 1


def estimate(ctx: JobContext, aws: Aws, sink: BackupSink, *, report: bool = True) -> EstimateResult:
    """List what a backup would store, and with what sizes, without creating anything."""
    return Estimate(ctx, aws, report=report).run(sink)
