"""aws/wait.py, the one waiter: its parameters, its schedule, the "no progress" timeout and
the overall cap, consecutive successes, cancel, snapshot ids EC2 does not list yet, and the
restore's volume/instance waits going through it. Time is a devkit FakeClock."""

from __future__ import annotations

import itertools
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bacula_ec2.aws import AwsError
from bacula_ec2.aws.model import Snapshot
from bacula_ec2.aws.restore_ops import _wait_for
from bacula_ec2.aws.wait import (
    SNAPSHOT_OVERALL_CAP,
    Step,
    WaitParams,
    wait_snapshots,
    wait_until,
)
from bacula_ec2.retry import Cancelled
from devkit.fake_aws import FakeAws, FakeClock


@pytest.mark.parametrize(
    "kwargs",
    [
        {"first_interval": 0},
        {"first_interval": 20, "max_interval": 10},
        {"growth": 0.9},
        {"no_progress": 0},
        {"overall": 0},
        {"no_progress": 100, "overall": 50},
        {"successes_required": 0},
    ],
)
def test_wait_params_are_validated_once(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="WaitParams"):
        WaitParams(**kwargs)  # type: ignore[arg-type]


def test_snapshot_params_no_progress_is_snapshot_timeout_and_the_cap_is_generous() -> None:
    assert WaitParams.for_snapshots(3600) == WaitParams(no_progress=3600, overall=SNAPSHOT_OVERALL_CAP)
    assert WaitParams.for_snapshots(12 * 3600).overall == 48 * 3600  # 4 x when that is longer
    state = WaitParams.for_state(600)
    assert state.no_progress is None and state.overall == 600 and state.max_interval == 5


def test_the_interval_grows_to_its_maximum() -> None:
    clock = FakeClock()
    polls = iter(range(12))
    params = WaitParams(first_interval=1, growth=2, max_interval=10, no_progress=None, overall=10_000)
    assert (
        wait_until(
            lambda: Step(next(polls) == 7, "done"), operation="Op", what="x", params=params, clock=clock
        )
        == "done"
    )
    assert clock.slept == [1, 2, 4, 8, 10, 10, 10]


def test_no_progress_fails_after_no_progress_seconds_naming_what() -> None:
    clock = FakeClock()
    params = WaitParams(first_interval=1, growth=1, max_interval=1, no_progress=30, overall=1000)
    started = clock.now()
    with pytest.raises(
        AwsError, match=r"CreateSnapshots failed: Timeout: snap-1: no progress for 30 s \(hint\)"
    ):
        wait_until(
            lambda: Step(False, progress="40%"),
            operation="CreateSnapshots",
            what="snap-1",
            params=params,
            clock=clock,
            hint=" (hint)",
        )
    assert clock.now() - started == 30


def test_growing_progress_waits_past_no_progress_until_done() -> None:
    clock = FakeClock()
    params = WaitParams(first_interval=1, growth=1, max_interval=1, no_progress=5, overall=1000)
    n = iter(range(1000))

    def check() -> Step[int]:
        i = next(n)
        return Step(i == 300, i, progress=i // 3)  # grows every 3 s, done after 300 s

    assert wait_until(check, operation="Op", what="x", params=params, clock=clock) == 300


def test_the_overall_cap_fails_even_with_progress() -> None:
    clock = FakeClock()
    params = WaitParams(first_interval=1, growth=1, max_interval=1, no_progress=5, overall=50)
    n = iter(range(1000))
    with pytest.raises(AwsError, match="not done after 50 s"):
        wait_until(
            lambda: Step(False, progress=next(n)), operation="Op", what="x", params=params, clock=clock
        )


def test_successes_required_are_consecutive() -> None:
    answers = iter([True, False, True, True, False, True, True, True])
    params = WaitParams(first_interval=1, no_progress=None, overall=100, successes_required=3)
    clock = FakeClock()
    wait_until(lambda: Step(next(answers)), operation="Op", what="x", params=params, clock=clock)
    with pytest.raises(StopIteration):
        next(answers)


def test_cancel_stops_the_wait() -> None:
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled, match="volume vol-1"):
        wait_until(
            lambda: Step(False),
            operation="Op",
            what="volume vol-1",
            params=WaitParams(),
            clock=FakeClock(),
            cancel=cancel,
        )


@settings(max_examples=80, deadline=None)
@given(
    changes=st.lists(st.floats(min_value=0.5, max_value=120), min_size=1, max_size=30),
    no_progress=st.floats(min_value=5, max_value=100),
    max_interval=st.floats(min_value=0.5, max_value=20),
)
def test_a_wait_fails_if_and_only_if_progress_stopped_for_no_progress_seconds(
    changes: list[float], no_progress: float, max_interval: float
) -> None:
    """Progress changes after each gap of `changes` (seconds), then the wait is done. The
    wait fails exactly when the progress the poller saw stood still for `no_progress`."""
    clock = FakeClock(0.0)
    at = [sum(changes[: i + 1]) for i in range(len(changes))]  # change times; done at the last
    params = WaitParams(first_interval=0.5, max_interval=max_interval, no_progress=no_progress, overall=10**6)
    seen: list[tuple[float, int]] = []

    def check() -> Step[None]:
        now = clock.now()
        reached = sum(1 for t in at if t <= now)
        seen.append((now, reached))
        return Step(reached == len(at), progress=reached)

    try:
        wait_until(check, operation="Op", what="x", params=params, clock=clock)
        failed = False
    except AwsError:
        failed = True
    # the poller's own view: how long each observed progress value stood before a change
    stood, last_change, last = 0.0, seen[0][0], seen[0][1]
    for now, reached in seen:
        if reached != last:
            last, last_change = reached, now
        if reached != len(at):
            stood = max(stood, now - last_change)
    assert failed == (stood >= no_progress)
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(seen)]
    assert all(g <= max_interval + 1e-9 for g in gaps)


# ---------------------------------------------------------------------------- snapshots
def test_snapshot_wait_treats_not_found_as_not_listed_yet_within_the_window() -> None:
    clock = FakeClock(0.0)
    calls: list[float] = []

    def describe(ids: list[str]) -> list[Snapshot]:
        calls.append(clock.now())
        if clock.now() < 10:
            raise AwsError(
                "DescribeSnapshots", "InvalidSnapshot.NotFound", f"The snapshot '{ids[0]}' does not exist."
            )
        return [Snapshot(i, state="completed", progress="100%") for i in ids]

    snaps = wait_snapshots(describe, ["snap-1"], WaitParams.for_snapshots(60), clock=clock, window=30)
    assert [s.snapshot_id for s in snaps] == ["snap-1"] and calls[-1] >= 10

    def never(ids: list[str]) -> list[Snapshot]:
        raise AwsError("DescribeSnapshots", "InvalidSnapshot.NotFound", "gone")

    with pytest.raises(AwsError, match=r"InvalidSnapshot\.NotFound"):
        wait_snapshots(never, ["snap-1"], WaitParams.for_snapshots(600), clock=FakeClock(0.0), window=30)


def test_snapshot_wait_fails_at_once_on_error_and_reports_progress() -> None:
    answers = iter(
        [
            [
                Snapshot("snap-1", state="pending", progress="10%"),
                Snapshot("snap-2", state="pending", progress="5%"),
            ],
            [
                Snapshot("snap-1", state="pending", progress="60%"),
                Snapshot("snap-2", state="error", progress="5%"),
            ],
        ]
    )
    shown: list[list[str]] = []
    with pytest.raises(AwsError, match=r"SnapshotError: snapshot\(s\) snap-2 ended in state error"):
        wait_snapshots(
            lambda ids: next(answers),
            ["snap-1", "snap-2"],
            WaitParams.for_snapshots(60),
            clock=FakeClock(),
            progress=lambda snaps: shown.append([s.progress or "" for s in snaps]),
        )
    assert shown == [["10%", "5%"]]


def test_client_wait_snapshots_is_no_progress_not_a_deadline() -> None:
    """Aws.wait_snapshots (FakeAws inherits the real one): a snapshot that takes an hour
    with growing Progress is waited for under snapshot_timeout=60; a stuck one fails."""
    aws = FakeAws()
    inst = aws.add_instance("web-1")
    vid = aws.volume_of(inst.instance_id, "/dev/xvda")
    aws.snapshot_seconds = 3600
    slow = aws.create_snapshot(vid, {}, "slow").snapshot_id
    [done] = aws.wait_snapshots([slow], timeout=60)
    assert done.state == "completed" and done.progress == "100%"
    aws.stall_snapshots_of(vid)
    stuck = aws.create_snapshot(vid, {}, "stuck").snapshot_id
    with pytest.raises(AwsError, match=f"Timeout: snapshot\\(s\\) {stuck}: no progress for 6[0-9] s"):
        aws.wait_snapshots([stuck], timeout=60)


# ---------------------------------------------------------------------------- restore waits
def test_restore_waits_go_through_the_waiter_with_their_clock() -> None:
    clock = FakeClock(0.0)
    with pytest.raises(
        AwsError, match=r"volume vol-1 available failed: Timeout: volume vol-1 available: not done"
    ):
        _wait_for(None, "volume vol-1 available", lambda: False, 30, clock)
    assert 30 <= clock.now() <= 35 and max(clock.slept) <= 5
    answers = iter([False, False, True])
    _wait_for(None, "instance i-1 running", lambda: next(answers), 30, clock)
