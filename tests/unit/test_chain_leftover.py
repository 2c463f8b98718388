"""Snapshots committed by a job Bacula never confirmed (the backend commits before its final
F, so a job that fails afterwards, with the backend killed before it can roll back, leaves
`base` snapshots): they can never make an Incremental or Differential miss a block, and the
next confirmed job retires them (docs/SNAPSHOTS.md, "Commit or roll back")."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from bacula_ec2.jobs.chain import Kept, choose_base, to_delete

BLOCKS = 6


def at(t: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(1_800_000_000 + t, dt.UTC)


@dataclass
class Run:
    name: str
    level: str
    start: int  # job start (Bacula's Since for the jobs that reference it)
    snap: int  # snapshot time, after the start
    confirmed: bool

    def kept(self) -> Kept:
        return Kept(f"snap-{self.name}", "vol-1", at(self.snap), self.level, "web", self.name, 0)


@st.composite
def histories(draw: st.DrawFn) -> tuple[list[tuple[int, int]], list[Run], Run, str, list[bool]]:
    """Writes (time, block) and jobs, some confirmed, some leaving committed snapshots."""
    t = 0
    writes: list[tuple[int, int]] = []
    runs: list[Run] = []
    steps = draw(
        st.lists(
            st.one_of(st.integers(0, BLOCKS - 1), st.sampled_from(["F", "I", "D", "xF", "xI", "xD"])),
            min_size=1,
            max_size=30,
        )
    )
    for step in [*steps, "F"] if "F" not in steps else steps:
        t += 1
        if isinstance(step, int):
            writes.append((t, step))
            continue
        start = t
        t += draw(st.integers(1, 3))  # writes may land between a job's start and its snapshot
        if draw(st.booleans()):
            t_mid = start + 1
            if t_mid < t:
                writes.append((t_mid, draw(st.integers(0, BLOCKS - 1))))
        runs.append(Run(f"job{len(runs)}", step[-1], start, t, not step.startswith("x")))
    t += 1
    level = draw(st.sampled_from(["I", "D"]))
    new = Run("new", level, t, t + 1, True)
    writes.append((t, draw(st.integers(0, BLOCKS - 1))))
    ok = [r for r in runs if r.confirmed]
    pool = ok if level == "I" else [r for r in ok if r.level == "F"]
    ref = pool[-1].name if pool else ""
    present = draw(st.lists(st.booleans(), min_size=len(runs), max_size=len(runs)))
    return writes, runs, new, ref, present


def state(writes: list[tuple[int, int]], t: int) -> dict[int, int]:
    """Block -> time of its last write before the snapshot at `t`."""
    out = dict.fromkeys(range(BLOCKS), 0)
    for when, blk in writes:
        if when < t:
            out[blk] = when
    return out


@settings(max_examples=400, deadline=None)
@given(histories())
def test_a_leftover_base_never_loses_a_block(history: tuple[list[tuple[int, int]], list[Run], Run, str, list[bool]]) -> None:  # noqa: E501
    writes, runs, new, ref_name, present = history
    if not ref_name:
        return  # Bacula upgrades the job to a Full
    ref = next(r for r in runs if r.name == ref_name)
    kept = sorted((r.kept() for r, p in zip(runs, present, strict=True) if p), key=lambda k: k.start)
    choice = choose_base(new.level, "vol-1", kept, ref.name)
    base = choice.base
    if base is not None:
        # Either the reference job's own snapshot, or one not newer than its start: never a
        # leftover taken after the reference (whose blocks the restore chain does not hold).
        assert base.job_name == ref.name or base.start <= at(ref.start), (base, ref)
        if base.job_name == ref.name and new.level == "D":
            assert base.level == "F"
    # The restore: the reference chain gives the disk as of the reference's snapshot; the new
    # job's part overwrites every block written since its base (all of them without one).
    t_base = next(r.snap for r in runs if base is not None and r.name == base.job_name) if base else 0
    changed = {blk for when, blk in writes if t_base <= when < new.snap} if base else set(range(BLOCKS))
    restored = state(writes, ref.snap)
    now = state(writes, new.snap)
    for blk in changed:
        restored[blk] = now[blk]
    assert restored == now


def kept(name: str, level: str, t: int) -> Kept:
    return Kept(f"snap-{name}", "vol-1", at(t), level, "web", name, 0)


def test_full_and_incremental_retire_every_leftover() -> None:
    f1, x1, i2, x2 = kept("f1", "F", 1), kept("x1", "I", 2), kept("i2", "I", 3), kept("x2", "F", 4)
    chain = [f1, x1, i2, x2]
    assert to_delete("F", "snap-x2", chain, keep_full=False) == ["snap-f1", "snap-x1", "snap-i2"]
    i3 = kept("i3", "I", 5)
    chain = [f1, x1, i2, x2, i3]
    assert to_delete("I", "snap-i3", chain, keep_full=False, base="snap-i2") == [
        "snap-f1", "snap-x1", "snap-i2", "snap-x2"
    ]
    # keep_full_snapshot: the Full its chain descends from stays, not a newer leftover Full.
    for base in ("snap-i2", "snap-f1"):
        gone = to_delete("I", "snap-i3", chain, keep_full=True, base=base)
        assert gone == ["snap-x1", "snap-i2", "snap-x2"]
    # No base (the chain had none left): the newest Full stays, as before.
    assert to_delete("I", "snap-i3", chain, keep_full=True) == ["snap-f1", "snap-x1", "snap-i2"]


def test_differential_keeps_its_base_and_the_next_incrementals_base() -> None:
    f1, x1, i2, x2, d3 = (kept("f1", "F", 1), kept("x1", "I", 2), kept("i2", "I", 3), kept("x2", "F", 2),
                          kept("d3", "D", 6))
    chain = sorted([f1, x1, i2, x2, d3], key=lambda k: k.start)
    # Its own (the next Incremental's reference) and its base (the Full) stay; the others go.
    assert sorted(to_delete("D", "snap-d3", chain, keep_full=True, base="snap-f1")) == sorted(
        ["snap-x1", "snap-i2", "snap-x2"]
    )
    # Without a base (keep_full_snapshot=no): only its own stays.
    assert sorted(to_delete("D", "snap-d3", [i2, d3], keep_full=False)) == ["snap-i2"]


def test_a_newer_snapshot_of_a_concurrent_job_is_never_retired() -> None:
    f1, f2, f3 = kept("f1", "F", 1), kept("f2", "F", 2), kept("f3", "F", 3)
    chain = [f1, f2, f3]  # f2's job is confirmed while f3's, which started later, still runs
    assert to_delete("F", "snap-f2", chain, keep_full=False) == ["snap-f1"]
    assert to_delete("I", "snap-f2", chain, keep_full=True, base="snap-f1") == []
    assert to_delete("D", "snap-f2", chain, keep_full=False, base="snap-f1") == []
    # Its own snapshot not (yet) visible in the listing: nothing else is touched.
    assert to_delete("F", "snap-f9", chain, keep_full=False) == []
    assert to_delete("D", "snap-f9", chain, keep_full=False) == []
