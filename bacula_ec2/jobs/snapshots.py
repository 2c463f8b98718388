"""The life of the snapshots a job creates, told by their tags (docs/SNAPSHOTS.md).

A snapshot is created with `bacula-ec2:state=pending`, its job's identity, its owner process
and a lease (`lease.py`) that a daemon thread renews while the job runs. It becomes `base`
(`commit`) only once every block of the job has been handed over (the backend commits just
before the final F of its item stream, so that a commit failure can still fail the job), and
the chain's older snapshots are retired only once Bacula has confirmed the job (`retire`, at
END). A failed or cancelled job deletes its own snapshots at once; a killed one leaves
`pending` snapshots that a later job on the same volumes removes once their owner is
provably gone (dead process on this host, or expired lease).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from .. import naming
from ..aws import Aws, AwsError
from ..aws.model import Snapshot
from . import chain
from .chain import BASE, PENDING, STATE_TAG, TAG, Kept
from .context import JobContext
from .lease import LEASE_TAG, OWNER_TAG, LeaseKeeper, Owner, judge, lease_until, this_process
from .selection import InstanceTarget

log = logging.getLogger("bacula-ec2.snapshots")

_OWNER: Owner | None = None


def owner() -> Owner:
    """This process, as the `bacula-ec2:owner` tag names it (computed once)."""
    global _OWNER
    if _OWNER is None:
        _OWNER = this_process()
    return _OWNER


def job_tags(ctx: JobContext, instance_id: str) -> dict[str, str]:
    tags = dict(ctx.params.snapshot_tags)
    tags.update(
        {
            TAG + "job": chain.job_resource(ctx.job_name),
            TAG + "jobname": ctx.job_name,
            TAG + "jobid": str(ctx.job_id),
            TAG + "level": ctx.level,
            TAG + "instance": instance_id,
            STATE_TAG: PENDING,
            OWNER_TAG: owner().tag(),
            LEASE_TAG: lease_until(),
        }
    )
    return tags


@dataclass
class SnapshotLedger:
    """Every snapshot this job created, so it can commit or roll back exactly those."""

    aws: Aws
    ctx: JobContext
    created: list[str] = field(default_factory=list)
    volume_of: dict[str, str] = field(default_factory=dict)
    committed: bool = False
    keeper: LeaseKeeper | None = None

    @property
    def job(self) -> str:
        return chain.job_resource(self.ctx.job_name)

    def _is_this_job(self, tags: dict[str, str]) -> bool:
        job = (tags.get(TAG + "jobname"), tags.get(TAG + "jobid"))
        return job == (self.ctx.job_name, str(self.ctx.job_id))

    def this_jobs_snapshots(self) -> list[tuple[str, str, str]]:
        """(snapshot, volume, instance) of the snapshots another Plugin line of this very job
        (same unique job name and job id) took: committed ones, or pending ones whose owner
        is still alive. Each line of a FileSet runs its own backend, one after the other
        (metaplugin §2.3), and a backend commits before its final F, so a finished line's
        snapshots are `base`; a pending one whose owner is gone is a leftover (step 3)."""
        snaps = self.aws.describe_snapshots(
            tags={TAG + "jobname": self.ctx.job_name, TAG + "jobid": str(self.ctx.job_id)}
        )
        found = []
        me = owner()
        for snap in snaps:
            sid, vid, tags = snap.snapshot_id, snap.volume_id, snap.tags
            if sid in self.created or not self._is_this_job(tags) or snap.state == "error":
                continue
            state = tags.get(STATE_TAG)
            if state == BASE or (state == PENDING and not judge(tags, snap.start_time, me).stale):
                found.append((sid, vid, tags.get(TAG + "instance", "")))
        return found

    def clean_stale(self, targets: list[InstanceTarget]) -> int:
        """Step 3: remove `pending` leftovers of jobs that are provably over, on these volumes.

        Never a snapshot of a live job: one whose owner process on this host still runs, or
        whose lease has not expired (docs/SNAPSHOTS.md, "Concurrent jobs").
        """
        volume_ids = [v.volume_id for t in targets for v in t.volumes]
        if not volume_ids:
            return 0
        pending = self.aws.describe_snapshots(tags={STATE_TAG: PENDING}, volume_ids=volume_ids)
        removed = 0
        me = owner()
        for snap in pending:
            sid, vid, tags = snap.snapshot_id, snap.volume_id, snap.tags
            if sid in self.created:
                continue
            job = tags.get(TAG + "jobname") or "an unknown job"
            verdict = judge(tags, snap.start_time, me)
            if not verdict.stale:
                self.ctx.reporter.info(
                    f"snapshot {sid} of volume {vid} is still pending for {job}: left alone, {verdict.why}"
                )
                continue
            self.aws.delete_snapshot(sid)
            removed += 1
            self.ctx.reporter.info(
                f"removed snapshot {sid} of volume {vid} left by {job}, which did not finish ({verdict.why})"
            )
        return removed

    def _start_lease(self) -> None:
        if self.keeper is None:
            self.keeper = LeaseKeeper(
                self.aws.tag, lambda: [] if self.committed else list(self.created), cancel=self.ctx.cancel
            )
        self.keeper.start()

    def stop_lease(self) -> None:
        if self.keeper is not None:
            self.keeper.stop()

    def chains(self, volume_ids: list[str]) -> dict[str, list[Kept]]:
        """Committed snapshots of this Job's chain, per volume, oldest first."""
        if not volume_ids:
            return {}
        snaps = self.aws.describe_snapshots(
            tags={STATE_TAG: BASE, TAG + "job": self.job}, volume_ids=volume_ids
        )
        return {v: chain.committed(snaps, self.job, v) for v in volume_ids}

    def take(self, target: InstanceTarget, positions: dict[str, int]) -> dict[str, Snapshot]:
        """Snapshot every target volume of one instance at the same moment (CreateSnapshots);
        standalone volumes are snapshotted one by one."""
        wanted = {v.volume_id for v in target.volumes}
        description = naming.snapshot_description(self.ctx.job_name, target.label)
        if target.standalone:  # volumes on their own: one CreateSnapshot each
            snaps = [
                self.aws.create_snapshot(v.volume_id, job_tags(self.ctx, target.instance_id), description)
                for v in target.volumes
            ]
        else:
            exclude_boot = any(v.is_root for v in target.excluded)
            exclude_data = [v.volume_id for v in target.excluded if not v.is_root]
            snaps = self.aws.create_snapshots(
                target.instance_id,
                exclude_data,
                exclude_boot,
                job_tags(self.ctx, target.instance_id),
                description,
            )
        for s in snaps:
            self.created.append(s.snapshot_id)
            self.volume_of[s.snapshot_id] = s.volume_id
        if snaps:
            self._start_lease()
        by_volume = {s.volume_id: s for s in snaps}
        for vol_id, snap in by_volume.items():
            if vol_id not in wanted:  # a volume attached after we looked: not ours to keep
                self.aws.delete_snapshot(snap.snapshot_id)
                self.created.remove(snap.snapshot_id)
        missing = wanted - by_volume.keys()
        if missing:
            raise AwsError(
                "CreateSnapshots",
                "MissingSnapshot",
                f"no snapshot was created for volume(s) {', '.join(sorted(missing))} of {target.label}",
            )
        for vol_id in wanted:
            self.aws.tag(
                [by_volume[vol_id].snapshot_id],
                {TAG + "volume": vol_id, TAG + "position": str(positions.get(vol_id, 0))},
            )
        return {v: s for v, s in by_volume.items() if v in wanted}

    def wait(self, snapshot_ids: list[str]) -> dict[str, Snapshot]:
        last = [time.monotonic()]

        def progress(snaps: list[Snapshot]) -> None:
            if time.monotonic() - last[0] >= 30:
                last[0] = time.monotonic()
                done = ", ".join(
                    f"{s.snapshot_id} {'?' if s.progress is None else s.progress}" for s in snaps
                )
                self.ctx.reporter.info(f"waiting for snapshots to complete: {done}")

        snaps = self.aws.wait_snapshots(snapshot_ids, self.ctx.params.snapshot_timeout, progress)
        return {s.snapshot_id: s for s in snaps}

    def commit(self) -> None:
        """Every block of the job was handed over: its snapshots become bases (may raise:
        the caller must then fail the job and roll back)."""
        self.stop_lease()
        if self.created:
            self.aws.tag(self.created, {STATE_TAG: BASE})
        self.committed = True

    def retire(self, bases: dict[str, str | None] | None = None) -> None:
        """The job is confirmed (END, or bec2's folder entry written): retention applies.

        `bases`: per volume, the snapshot this job compared with (keeps the right Full's
        snapshot for `keep_full_snapshot`, and a Differential's base).
        """
        if not self.created:
            return
        level = self.ctx.level
        chains = self.chains(sorted(set(self.volume_of.values())))
        keep_full = self.ctx.params.keep_full_snapshot
        for sid in list(self.created):
            volume_id = self.volume_of[sid]
            base = (bases or {}).get(volume_id)
            for old in chain.to_delete(level, sid, chains.get(volume_id, []), keep_full, base):
                self.aws.delete_snapshot(old)
                if old == sid:
                    self.created.remove(sid)
                    self.ctx.reporter.info(
                        f"deleted snapshot {sid} of {volume_id}: a Differential keeps none"
                    )
                else:
                    self.ctx.reporter.info(f"deleted snapshot {old} of {volume_id}: no longer a base")

    def rollback(self) -> list[str]:
        """The job failed: delete what it created. Returns what could not be deleted, each
        as "<snapshot id> (<why>)"; the why, with its traceback, is in the log too."""
        self.stop_lease()
        left: list[str] = []
        for sid in list(self.created):
            try:
                self.aws.delete_snapshot(sid)
                self.created.remove(sid)
            except Exception as exc:
                log.warning("rollback: snapshot %s could not be deleted: %s", sid, exc, exc_info=exc)
                left.append(f"{sid} ({str(exc).rstrip('.')})")
        return left
