"""bec2's restore selection, property-tested against a model of a volume's history.

Random sequences of backups (any level, the volume sometimes excluded, keep_full_snapshot
either way) are run through the real base choice and retention (`jobs/chain.py`) and the
real reference and restore selection (`jobs/folder.py`); at every point in time the
selected chain, applied part after part, must give exactly the volume's state at the
newest backup before that time, pass the restore's gap check, and, where Bacula's own
job selection applies (every backup holds the volume and found its base), pick exactly
the jobs Bacula's SQL picks (dird/ua_restore.c: last Full before the time, last
Differential after it, Incrementals after that).
"""

from __future__ import annotations

import datetime as dt
import itertools
from dataclasses import dataclass, field

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from bacula_ec2.cli import _unique_name
from bacula_ec2.jobs import chain
from bacula_ec2.jobs.folder import (
    COMPLETE,
    Backup,
    Folder,
    FolderError,
    StoredFile,
    StoredVolume,
    iso,
    plan_restore,
    reference_backup,
)

FOLDER = Folder("/nowhere", "0123456789abcdef", "")
JOB = FOLDER.default_job
VID = "vol-0a"
T0 = 1_800_000_000.0
STEP, SNAP = 0.25, 0.05  # seconds between backups; from a backup's start to its snapshot


@dataclass
class History:
    keep_full: bool
    backups: list[Backup] = field(default_factory=list)
    state: dict[int, int] = field(default_factory=dict)  # block -> version
    written_at: dict[int, int] = field(default_factory=dict)  # block -> step of the last write
    kept: list[chain.Kept] = field(default_factory=list)  # committed snapshots of the chain
    content: dict[str, dict[int, int]] = field(default_factory=dict)  # snapshot -> blocks it stored
    state_at: dict[int, dict[int, int]] = field(default_factory=dict)  # job id -> volume state
    step_of: dict[str, int] = field(default_factory=dict)  # snapshot -> step

    def backup(self, step: int, level: str, include: bool, writes: list[int]) -> None:
        for block in writes:
            self.state[block] = self.state.get(block, 0) + 1
            self.written_at[block] = step
        started = T0 + STEP * step  # several backups a second: Since= rounding matters
        ref = reference_backup(self.backups, level, JOB) if level != "F" else None
        if ref is None:
            level = "F"
        job_id = step + 1
        name = _unique_name(JOB, started, job_id)
        volumes: tuple[StoredVolume, ...] = ()
        files: tuple[StoredFile, ...] = ()
        if include:
            choice = chain.choose_base(level, VID, self.kept, ref.job_name if ref else None)
            base = choice.base
            # The base is the reference's own snapshot when it is left, else none (an older
            # snapshot's changes are no superset of the reference's: docs/SNAPSHOTS.md).
            ref_kept = [k for k in self.kept if ref is not None and k.job_name == ref.job_name]
            if level == "I" and ref_kept:
                assert base is not None and base.snapshot_id == ref_kept[-1].snapshot_id, (base, ref_kept)
            elif level == "I":
                assert base is None, base
            sid = f"snap-{step}"
            if base is None:
                self.content[sid] = dict(self.state)
            else:
                since_step = self.step_of[base.snapshot_id]
                self.content[sid] = {b: v for b, v in self.state.items() if self.written_at[b] > since_step}
            self.step_of[sid] = step
            start = dt.datetime.fromtimestamp(started + SNAP, dt.UTC)
            image = f"/@amazon-ec2/i-1/{VID}-sda1-1G{'' if level == 'F' else f'.{level}{job_id}'}.bimg"
            volumes = (
                StoredVolume(
                    VID, "i-1", "i-1", "/dev/sda1", 1 << 30, sid, iso(started + SNAP),
                    base.snapshot_id if base else None, iso(base.start.timestamp()) if base else None,
                    base.position + 1 if base else 0, image,
                ),
            )  # fmt: skip
            files = (StoredFile(image, 1, "0" * 64, int(started)),)
            own = chain.Kept(sid, VID, start, level, JOB, name, volumes[0].chain_position)
            self.kept.append(own)
            gone = chain.to_delete(level, sid, self.kept, self.keep_full, base.snapshot_id if base else None)
            self.kept = [k for k in self.kept if k.snapshot_id not in gone]
        self.backups.append(
            Backup(
                f"x-{level}-{job_id}", f"/nowhere/{job_id}", COMPLETE, job_id=job_id, level=level,
                started=started, finished=started + 2 * SNAP, job=JOB, job_name=name, instances=("i-1",),
                volumes=volumes, files=files,
            )
        )  # fmt: skip
        self.state_at[job_id] = dict(self.state)


def bacula_selection(backups: list[Backup], before: float) -> list[int]:
    """uar_last_full, uar_dif, uar_inc: by job, StartTime < before."""
    usable = [b for b in backups if (b.started or 0) < before]
    fulls = [b for b in usable if b.level == "F"]
    if not fulls:
        return []
    full = fulls[-1]
    diffs = [b for b in usable if b.level == "D" and (b.started or 0) > (full.started or 0)]
    after = diffs[-1] if diffs else full
    incs = [b for b in usable if b.level == "I" and (b.started or 0) > (after.started or 0)]
    return [b.job_id or 0 for b in [full, *diffs[-1:], *incs]]


steps = st.lists(
    st.tuples(
        st.sampled_from("FIIID"),
        st.sampled_from([True, True, False]),
        st.lists(st.integers(0, 15), max_size=4),
    ),
    min_size=1,
    max_size=12,
)


@settings(max_examples=300, deadline=None)
@given(steps=steps, keep_full=st.booleans())
@example(  # the Differential's Full did not hold the volume: its base is the Incremental before
    steps=[("F", True, [1]), ("I", True, [2]), ("F", False, [3]), ("D", True, [4]), ("I", True, [5])],
    keep_full=False,
)
def test_every_point_restores_the_state_of_its_newest_backup(
    steps: list[tuple[str, bool, list[int]]], keep_full: bool
) -> None:
    h = History(keep_full)
    for n, (level, include, writes) in enumerate(steps):
        h.backup(n, level, include, writes)
    with pytest.raises(FolderError, match="started before"):
        plan_restore(FOLDER, h.backups, T0 - 1)
    for n in range(len(steps)):
        before = T0 + STEP * n + 3 * SNAP
        holding = [b for b in h.backups[: n + 1] if b.volumes]
        if not holding:
            with pytest.raises(FolderError, match="no disk image"):
                plan_restore(FOLDER, h.backups, before)
            continue
        plan = plan_restore(FOLDER, h.backups, before)
        parts = plan.chains[VID]
        assert parts[-1][0] is holding[-1], "the newest backup holding the volume ends the chain"
        assert parts[0][1].starts_chain
        result: dict[int, int] = {}
        for (_pb, prev), (_b, part) in itertools.pairwise(parts):
            assert part.base_created is not None and part.base_created <= prev.created, "a gap"
        for _b, part in parts:
            result.update(h.content[part.snapshot_id])
        assert result == h.state_at[holding[-1].job_id or 0], f"point {n + 1}"
        assert [i.backup.job_id for i in plan.items] == [b.job_id for b, _v in parts]
        if all(b.volumes and (b.level == "F" or b.volumes[0].base_snapshot_id) for b in h.backups[: n + 1]):
            assert [b.job_id for b, _v in parts] == bacula_selection(h.backups, before)


@given(
    job=st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.:+=@/-]{0,99}", fullmatch=True),
    when=st.floats(0, 4_000_000_000),
    number=st.integers(1, 10**9),
)
def test_unique_job_names_map_back_to_their_chain(job: str, when: float, number: int) -> None:
    name = _unique_name(job, when, number)
    assert chain.job_resource(name) == job
    assert name != job


def test_folder_chain_names_map_back() -> None:
    assert chain.job_resource(_unique_name(JOB, T0, 7)) == JOB == "bec2-0123456789abcdef"
