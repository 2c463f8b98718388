"""The block transfer engine (aws/transfer.py) with a fake clock: results in item order,
the window and the pool never exceeded, throttling fed to the pacer, the retry budget kept
(the last error as the cause), cancel honoured between results and during retry waits."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator

import pytest
from botocore.exceptions import ClientError
from hypothesis import given, settings
from hypothesis import strategies as st

from bacula_ec2.aws.errors import AwsError, RetryableAwsError, aws_error
from bacula_ec2.aws.transfer import BlockTransfer, TransferConfig, Window, done, read_ahead
from bacula_ec2.formats.blockimage import BLOCK_SIZE
from bacula_ec2.pacing import Pacer
from bacula_ec2.retry import Cancelled, Clock, RetriesExhausted, RetryPolicy, RetryStats
from devkit.fake_aws import FakeClock

POLICY = RetryPolicy(attempts=4, base_delay=0.1, max_delay=1.0, not_found_window=30.0)


def engine(
    concurrency: int = 4,
    window: int = 0,
    *,
    clock: Clock | None = None,
    pacer: Pacer | None = None,
    cancel: threading.Event | None = None,
    stats: RetryStats | None = None,
    policy: RetryPolicy = POLICY,
) -> BlockTransfer:
    return BlockTransfer(
        TransferConfig(concurrency=concurrency, window=window),
        name="test-transfer",
        policy=policy,
        pacer=pacer,
        stats=stats,
        cancel=cancel,
        clock=clock or FakeClock(),
    )


def throttled(op: str = "GetSnapshotBlock") -> RetryableAwsError:
    err = aws_error(op, "RequestThrottledException", "slow down", status=400, request_id="rid-throttle")
    assert isinstance(err, RetryableAwsError)
    return err


def client_error(code: str, status: int, request_id: str = "rid-0") -> ClientError:
    return ClientError(
        {
            "Error": {"Code": code, "Message": f"{code} message"},
            "ResponseMetadata": {"HTTPStatusCode": status, "RequestId": request_id},
        },
        "PutSnapshotBlock",
    )


# ---------------------------------------------------------------------------- config, window


def test_config_is_validated_once_with_the_memory_it_implies() -> None:
    cfg = TransferConfig(concurrency=64)
    assert cfg.window == 128 and cfg.download_memory == 128 * BLOCK_SIZE == 64 << 20
    assert TransferConfig(concurrency=3, window=3).window == 3
    with pytest.raises(ValueError, match="concurrency must be at least 1"):
        TransferConfig(concurrency=0)
    with pytest.raises(ValueError, match=r"window \(2\) must be at least concurrency \(4\)"):
        TransferConfig(concurrency=4, window=2)
    with pytest.raises(ValueError, match="list_ahead"):
        TransferConfig(list_ahead=0)
    with pytest.raises(TypeError, match="integer"):
        TransferConfig(concurrency=True)
    with pytest.raises(TypeError, match="integer"):
        TransferConfig(concurrency=2.5)  # type: ignore[arg-type]


def test_window_refuses_past_its_size_and_is_reusable() -> None:
    w: Window[int] = Window(2)
    w.add(done(1))
    w.add(done(2))
    assert not w.room()
    with pytest.raises(RuntimeError, match="full"):
        w.add(done(3))
    assert w.take().result() == 1
    w.add(done(3))
    w.cancel()
    assert len(w) == 0 and w.room() and w.peak == 2
    w.add(done(4))
    assert w.take().result() == 4
    with pytest.raises(ValueError):
        Window(0)


# ---------------------------------------------------------------------------- order and bounds


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(0, 40),
    concurrency=st.integers(1, 6),
    extra=st.integers(0, 6),
    seed=st.integers(0, 2**32 - 1),
    zero_share=st.floats(0.0, 1.0),
)
def test_results_in_item_order_and_bounds_never_exceeded(
    n: int, concurrency: int, extra: int, seed: int, zero_share: float
) -> None:
    """Any completion order: the results come in item order; never more than `concurrency`
    requests run, never more than `window` results are outstanding."""
    rng = random.Random(seed)
    delays = [rng.uniform(0, 0.002) for _ in range(n)]
    zero = {i for i in range(n) if rng.random() < zero_share}
    window = concurrency + extra
    lock = threading.Lock()
    running = peak_running = consumed = peak_outstanding = 0

    def work(i: int) -> int:
        nonlocal running, peak_running, peak_outstanding
        with lock:
            running += 1
            peak_running = max(peak_running, running)
            peak_outstanding = max(peak_outstanding, i - consumed + 1)
        time.sleep(delays[i])  # real, tiny: completions out of order
        with lock:
            running -= 1
        return i * 10

    got = []
    for result in engine(concurrency, window).map(range(n), work, ready=lambda i: -i if i in zero else None):
        got.append(result)
        with lock:
            consumed += 1
    assert got == [-i if i in zero else i * 10 for i in range(n)]
    assert peak_running <= concurrency
    assert peak_outstanding <= window


def test_a_slow_consumer_stops_new_requests() -> None:
    """Back-pressure: with the caller not reading, only the window's worth is requested."""
    started: list[int] = []
    lock = threading.Lock()

    def work(i: int) -> int:
        with lock:
            started.append(i)
        return i

    results = engine(concurrency=2, window=5).map(range(1000), work)
    assert next(results) == 0
    time.sleep(0.05)  # every worker had time to take more, if it were allowed to
    assert len(started) <= 5 + 1  # the window, refilled once after the first result
    results.close()


def test_a_ready_result_is_handed_out_while_the_items_are_slow_to_come() -> None:
    """A listing that is slow between entries (ListChangedBlocks pages of a large volume,
    mostly empty) must not hold back blocks already read: a result that is ready is handed
    out before the engine waits for the next entry, not once the window is full or the
    listing has ended."""
    gate = threading.Event()

    def slow_items() -> Iterator[int]:
        yield 0
        time.sleep(0.2)  # the next page: block 0 has been read meanwhile
        yield 1
        gate.wait(5.0)  # a long run of empty pages: the third entry comes much later
        yield 2

    results = engine(concurrency=4, window=8).map(slow_items(), lambda i: i * 10)
    started = time.monotonic()
    assert next(results) == 0
    assert time.monotonic() - started < 2.0 and not gate.is_set()  # not after the gate's 5 s
    gate.set()
    assert list(results) == [10, 20]


def test_the_first_failure_fails_it_all_and_drops_the_rest() -> None:
    started: list[int] = []

    def work(i: int) -> int:
        started.append(i)
        if i == 3:
            raise ValueError("block 3 cannot be read")
        return i

    with pytest.raises(ValueError, match="block 3"):
        list(engine(concurrency=2, window=4).map(range(500), work))
    assert len(started) < 20
    assert not [t for t in threading.enumerate() if t.name.startswith("test-transfer")]


# ---------------------------------------------------------------------------- pacing and retry


def test_throttling_feeds_the_pacer_and_is_counted() -> None:
    clock = FakeClock()
    pacer = Pacer(1000.0, cooldown=0.0, increase_per_second=0.0, clock=clock)
    stats = RetryStats()
    failures = {2: 2, 5: 1}  # block -> throttled answers before it succeeds
    lock = threading.Lock()

    def work(i: int) -> int:
        def put() -> int:
            with lock:
                if failures.get(i, 0):
                    failures[i] -= 1
                    if i == 5:  # the boto3 path: botocore's exception, classified by the engine
                        raise client_error("ThrottlingException", 400)
                    raise throttled()
            return i

        return eng.request("PutSnapshotBlock", put, resource=f"snap-1 block {i}")

    eng = engine(concurrency=3, clock=clock, pacer=pacer, stats=stats)
    assert list(eng.map(range(8), work)) == list(range(8))
    assert pacer.throttles == 3 and stats.throttled == 3 and stats.retries == 3
    assert pacer.rate == pytest.approx(1000.0 * 0.7**3)


def test_unpaced_requests_do_not_touch_the_pacer() -> None:
    clock = FakeClock()
    pacer = Pacer(10.0, burst=0.0, clock=clock)
    eng = engine(clock=clock, pacer=pacer)
    for _ in range(5):
        eng.request("StartSnapshot", lambda: None, paced=False)
    assert clock.slept == []
    for _ in range(5):
        eng.request("PutSnapshotBlock", lambda: None)
    assert sum(clock.slept) == pytest.approx(0.4)  # 5 starts at 10/s: 4 gaps of 0.1 s


def test_retry_budget_then_the_last_error_is_the_cause() -> None:
    clock = FakeClock()
    stats = RetryStats()
    calls: list[int] = []

    def failing() -> None:
        calls.append(1)
        raise client_error("InternalServerException", 500, request_id=f"rid-{len(calls)}")

    with pytest.raises(RetriesExhausted) as info:
        engine(clock=clock, stats=stats).request("PutSnapshotBlock", failing, resource="snap-1 block 7")
    assert len(calls) == POLICY.attempts and stats.retries == POLICY.attempts - 1
    assert len(clock.slept) == POLICY.attempts - 1
    assert all(
        0 <= d <= min(POLICY.max_delay, POLICY.base_delay * 2**a) for a, d in enumerate(clock.slept, 1)
    )
    cause = info.value.__cause__
    assert isinstance(cause, RetryableAwsError) and isinstance(cause, AwsError)
    assert cause.request_id == f"rid-{POLICY.attempts}" and isinstance(cause.__cause__, ClientError)
    text = str(info.value)
    assert "PutSnapshotBlock snap-1 block 7" in text and f"(request id rid-{POLICY.attempts})" in text
    assert f"gave up after {POLICY.attempts} attempts" in text


def test_not_yet_visible_is_retried_for_a_window_of_time_not_of_attempts() -> None:
    clock = FakeClock()
    calls: list[float] = []

    def missing() -> None:
        calls.append(clock.now())
        raise client_error("ResourceNotFoundException", 404)

    policy = RetryPolicy(attempts=3, base_delay=1.0, max_delay=4.0, not_found_window=60.0)
    with pytest.raises(RetriesExhausted, match="still failing after") as info:
        engine(clock=clock, policy=policy).request("ListSnapshotBlocks", missing, resource="snap-1")
    assert len(calls) > policy.attempts
    assert calls[-1] - calls[0] > 60.0 and calls[-2] - calls[0] <= 60.0
    assert (
        isinstance(info.value.__cause__, AwsError)
        and info.value.__cause__.code == "ResourceNotFoundException"
    )


def test_a_final_error_is_not_retried_and_keeps_its_cause() -> None:
    calls: list[int] = []

    def refused() -> None:
        calls.append(1)
        raise client_error("ValidationException", 400, request_id="rid-final")

    with pytest.raises(AwsError) as info:
        engine().request("PutSnapshotBlock", refused, resource="snap-1 block 2")
    assert len(calls) == 1 and not isinstance(info.value, RetryableAwsError)
    assert isinstance(info.value.__cause__, ClientError)
    assert str(info.value) == (
        "PutSnapshotBlock snap-1 block 2 failed: ValidationException: ValidationException message "
        "(request id rid-final)"
    )


# ---------------------------------------------------------------------------- cancel


def test_cancel_stops_between_results_and_starts_no_request() -> None:
    cancel = threading.Event()
    started: list[int] = []
    lock = threading.Lock()

    def record(i: int) -> int:
        with lock:
            started.append(i)
        time.sleep(0.01)
        return i

    def work(i: int) -> int:
        return eng.request("GetSnapshotBlock", lambda: record(i), resource=f"snap-1 block {i}")

    eng = engine(concurrency=2, window=8, cancel=cancel)
    results = eng.map(range(1000), work, doing="reading the blocks of snap-1")
    assert [next(results) for _ in range(3)] == [0, 1, 2]
    cancel.set()
    with lock:
        before = len(started)
    time.sleep(0.05)  # the caller is busy: queued requests reach the workers meanwhile
    with pytest.raises(Cancelled, match="cancelled while reading the blocks of snap-1"):
        next(results)
    assert len(started) <= before + 2  # at most the 2 workers were past their start: no new one
    assert not [t for t in threading.enumerate() if t.name.startswith("test-transfer")]


def test_cancel_interrupts_a_retry_wait() -> None:
    """Real clock, long back-off: the cancel ends the wait at once."""
    cancel = threading.Event()
    eng = BlockTransfer(
        TransferConfig(concurrency=1),
        name="test-transfer",
        policy=RetryPolicy(attempts=5, base_delay=30.0, max_delay=30.0),
        cancel=cancel,
    )
    threading.Timer(0.05, cancel.set).start()
    began = time.monotonic()

    def always_throttled() -> None:
        raise throttled("PutSnapshotBlock")

    with pytest.raises(Cancelled, match="PutSnapshotBlock snap-1 block 0: cancelled") as info:
        eng.request("PutSnapshotBlock", always_throttled, resource="snap-1 block 0")
    assert time.monotonic() - began < 2.0
    assert isinstance(info.value.__cause__, RetryableAwsError)


# ---------------------------------------------------------------------------- read_ahead


def test_read_ahead_keeps_order_and_hands_over_the_listing_error() -> None:
    def listing() -> Iterator[int]:
        yield from range(50)
        raise RuntimeError("ListChangedBlocks page 2 failed")

    got: list[int] = []
    with pytest.raises(RuntimeError, match="page 2"):
        got.extend(read_ahead(listing(), maxsize=4))
    assert got == list(range(50))


def test_read_ahead_is_bounded() -> None:
    produced = [0]

    def listing() -> Iterator[int]:
        for i in range(10_000):
            produced[0] += 1
            yield i

    it = read_ahead(listing(), maxsize=8)
    assert next(it) == 0
    time.sleep(0.05)
    assert produced[0] <= 8 + 2  # the queue, the item being put, the one handed out
    it.close()


@pytest.mark.parametrize(
    ("knob", "bound"), [("5", 5), ("", TransferConfig.list_ahead), ("x", TransferConfig.list_ahead)]
)
def test_read_ahead_takes_its_default_bound_from_the_list_ahead_knob(
    monkeypatch: pytest.MonkeyPatch, knob: str, bound: int
) -> None:
    """BACULA_EC2_LIST_AHEAD (diagnostics, tests): a small queue makes a stalled consumer
    stall the listing itself; unset or invalid, TransferConfig.list_ahead."""
    monkeypatch.setenv("BACULA_EC2_LIST_AHEAD", knob)
    produced = [0]

    def listing() -> Iterator[int]:
        for i in range(bound + 100):
            produced[0] += 1
            yield i

    it = read_ahead(listing())
    assert next(it) == 0
    deadline = time.monotonic() + 2.0
    while produced[0] < min(bound, 50) and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.05)
    assert produced[0] <= bound + 2
    assert produced[0] >= min(bound, 50)  # it did fill the queue (the default: far past 5)
    it.close()


def test_read_ahead_reports_the_count_when_the_listing_ends_and_not_when_closed_early() -> None:
    seen: list[int] = []
    got = []
    for item in read_ahead(iter(range(7)), maxsize=2, on_done=seen.append):
        got.append(item)
    assert got == list(range(7)) and seen == [7]
    early: list[int] = []
    gen = read_ahead(iter(range(1000)), maxsize=2, on_done=early.append)
    assert next(gen) == 0
    gen.close()
    assert early == []
