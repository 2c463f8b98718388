"""Block listings split into index ranges listed in parallel (issue 15).

`Aws._block_pages` lists a large volume whose pages follow the index space (sparse
ListChangedBlocks) as ranges, each a NextToken chain from its StartingBlockIndex that
stops at the first index past its end, merged in index order. These tests drive it
against `Ebs`, a small model of the EBS direct paging rules (a scan window of indexes per
page, MaxResults, NextToken precedence, VolumeSize), with a property test that the merged
stream equals the sequential one for any changes and any range sizes, and against the
simulator.
"""

from __future__ import annotations

import bisect
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bacula_ec2.aws import transfer
from bacula_ec2.aws.client import Aws, AwsError, list_schedule
from bacula_ec2.aws.settings import AwsSettings, Secret
from bacula_ec2.aws.transfer import split_ranges
from bacula_ec2.pacing import Pacer, SharedSchedule
from bacula_ec2.retry import Cancelled, Clock, RetryPolicy, RetryStats
from devkit.simulator.fixtures import ACCESS_KEY, SECRET_KEY, RunningSimulator
from devkit.simulator.model import DEFAULT_REGION

NO_WAIT = RetryPolicy(attempts=3, base_delay=0.0, max_delay=0.0, not_found_window=0.0)
BLOCK = 524288
GIB_BLOCKS = 2048


class Ebs:
    """ListChangedBlocks as AWS pages it: from NextToken (which wins) or StartingBlockIndex,
    at most MaxResults entries inside a scan window of `window` indexes, NextToken while the
    volume goes on; VolumeSize in GiB. Thread-safe: the ranges call it from several threads."""

    def __init__(self, changed: list[int], size_gib: int, window: int) -> None:
        self.changed = sorted(set(changed))
        self.size_gib = size_gib
        self.window = window
        self.calls: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        #: called with the request's arguments before it is answered (inject failures here)
        self.before: Callable[[dict[str, Any]], None] = lambda args: None

    def __call__(self, **args: Any) -> dict[str, Any]:
        with self.lock:
            self.calls.append(args)
        self.before(args)
        token = args.get("NextToken")
        start = int(token.split(":")[1]) if token else int(args.get("StartingBlockIndex", 0))
        bound = self.size_gib * GIB_BLOCKS
        limit = max(100, min(10000, int(args.get("MaxResults", 10000))))
        end = min(bound, start + self.window)
        lo, hi = bisect.bisect_left(self.changed, start), bisect.bisect_left(self.changed, end)
        nxt: int | None = end if end < bound else None
        if hi - lo > limit:
            hi, nxt = lo + limit, self.changed[lo + limit]
        page: dict[str, Any] = {
            "ChangedBlocks": [{"BlockIndex": i, "SecondBlockToken": f"t{i}"} for i in self.changed[lo:hi]],
            "VolumeSize": self.size_gib,
        }
        if nxt is not None:
            page["NextToken"] = f"tok:{nxt}"
        return page


def bare_aws(*, min_blocks: int, max_count: int = 32, chains: int = 4) -> Aws:
    """An Aws without clients (the listing method is given) and without pacing."""
    aws = Aws.__new__(Aws)
    aws.policy, aws.cancel, aws.stats, aws.clock = NO_WAIT, None, RetryStats(), Clock()
    aws.LIST_RANGE_MIN_BLOCKS, aws.LIST_RANGE_MAX_COUNT, aws.LIST_RANGE_CHAINS = min_blocks, max_count, chains
    return aws


def listed(aws: Aws, ebs: Ebs, page_size: int = 10000) -> list[int]:
    args = {"FirstSnapshotId": "snap-1", "SecondSnapshotId": "snap-2", "MaxResults": page_size}
    pages = aws._block_pages("ListChangedBlocks", ebs, "ChangedBlocks", args, "snap-2 against snap-1")
    return [int(e["BlockIndex"]) for e in pages]


def starts(ebs: Ebs) -> set[int]:
    return {int(c["StartingBlockIndex"]) for c in ebs.calls if "StartingBlockIndex" in c}


# ---------------------------------------------------------------------- split


def test_split_ranges_cover_the_volume_in_order_and_leave_the_last_one_open() -> None:
    assert [(r.lo, r.hi) for r in split_ranges(None)] == [(0, None)]
    assert [(r.lo, r.hi) for r in split_ranges(1000, min_blocks=1000)] == [(0, None)]
    got = split_ranges(1001, min_blocks=250, max_count=3)
    assert [(r.lo, r.hi) for r in got] == [(0, 334), (334, 668), (668, None)]
    tib = split_ranges(1024 * GIB_BLOCKS)
    assert len(tib) == 8 and tib[1].lo == 1 << 18
    assert len(split_ranges(16384 * GIB_BLOCKS)) == transfer.RANGE_MAX_COUNT
    assert str(got[1]) == "block range 334..667" and str(got[2]) == "block range 668..end"


# ---------------------------------------------------------------------- merge = sequential


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    changed=st.lists(st.integers(0, 40 * 2048 - 1), max_size=300),
    size_gib=st.integers(1, 40),
    window=st.integers(50, 20000),
    min_blocks=st.integers(1, 30000),
    max_count=st.integers(1, 40),
    chains=st.integers(1, 6),
    page_size=st.sampled_from([100, 150, 10000]),
)
def test_the_merged_ranges_equal_the_sequential_listing(
    changed: list[int],
    size_gib: int,
    window: int,
    min_blocks: int,
    max_count: int,
    chains: int,
    page_size: int,
) -> None:
    """For any changed indexes, volume, scan window and range sizes: every index once, in
    order, none lost (the sequential listing is the sorted set)."""
    changed = [i for i in changed if i < size_gib * GIB_BLOCKS]
    ebs = Ebs(changed, size_gib, window)
    aws = bare_aws(min_blocks=min_blocks, max_count=max_count, chains=chains)
    assert listed(aws, ebs, page_size) == sorted(set(changed))


def test_a_sparse_large_volume_is_listed_in_parallel_ranges() -> None:
    """A 64 GiB volume in ranges of 16,384 indexes: chains start at the ranges' starts, and
    the pages in all stay close to the sequential count (about one more page per range)."""
    changed = list(range(3, 64 * GIB_BLOCKS, 977))
    ebs = Ebs(changed, 64, window=1000)
    aws = bare_aws(min_blocks=16384)
    assert listed(aws, ebs) == changed
    ranges = split_ranges(64 * GIB_BLOCKS, min_blocks=16384)
    assert starts(ebs) == {r.lo for r in ranges[1:]}
    sequential = -(-64 * GIB_BLOCKS // 1000)
    assert sequential < len(ebs.calls) <= sequential + 2 * len(ranges)


def test_a_full_first_page_is_listed_as_one_chain() -> None:
    """Pages that follow the data (the first page is full) are not split: they come much
    faster than their blocks can be read."""
    changed = list(range(0, 64 * GIB_BLOCKS, 3))
    ebs = Ebs(changed, 64, window=100000)
    assert listed(bare_aws(min_blocks=16384), ebs) == changed
    assert not starts(ebs) and len(ebs.calls) == -(-len(changed) // 10000)


def test_ranges_proved_empty_are_not_listed() -> None:
    """Changes only at the start and the very end: the chains that reach the end prove the
    ranges between them empty, so not every range gets a chain of its own."""
    changed = [5, 64 * GIB_BLOCKS - 1]
    ebs = Ebs(changed, 64, window=1000)
    aws = bare_aws(min_blocks=8192, chains=3)
    assert listed(aws, ebs) == changed
    ranges = split_ranges(64 * GIB_BLOCKS, min_blocks=8192)
    assert len(starts(ebs)) < len(ranges) - 1


# ---------------------------------------------------------------------- expiry and errors


def test_an_expired_next_token_resumes_inside_its_range() -> None:
    """Every third NextToken is refused as expired: each chain resumes at its last index + 1
    (or its range's start), and the merged stream is still exact."""
    changed = list(range(11, 32 * GIB_BLOCKS, 301))
    ebs = Ebs(changed, 32, window=700)
    seen = [0]

    def expire(args: dict[str, Any]) -> None:
        if "NextToken" in args:
            with ebs.lock:
                seen[0] += 1
                refuse = seen[0] % 3 == 0
            if refuse:
                raise AwsError(
                    "ListChangedBlocks", "ValidationException", "token expired", reason="INVALID_PAGE_TOKEN"
                )

    ebs.before = expire
    aws = bare_aws(min_blocks=8192)
    assert listed(aws, ebs) == changed
    ranges = split_ranges(32 * GIB_BLOCKS, min_blocks=8192)
    resumed = starts(ebs) - {r.lo for r in ranges}
    assert resumed, "no chain resumed"
    for index in resumed:  # a resumption starts right after an index the chain yielded
        assert index - 1 in changed


def test_an_error_in_one_range_fails_the_listing_naming_the_range() -> None:
    changed = list(range(0, 32 * GIB_BLOCKS, 500))
    ebs = Ebs(changed, 32, window=1000)
    ranges = split_ranges(32 * GIB_BLOCKS, min_blocks=8192)
    bad = ranges[2]

    def deny(args: dict[str, Any]) -> None:
        if args.get("StartingBlockIndex") == bad.lo:
            raise ClientError(
                {
                    "Error": {"Code": "AccessDeniedException", "Message": "no access to this part"},
                    "ResponseMetadata": {"HTTPStatusCode": 403},
                },
                "ListChangedBlocks",
            )

    ebs.before = deny
    aws = bare_aws(min_blocks=8192)
    with pytest.raises(AwsError) as err:
        listed(aws, ebs)
    assert f"block range {bad.lo}..{bad.hi - 1}" in str(err.value)  # type: ignore[operator]
    assert "snap-2 against snap-1" in str(err.value)
    assert isinstance(err.value.__cause__, ClientError)


def test_closing_the_listing_early_stops_its_chains() -> None:
    changed = list(range(0, 32 * GIB_BLOCKS, 50))
    ebs = Ebs(changed, 32, window=1000)
    before = threading.active_count()
    aws = bare_aws(min_blocks=8192)
    args = {"SecondSnapshotId": "snap-2", "MaxResults": 10000}
    pages = aws._block_pages("ListChangedBlocks", ebs, "ChangedBlocks", args, "snap-2")
    assert int(next(pages)["BlockIndex"]) == 0
    pages.close()
    deadline = time.monotonic() + 3
    while threading.active_count() > before and time.monotonic() < deadline:
        time.sleep(0.02)
    assert threading.active_count() <= before
    calls = len(ebs.calls)
    time.sleep(0.1)
    assert len(ebs.calls) == calls


def test_a_cancelled_job_stops_a_ranged_listing() -> None:
    ebs = Ebs(list(range(0, 32 * GIB_BLOCKS, 50)), 32, window=1000)
    aws = bare_aws(min_blocks=8192)
    aws.cancel = threading.Event()
    got = []
    with pytest.raises(Cancelled) as err:
        for n, index in enumerate(listed_iter(aws, ebs)):
            got.append(index)
            if n == 5:
                aws.cancel.set()
    assert "cancelled" in str(err.value)
    assert got == list(range(0, 50 * len(got), 50)) and len(got) < len(ebs.changed)  # stopped early


def listed_iter(aws: Aws, ebs: Ebs) -> Any:
    args = {"SecondSnapshotId": "snap-2", "MaxResults": 10000}
    for entry in aws._block_pages("ListChangedBlocks", ebs, "ChangedBlocks", args, "snap-2"):
        yield int(entry["BlockIndex"])


# ---------------------------------------------------------------------- pacing


def test_spare_requests_never_delay_the_range_being_read() -> None:
    """Chains listing ahead take only the pacer's free slots; the consumer's chain starts
    within one slot whatever they do, and all together stay at the rate."""
    pacer = Pacer(20.0, burst=0.0)  # a slot is 50 ms
    stop = time.monotonic() + 0.8
    spare = [0]

    def ahead() -> None:
        while time.monotonic() < stop:
            pacer.wait_spare()
            if time.monotonic() < stop:  # a wait that ends after the stop does not count
                spare[0] += 1

    threads = [threading.Thread(target=ahead) for _ in range(6)]
    for t in threads:
        t.start()
    delays = []
    urgent = 0
    while time.monotonic() < stop - 0.05:
        t0 = time.monotonic()
        pacer.wait(priority=True)
        delays.append(time.monotonic() - t0)
        urgent += 1
        time.sleep(0.08)  # its round trip: 12.5 requests/s, under the rate
    for t in threads:
        t.join()
    # an ordinary wait behind six spare chains would take ~50 ms; a priority one takes none
    # (at most about one slot, with the loaded machine's scheduling on top)
    assert statistics.median(delays) < 0.01 and max(delays) < 0.06
    assert 12 <= spare[0] + urgent <= 19 and urgent >= 7 and spare[0] >= 3  # ~16 in 0.8 s at 20/s


def test_a_ranged_listing_of_the_simulator_equals_the_sequential_one(sim: RunningSimulator) -> None:
    """A 48 GiB volume, ListChangedBlocks paging 2,048 indexes a page, ranges of 16,384
    indexes through the client's pacer: the same blocks as one chain, in order."""
    values: dict[str, Any] = {
        "access_key": ACCESS_KEY,
        "secret_key": Secret(SECRET_KEY),
        "region": DEFAULT_REGION,
        "endpoint_url": sim.endpoint,
    }
    aws = Aws(AwsSettings(**values), policy=NO_WAIT)
    sim.client.set_options(snapshot_delay=0, changed_blocks_window=2048)
    volume = sim.client.create_volume(48)
    sim.client.write_volume(volume, 0, b"base")
    first = aws.create_snapshot(volume, {}, "1").snapshot_id
    changed = sorted({(i * 7919 + 3) % (48 * GIB_BLOCKS) for i in range(120)})
    for index in changed:
        sim.client.write_volume(volume, index * BLOCK, b"changed")
    second = aws.create_snapshot(volume, {}, "2").snapshot_id
    sequential = [r.index for r in aws.list_changed_blocks(first, second)]
    aws.LIST_RANGE_MIN_BLOCKS = 16384
    sim.client.reset_stats()
    ranged = aws.list_changed_blocks(first, second)
    assert [r.index for r in ranged] == sequential == changed
    pages = sim.client.stats()["requests"]["ListChangedBlocks"]
    assert 48 <= pages <= 48 + 2 * 6


def test_pacers_of_two_processes_share_one_schedule(tmp_path: Path) -> None:
    """Two Plugin lines are two backends: with a shared schedule file their list pacers
    together keep one rate (each holds its own descriptor, as two processes do: flock
    excludes across descriptors)."""
    path = str(tmp_path / "bacula-ec2-list-us-east-1.pace")
    pacers = [Pacer(100.0, burst=0.0, shared=SharedSchedule(path)) for _ in range(2)]
    count = [0, 0]
    stop = time.monotonic() + 0.5

    def worker(n: int) -> None:
        while time.monotonic() < stop:
            pacers[n].wait()
            count[n] += 1

    threads = [threading.Thread(target=worker, args=(n % 2,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # ~50 in 0.5 s at 100/s (unshared, the two would make ~100), and both are served (the
    # lower bounds are loose: on a loaded machine the threads may run late, never early)
    assert 15 <= sum(count) <= 65 and min(count) > 3


def test_a_shared_schedule_from_before_a_reboot_is_ignored(tmp_path: Path) -> None:
    path = str(tmp_path / "s.pace")
    schedule = SharedSchedule(path)
    schedule.write(time.monotonic() + 1e6)  # CLOCK_MONOTONIC of a host that ran longer
    pacer = Pacer(100.0, burst=0.0, shared=SharedSchedule(path))
    t0 = time.monotonic()
    pacer.wait()
    pacer.wait()
    assert time.monotonic() - t0 < 1.0  # the stale slot was 10**6 s ahead: not waited for
    assert (schedule.read() or 0.0) < time.monotonic() + 1


def test_the_client_shares_its_list_schedule_when_given_a_directory(tmp_path: Path) -> None:
    assert list_schedule(None, "us-east-1") is None
    shared = list_schedule(str(tmp_path), "us-east-1")
    assert shared is not None and shared.path == str(tmp_path / "bacula-ec2-list-us-east-1.pace")
    assert list_schedule(str(tmp_path / "missing"), "us-east-1") is None  # warned, not fatal


def test_a_starved_spare_request_is_promoted_when_its_range_is_reached() -> None:
    """Spare requests wait while others keep the schedule full; once the consumer reaches
    their range (`promoted`), they wait as priority requests and start."""
    pacer = Pacer(50.0, burst=0.0)
    stop = threading.Event()

    def hog() -> None:  # ordinary requests reserving slots ahead: never a free slot now
        while not stop.is_set():
            pacer.wait()

    hogs = [threading.Thread(target=hog) for _ in range(3)]
    for t in hogs:
        t.start()
    promoted, started = threading.Event(), threading.Event()

    def spare() -> None:
        pacer.wait_spare(promoted=promoted.is_set)
        started.set()

    waiter = threading.Thread(target=spare)
    try:
        time.sleep(0.05)
        waiter.start()
        assert not started.wait(0.3)  # starved while speculative
        promoted.set()
        assert started.wait(0.5)
    finally:
        stop.set()
        for t in [*hogs, waiter]:
            t.join(2)
