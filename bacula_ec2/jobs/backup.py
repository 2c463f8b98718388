"""Backup and estimate of EC2 instances (product.md §3, steps 1-6)."""

from __future__ import annotations

import functools
import itertools
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, Generic, TypeVar

from .. import naming, timefmt
from ..aws import Aws, AwsError, BlockRef
from ..aws.download import BlockDownloader, read_ahead
from ..aws.model import Snapshot
from ..formats import config
from ..formats.blockimage import (
    BLOCK_SIZE,
    ZERO_BLOCK_SHA256,
    BlockRecord,
    FileKind,
    ImageHeader,
    RecordEncoder,
    RecordKind,
)
from ..pacing import Pacer
from ..retry import Cancelled, RetriesExhausted
from . import progress
from .chain import BaseChoice, Kept, choose_base
from .context import JobContext, JobError
from .selection import Failure, InstanceTarget, VolumeTarget, select
from .sink import BackupSink, FileInfo, FileWriter
from .snapshots import SnapshotLedger

SPOOL_IN_MEMORY = 4 << 20

T = TypeVar("T")


_epoch = timefmt.epoch
_iso = timefmt.utc_iso


#: Failures of one instance or volume that a job reports and goes on from (abort_on_error=0):
#: what AWS refused or kept failing. Anything else (a cancel, the FD gone, a full disk, a
#: bug) ends the job.
PART_FAILURES: tuple[type[Exception], ...] = (AwsError, RetriesExhausted)


class Aborted(JobError):
    """abort_on_error=1: the first instance or volume that cannot be backed up fails the job."""


class _PartWriter:
    def __init__(self, part: _PartSink, inner: FileWriter, path: str) -> None:
        self.part, self.inner, self.path = part, inner, path

    def write(self, *parts: bytes | bytearray | memoryview) -> None:
        self.inner.write(*parts)

    def close(self) -> None:
        self.inner.close()
        self.part.writing = None


class _PartSink:
    """The job's sink while one instance (or standalone volume) is handed over: notes what of
    it is in the job, so that a failure can end the file being written and say so."""

    def __init__(self, sink: BackupSink) -> None:
        self.sink = sink
        self.paths: list[str] = []
        self.writing: _PartWriter | None = None

    def file(self, info: FileInfo, data: bytes) -> None:
        self.paths.append(info.path)
        self.sink.file(info, data)

    def open_file(self, info: FileInfo) -> FileWriter:
        self.paths.append(info.path)
        self.writing = _PartWriter(self, self.sink.open_file(info), info.path)
        return self.writing

    def directory(self, path: str, mtime: int) -> None:
        self.sink.directory(path, mtime)

    def abandon(self) -> str:
        """After a failure: end the image being written short of its end record (Bacula keeps
        what was sent; the block image format makes a restore of it fail, never restore it as
        complete). Returns what of the part is in the job, for its Error message."""
        writing = self.writing
        if writing is not None:
            self.writing = None
            writing.inner.close()
            return (
                f"its image {writing.path} in this job is incomplete (no end record): a restore that "
                "includes it fails for this volume, naming the file"
            )
        if self.paths:
            return (
                f"this job holds {len(self.paths)} complete file(s) of it, not all (last {self.paths[-1]}); "
                "restore it from another job"
            )
        return "nothing of it is in this job"


def _sorted_when_read(items: Iterator[str], key: Callable[[str], tuple[int, str]]) -> Iterator[str]:
    """`items` sorted, consumed at the first `next()`, not here: a failure while waiting for
    them then comes from `next()`, where the job handles it like any other."""
    yield from sorted(items, key=key)


def _close(refs: object) -> None:
    close = getattr(refs, "close", None)
    if close is not None:
        close()


class _Resumed(Iterator[BlockRef]):
    """A block listing the preflight began: its first entry again (None: the listing is
    empty), then the rest of it. `close()` closes the listing, started or not."""

    def __init__(self, first: BlockRef | None, rest: Iterator[BlockRef]) -> None:
        self._first, self._rest = first, rest

    def __iter__(self) -> _Resumed:
        return self

    def __next__(self) -> BlockRef:
        first = self._first
        if first is not None:
            self._first = None
            return first
        return next(self._rest)

    def close(self) -> None:
        self._first = None
        _close(self._rest)


class _InThread(Generic[T]):
    """`fn()` in a thread of its own; `result()` waits for it, returns what it returned or
    raises what it raised."""

    def __init__(self, fn: Callable[[], T]) -> None:
        self._fn = fn
        self._value: T | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="backup-call", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._value = self._fn()
        except BaseException as exc:  # handed to the caller (`result`)
            self._error = exc

    def result(self) -> T | None:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._value


class _Count:
    """A Full's blocks, counted by a listing of their own in a thread of its own while the
    read runs (its requests pass the job's one list pacer, like the read's listing).

    The read's first block waits for nothing: the count of a 1 TiB volume is 210 pages, ~5 s
    at the List quota. `result()` (the consumer's thread) says the count once it is known,
    or raises the count's failure: the volume then fails as if its read had failed.
    `stop()` ends the thread at its next entry; a cancel of the job does too.
    """

    def __init__(
        self, listing: Callable[[], Iterator[BlockRef]], cancel: threading.Event | None, label: str
    ) -> None:
        self.cancel = cancel
        self.label = label
        self.ended = threading.Event()
        self._stop = threading.Event()
        self._count: int | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(listing,), name=f"count-{label}", daemon=True)
        self._thread.start()

    def _stopped(self) -> bool:
        return self._stop.is_set() or (self.cancel is not None and self.cancel.is_set())

    def _run(self, listing: Callable[[], Iterator[BlockRef]]) -> None:
        refs: Iterator[BlockRef] | None = None
        try:
            refs = listing()
            n = 0
            for _ in refs:
                if self._stopped():
                    return
                n += 1
            self._count = n
        except BaseException as exc:  # handed to the consumer (`result`)
            self._error = exc
        finally:
            if refs is not None:
                _close(refs)
            self.ended.set()

    def result(self) -> int:
        """The count; call once `ended` is set. Raises the listing's failure, or Cancelled."""
        if self._error is not None:
            raise self._error
        if self._count is None:
            raise Cancelled(f"{self.label}: counting its blocks: cancelled")
        return self._count

    def wait(self) -> int:
        """`result()` once the count has ended (a cancel of the job stops the wait)."""
        while not self.ended.wait(0.1):
            if self._stopped():
                self.stop()
                raise Cancelled(f"{self.label}: counting its blocks: cancelled")
        return self.result()

    def stop(self) -> None:
        self._stop.set()


@dataclass
class VolumeStats:
    blocks: int = 0
    data_blocks: int = 0
    zero_blocks: int = 0
    seconds: float = 0.0

    @property
    def data_bytes(self) -> int:
        return self.data_blocks * BLOCK_SIZE


class BackupJob:
    """One backup (or estimate) of the selected instances.

    The snapshots of every instance are created first (each instance's at one moment,
    crash-consistent); then each instance is read as soon as all its snapshots are
    completed, in the order they complete (`wait_all_first=True`: the old order, every
    snapshot completed before the first instance is read in selection order; for the soak
    bench's comparison only, not a parameter).
    """

    def __init__(self, ctx: JobContext, aws: Aws, *, wait_all_first: bool = False) -> None:
        self.ctx = ctx
        self.aws = aws
        self.wait_all_first = wait_all_first
        #: The instances in the order they were read.
        self.read_order: list[str] = []
        self.ledger = SnapshotLedger(aws, ctx)
        self.downloader = BlockDownloader(
            aws, ctx.params.concurrent_threads, cancel=ctx.cancel, pacer=Pacer(ctx.params.request_rate)
        )
        self.total = VolumeStats()
        self.bases: dict[str, BaseChoice] = {}
        #: Instances (partly) backed up by another Plugin line of this job: their
        #: configuration file and directory entry are already in the job.
        self.covered: set[str] = set()
        #: What could not be backed up (abort_on_error=0), in the order it was found.
        self.failures: list[Failure] = []
        #: What was: instance labels, "volume vol-..." for standalone volumes.
        self.backed_up: list[str] = []
        #: Snapshot id -> the listing its preflight began, for the read of that volume.
        self._begun: dict[str, _Resumed] = {}

    # ------------------------------------------------------------------ estimate
    def estimate(self, sink: BackupSink) -> None:
        """List what a backup would store, without creating anything in AWS (jobs/estimate.py:
        the allocated data of each volume's latest snapshot, or the changes since the base)."""
        from .estimate import estimate

        estimate(self.ctx, self.aws, sink)

    # ------------------------------------------------------------------ backup
    def run(self, sink: BackupSink) -> None:
        """Select, snapshot, read. With abort_on_error=0 an instance or volume that cannot be
        found, snapshotted or read is a job Error (`failures`), its snapshots are deleted
        and the others are backed up; the job fails only when nothing could be. With
        abort_on_error=1 the first such failure fails the job (docs/PARAMETERS.md)."""
        ctx = self.ctx
        started = time.monotonic()
        sel = select(self.aws, ctx.params)  # read-only: abort_on_error=1 stops at `_failed`
        for note in sel.skipped:
            ctx.reporter.info(note)
        for failure in sel.failures:
            self._failed(failure)
        targets = sel.targets
        for t in targets:
            vols = ", ".join(
                f"{v.volume_id} ({naming.device_short_name(v.device)}, {v.size_gib} GiB)" for v in t.volumes
            )
            skipped = ", ".join(v.volume_id for v in t.excluded)
            what = f"{t.label}: " if t.standalone else f"instance {t.label}: volumes "
            ctx.reporter.info(f"{what}{vols or 'none'}" + (f"; excluded {skipped}" if skipped else ""))
        targets = self._skip_covered(targets)
        self.ledger.clean_stale(targets)
        self.bases = self._choose_bases(targets)
        positions = {v: (c.base.position + 1 if c.base else 0) for v, c in self.bases.items()}
        snapshots: dict[str, dict[str, Snapshot]] = {}
        dead: set[str] = set()  # targets that failed before they were read
        for n, t in enumerate(targets):
            if t.volumes:
                taken = self._take(t, positions)
                if not taken:
                    dead.add(str(n))
                    continue
                snapshots[str(n)] = taken
                ids = ", ".join(s.snapshot_id for s in taken.values())
                ctx.reporter.info(f"created crash-consistent snapshots of {t.label}: {ids}")
        self.ledger.flush_tags()
        # What is waited for and read as one: an instance (key "n"), or one standalone
        # volume (key "n:vol-..."), which fails on its own.
        groups: dict[str, list[str]] = {}
        labels: dict[str, str] = {}
        for k, per in snapshots.items():
            t = targets[int(k)]
            for vid, snap in per.items() if t.standalone else []:
                groups[f"{k}:{vid}"], labels[f"{k}:{vid}"] = [snap.snapshot_id], f"volume {vid}"
            if not t.standalone:
                groups[k], labels[k] = [s.snapshot_id for s in per.values()], t.label

        def part(key: str) -> tuple[InstanceTarget, VolumeTarget | None, dict[str, Snapshot]]:
            n, _, vid = key.partition(":")
            t = targets[int(n)]
            latest = self.ledger.latest
            per = {v: latest.get(s.snapshot_id, s) for v, s in snapshots.get(n, {}).items()}
            if not vid:
                return t, None, per
            (vol,) = [v for v in t.volumes if v.volume_id == vid]
            return InstanceTarget(t.instance, [vol], standalone=True), vol, {vid: per[vid]}

        def lost(key: str, exc: AwsError) -> None:
            dead.add(key)
            t, vol, per = part(key)
            self._part_failed(t, exc, list(per.values()), vol)

        ready = self.ledger.completed(groups, labels, failed=lost)
        if self.wait_all_first:
            ready = _sorted_when_read(ready, key=lambda k: (int(k.partition(":")[0]), k))
        # Nothing to wait for first (an instance with every volume excluded; not a target all
        # of whose volumes failed already), then each instance as soon as its snapshots are
        # completed.
        empty = (str(n) for n, t in enumerate(targets) if not t.volumes and str(n) not in dead)
        order = itertools.chain(empty, ready)
        done: set[str] = set()
        standalone: list[Snapshot] = []  # the standalone volumes backed up
        while True:
            try:
                key = next(order)
            except StopIteration:
                break
            except PART_FAILURES as exc:  # waiting for the snapshots failed (as a whole)
                if ctx.params.abort_on_error:
                    raise
                for key in groups:
                    if key not in done and key not in dead:
                        dead.add(key)
                        t, vol, per = part(key)
                        self._part_failed(t, exc, list(per.values()), vol)
                break
            done.add(key)
            t, vol, per = part(key)
            self.read_order.append(t.instance_id)
            if self._backup_target(sink, t, per, vol) and vol is not None:
                standalone.append(per[vol.volume_id])
        if standalone and naming.STANDALONE not in self.covered:
            mtime = max(_epoch(s.start_time) for s in standalone)
            sink.directory(naming.instance_dir(naming.STANDALONE), mtime)
        if self.failures and not self.backed_up:
            raise JobError("nothing was backed up: " + "; ".join(str(f) for f in self.failures))
        elapsed = time.monotonic() - started
        mib = self.total.data_bytes / (1 << 20)
        volumes = sum(b.startswith("volume ") for b in self.backed_up)
        counted = f"{len(self.backed_up) - volumes} instance(s)" + (
            f" and {volumes} standalone volume(s)" if volumes else ""
        )
        ctx.reporter.info(
            f"backed up {counted}: {self.total.blocks} blocks, "
            f"{mib:.1f} MiB of data, "
            f"{self.total.zero_blocks} empty blocks in {elapsed:.1f} s; "
            f"{self.aws.stats.retries} AWS retries ({self.aws.stats.throttled} throttled)"
        )
        if self.failures:
            ctx.reporter.info(
                f"backed up: {', '.join(self.backed_up)}; NOT backed up ({len(self.failures)}): "
                + "; ".join(str(f) for f in self.failures)
            )

    # ------------------------------------------------------------------ partial failure
    def _failed(self, failure: Failure, cause: BaseException | None = None) -> None:
        """Report what cannot be backed up: a job Error, the job goes on; abort_on_error=1:
        the job fails here (its snapshots are rolled back by the runner)."""
        if self.ctx.params.abort_on_error:
            raise Aborted(
                f"{failure} (abort_on_error=1: the job fails at the first instance or volume that "
                "cannot be backed up; abort_on_error=0 backs up the others)"
            ) from cause
        self.failures.append(failure)
        self.ctx.reporter.error(f"{failure}; not backed up, the job goes on with the rest")

    def _part_failed(
        self,
        target: InstanceTarget,
        exc: BaseException,
        snaps: list[Snapshot],
        vol: VolumeTarget | None = None,
        stored: str = "",
    ) -> None:
        """An instance (or, `vol`, a standalone volume) failed after selection: delete its
        snapshots now (never a base), then report it. `stored`: what of it the job holds.
        abort_on_error=1: the failure itself fails the job (the runner rolls back)."""
        if self.ctx.params.abort_on_error:
            raise exc
        left = self.ledger.drop([s.snapshot_id for s in snaps])
        why = self._failure(target, vol, exc, stored)
        if snaps:
            gone = [s.snapshot_id for s in snaps if not any(x.startswith(s.snapshot_id) for x in left)]
            extra = f"; its snapshot(s) {', '.join(gone)} deleted" if gone else ""
            if left:
                extra += (
                    f"; snapshot(s) {', '.join(left)} could not be deleted (the next job on the volume "
                    "removes them, or delete them by hand)"
                )
            why = Failure(why.what, why.reason + extra)
        self._failed(why, exc)

    @staticmethod
    def _failure(
        target: InstanceTarget, vol: VolumeTarget | None, exc: BaseException, stored: str
    ) -> Failure:
        what = f"volume {vol.volume_id}" if vol is not None else f"instance {target.label}"
        text = str(exc).rstrip(". ")
        return Failure(what, text + (f"; {stored}" if stored else ""))

    def _take(self, target: InstanceTarget, positions: dict[str, int]) -> dict[str, Snapshot]:
        """The snapshots of one target ({} if it failed, reported). Standalone volumes are
        snapshotted one by one, and fail one by one."""
        if target.standalone:
            taken: dict[str, Snapshot] = {}
            for vol in list(target.volumes):
                one = InstanceTarget(target.instance, [vol], standalone=True)
                got = self._take_one(one, positions, vol)
                if got:
                    taken.update(got)
                else:
                    target.volumes.remove(vol)
            return taken
        return self._take_one(target, positions, None)

    def _take_one(
        self, target: InstanceTarget, positions: dict[str, int], vol: VolumeTarget | None
    ) -> dict[str, Snapshot]:
        before = set(self.ledger.created)
        try:
            return self.ledger.take(target, positions, defer_tags=True)
        except PART_FAILURES as exc:
            made = [sid for sid in self.ledger.created if sid not in before]
            snaps = [Snapshot(sid, self.ledger.volume_of.get(sid, "")) for sid in made]
            self._part_failed(target, exc, snaps, vol, "no snapshot of it is kept")
            return {}

    def _backup_target(
        self,
        sink: BackupSink,
        target: InstanceTarget,
        snaps: dict[str, Snapshot],
        vol: VolumeTarget | None = None,
    ) -> bool:
        """One instance (or, `vol`, one standalone volume); a failure of it is reported and
        the job goes on (see `run`). Returns whether it was backed up."""
        part = _PartSink(sink)
        try:
            self._backup_instance(part, target, snaps, directory=False)
        except PART_FAILURES as exc:
            self._part_failed(target, exc, list(snaps.values()), vol, part.abandon())
            return False
        finally:
            for begun in self._begun.values():  # a preflight's listing its read did not take
                begun.close()
            self._begun.clear()
        self.backed_up.append(f"volume {vol.volume_id}" if vol is not None else target.label)
        return True

    def _skip_covered(self, targets: list[InstanceTarget]) -> list[InstanceTarget]:
        """Volumes another Plugin line of this very job already snapshotted are not backed up
        twice (metaplugin §2.3: each line runs its own backend, one after the other); an
        instance that line already handled keeps its configuration file from that line."""
        ctx = self.ctx
        theirs = self.ledger.this_jobs_snapshots()
        if not theirs:
            return targets
        by_volume: dict[str, list[str]] = {}
        for sid, vid, iid in theirs:
            by_volume.setdefault(vid, []).append(sid)
            self.covered.add(iid)
        kept: list[InstanceTarget] = []
        for t in targets:
            skipped = [v for v in t.volumes if v.volume_id in by_volume]
            for v in skipped:
                ctx.reporter.info(
                    f"volume {v.volume_id} of {t.label}: another Plugin line of this job already backs it up "
                    f"(snapshot {', '.join(by_volume[v.volume_id])}); not backed up again"
                )
            t.volumes = [v for v in t.volumes if v.volume_id not in by_volume]
            if t.volumes:
                kept.append(t)
            elif t.instance_id not in self.covered:
                kept.append(t)  # nothing of it was backed up yet (every volume excluded)
            elif not t.standalone:
                ctx.reporter.info(
                    f"instance {t.label}: another Plugin line of this job already backs it up; skipping it"
                )
        return kept

    def _choose_bases(self, targets: list[InstanceTarget]) -> dict[str, BaseChoice]:
        """Step 4: the snapshot each volume's Incremental/Differential compares with."""
        ctx = self.ctx
        volume_ids = [v.volume_id for t in targets for v in t.volumes]
        if ctx.level == "F":
            return {v: BaseChoice(None) for v in volume_ids}
        chains = self.ledger.chains(volume_ids)
        choices = {}
        for vid in volume_ids:
            choice = choose_base(ctx.level, vid, chains.get(vid, []), ctx.reference_job)
            if choice.note:
                (ctx.reporter.warning if choice.warn else ctx.reporter.info)(choice.note)
            choices[vid] = choice
        return choices

    def _backup_instance(
        self,
        sink: BackupSink,
        target: InstanceTarget,
        snaps: dict[str, Snapshot],
        *,
        directory: bool = True,
    ) -> None:
        iid = target.instance_id
        mtime = int(time.time())
        if snaps:
            mtime = max(_epoch(s.start_time) for s in snaps.values())
        elif not target.standalone:
            self.ctx.reporter.warning(
                f"instance {target.label}: every volume is excluded; saving its configuration only"
            )
        again = iid in self.covered  # its JSON and directory came with the other Plugin line
        # What can fail before any of its blocks is read, before any of its files is handed
        # over: a failure then leaves nothing of it in the job.
        # The user data is asked for and the volumes' listings are checked at once (round
        # trips side by side, not one after the other, before the first block); if several
        # fail, the one reported is the user data's, else the first volume's in order. The
        # first volume read keeps the listing its preflight began (its read starts one round
        # trip earlier); the others' are closed (`_backup_target` closes a kept one that was
        # not read).
        asked = None if target.standalone or again else _InThread(lambda: self.aws.instance_user_data(iid))
        checks = [
            _InThread(functools.partial(self._preflight, vol, snaps[vol.volume_id], keep=n == 0))
            for n, vol in enumerate(target.volumes)
        ]
        failed: list[BaseException] = []
        for check in checks:  # every one ended before anything goes on
            try:
                check.result()
            except BaseException as exc:
                failed.append(exc)
        user_data = asked.result() if asked is not None else None
        if failed:
            raise failed[0]
        if target.standalone:
            for vol in target.volumes:
                self._backup_volume(sink, target, vol, snaps[vol.volume_id])
            if directory and not again:
                sink.directory(naming.instance_dir(iid), mtime)
            return
        if again:
            for vol in target.volumes:
                self._backup_volume(sink, target, vol, snaps[vol.volume_id])
            return
        doc = config.instance_document(
            target.instance,
            region=self.aws.region,
            user_data=user_data,
            snapshots=list(snaps.values()),
            job=self.ctx.job_info,
        )
        data = config.encode(doc)
        sink.file(FileInfo(naming.instance_json(iid), len(data), mtime), data)
        for vol in target.volumes:
            self._backup_volume(sink, target, vol, snaps[vol.volume_id])
        sink.directory(naming.instance_dir(iid), mtime)

    def _block_listing(self, base: Kept | None, snapshot_id: str) -> Iterator[BlockRef]:
        """What a volume's read lists: the changes since its base, or (a Full) every block."""
        if base:
            return self.aws.list_changed_blocks(base.snapshot_id, snapshot_id)
        return self.aws.list_snapshot_blocks(snapshot_id)

    def _preflight(self, vol: VolumeTarget, snap: Snapshot, *, keep: bool = False) -> None:
        """The first page of the volume's block listing (one request): a refused or unknown
        snapshot fails its instance before anything of it is in the job. `keep`: the
        volume's read goes on from this listing (`_begun`) instead of listing again."""
        base = (self.bases.get(vol.volume_id) or BaseChoice(None)).base
        refs = iter(self._block_listing(base, snap.snapshot_id))
        try:
            first = next(refs, None)
        except BaseException:
            _close(refs)
            raise
        if keep:
            self._begun[snap.snapshot_id] = _Resumed(first, refs)
        else:
            _close(refs)

    def _backup_volume(
        self, sink: BackupSink, target: InstanceTarget, vol: VolumeTarget, snap: Snapshot
    ) -> None:
        ctx = self.ctx
        iid, vid, sid = target.instance_id, vol.volume_id, snap.snapshot_id
        mtime = _epoch(snap.start_time)
        choice = self.bases.get(vid) or BaseChoice(None)
        base = choice.base
        doc = config.volume_document(
            vol.volume,
            region=self.aws.region,
            instance_id=None if target.standalone else iid,
            device=vol.device,
            snapshot=snap,
            base_snapshot_id=base.snapshot_id if base else None,
            level=ctx.level,
            job=ctx.job_info,
        )
        data = config.encode(doc)
        sink.file(FileInfo(naming.volume_json(iid, vid, vol.device, vol.size_gib), len(data), mtime), data)

        def header(kind: FileKind) -> ImageHeader:
            return ImageHeader(
                kind=kind,
                volume_id=vid,
                volume_size=vol.size_gib * naming.GIB,
                snapshot_id=sid,
                level=ctx.level,
                created=_iso(snap.start_time),
                base_snapshot_id=base.snapshot_id if base else None,
                base_created=_iso(base.start) if base else None,
                chain_position=base.position + 1 if base else 0,
                instance_id=None if target.standalone else iid,
                device=vol.device,
                region=self.aws.region,
                job_name=ctx.job_name,
                job_id=ctx.job_id,
            )

        image = RecordEncoder(header(FileKind.IMAGE))
        maps = [RecordEncoder(header(FileKind.MAP)), RecordEncoder(header(FileKind.EMPTY_MAP))]
        spools = [self._spool(), self._spool()]
        for enc, spool in zip(maps, spools, strict=True):
            spool.write(enc.start())
        stats = VolumeStats()
        t0 = time.monotonic()
        path = naming.volume_image(iid, vid, vol.device, vol.size_gib, ctx.level, ctx.job_id)

        # Progress needs a total. A Full counts its ListSnapshotBlocks listing (`_Count`, in
        # a thread of its own while the read runs): its pages follow the data (10,000 blocks,
        # 5 GiB, a page), so the count costs about 1% of reading them; its total and its
        # "N block(s) to read" message come when the count ends. ListChangedBlocks pages
        # follow the volume's size, not the changes (a 1 TiB volume: 210 pages whatever
        # changed), and often take longer than reading the changes: an Incremental lists
        # once, and its total is known when its listing ends.
        tracker = progress.Tracker(vid, "backed up", None, progress.emitter(ctx.reporter))
        counting = (
            _Count(lambda: self._block_listing(None, sid), ctx.cancel, f"volume {vid}")
            if base is None
            else None
        )
        listed = 0

        def counted(count: int) -> None:
            """The count is known: the total, and the job message (from the consumer's thread:
            job messages go through the FD's connection, between data packets)."""
            nonlocal listed
            listed = count
            tracker.total = count * BLOCK_SIZE
            ctx.reporter.info(
                f"volume {vid}: {count} block(s) to read from {sid} ({progress.size(count * BLOCK_SIZE)})"
            )

        def listed_all(count: int) -> None:
            tracker.total = count * BLOCK_SIZE

        try:
            writer = sink.open_file(FileInfo(path, vol.size_gib * naming.GIB, mtime))
            writer.write(image.start())
            begun = self._begun.pop(sid, None)
            source = begun if begun is not None else self._block_listing(base, sid)
            for body in self.downloader.fetch(sid, read_ahead(source, on_done=listed_all)):
                if counting is not None and counting.ended.is_set():
                    counted(counting.result())
                    counting = None
                offset = body.index * BLOCK_SIZE
                stats.blocks += 1
                tracker.add(BLOCK_SIZE)
                if body.sha256 == ZERO_BLOCK_SHA256:
                    rec = BlockRecord(offset, BLOCK_SIZE, RecordKind.ZERO, body.sha256)
                    writer.write(image.record(rec))
                    spools[1].write(maps[1].record(rec))
                    stats.zero_blocks += 1
                else:
                    rec = BlockRecord(offset, BLOCK_SIZE, RecordKind.DATA, body.sha256)
                    writer.write(image.record(rec), body.data)
                    stats.data_blocks += 1
                spools[0].write(maps[0].record(rec))
            # The end record only once the count agrees: a failed count fails the volume
            # like a failed read (its image then has no end record).
            if counting is not None:
                counted(counting.wait())
                counting = None
        finally:
            if counting is not None:
                counting.stop()
        if base is None and listed != stats.blocks:
            raise AwsError(
                "ListSnapshotBlocks",
                "InconsistentListing",
                f"volume {vid}: {stats.blocks} block(s) listed and read, but another listing of the "
                f"same snapshot counted {listed}: the two must agree",
                resource=sid,
            )
        writer.write(image.end())
        writer.close()
        stats.seconds = time.monotonic() - t0
        tracker.finish()
        if ctx.params.bitmap_headers:
            sink_paths = [naming.volume_map(iid, vid), naming.volume_empty_map(iid, vid)]
            for enc, spool, p in zip(maps, spools, sink_paths, strict=True):
                spool.write(enc.end())
                self._emit_spool(sink, FileInfo(p, spool.tell(), mtime), spool)
        for spool in spools:
            spool.close()
        self.total.blocks += stats.blocks
        self.total.data_blocks += stats.data_blocks
        self.total.zero_blocks += stats.zero_blocks
        rate = stats.data_bytes / (1 << 20) / stats.seconds if stats.seconds > 0 else 0.0
        ctx.reporter.info(
            f"volume {vid} ({naming.device_short_name(vol.device)}, {vol.size_gib} GiB) from {sid}: "
            f"{stats.blocks} blocks read, {stats.data_bytes / (1 << 20):.1f} MiB data, "
            f"{stats.zero_blocks} empty, {stats.seconds:.1f} s ({rate:.1f} MiB/s)"
        )

    def _spool(self) -> IO[bytes]:
        """Block maps are sent after the image: keep them on disk, not in memory."""
        return tempfile.SpooledTemporaryFile(
            max_size=SPOOL_IN_MEMORY, dir=self.ctx.working_dir or None, prefix="bacula-ec2-map-"
        )

    @staticmethod
    def _emit_spool(sink: BackupSink, info: FileInfo, spool: IO[bytes]) -> None:
        spool.seek(0)
        writer = sink.open_file(info)
        while chunk := spool.read(1 << 20):
            writer.write(chunk)
        writer.close()

    # ------------------------------------------------------------------ end of job
    def commit(self) -> None:
        """The job's snapshots become bases; raises if they cannot be (the job must fail)."""
        self.ledger.commit()

    def retire(self) -> None:
        """Retention once the job is confirmed: retire the chain's older snapshots."""
        self.ledger.retire({v: c.base.snapshot_id if c.base else None for v, c in self.bases.items()})

    def rollback(self) -> list[str]:
        return self.ledger.rollback()

    def close(self) -> None:
        """The front is done with the job (after retention or rollback): AWS clients closed."""
        close: Callable[[], None] | None = getattr(self.aws, "close", None)
        if close is not None:
            close()
