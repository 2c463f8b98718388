"""Progress (bacula_ec2/jobs/progress.py and bacula_ec2/console.py) with a fake clock: rate,
time left, the live and job-log throttles, the words; then through a backup (FakeAws) and a
local restore, where the tracker must see the volume's whole listing as its total."""

from __future__ import annotations

import io
import itertools
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bacula_ec2.console import REDRAW_EVERY, Console
from bacula_ec2.formats.blockimage import BLOCK_SIZE
from bacula_ec2.jobs import progress
from bacula_ec2.jobs.progress import (
    LIVE_EVERY,
    MIB,
    RATE_WINDOW,
    Progress,
    Tracker,
    clock_time,
    duration,
    live_line,
    log_interval,
    log_line,
    summary_line,
)
from devkit.fake_aws import FakeAws
from devkit.jobkit import Director

from .restore_local_kit import ONE, TWO, feed_like_bec2, new_restore

EPS = 1e-9  # the fake clock adds floats


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def tracker(total: int | None, *, log_every: float = 60.0) -> tuple[Tracker, Clock, list[Progress]]:
    clock = Clock()
    seen: list[Progress] = []
    return Tracker("vol-1", "backed up", total, seen.append, clock=clock, log_every=log_every), clock, seen


# ---------------------------------------------------------------------------- rate and ETA


def test_a_steady_transfer_has_its_rate_percent_and_time_left() -> None:
    t, clock, seen = tracker(100 * MIB)
    for _ in range(40):  # 40 s at 1 MiB/s, in steps of 0.5 s
        clock.t += 0.5
        t.add(MIB // 2)
    last = seen[-1]
    assert last.done == 20 * MIB and last.total == 100 * MIB
    assert last.rate == pytest.approx(MIB)
    assert last.percent == pytest.approx(20.0)
    assert last.eta == pytest.approx(80.0)
    assert last.elapsed == pytest.approx(20.0)


def test_the_rate_follows_the_last_seconds_not_the_average() -> None:
    t, clock, seen = tracker(1000 * MIB)
    for _ in range(60):  # 30 s at 10 MiB/s
        clock.t += 0.5
        t.add(5 * MIB)
    for _ in range(60):  # then 30 s at 1 MiB/s
        clock.t += 0.5
        t.add(MIB // 2)
    last = seen[-1]
    average = last.done / last.elapsed
    assert average == pytest.approx(5.5 * MIB)
    assert last.rate == pytest.approx(MIB, rel=0.06)  # measured over RATE_WINDOW s
    assert last.eta == pytest.approx((1000 - 330) * MIB / last.rate)
    assert RATE_WINDOW <= 30


def test_a_stalled_transfer_does_not_promise_a_time() -> None:
    t, clock, seen = tracker(100 * MIB)
    clock.t += 1
    t.add(10 * MIB)
    clock.t += RATE_WINDOW + 5  # nothing for longer than the rate window
    t.add(0)
    assert seen[-1].rate == 0 and seen[-1].eta is None
    assert "time left not known yet" in log_line(seen[-1]) and "ETA ?" in live_line(seen[-1])


def test_an_unknown_total_or_one_passed_shows_no_percent() -> None:
    t, clock, seen = tracker(None)
    clock.t += 1
    t.add(MIB)
    assert seen[-1].percent is None and seen[-1].eta is None
    assert "%" not in log_line(seen[-1]) and "ETA" not in live_line(seen[-1])
    t2, clock2, seen2 = tracker(MIB)
    clock2.t += 1
    t2.add(2 * MIB)  # the hint was wrong: never more than 100 %
    assert seen2[-1].total is None and seen2[-1].percent is None


def test_an_empty_volume_is_done_at_once() -> None:
    t, _clock, seen = tracker(0)
    summary = t.finish()
    assert seen == [summary] and summary.final and summary.percent == 100.0 and summary.eta == 0.0


# ---------------------------------------------------------------------------- throttles


@settings(max_examples=60, deadline=None)
@given(
    steps=st.lists(
        st.tuples(st.floats(min_value=0.0, max_value=3.0), st.integers(min_value=0, max_value=BLOCK_SIZE)),
        min_size=1,
        max_size=300,
    ),
    log_every=st.floats(min_value=0.5, max_value=20.0),
)
def test_updates_are_throttled_and_the_summary_comes_once(
    steps: list[tuple[float, int]], log_every: float
) -> None:
    t, clock, seen = tracker(sum(n for _, n in steps), log_every=log_every)
    start = clock.t
    ticks: list[float] = []
    for dt, n in steps:
        clock.t += dt
        before = len(seen)
        t.add(n)
        if len(seen) > before:
            ticks.append(clock.t)
    assert len(ticks) == len(seen)
    assert all(b - a >= LIVE_EVERY - EPS for a, b in itertools.pairwise(ticks))
    logged = [tick for tick, p in zip(ticks, seen, strict=True) if p.log]
    assert all(b - a >= log_every - EPS for a, b in itertools.pairwise(logged))
    if logged:
        assert logged[0] - start >= log_every - EPS
    # a job-log line is due at most log_every + the gap of one step after the previous one
    elapsed = clock.t - start
    worst_gap = max(dt for dt, _ in steps) + LIVE_EVERY
    assert len(logged) >= int(elapsed // (log_every + worst_gap)) - 1
    assert all(0 <= (p.percent or 0) <= 100 and not p.final for p in seen)
    summary = t.finish()
    t.finish()
    t.add(1)
    clock.t += 100
    t.add(1)
    assert [p for p in seen if p.final] == [summary]
    assert seen[-1] is summary


def test_per_block_adds_between_ticks_emit_nothing() -> None:
    """The hot path: thousands of blocks within one live interval cost no update."""
    t, clock, seen = tracker(10_000 * BLOCK_SIZE)
    clock.t += LIVE_EVERY
    for _ in range(5000):
        t.add(BLOCK_SIZE)
        clock.t += LIVE_EVERY / 10_000
    assert len(seen) == 1
    assert t.done == 5000 * BLOCK_SIZE


@pytest.mark.parametrize(
    ("value", "want"),
    [("", 60.0), ("2.5", 2.5), ("0", 60.0), ("-3", 60.0), ("nan", 60.0), ("inf", 60.0), ("x", 60.0)],
)
def test_the_job_log_interval_comes_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, value: str, want: float
) -> None:
    monkeypatch.setenv(progress.LOG_EVERY_ENV, value)
    assert log_interval() == want
    clock = Clock()
    seen: list[Progress] = []
    t = Tracker("v", "read", 10, seen.append, clock=clock)
    clock.t += want - 0.01
    t.add(1)
    assert not any(p.log for p in seen)
    clock.t += LIVE_EVERY  # the next tick (a job-log line comes with a live tick)
    t.add(1)
    assert seen[-1].log


# ---------------------------------------------------------------------------- words


def test_the_words_of_the_three_lines() -> None:
    p = Progress("vol-1", "backed up", 306 * MIB, 680 * MIB, 32.6, 9.4 * MIB)
    assert log_line(p) == "volume vol-1: 45% backed up (306.0 MiB of 680.0 MiB), 9.4 MiB/s, about 40 s left"
    assert live_line(p) == "vol-1 backed up   45%  306.0 MiB / 680.0 MiB  9.4 MiB/s  ETA 0:40"
    s = Progress.summary("vol-1", "backed up", 680 * MIB, 72.3)
    assert summary_line(s) == "vol-1: 680.0 MiB backed up in 1 min 12 s (9.4 MiB/s)"
    big = Progress("vol-2", "uploaded", 20 << 30, 100 << 30, 10.0, 200 * MIB)
    assert "20.00 GiB of 100.00 GiB" in log_line(big) and "about 6 min 50 s left" in log_line(big)
    assert [duration(x) for x in (0.04, 7.25, 40, 200, 7500)] == [
        "0.0 s",
        "7.2 s",
        "40 s",
        "3 min 20 s",
        "2 h 05 min",
    ]
    assert [clock_time(x) for x in (40, 200, 7500)] == ["0:40", "3:20", "2:05:00"]


# ---------------------------------------------------------------------------- the console


def console(live: bool, summaries: bool = True, width: int = 200) -> tuple[Console, io.StringIO, Clock]:
    out, clock = io.StringIO(), Clock()
    return Console(out, live=live, summaries=summaries, clock=clock, width=lambda: width), out, clock


def test_on_a_terminal_the_line_is_redrawn_then_replaced_by_the_summary() -> None:
    c, out, clock = console(live=True)
    p = Progress("vol-1", "backed up", 306 * MIB, 680 * MIB, 32.6, 9.4 * MIB)
    c.progress(p)
    c.progress(p)  # too soon: not drawn again
    clock.t += REDRAW_EVERY
    c.progress(p)
    c.progress(Progress.summary("vol-1", "backed up", 680 * MIB, 72.3))
    text = out.getvalue()
    line = "\rbec2: " + live_line(p) + "\033[K"
    assert text == line + line + "\r\033[K" + "bec2: vol-1: 680.0 MiB backed up in 1 min 12 s (9.4 MiB/s)\n"


def test_a_message_erases_the_live_line_first_and_a_long_line_is_cut() -> None:
    c, out, _clock = console(live=True, width=40)
    c.progress(Progress("vol-0123456789abcdef0", "backed up", MIB, 2 * MIB, 1.0, MIB))
    c.message("warning: something")
    first, rest = out.getvalue().split("\033[K", 1)
    assert len(first) == 1 + 39 and first.endswith("…")  # \r + the line, never the last column
    assert rest == "\r\033[Kbec2: warning: something\n"
    c.message("again")
    assert out.getvalue().endswith("\nbec2: again\n")  # nothing to erase any more


def test_without_a_terminal_only_summaries_and_quiet_nothing() -> None:
    c, out, _clock = console(live=False)
    c.progress(Progress("vol-1", "backed up", MIB, 2 * MIB, 1.0, MIB))
    c.progress(Progress.summary("vol-1", "backed up", 2 * MIB, 2.0))
    assert out.getvalue() == "bec2: vol-1: 2.0 MiB backed up in 2.0 s (1.0 MiB/s)\n"
    q, qout, _ = console(live=False, summaries=False)
    q.progress(Progress("vol-1", "backed up", MIB, 2 * MIB, 1.0, MIB))
    q.progress(Progress.summary("vol-1", "backed up", 2 * MIB, 2.0))
    assert qout.getvalue() == ""


# ---------------------------------------------------------------------------- through the jobs


def test_a_backup_tracks_each_volume_against_its_listing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(progress, "LIVE_EVERY", 0.0)
    aws = FakeAws()
    inst = aws.add_instance("web-1", devices=[("/dev/xvda", 1), ("/dev/xvdb", 1)])
    vids = [aws.volume_of(inst.instance_id, d) for d in ("/dev/xvda", "/dev/xvdb")]
    written = {vids[0]: [0, 5, 7, 100], vids[1]: [3]}
    for vid, blocks in written.items():
        for i in blocks:
            aws.write(vid, i, i + 1)
    d = Director(aws, [("instances", "web-1")])
    full = d.backup("F")
    aws.write(vids[0], 9, 1)
    aws.write(vids[0], 5, 2)
    incr = d.backup("I")
    # A Full counts its listing beside the read (in a thread of its own: the first block does
    # not wait for the count), its total known once the count (or the read's own listing)
    # has ended; an Incremental lists once (ListChangedBlocks pages follow the volume's
    # size), its total known once that listing has ended. Either way a total, once known,
    # is the exact one and stays.
    for run, want, counted in (
        (full, {v: len(b) for v, b in written.items()}, True),
        (incr, {vids[0]: 2, vids[1]: 0}, False),
    ):
        finals = {p.label: p for p in run.reporter.updates if p.final}
        assert set(finals) == set(want)
        for vid, blocks in want.items():
            assert finals[vid].done == blocks * BLOCK_SIZE
            live = [p for p in run.reporter.updates if p.label == vid and not p.final]
            assert all(p.total in (None, blocks * BLOCK_SIZE) for p in live), live
            assert all(p.total is None or p.done <= p.total for p in live)
            known = [p.total is not None for p in live]
            assert known == sorted(known), live  # unknown, then known for good
        said = [t for t in run.reporter.texts("I") if "to read from" in t]
        assert len(said) == (len(want) if counted else 0), said
        for vid, blocks in want.items() if counted else ():
            assert f"volume {vid}: {blocks} block(s) to read from snap-" in " ".join(said), said


def test_a_local_restore_tracks_each_part_and_sums_up_each_volume(tmp_path: Path) -> None:
    r, rec = new_restore(tmp_path / "r")
    parts = TWO.parts
    try:
        for part in parts:
            assert r.start(part.name, size=len(part.data))
            for pos in range(0, len(part.data), 1000):
                r.data(memoryview(part.data[pos : pos + 1000]))
            r.end()
        r.finish()
    finally:
        r.close()
    [final] = [p for p in rec.updates if p.final]
    assert final.label == "vol-0aaa" and final.verb == "restored"
    assert final.done == sum(len(p.data) for p in parts)
    for p in rec.updates:
        if not p.final:
            assert p.label in ("vol-0aaa (Full job 1)", "vol-0aaa (Incremental job 2)")
            assert p.total is not None and p.done <= p.total


def test_a_failed_restore_sums_up_nothing(tmp_path: Path) -> None:
    part = ONE.parts[0]
    broken = part.data[:-1] + bytes([part.data[-1] ^ 1])
    assert feed_like_bec2(tmp_path / "ok", [(part.name, part.data)]) is None
    r, rec = new_restore(tmp_path / "bad")
    with pytest.raises(Exception, match="vol-0aaa"):
        r.start(part.name, size=len(broken))
        r.data(memoryview(broken))
        r.end()
    r.close()
    assert not [p for p in rec.updates if p.final]
