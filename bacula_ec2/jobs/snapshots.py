"""The life of the snapshots a job creates, told by their tags (docs/SNAPSHOTS.md).

A snapshot is created with `bacula-ec2:state=pending`, its job's identity, its owner process
and a lease (`lease.py`) that a daemon thread renews while the job runs. It becomes `base`
(`commit`) only once every block of the job has been handed over (the backend commits just
before the final F of its item stream, so that a commit failure can still fail the job), and
the chain's older snapshots are retired only once Bacula has confirmed the job (`retire`, at
END). A failed or cancelled job deletes its own snapshots at once; a killed one leaves
`pending` snapshots that a later job on the same volumes removes once their owner is
provably gone (dead process on this host, or expired lease).

AWS as it behaves (issue 11):

- the snapshot quotas (`QUOTA_CODES`) refuse a CreateSnapshot(s) for a while: tried again
  after 15-30 s, for at most `QUOTA_BUDGET` seconds, with a job-log line each time;
- a CreateSnapshot(s) whose answer was lost (reset, timeout, 5xx) may have created the
  snapshots: this job's own are looked up by their tags before trying again, and adopted
  (a complete set) or deleted (a partial one);
- EC2 is eventually consistent: a snapshot just created may be unknown to CreateTags,
  DeleteSnapshot and DescribeSnapshots for a while, and a deleted one still listed. Tags are
  retried, and a delete counts as done only once DescribeSnapshots no longer lists the
  snapshot (`_delete_all`), within the retry policy's `not_found_window` seconds;
- snapshots take time (a first Full of a large volume: hours): each instance is handed to
  the backup as soon as its own are completed (`completed`), and a snapshot fails the job
  only when its Progress has not grown for `snapshot_timeout` seconds (aws/wait.py).
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from .. import naming
from ..aws import Aws, AwsError, errors
from ..aws.errors import Kind
from ..aws.model import Snapshot
from ..aws.wait import SnapshotPoll, Waiter, WaitParams, failed_snapshots
from ..retry import Cancelled
from . import chain, progress
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


#: AWS's snapshot quotas: a CreateSnapshot(s) refused for now (EC2 error codes; tidb #44325).
QUOTA_CODES = frozenset(
    {
        "PendingSnapshotLimitExceeded",
        "ConcurrentSnapshotLimitExceeded",
        "SnapshotCreationPerVolumeRateExceeded",
    }
)
#: Pause between two tries of a refused CreateSnapshot(s): uniform in this range (jitter).
QUOTA_DELAY = (15.0, 30.0)
#: How long the job keeps trying a refused CreateSnapshot(s) before it fails.
QUOTA_BUDGET = 600.0
#: CreateSnapshot(s) calls that got no answer, in a row, before the job fails.
AMBIGUOUS_ATTEMPTS = 3
#: How long the snapshots of a CreateSnapshot(s) whose answer was lost are looked for before
#: it is tried again: EC2 lists a new snapshot within seconds as a rule; one that shows up
#: later is deleted at the commit or the rollback (`_orphans`).
ADOPT_WINDOW = 30.0


def confirm_deletes(window: float) -> WaitParams:
    """How deletes are confirmed: a round of DeleteSnapshot + DescribeSnapshots for every
    snapshot still listed, 0.5 s apart at first, doubling up to 5 s, for `window` seconds."""
    return WaitParams(
        first_interval=0.5, growth=2.0, max_interval=5.0, no_progress=None, overall=max(window, 1.0)
    )


#: How often the job log shows the progress of the snapshots it waits for (tests shorten it
#: with BACULA_EC2_PROGRESS_EVERY, jobs/progress.py).
PROGRESS_EVERY = 30.0


def ambiguous(exc: BaseException) -> bool:
    """A failure after which a creating call may or may not have done its work: no definite
    answer (the client's `AmbiguousCreate`: reset, read timeout, 5xx). A refusal (4xx,
    throttling, a quota) created nothing."""
    return Kind.of(exc) is Kind.AMBIGUOUS or errors.ambiguous_create(exc)


def quota(exc: BaseException) -> bool:
    """One of EC2's snapshot quotas refused the call (nothing was created)."""
    return Kind.of(exc) is Kind.SNAPSHOT_LIMIT or getattr(exc, "code", "") in QUOTA_CODES


def throttled(exc: BaseException) -> bool:
    return Kind.of(exc) is Kind.THROTTLED


@dataclass
class SnapshotLedger:
    """Every snapshot this job created, so it can commit or roll back exactly those."""

    aws: Aws
    ctx: JobContext
    created: list[str] = field(default_factory=list)
    volume_of: dict[str, str] = field(default_factory=dict)
    committed: bool = False
    keeper: LeaseKeeper | None = None
    #: Snapshots DescribeSnapshots (or a CreateTags) has shown: EC2 knows them.
    seen: set[str] = field(default_factory=set)
    #: When (the aws clock) each created snapshot was created.
    born: dict[str, float] = field(default_factory=dict)
    #: The latest description of each created snapshot.
    latest: dict[str, Snapshot] = field(default_factory=dict)
    #: A creating call went unanswered: the rollback looks for this job's orphans.
    unsure: bool = False
    #: Tags `take(..., defer_tags=True)` left for `flush_tags()`: (snapshot, tags).
    untagged: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    #: Seconds this job has paused for refused CreateSnapshot(s) calls, all instances
    #: together: once an instance has used up `QUOTA_BUDGET`, the next one (abort_on_error=0
    #: goes on with the others) is not waited out for as long again.
    quota_waited: float = 0.0

    @property
    def job(self) -> str:
        return chain.job_resource(self.ctx.job_name)

    @property
    def window(self) -> float:
        """How long EC2 may not know a snapshot just created (or still list one deleted)."""
        return self.aws.policy.not_found_window

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
            self.seen.add(sid)
            self._delete_confirmed(sid)
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
        self.seen.update(s.snapshot_id for s in snaps)
        return {v: chain.committed(snaps, self.job, v) for v in volume_ids}

    # ------------------------------------------------------------------ create
    def take(
        self, target: InstanceTarget, positions: dict[str, int], *, defer_tags: bool = False
    ) -> dict[str, Snapshot]:
        """Snapshot every target volume of one instance at the same moment (CreateSnapshots);
        standalone volumes are snapshotted one by one. Each snapshot is then tagged with its
        volume and chain position, at once or (`defer_tags`) at `flush_tags()`: a job that
        snapshots many instances creates them all first, so that EC2 knows the first ones by
        the time they are tagged (eventual consistency) and no instance waits for another."""
        wanted = {v.volume_id for v in target.volumes}
        description = naming.snapshot_description(self.ctx.job_name, target.label)
        tags = job_tags(self.ctx, target.instance_id)
        snaps: list[Snapshot] = []
        if target.standalone:  # volumes on their own: one CreateSnapshot each
            for v in target.volumes:
                snaps += self._create(
                    "CreateSnapshot",
                    f"volume {v.volume_id}",
                    target.instance_id,
                    {v.volume_id},
                    lambda v=v: [self.aws.create_snapshot(v.volume_id, tags, description)],  # type: ignore[misc]
                )
        else:
            exclude_boot = any(v.is_root for v in target.excluded)
            exclude_data = [v.volume_id for v in target.excluded if not v.is_root]
            snaps = self._create(
                "CreateSnapshots",
                target.label,
                target.instance_id,
                wanted,
                lambda: self.aws.create_snapshots(
                    target.instance_id, exclude_data, exclude_boot, tags, description
                ),
            )
        by_volume = {s.volume_id: s for s in snaps}
        for vol_id, snap in by_volume.items():
            if vol_id not in wanted:  # a volume attached after we looked: not ours to keep
                self._delete_confirmed(snap.snapshot_id)
                self.created.remove(snap.snapshot_id)
        missing = wanted - by_volume.keys()
        if missing:
            raise AwsError(
                "CreateSnapshots",
                "MissingSnapshot",
                f"no snapshot was created for volume(s) {', '.join(sorted(missing))} of {target.label}",
            )
        for vol_id in sorted(wanted):
            self.untagged.append(
                (
                    by_volume[vol_id].snapshot_id,
                    {TAG + "volume": vol_id, TAG + "position": str(positions.get(vol_id, 0))},
                )
            )
        if not defer_tags:
            self.flush_tags()
        return {v: s for v, s in by_volume.items() if v in wanted}

    def flush_tags(self) -> None:
        """The volume and position tags `take` has not set yet."""
        while self.untagged:
            sid, tags = self.untagged[0]
            self._tag_fresh([sid], tags)
            self.untagged.pop(0)

    def _record(self, snaps: Sequence[Snapshot]) -> None:
        now = self.aws.clock.now()
        for s in snaps:
            if s.snapshot_id not in self.created:
                self.created.append(s.snapshot_id)
                self.volume_of[s.snapshot_id] = s.volume_id
                self.born.setdefault(s.snapshot_id, now)
        if snaps:
            self._start_lease()

    def _create(
        self,
        operation: str,
        label: str,
        instance_id: str,
        wanted: set[str],
        make: Callable[[], list[Snapshot]],
    ) -> list[Snapshot]:
        """`make()` (one CreateSnapshot(s) call) until it answers, each snapshot it made
        recorded at once. A quota refusal is tried again after 15-30 s for `QUOTA_BUDGET`
        seconds (for the whole job: `quota_waited`), throttling after the retry policy's
        delay; after a lost answer, this job's own snapshots of `wanted` are looked up and
        adopted before anything is tried again."""
        clock = self.aws.clock
        started = clock.now()
        lost = 0
        attempt = 0
        while True:
            attempt += 1
            try:
                snaps = make()
            except Exception as exc:
                code = getattr(exc, "code", "")
                elapsed = clock.now() - started
                if quota(exc) or throttled(exc):
                    delay = random.uniform(*QUOTA_DELAY) if quota(exc) else self.aws.policy.delay(attempt)
                    if max(elapsed, self.quota_waited) + delay > QUOTA_BUDGET:
                        before = (
                            f" (this job waited {self.quota_waited:.0f} s in all for AWS's snapshot quotas, "
                            f"at most {QUOTA_BUDGET:.0f} s)"
                            if self.quota_waited > elapsed
                            else ""
                        )
                        raise AwsError(
                            operation,
                            code or "Throttled",
                            f"AWS still refuses to snapshot {label} after {elapsed:.0f} s{before}: {exc} "
                            "(too many snapshots in progress in the region or of a volume: see "
                            "/usr/share/doc/bacula-ec2-plugin/TROUBLESHOOTING.md.gz)",
                            resource=instance_id,
                        ) from exc
                    if quota(exc):
                        self.ctx.reporter.info(
                            f"AWS refuses more snapshots of {label} now ({code}): "
                            f"trying again in {delay:.0f} s"
                        )
                    self.aws.stats.count(throttled=throttled(exc))
                    self._pause(delay)
                    self.quota_waited += delay
                    continue
                if not ambiguous(exc):
                    raise
                self.aws.stats.count()  # a failed request; looked up, then adopted or made again
                lost += 1
                self.unsure = True
                log.warning("%s of %s: no clear answer: %s", operation, label, exc, exc_info=exc)
                found = self._adopt(operation, label, instance_id, wanted)
                if found:
                    self.ctx.reporter.info(
                        f"{operation} of {label} got no clear answer ({exc}); it had created "
                        f"{', '.join(s.snapshot_id for s in found)}: using them"
                    )
                    return found
                if lost >= AMBIGUOUS_ATTEMPTS:
                    raise
                self.ctx.reporter.info(
                    f"{operation} of {label} got no clear answer ({exc}); it created nothing: trying again"
                )
                continue
            self._record(snaps)
            return snaps

    def _adopt(self, operation: str, label: str, instance_id: str, wanted: set[str]) -> list[Snapshot]:
        """After a lost answer: this job's own pending snapshots of `wanted` that are not
        recorded yet, looked up by their tags for `ADOPT_WINDOW` seconds (EC2 may not list a
        new snapshot at once). A complete set (one CreateSnapshots, one snapshot per wanted
        volume) is recorded and returned; anything else found is deleted; [] if none."""
        clock = self.aws.clock
        started = clock.now()
        pause = 1.0
        me = owner().tag()
        found: list[Snapshot] = []
        while True:
            found = [
                s
                for s in self.aws.describe_snapshots(
                    tags={
                        TAG + "jobname": self.ctx.job_name,
                        TAG + "jobid": str(self.ctx.job_id),
                        TAG + "instance": instance_id,
                        STATE_TAG: PENDING,
                    },
                    volume_ids=sorted(wanted),
                )
                if s.snapshot_id not in self.created and s.tags.get(OWNER_TAG) == me
            ]
            self.seen.update(s.snapshot_id for s in found)
            sets: dict[object, list[Snapshot]] = {}
            for s in found:
                sets.setdefault(s.start_time, []).append(s)
            for members in sets.values():
                volumes = [s.volume_id for s in members]
                if set(volumes) >= wanted and len(volumes) == len(set(volumes)):
                    self._record(members)
                    for other in found:
                        if other not in members:
                            self._discard(
                                other.snapshot_id, f"a partial set of the lost {operation} of {label}"
                            )
                    return members
            if clock.now() - started >= min(self.window, ADOPT_WINDOW):
                break
            self._pause(pause)
            pause = min(10.0, pause * 2)
        for s in found:
            self._discard(s.snapshot_id, f"a partial set of the lost {operation} of {label}")
        return []

    def _discard(self, sid: str, why: str) -> None:
        self.born.setdefault(sid, self.aws.clock.now())
        self._delete_confirmed(sid)
        self.ctx.reporter.info(f"deleted snapshot {sid}: {why}")

    def _pause(self, seconds: float) -> None:
        if self.aws.clock.wait(self.ctx.cancel, seconds):
            raise Cancelled("job cancelled while waiting to create snapshots")

    # ------------------------------------------------------------------ eventual consistency
    def _tag_fresh(self, ids: list[str], tags: dict[str, str]) -> None:
        """CreateTags on snapshots this job created, which EC2 may not know yet: the client's
        `fresh` retries `InvalidSnapshot.NotFound` within the policy's `not_found_window`."""
        self.aws.tag(ids, tags, fresh=True)
        self.seen.update(ids)

    def _listed(self, sid: str) -> Snapshot | None:
        try:
            found = self.aws.describe_snapshots(ids=[sid])
        except AwsError as exc:
            if exc.code != "InvalidSnapshot.NotFound":
                raise
            return None
        return found[0] if found else None

    def _delete_confirmed(self, sid: str) -> None:
        """`_delete_all` of one snapshot; its failure raised."""
        failed = self._delete_all([sid])
        if sid in failed:
            raise failed[sid]

    def _delete_all(self, sids: Sequence[str]) -> dict[str, Exception]:
        """DeleteSnapshot of each, every one counted done only once DescribeSnapshots no
        longer lists it (and, for one EC2 may not have shown yet, not before `window`
        seconds after its creation): rounds of deletes and checks, one pause between two
        rounds for all of them. Returns the snapshots that failed, with why (AwsError
        NotConfirmed if one is still listed after `window` seconds)."""
        clock = self.aws.clock
        # not cancellable: this is the clean-up
        waiter = Waiter("DeleteSnapshot", "deleted snapshots", confirm_deletes(self.window), clock=clock)
        left = list(dict.fromkeys(sids))
        failed: dict[str, Exception] = {}
        while True:
            for sid in list(left):
                try:
                    self.aws.delete_snapshot(sid)  # already gone (or not visible yet): no error
                    listed = self._listed(sid) is not None
                except Exception as exc:
                    failed[sid] = exc
                    left.remove(sid)
                    continue
                if listed:
                    self.seen.add(sid)
                elif sid in self.seen or clock.now() - self.born.get(sid, -math.inf) > self.window:
                    left.remove(sid)
            if not left:
                return failed
            if waiter.elapsed > self.window:
                for sid in left:
                    failed[sid] = AwsError(
                        "DeleteSnapshot",
                        "NotConfirmed",
                        f"snapshot {sid} is still listed {waiter.elapsed:.0f} s after it was deleted",
                        resource=sid,
                    )
                return failed
            waiter.pause()

    # ------------------------------------------------------------------ wait
    def completed(
        self,
        groups: dict[str, list[str]],
        labels: dict[str, str],
        failed: Callable[[str, AwsError], None] | None = None,
    ) -> Iterator[str]:
        """Each key of `groups` (snapshot ids) once all its snapshots are completed, in the
        order they complete (keys completing at the same poll: in `groups` order). One
        DescribeSnapshots per poll for all of them; the caller's work between two keys counts
        as waiting time. AwsError SnapshotError on a snapshot in state error, Timeout when a
        snapshot's Progress has not grown for `snapshot_timeout` seconds (or after the overall
        cap, aws/wait.py). With `failed`, a group with such a snapshot is handed to
        `failed(key, error)` instead, and the others are waited for on."""
        params = WaitParams.for_snapshots(float(self.ctx.params.snapshot_timeout))
        clock = self.aws.clock
        waiter = Waiter(
            "CreateSnapshots",
            "snapshots",
            params,
            clock=clock,
            cancel=self.ctx.cancel,
            hint=" (raise snapshot_timeout=)",
        )
        poll = SnapshotPoll(lambda ids: self.aws.describe_snapshots(ids=ids), clock=clock, window=self.window)
        left = dict(groups)
        token: dict[str, tuple[str, str]] = {}
        changed: dict[str, float] = {}
        shown = clock.now()

        def give_up(sids: list[str], code: str, why: str) -> None:
            """These snapshots will not complete: the job fails naming their groups, or
            (with `failed`) each group holding one is handed over and no longer waited for."""
            hit = [k for k, members in left.items() if set(members) & set(sids)]
            if failed is None:
                text = f"snapshot(s) {', '.join(sids)} of {', '.join(labels[k] for k in hit)}"
                raise AwsError("CreateSnapshots", code, text + why)
            for k in hit:
                mine = [sid for sid in left.pop(k) if sid in sids]
                text = f"snapshot(s) {', '.join(mine)} of {labels[k]}"
                failed(k, AwsError("CreateSnapshots", code, text + why))

        while left:
            ids = [sid for members in left.values() for sid in members]
            found = poll(ids)
            now = clock.now()
            if found is not None:
                self.seen.update(found)
                self.latest.update(found)
                bad = failed_snapshots(list(found.values()))
                if bad:
                    give_up(bad, "SnapshotError", " ended in state error")
                    continue
                done = [
                    k
                    for k, members in left.items()
                    if all(self._completed(found.get(sid)) for sid in members)
                ]
                for k in done:
                    del left[k]
                    yield k
                if done:
                    waiter.again_soon()
                    continue
                for sid in ids:
                    snap = found.get(sid)
                    mark = (snap.state or "", snap.progress or "") if snap else ("", "")
                    if token.get(sid) != mark:
                        token[sid], changed[sid] = mark, now
                limit = params.no_progress or math.inf
                stuck = [
                    sid
                    for sid in ids
                    if not self._completed(found.get(sid)) and now - changed.get(sid, now) >= limit
                ]
                if stuck:
                    waited = now - min(changed[s] for s in stuck)
                    give_up(
                        stuck,
                        "Timeout",
                        f": no progress for {waited:.0f} s (raise snapshot_timeout=)",
                    )
                    continue
            if now - shown >= progress.interval(PROGRESS_EVERY):
                shown = now
                for k, members in left.items():
                    states = ", ".join(f"{sid} {self._percent(sid)}" for sid in members)
                    self.ctx.reporter.info(f"snapshots of {labels[k]}: {states}")
            waiter.observe(tuple(sorted(token.items())))
            waiter.pause()

    @staticmethod
    def _completed(snap: Snapshot | None) -> bool:
        return snap is not None and snap.state == "completed"

    def _percent(self, sid: str) -> str:
        snap = self.latest.get(sid)
        if snap is None:
            return "not listed yet"
        return snap.progress or snap.state or "?"

    def wait(self, snapshot_ids: list[str]) -> dict[str, Snapshot]:
        """Until every one of these snapshots is completed (see `completed`)."""
        list(self.completed({"all": snapshot_ids}, {"all": "this job"}))
        return {sid: self.latest[sid] for sid in snapshot_ids}

    # ------------------------------------------------------------------ end of job
    def commit(self) -> None:
        """Every block of the job was handed over: its snapshots become bases (may raise:
        the caller must then fail the job and roll back)."""
        self.stop_lease()
        if self.created:
            self._tag_fresh(list(self.created), {STATE_TAG: BASE})
        self.committed = True
        if self.unsure:  # a lost CreateSnapshot(s) answer: no orphan of it may stay behind
            try:
                for sid in self._orphans():
                    self._discard(sid, "made by a CreateSnapshot(s) call whose answer was lost")
            except Exception as exc:  # the job's own snapshots are committed: only a warning
                log.warning("could not remove unrecorded snapshots of this job: %s", exc, exc_info=exc)
                self.ctx.reporter.warning(
                    f"could not look for snapshots of this job left by a lost CreateSnapshot(s) answer: {exc}"
                )

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
        doomed: dict[str, tuple[str, str]] = {}  # snapshot -> (this job's snapshot, volume)
        for sid in list(self.created):
            volume_id = self.volume_of[sid]
            base = (bases or {}).get(volume_id)
            for old in chain.to_delete(level, sid, chains.get(volume_id, []), keep_full, base):
                doomed[old] = (sid, volume_id)
        failed = self._delete_all(list(doomed))
        for old, (_sid, volume_id) in doomed.items():
            if old in failed:
                continue
            self.ctx.reporter.info(f"deleted snapshot {old} of {volume_id}: no longer a base")
        if failed:
            first = next(iter(failed.values()))
            for old, exc in failed.items():
                log.warning("retention: snapshot %s could not be deleted: %s", old, exc, exc_info=exc)
            if len(failed) == 1:
                raise first
            raise AwsError(
                "DeleteSnapshot",
                getattr(first, "code", "Failed"),
                "; ".join(f"{old}: {str(exc).rstrip('.')}" for old, exc in failed.items()),
            ) from first

    def _orphans(self) -> list[str]:
        """After a lost CreateSnapshot(s) answer: this process's pending snapshots of this
        job that it never recorded."""
        me = owner().tag()
        snaps = self.aws.describe_snapshots(
            tags={TAG + "jobname": self.ctx.job_name, TAG + "jobid": str(self.ctx.job_id), STATE_TAG: PENDING}
        )
        return [
            s.snapshot_id for s in snaps if s.snapshot_id not in self.created and s.tags.get(OWNER_TAG) == me
        ]

    def drop(self, snapshot_ids: Sequence[str]) -> list[str]:
        """Part of the job failed (an instance, a volume): delete these snapshots of it now,
        each delete confirmed, and forget them: they are never committed (a base must have its
        complete image in the job) nor retired. Returns what could not be deleted, each as
        "<snapshot id> (<why>)": those stay `pending`, their lease is no longer renewed, and
        the next job on their volumes removes them once this process is gone (step 3)."""
        todo = [sid for sid in snapshot_ids if sid in self.created]
        if not todo:
            return []
        self.untagged = [(sid, tags) for sid, tags in self.untagged if sid not in todo]
        failed = self._delete_all(todo)
        left: list[str] = []
        for sid in todo:
            self.created.remove(sid)
            self.volume_of.pop(sid, None)
            self.latest.pop(sid, None)
            why = failed.get(sid)
            if why is not None:
                log.warning("snapshot %s of a failed part could not be deleted: %s", sid, why, exc_info=why)
                left.append(f"{sid} ({str(why).rstrip('.')})")
        return left

    def rollback(self) -> list[str]:
        """The job failed: delete what it created (each delete confirmed by DescribeSnapshots).
        Returns what could not be deleted, each as "<snapshot id> (<why>)"; the why, with its
        traceback, is in the log too."""
        self.stop_lease()
        # The job is over: a cancel must not cut the clean-up's retries short (a throttled
        # DeleteSnapshot after a cancel would otherwise leave the snapshot behind).
        self.aws.cancel = None
        left: list[str] = []
        todo = list(self.created)
        if self.unsure:
            try:
                todo += self._orphans()
            except Exception as exc:
                log.warning("rollback: could not look for unrecorded snapshots: %s", exc, exc_info=exc)
        failed = self._delete_all(todo)
        for sid in todo:
            why = failed.get(sid)
            if why is None:
                if sid in self.created:
                    self.created.remove(sid)
            else:
                log.warning("rollback: snapshot %s could not be deleted: %s", sid, why, exc_info=why)
                left.append(f"{sid} ({str(why).rstrip('.')})")
        return left
