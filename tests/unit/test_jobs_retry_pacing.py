"""Retry and pacing with a fake clock, where test_transfer.py (the engine: retry budget,
not-yet-visible window, throttle feedback, cancel) and test_pacing.py (real threads, cut once
per cooldown, floor) leave gaps: the pacer's exact schedule, burst and additive recovery;
call_with_retry on its own; and a BackupJob that AWS throttles or does not see yet, which
must store the same blocks as one it does not."""

from __future__ import annotations

import itertools
import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bacula_ec2.aws.errors import aws_error
from bacula_ec2.pacing import Pacer
from bacula_ec2.retry import Cancelled, RetriesExhausted, Retryable, RetryPolicy, RetryStats, call_with_retry
from devkit.fake_aws import FakeAws, FakeClock
from devkit.jobkit import Director, Run

# ---------------------------------------------------------------------------- the pacer


def test_the_pacer_spaces_starts_exactly_at_its_rate() -> None:
    clock = FakeClock()
    pacer = Pacer(50.0, burst=0.0, clock=clock)
    starts = []
    for _ in range(11):
        pacer.wait()
        starts.append(clock.now())
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert gaps == pytest.approx([0.02] * 10)


def test_after_idling_at_most_the_burst_is_caught_up() -> None:
    clock = FakeClock()
    pacer = Pacer(100.0, burst=0.1, clock=clock)
    pacer.wait()
    clock.sleep(5.0)  # idle: the unused schedule is not banked beyond `burst`
    free = 0
    for _ in range(30):
        before = clock.now()
        pacer.wait()
        if clock.now() == before:
            free += 1
    assert free == 11  # 0.1 s x 100/s, plus the slot that is due now


def test_throttling_cuts_then_quiet_seconds_raise_the_rate_back_to_the_ceiling() -> None:
    clock = FakeClock()
    pacer = Pacer(1000.0, cooldown=0.5, increase_per_second=100.0, burst=0.0, clock=clock)
    pacer.throttled()
    pacer.throttled()  # same cooldown: one cut
    assert pacer.rate == pytest.approx(700.0)
    clock.sleep(0.6)
    pacer.throttled()
    assert pacer.rate == pytest.approx(490.0)
    rates = []
    for _ in range(8):
        clock.sleep(1.0)
        pacer.wait()
        rates.append(pacer.rate)
    assert rates[:5] == pytest.approx([590.0, 690.0, 790.0, 890.0, 990.0], abs=1.0)
    assert rates[-1] == 1000.0 and max(rates) == 1000.0  # never above the ceiling


def test_a_cancelled_wait_does_not_sleep() -> None:
    clock = FakeClock()
    pacer = Pacer(1.0, burst=0.0, clock=clock)
    pacer.wait()
    cancel = threading.Event()
    cancel.set()
    pacer.wait(cancel)
    assert clock.slept == []


# ---------------------------------------------------------------------------- call_with_retry


@given(st.integers(1, 40))
def test_full_jitter_never_exceeds_its_bound(attempt: int) -> None:
    policy = RetryPolicy(attempts=5, base_delay=0.3, max_delay=7.0)
    assert 0 <= policy.delay(attempt) <= min(7.0, 0.3 * 2**attempt)


def test_policy_is_validated() -> None:
    for bad in ({"attempts": 0}, {"base_delay": 5.0, "max_delay": 1.0}, {"not_found_window": -1.0}):
        with pytest.raises(ValueError, match="RetryPolicy"):
            RetryPolicy(**bad)  # type: ignore[arg-type]


def test_call_with_retry_counts_retries_and_gives_the_last_error_as_cause() -> None:
    clock = FakeClock()
    stats = RetryStats()
    answers = iter([Retryable("reset"), Retryable("busy", throttled=True), Retryable("busy", throttled=True)])

    def flaky() -> str:
        err = next(answers, None)
        if err is not None:
            raise err
        return "ok"

    policy = RetryPolicy(attempts=4, base_delay=1.0, max_delay=1.0)
    assert call_with_retry(flaky, what="X", policy=policy, stats=stats, clock=clock) == "ok"
    assert (stats.retries, stats.throttled, len(clock.slept)) == (3, 2, 3)

    def never() -> None:
        raise Retryable(f"attempt at {clock.now():.0f}")

    with pytest.raises(RetriesExhausted, match=r"X: attempt at \d+ \(gave up after 2 attempts\)") as info:
        call_with_retry(never, what="X", policy=RetryPolicy(attempts=2), clock=clock)
    assert isinstance(info.value.__cause__, Retryable)


def test_a_final_error_passes_at_once_and_a_cancel_ends_the_wait() -> None:
    clock = FakeClock()
    calls = []

    def refused() -> None:
        calls.append(1)
        raise ValueError("final")

    with pytest.raises(ValueError, match="final"):
        call_with_retry(refused, what="X", policy=RetryPolicy(), clock=clock)
    assert calls == [1] and clock.slept == []
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled, match="X: cancelled") as info:
        call_with_retry(
            lambda: (_ for _ in ()).throw(Retryable("busy")),
            what="X",
            policy=RetryPolicy(),
            cancel=cancel,
            clock=clock,
        )
    assert isinstance(info.value.__cause__, Retryable)


# ---------------------------------------------------------------------------- through a backup


def two_backups(aws: FakeAws) -> tuple[Run, Run]:
    inst = aws.add_instance("web-1", devices=[("/dev/xvda", 1)])
    vid = aws.volume_of(inst.instance_id, "/dev/xvda")
    for i in range(12):
        aws.write(vid, i, i + 1)
    d = Director(aws, [("instances", "web-1")])
    f = d.backup("F")
    aws.write(vid, 3, 99)
    return f, d.backup("I")


def images(runs: tuple[Run, Run]) -> list[dict[int, bytes | None]]:
    out = []
    for run in runs:
        [vid] = run.snapshots
        out.append(run.image(vid)[1])
    return out


def test_a_throttled_or_not_yet_visible_backup_stores_the_same_blocks() -> None:
    calm = FakeAws()
    want = images(two_backups(calm))
    rough = FakeAws()
    rough.fail("GetSnapshotBlock", "ThrottlingException", "slow down", times=3)
    rough.fail("DescribeSnapshots", "RequestLimitExceeded", "slow down", times=2)
    rough.fail("ListSnapshotBlocks", "ResourceNotFoundException", "not yet", status=404, times=2)
    rough.fail("ListChangedBlocks", "InternalError", "oops", status=500, times=1)
    runs = two_backups(rough)
    assert images(runs) == want
    assert rough.stats.throttled == 5 and rough.stats.retries == 8
    [summary] = [t for t in runs[1].reporter.texts("I") if t.startswith("backed up")]
    assert summary.endswith("8 AWS retries (5 throttled)")


def test_a_block_refused_for_good_fails_the_backup_naming_it() -> None:
    aws = FakeAws()
    aws.fail("GetSnapshotBlock", "AccessDeniedException", "no ebs:GetSnapshotBlock", status=403)
    with pytest.raises(Exception, match="AccessDeniedException") as info:
        two_backups(aws)
    err = info.value
    assert "GetSnapshotBlock snap-" in str(err) and "request id fake-GetSnapshotBlock" in str(err)


def test_aws_error_classification_used_by_the_fake_is_the_products() -> None:
    assert isinstance(aws_error("X", "ThrottlingException", "m", status=400), Retryable)
    assert not isinstance(aws_error("X", "InvalidSnapshot.NotFound", "m", status=400), Retryable)
