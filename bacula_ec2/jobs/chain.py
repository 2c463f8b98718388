"""Backup chains: which snapshot an Incremental/Differential compares with, and which
snapshots a job keeps (product.md §3, docs/SNAPSHOTS.md). Pure functions, no AWS calls.

The rules that keep a chain from losing blocks:
- only committed (`state=base`) snapshots of the same Bacula Job and volume are candidates;
- the base is the snapshot of the reference job Bacula names (`PrevJobName`: the last
  backup for an Incremental, the last Full for a Differential);
- if that snapshot is gone, there is no base: an older snapshot would not do, since the
  changes against it are *not* a superset of the changes against the reference (a block
  changed after the older snapshot and changed back is in neither listing), and a restore
  merges the part over the reference job's part (restore_local.chain_order requires each
  part's base to be the snapshot of the part before it);
- with no candidate at all, the job reads every allocated block (and says so).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from ..aws.model import Snapshot

TAG = "bacula-ec2:"
STATE_TAG = TAG + "state"
PENDING = "pending"
BASE = "base"

_UNIQUE_SUFFIX = re.compile(r"\.\d{4}-\d{2}-\d{2}_\d{2}\.\d{2}\.\d{2}_\d+$")


def job_resource(job_name: str) -> str:
    """`backup-web.2026-11-26_16.01.42_33` -> `backup-web` (the Job resource's name)."""
    return _UNIQUE_SUFFIX.sub("", job_name)


@dataclass(frozen=True)
class Kept:
    """A committed snapshot of a chain, as its tags describe it."""

    snapshot_id: str
    volume_id: str
    start: dt.datetime
    level: str
    job: str  # Job resource name
    job_name: str  # unique job name
    position: int

    @classmethod
    def from_snapshot(cls, snap: Snapshot) -> Kept:
        tags = snap.tags
        start = snap.start_time or dt.datetime.fromtimestamp(0, dt.UTC)
        try:
            position = int(tags.get(TAG + "position", "0"))
        except ValueError:
            position = 0
        return cls(
            snapshot_id=snap.snapshot_id,
            volume_id=snap.volume_id,
            start=start,
            level=tags.get(TAG + "level", "F"),
            job=tags.get(TAG + "job", ""),
            job_name=tags.get(TAG + "jobname", ""),
            position=position,
        )


@dataclass(frozen=True)
class BaseChoice:
    base: Kept | None
    note: str | None = None  # for the job log
    warn: bool = False  # the note is a warning (the job reads everything)


def committed(snaps: list[Snapshot], job: str, volume_id: str) -> list[Kept]:
    """Committed snapshots of one chain (Job resource + volume), oldest first."""
    kept = []
    for snap in snaps:
        if snap.tags.get(STATE_TAG) != BASE or snap.tags.get(TAG + "job") != job:
            continue
        if snap.volume_id != volume_id or (snap.state or "completed") != "completed":
            continue
        kept.append(Kept.from_snapshot(snap))
    return sorted(kept, key=lambda k: k.start)


def choose_base(level: str, volume_id: str, kept: list[Kept], reference_job: str | None) -> BaseChoice:
    if level == "F":
        return BaseChoice(None)
    what = "Incremental" if level == "I" else "Differential"
    exact = [k for k in kept if reference_job and k.job_name == reference_job]
    if level == "D":
        exact = [k for k in exact if k.level == "F"]
    if exact:
        base = exact[-1]
        return BaseChoice(
            base, f"{what} of {volume_id}: changes since snapshot {base.snapshot_id} of {base.job_name}"
        )
    hint = " (keep_full_snapshot=yes keeps the Full's snapshot for Differentials)" if level == "D" else ""
    return BaseChoice(
        None,
        f"{what} of {volume_id}: the snapshot of {reference_job or 'the reference backup'} is not "
        f"left to compare with{hint}; backing up every allocated block (the part restores on its own)",
        warn=True,
    )


def to_delete(level: str, own: str, kept: list[Kept], keep_full: bool, base: str | None = None) -> list[str]:
    """After a job is confirmed: the chain's snapshots it retires (docs/SNAPSHOTS.md).

    `kept` is the chain (committed snapshots of this Job and volume, oldest first), `base`
    the snapshot this job compared with. Only snapshots older than the job's own are
    candidates (a newer one belongs to a job that ran at the same time, and is its business).
    Full and Incremental keep their own and retire every older one, except, for an
    Incremental with keep_full_snapshot, the Full's its chain descends from (the newest Full
    not newer than its base). A Differential keeps its own (the next Incremental's
    reference: an Incremental after it must compare with exactly this snapshot, see the
    module's docstring) and its base (the Full's, for the next Differential), and retires
    the other older ones. So what a job that Bacula never confirmed left committed is
    retired by the next confirmed job.
    """
    mine = next((k for k in kept if k.snapshot_id == own), None)
    older = [k for k in kept if mine is not None and k.snapshot_id != own and k.start < mine.start]
    if level == "D":
        return [k.snapshot_id for k in older if k.snapshot_id != base]
    if level == "I" and keep_full:
        fulls = [k for k in older if k.level == "F"]
        anchor = next((k for k in older if k.snapshot_id == base), None)
        if anchor is not None:
            fulls = [k for k in fulls if k.start <= anchor.start]
        spare = fulls[-1].snapshot_id if fulls else None
        return [k.snapshot_id for k in older if k.snapshot_id != spare]
    return [k.snapshot_id for k in older]
