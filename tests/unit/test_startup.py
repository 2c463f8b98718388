"""Start-up of a backup (issue 15): what a backup imports, and a Full's block count beside
its read. The first block waits for no count: the count lists in a thread of its own (its
total and its "N block(s) to read" message come when it ends), the read continues the
listing its preflight began; a failed, inconsistent or cancelled count fails the volume,
never a success over missing data."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from bacula_ec2.aws import BlockRef
from bacula_ec2.aws.errors import aws_error
from bacula_ec2.formats.blockimage import BLOCK_SIZE, FormatError
from bacula_ec2.jobs.backup import BackupJob
from bacula_ec2.jobs.context import JobContext
from bacula_ec2.jobs.runner import BackupRun
from bacula_ec2.jobs.sink import FileInfo
from bacula_ec2.params import parse_parameters
from bacula_ec2.retry import Cancelled
from devkit.fake_aws import FakeAws
from devkit.jobkit import Recorder, RecordingSink, image_blocks

JOB = "backup-web.2026-12-01_10.00.00_4"
BLOCKS = 6
WAIT = 10.0  # seconds a gate waits before it says the job waited for the count


def test_a_backup_imports_no_restore_browse_or_boto3() -> None:
    """What `ec2-backend` imports before it knows the job's mode: nothing a backup never
    needs (the restores, .ls/.query browsing), and the AWS clients without boto3."""
    code = (
        "import sys, bacula_ec2.backend\n"
        "lazy = ('bacula_ec2.jobs.browse', 'bacula_ec2.jobs.restore_aws', 'bacula_ec2.jobs.restore_local')\n"
        "print(','.join(sorted(m for m in sys.modules if m.split('.')[0] in ('boto3', 's3transfer') "
        "or m in lazy)))\n"
        "print('botocore.session' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    unwanted, botocore = out.splitlines()
    assert unwanted == ""
    assert botocore == "True"  # the check above sees the AWS client module's imports


# ---------------------------------------------------------------------------- the count


class FirstBlockSink(RecordingSink):
    """Notes when the first block's data reached the sink (the consumer: the FD)."""

    def __init__(self) -> None:
        super().__init__()
        self.first_block = threading.Event()
        self.blocks = 0

    def open_file(self, info: FileInfo):  # type: ignore[no-untyped-def]
        writer = super().open_file(info)
        if info.path.endswith(".bimg"):
            inner = writer.write

            def write(*parts: bytes | bytearray | memoryview) -> None:
                inner(*parts)
                if any(len(p) == BLOCK_SIZE for p in parts):
                    self.blocks += 1
                    self.first_block.set()

            writer.write = write  # type: ignore[method-assign]
        return writer


def one_volume_fleet(names: tuple[str, ...] = ("web-1",)) -> tuple[FakeAws, dict[str, str]]:
    aws = FakeAws()
    ids = {}
    for n, name in enumerate(names):
        iid = aws.add_instance(name, devices=[("/dev/xvda", 1)]).instance_id
        ids[name] = iid
        vid = aws.volume_of(iid, "/dev/xvda")
        for block in range(BLOCKS):
            aws.write(vid, block * 3, 100 * n + block + 1)
    return aws, ids


Listing = Callable[[str, int], Iterator[BlockRef]]


Wrap = Callable[[Iterator[BlockRef]], Iterator[BlockRef]]


def second_listing_of(aws: FakeAws, iid: str, wrap: Wrap) -> list[str]:
    """Every ListSnapshotBlocks listing after the first of `iid`'s one volume goes through
    `wrap` (the first: the preflight's, which its read continues; the second: the count).
    Returns the snapshot ids listed, one per listing, in order."""
    original: Listing = aws.list_snapshot_blocks
    listed: list[str] = []
    vid = aws.volume_of(iid, "/dev/xvda")

    def listing(snapshot_id: str, page_size: int = 10000) -> Iterator[BlockRef]:
        (snap,) = aws.describe_snapshots(ids=[snapshot_id])
        listed.append(snapshot_id)
        refs = original(snapshot_id, page_size)
        if snap.volume_id == vid and listed.count(snapshot_id) > 1:
            return wrap(refs)
        return refs

    aws.list_snapshot_blocks = listing  # type: ignore[method-assign]
    return listed


def run_job(
    aws: FakeAws, sink: RecordingSink, *pairs: tuple[str, str], ctx_out: list[JobContext] | None = None
) -> tuple[BackupRun, Recorder, BaseException | None]:
    params = parse_parameters([("concurrent_threads", "2"), *pairs])
    rec = Recorder()
    ctx = JobContext(params, JOB, 4, "F", rec, "")
    if ctx_out is not None:
        ctx_out.append(ctx)
    backup = BackupRun(ctx, lambda c: BackupJob(c, aws))
    try:
        backup.backup(sink)
    except Exception as exc:  # the test says which it wants
        return backup, rec, exc
    finally:
        backup.close()
    return backup, rec, None


def image_of(sink: RecordingSink, iid: str) -> bytes:
    (path,) = [p for p in sink.ending(".bimg") if f"/{iid}/" in p]
    return sink.data(path)


def no_count_thread_left() -> bool:
    deadline = time.monotonic() + WAIT
    while any(t.name.startswith("count-") for t in threading.enumerate()):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_the_first_block_does_not_wait_for_the_count() -> None:
    aws, ids = one_volume_fleet()
    sink = FirstBlockSink()
    waited: list[bool] = []

    def after_the_first_block(refs: Iterator[BlockRef]) -> Iterator[BlockRef]:
        waited.append(sink.first_block.wait(WAIT))  # False: the read waited for the count
        yield from refs

    listed = second_listing_of(aws, ids["web-1"], after_the_first_block)
    _backup, rec, exc = run_job(aws, sink, ("instances", "web-1"))
    assert exc is None
    assert waited == [True]
    # the preflight's listing, continued by the read, and the count: not three listings
    assert len(listed) == 2 and len(set(listed)) == 1, listed
    header, blocks = image_blocks(image_of(sink, ids["web-1"]))
    assert {i: d for i, d in blocks.items() if d is not None} == aws.disk(header.volume_id)
    vid = header.volume_id
    assert f"volume {vid}: {BLOCKS} block(s) to read from {listed[0]} (3.0 MiB)" in rec.texts("I")
    final = [p for p in rec.updates if p.final and p.label == vid]
    assert final and final[0].done == BLOCKS * BLOCK_SIZE
    assert no_count_thread_left()


def refused(refs: Iterator[BlockRef]) -> Iterator[BlockRef]:
    yield next(refs)
    raise aws_error("ListSnapshotBlocks", "AccessDeniedException", "no ebs:ListSnapshotBlocks", status=403)


def one_short(refs: Iterator[BlockRef]) -> Iterator[BlockRef]:
    entries = list(refs)
    yield from entries[:-1]


@pytest.mark.parametrize(
    ("wrap", "said"), [(refused, "AccessDeniedException"), (one_short, "InconsistentListing")]
)
def test_a_count_that_fails_or_disagrees_fails_its_volume(wrap: Wrap, said: str) -> None:
    """web-2's count fails (or counts one block less than its read lists): web-2 fails as if
    its read had failed (an image without end record, its snapshot deleted, a job Error);
    web-1 is backed up."""
    aws, ids = one_volume_fleet(("web-1", "web-2"))
    sink = FirstBlockSink()
    second_listing_of(aws, ids["web-2"], wrap)
    backup, rec, exc = run_job(aws, sink, ("instances", "web-1,web-2"))
    assert exc is None
    (failure,) = backup.failures
    assert failure.what == f"instance {ids['web-2']} (web-2)"
    assert said in failure.reason and "incomplete (no end record)" in failure.reason, failure.reason
    with pytest.raises(FormatError):
        image_blocks(image_of(sink, ids["web-2"]))
    header, blocks = image_blocks(image_of(sink, ids["web-1"]))
    assert {i: d for i, d in blocks.items() if d is not None} == aws.disk(header.volume_id)
    kept = {aws.tags_of(s)["bacula-ec2:volume"] for s in aws.snapshot_ids()}
    assert kept == {aws.volume_of(ids["web-1"], "/dev/xvda")}
    assert any(said in t for t in rec.texts("E"))
    assert no_count_thread_left()


def test_a_cancel_while_the_count_runs_stops_the_job_and_the_count() -> None:
    """The read has handed over every block and waits for the count before the image's end
    record; a cancel then ends the job (no end record, snapshots rolled back) without
    waiting for the count, and the count's thread ends too."""
    aws, ids = one_volume_fleet()
    sink = FirstBlockSink()
    release = threading.Event()
    contexts: list[JobContext] = []

    def stalled(refs: Iterator[BlockRef]) -> Iterator[BlockRef]:
        release.wait(WAIT)
        yield from refs

    def cancel_once_all_blocks_are_in() -> None:
        deadline = time.monotonic() + WAIT
        while sink.blocks < BLOCKS and time.monotonic() < deadline:
            time.sleep(0.01)
        contexts[0].cancel.set()

    second_listing_of(aws, ids["web-1"], stalled)
    canceller = threading.Thread(target=cancel_once_all_blocks_are_in, daemon=True)
    canceller.start()
    started = time.monotonic()
    try:
        _backup, _rec, exc = run_job(aws, sink, ("instances", "web-1"), ctx_out=contexts)
    finally:
        release.set()
    canceller.join()
    assert isinstance(exc, Cancelled), exc
    assert time.monotonic() - started < WAIT / 2  # it did not wait for the stalled count
    assert sink.blocks == BLOCKS
    # the image never got its end record: not closed as a file of the job at all
    assert not [p for p in sink.ending(".bimg") if f"/{ids['web-1']}/" in p]
    assert not aws.snapshot_ids() - set(aws.deleted)
    assert no_count_thread_left()


def test_the_preflights_of_an_instance_run_side_by_side() -> None:
    """Each volume's first listing page is asked for at once (not one round trip after the
    other): neither preflight goes on before both have started."""
    aws = FakeAws()
    iid = aws.add_instance("web-1", devices=[("/dev/xvda", 1), ("/dev/xvdf", 1)]).instance_id
    for dev in ("/dev/xvda", "/dev/xvdf"):
        for block in range(3):
            aws.write(aws.volume_of(iid, dev), block, block + 1)
    both = threading.Barrier(2, timeout=WAIT)
    original: Listing = aws.list_snapshot_blocks
    calls: dict[str, int] = {}

    def listing(snapshot_id: str, page_size: int = 10000) -> Iterator[BlockRef]:
        calls[snapshot_id] = calls.get(snapshot_id, 0) + 1
        refs = original(snapshot_id, page_size)
        if calls[snapshot_id] > 1:
            return refs

        def preflight() -> Iterator[BlockRef]:
            both.wait()  # BrokenBarrierError (the job fails) if the other never starts
            yield from refs

        return preflight()

    aws.list_snapshot_blocks = listing  # type: ignore[method-assign]
    sink = RecordingSink()
    _backup, _rec, exc = run_job(aws, sink, ("instances", "web-1"))
    assert exc is None
    assert len(calls) == 2
    for path in sink.ending(".bimg"):
        header, blocks = image_blocks(sink.data(path))
        assert {i: d for i, d in blocks.items() if d is not None} == aws.disk(header.volume_id)
