"""The life of the snapshots a job creates, told by their tags (docs/SNAPSHOTS.md).

A snapshot is created with `bacula-ec2:state=pending`. It becomes `base` only after Bacula
has confirmed the job (the FD sends END only to a job that ended well), so a failed,
cancelled or killed job can never become the base of the next Incremental. A failed job
deletes its own snapshots at once; a killed one leaves `pending` snapshots that the next
job on the same volumes removes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from ..aws import Aws, AwsError
from . import chain
from .chain import BASE, PENDING, STATE_TAG, TAG, Kept
from .context import JobContext
from .selection import InstanceTarget


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

    @property
    def job(self) -> str:
        return chain.job_resource(self.ctx.job_name)

    def clean_stale(self, targets: list[InstanceTarget]) -> int:
        """Step 3: remove `pending` leftovers of earlier jobs on these volumes (ours only)."""
        volume_ids = [v.volume_id for t in targets for v in t.volumes]
        if not volume_ids:
            return 0
        stale = self.aws.describe_snapshots(
            filters=[
                {"Name": f"tag:{STATE_TAG}", "Values": [PENDING]},
                {"Name": "volume-id", "Values": volume_ids},
            ]
        )
        removed = 0
        for snap in stale:
            sid = snap["SnapshotId"]
            if sid in self.created:
                continue
            self.aws.delete_snapshot(sid)
            removed += 1
            self.ctx.reporter.info(
                f"removed snapshot {sid} of volume {snap.get('VolumeId')} left by an earlier "
                "job that did not finish"
            )
        return removed

    def chains(self, volume_ids: list[str]) -> dict[str, list[Kept]]:
        """Committed snapshots of this Job's chain, per volume, oldest first."""
        if not volume_ids:
            return {}
        snaps = self.aws.describe_snapshots(
            filters=[
                {"Name": f"tag:{STATE_TAG}", "Values": [BASE]},
                {"Name": f"tag:{TAG}job", "Values": [self.job]},
                {"Name": "volume-id", "Values": volume_ids},
            ]
        )
        return {v: chain.committed(snaps, self.job, v) for v in volume_ids}

    def take(self, target: InstanceTarget, positions: dict[str, int]) -> dict[str, dict[str, Any]]:
        """Snapshot every target volume of one instance at the same moment (CreateSnapshots);
        standalone volumes are snapshotted one by one."""
        wanted = {v.volume_id for v in target.volumes}
        description = f"bacula-ec2 {self.ctx.job_name} ({target.label})"
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
            self.created.append(s["SnapshotId"])
            self.volume_of[s["SnapshotId"]] = s["VolumeId"]
        by_volume = {s["VolumeId"]: s for s in snaps}
        for vol_id, snap in by_volume.items():
            if vol_id not in wanted:  # a volume attached after we looked: not ours to keep
                self.aws.delete_snapshot(snap["SnapshotId"])
                self.created.remove(snap["SnapshotId"])
        missing = wanted - by_volume.keys()
        if missing:
            raise AwsError(
                "CreateSnapshots",
                "MissingSnapshot",
                f"no snapshot was created for volume(s) {', '.join(sorted(missing))} of {target.label}",
            )
        for vol_id in wanted:
            self.aws.tag(
                [by_volume[vol_id]["SnapshotId"]],
                {TAG + "volume": vol_id, TAG + "position": str(positions.get(vol_id, 0))},
            )
        return {v: s for v, s in by_volume.items() if v in wanted}

    def wait(self, snapshot_ids: list[str]) -> dict[str, dict[str, Any]]:
        last = [time.monotonic()]

        def progress(snaps: list[dict[str, Any]]) -> None:
            if time.monotonic() - last[0] >= 30:
                last[0] = time.monotonic()
                done = ", ".join(f"{s['SnapshotId']} {s.get('Progress', '?')}" for s in snaps)
                self.ctx.reporter.info(f"waiting for snapshots to complete: {done}")

        snaps = self.aws.wait_snapshots(snapshot_ids, self.ctx.params.snapshot_timeout, progress)
        return {s["SnapshotId"]: s for s in snaps}

    def commit(self) -> None:
        """Every block of the job was handed over: its snapshots become bases (may raise)."""
        if self.created:
            self.aws.tag(self.created, {STATE_TAG: BASE})
        self.committed = True

    def retire(self) -> None:
        """The job is confirmed (END, or bec2's folder entry written): retention applies."""
        if not self.created:
            return
        level = self.ctx.level
        chains = self.chains(sorted(set(self.volume_of.values())))
        keep_full = self.ctx.params.keep_full_snapshot
        for sid in list(self.created):
            volume_id = self.volume_of[sid]
            for old in chain.to_delete(level, sid, chains.get(volume_id, []), keep_full):
                self.aws.delete_snapshot(old)
                if old == sid:
                    self.created.remove(sid)
                    self.ctx.reporter.info(
                        f"deleted snapshot {sid} of {volume_id}: a Differential keeps none"
                    )
                else:
                    self.ctx.reporter.info(f"deleted snapshot {old} of {volume_id}: no longer a base")

    def rollback(self) -> list[str]:
        """The job failed: delete what it created; report what could not be deleted."""
        left: list[str] = []
        for sid in list(self.created):
            try:
                self.aws.delete_snapshot(sid)
                self.created.remove(sid)
            except Exception:
                left.append(sid)
        return left
