"""An in-memory fake of `bacula_ec2.aws.Aws`, for unit tests of `jobs/`.

It holds instances, volumes with block contents, and snapshots that freeze a volume's blocks
at their creation, so that a `BackupJob` runs end to end in memory: selection, clean-up,
CreateSnapshots, the wait, ListSnapshotBlocks / ListChangedBlocks / GetSnapshotBlock,
commit, retention and rollback. It answers with the product's model (`aws.model`) and
refuses what AWS refuses where the job logic depends on it, with AWS's error codes:

- an unknown id where EC2 fails the call (DescribeVolumes/DescribeSnapshots by id,
  CreateTags, CreateSnapshot(s), DescribeInstanceAttribute): `*.NotFound`;
- CreateSnapshots with the root volume in ExcludeDataVolumeIds, or a volume that is not
  attached: InvalidParameterValue;
- more than 50 tags on a resource (TagLimitExceeded), keys over 128 or values over 256
  characters, or an `aws:` key (InvalidParameterValue);
- EBS direct on a snapshot it does not see (ResourceNotFoundException, retried as
  not-yet-visible), on one that is not completed, a wrong block token, or ListChangedBlocks
  across volumes or from a newer to an older snapshot (ValidationException).

What the real client does with a call (retry of control-plane calls under its policy, none
for CreateSnapshot(s), NotFound ignored by DeleteSnapshot) the fake does the same way, with a
`FakeClock`: `fail(operation, ...)` queues AWS errors for an operation so tests can throttle
or refuse any call. Calls it does not fake (the restore ones) raise NotImplementedError.

Blocks are versioned as EBS tracks them: ListChangedBlocks lists every block written between
two snapshots, even when it was rewritten with the same bytes (a superset, like AWS).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn, TypeVar

from bacula_ec2.aws import Aws, AwsError, BlockBody, BlockRef
from bacula_ec2.aws.errors import AmbiguousCreate, aws_error, fresh_not_found
from bacula_ec2.aws.model import Attachment, BlockDevice, Instance, Snapshot, Volume
from bacula_ec2.formats.blockimage import BLOCK_SIZE
from bacula_ec2.retry import Clock, Retryable, RetryPolicy, RetryStats, call_with_retry

T = TypeVar("T")

MAX_TAGS = 50
GIB = 1 << 30


class FakeClock(Clock):
    """Monotonic time that moves only when someone sleeps or waits (by the time slept)."""

    def __init__(self, start: float = 1000.0) -> None:
        self.t = start
        self.slept: list[float] = []
        self._lock = threading.Lock()

    def now(self) -> float:
        with self._lock:
            return self.t

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.t += max(0.0, seconds)
            self.slept.append(seconds)

    def wait(self, cancel: threading.Event | None, seconds: float) -> bool:
        self.sleep(seconds)
        return cancel is not None and cancel.is_set()


@dataclass
class _Snap:
    snapshot_id: str
    volume_id: str
    start_time: dt.datetime
    description: str
    tags: dict[str, str]
    blocks: dict[int, tuple[int, bytes]]  # index -> (version, data), frozen at creation
    ready_at: float  # fake monotonic time it completes at
    fails: bool = False  # ends in state `error`
    created_at: float = 0.0  # fake monotonic time it was created at
    visible_at: float = 0.0  # EC2 lists it (and accepts it in calls) from then on
    stalled: bool = False  # its Progress stops growing and it never completes

    def state(self, now: float) -> str:
        if self.stalled or now < self.ready_at:
            return "pending"
        return "error" if self.fails else "completed"

    def progress(self, now: float) -> str:
        """Grows linearly from 0% at creation to 99% just before it completes (as AWS: a set
        of CreateSnapshots stays at 99% until its last member is done)."""
        if self.state(now) == "completed":
            return "100%"
        if self.stalled:
            return "40%"
        span = max(self.ready_at - self.created_at, 1e-9)
        return f"{min(99, int(100 * (now - self.created_at) / span))}%"


@dataclass
class _Vol:
    volume: Volume
    blocks: dict[int, tuple[int, bytes]] = field(default_factory=dict)


class FakeAws(Aws):
    """The `Aws` interface the jobs use, in memory (see the module's docstring)."""

    def __init__(
        self,
        region: str = "eu-west-1",
        *,
        clock: FakeClock | None = None,
        stats: RetryStats | None = None,
        cancel: threading.Event | None = None,
        policy: RetryPolicy | None = None,
        wall: dt.datetime | None = None,
        snapshot_seconds: float = 3.0,
        not_found_window: float = 0.0,
        listed_after_delete: float = 0.0,
    ) -> None:
        # Aws.__init__ builds boto3 clients: deliberately not called.
        self.region = region
        self.stats = stats or RetryStats()
        self.cancel = cancel
        self.policy = policy or RetryPolicy(attempts=4, base_delay=0.2, max_delay=2.0)
        self.clock = clock or FakeClock()
        self.credentials = None  # no fast block path (aws/blocks.py): reads go through here
        #: EC2's wall clock (snapshot start times); a little before the real time, because
        #: leases and the legacy grace are judged against the real time.
        self.wall = wall or dt.datetime.fromtimestamp(int(time.time()) - 3600, dt.UTC)
        self.snapshot_seconds = snapshot_seconds
        #: Per volume: how long its snapshots take (else `snapshot_seconds`).
        self.snapshot_seconds_of: dict[str, float] = {}
        #: EC2's eventual consistency: a new snapshot is unknown (InvalidSnapshot.NotFound to
        #: DescribeSnapshots by id, CreateTags and DeleteSnapshot; absent from filtered
        #: listings) for this long after its creation ...
        self.not_found_window = not_found_window
        #: ... and a deleted one is still listed for this long.
        self.listed_after_delete = listed_after_delete
        self._ghosts: dict[str, tuple[_Snap, float]] = {}  # deleted, still listed until
        self._stall_volumes: set[str] = set()
        self._ambiguous: dict[str, list[tuple[str | None, int, float]]] = {}  # -> (code, status, hidden)
        self.instances: dict[str, Instance] = {}
        self.user_data: dict[str, str] = {}
        self._volumes: dict[str, _Vol] = {}
        self._snaps: dict[str, _Snap] = {}
        self._failures: dict[str, list[tuple[str, str, int]]] = {}  # (code, message, status)
        self._fail_volumes: set[str] = set()
        self._refused_blocks: dict[tuple[str, int], str] = {}  # (volume, block index) -> code
        #: (operation, argument) of every call, in order.
        self.calls: list[tuple[str, str]] = []
        self.deleted: list[str] = []
        self._seq = 0x1000
        self._version = 0
        self._lock = threading.RLock()

    # ================================================================== building the world
    def _id(self, prefix: str) -> str:
        with self._lock:
            self._seq += 1
            return f"{prefix}-{self._seq:017x}"

    def advance(self, seconds: float) -> dt.datetime:
        """Move EC2's wall clock on (and the monotonic one with it); returns the new time."""
        with self._lock:
            self.wall += dt.timedelta(seconds=seconds)
        self.clock.sleep(seconds)
        return self.wall

    def add_volume(
        self,
        size_gib: int = 1,
        *,
        zone: str = "eu-west-1a",
        tags: Mapping[str, str] | None = None,
        volume_id: str | None = None,
    ) -> str:
        vid = volume_id or self._id("vol")
        vol = Volume(
            vid,
            size_gib=size_gib,
            volume_type="gp3",
            availability_zone=zone,
            state="available",
            create_time=self.wall,
            tags=dict(tags or {}),
        )
        self._volumes[vid] = _Vol(vol)
        return vid

    def add_instance(
        self,
        name: str | None = None,
        *,
        devices: Sequence[tuple[str, int]] = (("/dev/xvda", 1),),
        root_device: str = "/dev/xvda",
        state: str = "running",
        tags: Mapping[str, str] | None = None,
        zone: str = "eu-west-1a",
        user_data: str | None = None,
    ) -> Instance:
        """An instance with a new volume per (device, size in GiB)."""
        iid = self._id("i")
        all_tags = dict(tags or {})
        if name is not None:
            all_tags["Name"] = name
        mappings = []
        for device, size in devices:
            vid = self.add_volume(size, zone=zone)
            self.attach(vid, iid, device)
            mappings.append(BlockDevice(device, vid, delete_on_termination=True))
        inst = Instance(
            iid,
            state=state,
            instance_type="t3.micro",
            availability_zone=zone,
            root_device_name=root_device,
            block_devices=tuple(mappings),
            tags=all_tags,
            launch_time=self.wall,
        )
        self.instances[iid] = inst
        if user_data is not None:
            self.user_data[iid] = user_data
        return inst

    def attach(self, volume_id: str, instance_id: str, device: str) -> None:
        vol = self._volumes[volume_id]
        vol.volume = dataclasses.replace(
            vol.volume, state="in-use", attachments=(Attachment(instance_id, device),)
        )
        inst = self.instances.get(instance_id)
        if inst is not None:
            devs = (*inst.block_devices, BlockDevice(device, volume_id, True))
            self.instances[instance_id] = dataclasses.replace(inst, block_devices=devs)

    def set_state(self, instance_id: str, state: str) -> None:
        self.instances[instance_id] = dataclasses.replace(self.instances[instance_id], state=state)

    def volume_of(self, instance_id: str, device: str) -> str:
        for dev in self.instances[instance_id].block_devices:
            if dev.device_name == device and dev.volume_id:
                return dev.volume_id
        raise KeyError(f"{instance_id} has no volume at {device}")

    def write(self, volume_id: str, index: int, data: bytes | int) -> None:
        """Write one block (bytes, or an int to fill it with that byte value)."""
        if isinstance(data, int):
            data = bytes([data]) * BLOCK_SIZE
        if len(data) != BLOCK_SIZE:
            raise ValueError(f"a block is {BLOCK_SIZE} bytes, not {len(data)}")
        vol = self._volumes[volume_id]
        if not 0 <= index < vol.volume.size_gib * GIB // BLOCK_SIZE:
            raise ValueError(f"block {index} is outside {volume_id}")
        with self._lock:
            self._version += 1
            vol.blocks[index] = (self._version, data)

    def discard(self, volume_id: str, index: int) -> None:
        """Unallocate a block (TRIM): a later snapshot no longer has it."""
        self._volumes[volume_id].blocks.pop(index, None)

    def disk(self, volume_id: str) -> dict[int, bytes]:
        """The volume's allocated blocks now."""
        return {i: d for i, (_v, d) in self._volumes[volume_id].blocks.items()}

    def content(self, snapshot_id: str) -> dict[int, bytes]:
        """The blocks a snapshot holds."""
        return {i: d for i, (_v, d) in self._snaps[snapshot_id].blocks.items()}

    def put_snapshot(
        self,
        volume_id: str,
        tags: Mapping[str, str],
        *,
        start_time: dt.datetime | None = None,
        state: str = "completed",
    ) -> str:
        """A snapshot that exists already (left by another job, or made by hand)."""
        sid = self._id("snap")
        ready = self.clock.now() + (0.0 if state == "completed" else 10**9)
        self._snaps[sid] = _Snap(
            sid,
            volume_id,
            start_time or self.wall,
            "",
            dict(tags),
            dict(self._volumes[volume_id].blocks),
            ready,
        )
        return sid

    def fail_snapshots_of(self, volume_id: str) -> None:
        """Snapshots created of this volume from now on end in state `error`."""
        self._fail_volumes.add(volume_id)

    def stall_snapshots_of(self, volume_id: str) -> None:
        """Snapshots created of this volume from now on stay pending at 40% for ever."""
        self._stall_volumes.add(volume_id)

    def refuse_block(self, volume_id: str, index: int, code: str = "AccessDeniedException") -> None:
        """GetSnapshotBlock of block `index` of any snapshot of this volume is refused (a
        final error, not retried: 403) from now on: a volume that fails while it is read."""
        self._refused_blocks[(volume_id, index)] = code

    def ambiguous(
        self,
        operation: str,
        code: str | None = None,
        *,
        status: int = 500,
        times: int = 1,
        hidden_for: float = 0.0,
    ) -> None:
        """The next `times` CreateSnapshot(s) calls create their snapshots, then fail as if the
        answer was lost, as the real client reports it (`AmbiguousCreate`), caused by a reset
        connection (`code` None) or an error answer (`code`, e.g. InternalError, 500). The
        snapshots it made stay unknown to EC2 for `hidden_for` seconds (else as any other)."""
        with self._lock:
            self._ambiguous.setdefault(operation, []).extend([(code, status, hidden_for)] * times)

    def _ambiguous_failure(self, operation: str, resource: str, made: Sequence[Snapshot]) -> Exception | None:
        with self._lock:
            queued = self._ambiguous.get(operation)
            if not queued:
                return None
            code, status, hidden = queued.pop(0)
            for snap in made:
                held = self._snaps[snap.snapshot_id]
                held.visible_at = max(held.visible_at, self.clock.now() + hidden)
        cause: Exception
        if code is None:
            cause = Retryable(f"{operation} {resource}: ConnectionClosedError: Connection was closed")
        else:
            cause = aws_error(operation, code, "lost", status=status, request_id=f"fake-{operation}-{code}")
        err = AmbiguousCreate(
            operation,
            code or "NoAnswer",
            f"no definite answer ({cause}); the snapshot(s) may have been created",
            resource=resource,
        )
        err.__cause__ = cause
        return err

    def fail(
        self, operation: str, code: str, message: str = "refused", *, status: int = 400, times: int = 1
    ) -> None:
        """The next `times` calls of `operation` fail with this AWS answer (classified as the real
        client classifies it: e.g. RequestLimitExceeded is throttling, and retried)."""
        with self._lock:
            self._failures.setdefault(operation, []).extend([(code, message, status)] * times)

    def _injected(self, operation: str, resource: str | None = None) -> AwsError | None:
        """The next failure queued for `operation`, as the real client would raise it."""
        with self._lock:
            queued = self._failures.get(operation)
            if not queued:
                return None
            code, message, status = queued.pop(0)
        return aws_error(
            operation, code, message, status=status, request_id=f"fake-{operation}-{code}", resource=resource
        )

    def snapshot_ids(self) -> set[str]:
        """The snapshots that exist (visible or not yet)."""
        return set(self._snaps)

    def tags_of(self, snapshot_id: str) -> dict[str, str]:
        return dict(self._snaps[snapshot_id].tags)

    def count(self, operation: str) -> int:
        return sum(1 for op, _arg in self.calls if op == operation)

    # ================================================================== plumbing
    def _refuse(self, operation: str, code: str, message: str, status: int = 400) -> NoReturn:
        raise aws_error(operation, code, message, status=status, request_id=f"fake-{operation}")

    def _op(
        self, operation: str, arg: str, fn: Callable[[], T], *, retry: bool = True, fresh: bool = False
    ) -> T:
        """One call as the real client makes it: injected failures first, then `fn`; control
        calls retried under the policy (with the fake clock), as `Aws._call` does; `fresh`
        (ids the job just created): a NotFound is "not visible yet", as `errors.call` says."""

        def once() -> T:
            with self._lock:
                self.calls.append((operation, arg))
            err = self._injected(operation)
            if err is not None:
                raise err
            try:
                return fn()
            except AwsError as exc:
                mapped = fresh_not_found(exc) if fresh else exc
                if mapped is exc:
                    raise
                raise mapped from exc

        if not retry:
            return once()
        return call_with_retry(
            once, what=operation, policy=self.policy, stats=self.stats, cancel=self.cancel, clock=self.clock
        )

    def _call(
        self,
        operation: str,
        fn: Callable[[], Any],
        retry: bool = True,
        *,
        resource: str | None = None,
        fresh: bool = False,
        deletes: bool = False,
    ) -> Any:
        raise NotImplementedError(f"FakeAws does not fake {operation}")

    def _pages(
        self,
        operation: str,
        method: Callable[..., Any],
        key: str,
        *,
        resource: str | None = None,
        **kwargs: Any,
    ) -> Iterator[dict[str, Any]]:
        raise NotImplementedError(f"FakeAws does not fake {operation}")

    def _known(self, snapshot_id: str) -> bool:
        """EC2 knows this snapshot now: it exists and its creation is visible."""
        snap = self._snaps.get(snapshot_id)
        return snap is not None and self.clock.now() >= snap.visible_at

    def _listed(self) -> dict[str, _Snap]:
        """What DescribeSnapshots lists now: the visible snapshots and, for a while, the
        deleted ones."""
        now = self.clock.now()
        with self._lock:
            out = {sid: s for sid, s in self._snaps.items() if now >= s.visible_at}
            for sid, (snap, until) in list(self._ghosts.items()):
                if now < until:
                    out[sid] = snap
                else:
                    del self._ghosts[sid]
        return out

    def _snapshot(self, s: _Snap) -> Snapshot:
        state = s.state(self.clock.now())
        return Snapshot(
            s.snapshot_id,
            s.volume_id,
            state=state,
            start_time=s.start_time,
            progress=s.progress(self.clock.now()),
            tags=dict(s.tags),
        )

    @staticmethod
    def _check_tags(operation: str, current: Mapping[str, str], new: Mapping[str, str]) -> None:
        for key, value in new.items():
            if key.lower().startswith("aws:"):
                raise AwsError(
                    operation, "InvalidParameterValue", f"tag key {key!r}: the aws: prefix is reserved"
                )
            if not 1 <= len(key) <= 128 or len(value) > 256:
                raise AwsError(operation, "InvalidParameterValue", f"tag {key!r}: key or value too long")
        if len({**current, **new}) > MAX_TAGS:
            raise AwsError(operation, "TagLimitExceeded", f"a resource has at most {MAX_TAGS} tags")

    # ================================================================== EC2
    def describe_instances(
        self,
        *,
        ids: Sequence[str] | None = None,
        names: Sequence[str] | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> list[Instance]:
        def run() -> list[Instance]:
            out = []
            for inst in self.instances.values():
                if ids and inst.instance_id not in ids:
                    continue
                if names and inst.name not in names:
                    continue
                if any(inst.tags.get(k) != v for k, v in (tags or {}).items()):
                    continue
                out.append(inst)
            return out

        return self._op("DescribeInstances", ",".join([*(ids or ()), *(names or ())]), run)

    def describe_instance(self, instance_id: str, *, fresh: bool = False) -> Instance:
        found = self.describe_instances(ids=[instance_id])
        if not found:
            raise AwsError("DescribeInstances", "InvalidInstanceID.NotFound", f"no instance {instance_id}")
        return found[0]

    def instance_user_data(self, instance_id: str) -> str | None:
        def run() -> str | None:
            if instance_id not in self.instances:
                self._refuse(
                    "DescribeInstanceAttribute",
                    "InvalidInstanceID.NotFound",
                    f"The instance ID '{instance_id}' does not exist",
                )
            return self.user_data.get(instance_id)

        return self._op("DescribeInstanceAttribute", instance_id, run)

    def describe_regions(self) -> list[str]:
        return self._op("DescribeRegions", "", lambda: [self.region])

    def describe_volumes(self, volume_ids: Sequence[str], *, fresh: bool = False) -> list[Volume]:
        if not volume_ids:
            return []

        def run() -> list[Volume]:
            missing = [v for v in volume_ids if v not in self._volumes]
            if missing:
                self._refuse(
                    "DescribeVolumes", "InvalidVolume.NotFound", f"The volume '{missing[0]}' does not exist."
                )
            return [self._volumes[v].volume for v in dict.fromkeys(volume_ids)]

        return self._op("DescribeVolumes", ",".join(volume_ids), run)

    def describe_volumes_filtered(self, volume_ids: Sequence[str]) -> list[Volume]:
        return self._op(
            "DescribeVolumes",
            ",".join(volume_ids),
            lambda: [self._volumes[v].volume for v in dict.fromkeys(volume_ids) if v in self._volumes],
        )

    def describe_all_volumes(self) -> list[Volume]:
        return self._op("DescribeVolumes", "", lambda: [v.volume for v in self._volumes.values()])

    def tagged_volumes(self, key: str, value: str) -> list[Volume]:
        return self._op(
            "DescribeVolumes",
            f"{key}={value}",
            lambda: [v.volume for v in self._volumes.values() if v.volume.tags.get(key) == value],
        )

    def _new_snapshot(
        self, operation: str, volume_id: str, tags: Mapping[str, str], description: str
    ) -> _Snap:
        sid = self._id("snap")
        snap = _Snap(
            sid,
            volume_id,
            self.wall,
            description,
            dict(tags),
            dict(self._volumes[volume_id].blocks),
            self.clock.now() + self.snapshot_seconds_of.get(volume_id, self.snapshot_seconds),
            fails=volume_id in self._fail_volumes,
            created_at=self.clock.now(),
            visible_at=self.clock.now() + self.not_found_window,
            stalled=volume_id in self._stall_volumes,
        )
        self._snaps[sid] = snap
        return snap

    def create_snapshot(self, volume_id: str, tags: Mapping[str, str], description: str) -> Snapshot:
        def run() -> Snapshot:
            if volume_id not in self._volumes:
                self._refuse(
                    "CreateSnapshot", "InvalidVolume.NotFound", f"The volume '{volume_id}' does not exist."
                )
            self._check_tags("CreateSnapshot", {}, tags)
            self.advance(1)
            made = self._snapshot(self._new_snapshot("CreateSnapshot", volume_id, tags, description))
            lost = self._ambiguous_failure("CreateSnapshot", volume_id, [made])
            if lost is not None:
                raise lost
            return made

        return self._op("CreateSnapshot", volume_id, run, retry=False)

    def create_snapshots(
        self,
        instance_id: str,
        exclude_volume_ids: Sequence[str],
        exclude_boot: bool,
        tags: Mapping[str, str],
        description: str,
    ) -> list[Snapshot]:
        def run() -> list[Snapshot]:
            inst = self.instances.get(instance_id)
            if inst is None or inst.state == "terminated":
                self._refuse(
                    "CreateSnapshots",
                    "InvalidInstanceID.NotFound",
                    f"The instance ID '{instance_id}' does not exist",
                )
            attached = {d.volume_id: d.device_name for d in inst.block_devices if d.volume_id}
            for vid in exclude_volume_ids:
                if vid not in attached:
                    self._refuse(
                        "CreateSnapshots",
                        "InvalidParameterValue",
                        f"volume {vid} is not attached to {instance_id}",
                    )
                if attached[vid] == inst.root_device_name:
                    self._refuse(
                        "CreateSnapshots",
                        "InvalidParameterValue",
                        f"ExcludeDataVolumeIds cannot hold the root volume {vid}: use ExcludeBootVolume",
                    )
            self._check_tags("CreateSnapshots", {}, tags)
            chosen = [
                vid
                for vid, device in sorted(attached.items(), key=lambda kv: kv[1])
                if vid not in exclude_volume_ids and not (exclude_boot and device == inst.root_device_name)
            ]
            self.advance(1)
            made = [
                self._snapshot(self._new_snapshot("CreateSnapshots", v, tags, description)) for v in chosen
            ]
            lost = self._ambiguous_failure("CreateSnapshots", instance_id, made)
            if lost is not None:
                raise lost
            return made

        return self._op("CreateSnapshots", instance_id, run, retry=False)

    def describe_snapshots(
        self,
        *,
        ids: Sequence[str] | None = None,
        tags: Mapping[str, str] | None = None,
        volume_ids: Sequence[str] | None = None,
        tag_key: str | None = None,
        fresh: bool = False,
    ) -> list[Snapshot]:
        def run() -> list[Snapshot]:
            listed = self._listed()
            if ids:
                missing = [s for s in ids if s not in listed]
                if missing:
                    self._refuse(
                        "DescribeSnapshots",
                        "InvalidSnapshot.NotFound",
                        f"The snapshot '{missing[0]}' does not exist.",
                    )
            out = []
            for s in listed.values():
                if ids and s.snapshot_id not in ids:
                    continue
                if volume_ids and s.volume_id not in volume_ids:
                    continue
                if any(s.tags.get(k) != v for k, v in (tags or {}).items()):
                    continue
                if tag_key is not None and tag_key not in s.tags:
                    continue
                out.append(self._snapshot(s))
            return out

        return self._op("DescribeSnapshots", ",".join(ids or ()), run, fresh=fresh)

    def delete_snapshot(self, snapshot_id: str, *, fresh: bool = False) -> None:
        def run() -> None:
            with self._lock:
                if not self._known(snapshot_id):
                    self._refuse(
                        "DeleteSnapshot",
                        "InvalidSnapshot.NotFound",
                        f"The snapshot '{snapshot_id}' does not exist.",
                    )
                snap = self._snaps.pop(snapshot_id)
                if self.listed_after_delete > 0:
                    self._ghosts[snapshot_id] = (snap, self.clock.now() + self.listed_after_delete)
                self.deleted.append(snapshot_id)

        try:
            self._op("DeleteSnapshot", snapshot_id, run, fresh=fresh)
        except AwsError as exc:  # as the real client: already gone is fine
            if exc.code != "InvalidSnapshot.NotFound":
                raise

    def tag(self, resource_ids: Sequence[str], tags: Mapping[str, str], *, fresh: bool = False) -> None:
        def run() -> None:
            with self._lock:
                for rid in resource_ids:  # all or nothing, like CreateTags
                    if rid.startswith("snap-"):
                        if not self._known(rid):
                            self._refuse(
                                "CreateTags",
                                "InvalidSnapshot.NotFound",
                                f"The snapshot '{rid}' does not exist.",
                            )
                        self._check_tags("CreateTags", self._snaps[rid].tags, tags)
                    elif rid.startswith("vol-"):
                        if rid not in self._volumes:
                            self._refuse(
                                "CreateTags", "InvalidVolume.NotFound", f"The volume '{rid}' does not exist."
                            )
                    elif rid.startswith("i-"):
                        if rid not in self.instances:
                            self._refuse(
                                "CreateTags",
                                "InvalidInstanceID.NotFound",
                                f"The instance ID '{rid}' does not exist",
                            )
                    else:
                        self._refuse("CreateTags", "InvalidID", f"The ID '{rid}' is not valid")
                for rid in resource_ids:
                    if rid.startswith("snap-"):
                        self._snaps[rid].tags.update(tags)
                    elif rid.startswith("vol-"):
                        vol = self._volumes[rid]
                        vol.volume = dataclasses.replace(vol.volume, tags={**vol.volume.tags, **tags})
                    else:
                        inst = self.instances[rid]
                        self.instances[rid] = dataclasses.replace(inst, tags={**inst.tags, **tags})

        self._op("CreateTags", ",".join(resource_ids), run, fresh=fresh)

    # ================================================================== EBS direct
    def _ebs_snapshot(self, operation: str, snapshot_id: str) -> _Snap:
        snap = self._snaps.get(snapshot_id)
        if snap is None:
            self._refuse(
                operation, "ResourceNotFoundException", f"The snapshot '{snapshot_id}' does not exist.", 404
            )
        if snap.state(self.clock.now()) != "completed":
            self._refuse(operation, "ValidationException", f"The snapshot '{snapshot_id}' is not completed.")
        return snap

    @staticmethod
    def _token(snapshot_id: str, index: int, version: int) -> str:
        return hashlib.sha256(f"{snapshot_id}/{index}/{version}".encode()).hexdigest()[:40]

    def _listing(
        self, operation: str, arg: str, entries: Callable[[], list[BlockRef]], page_size: int
    ) -> Iterator[BlockRef]:
        """Pages of `page_size`, each page one (retried) call."""
        refs = self._op(operation, arg, entries)
        for start in range(0, len(refs), page_size):
            if start:
                self._op(operation, f"{arg} page {start // page_size}", lambda: None)
            yield from refs[start : start + page_size]

    def list_snapshot_blocks(self, snapshot_id: str, page_size: int = 10000) -> Iterator[BlockRef]:
        def entries() -> list[BlockRef]:
            snap = self._ebs_snapshot("ListSnapshotBlocks", snapshot_id)
            return [BlockRef(i, self._token(snapshot_id, i, v)) for i, (v, _d) in sorted(snap.blocks.items())]

        return self._listing("ListSnapshotBlocks", snapshot_id, entries, page_size)

    def list_changed_blocks(
        self, first_id: str, second_id: str, page_size: int = 10000
    ) -> Iterator[BlockRef]:
        def entries() -> list[BlockRef]:
            first = self._ebs_snapshot("ListChangedBlocks", first_id)
            second = self._ebs_snapshot("ListChangedBlocks", second_id)
            if first.volume_id != second.volume_id:
                self._refuse(
                    "ListChangedBlocks",
                    "ValidationException",
                    f"{first_id} and {second_id} are not of the same volume lineage",
                )
            if first.start_time > second.start_time:
                self._refuse(
                    "ListChangedBlocks", "ValidationException", f"{first_id} is newer than {second_id}"
                )
            out = []
            for i in sorted(set(first.blocks) | set(second.blocks)):
                a, b = first.blocks.get(i), second.blocks.get(i)
                if a is not None and b is not None and a[0] == b[0]:
                    continue
                out.append(BlockRef(i, self._token(second_id, i, b[0]) if b is not None else None))
            return out

        return self._listing("ListChangedBlocks", f"{first_id}..{second_id}", entries, page_size)

    def get_snapshot_block(self, snapshot_id: str, ref: BlockRef) -> BlockBody:
        """One attempt (the transfer engine retries): injected failures, then the block."""
        if ref.token is None:
            raise ValueError(f"block {ref.index} has no token to read it with")
        with self._lock:
            self.calls.append(("GetSnapshotBlock", f"{snapshot_id} {ref.index}"))
        err = self._injected("GetSnapshotBlock", f"{snapshot_id} block {ref.index}")
        if err is not None:
            raise err
        snap = self._ebs_snapshot("GetSnapshotBlock", snapshot_id)
        refused = self._refused_blocks.get((snap.volume_id, ref.index))
        if refused is not None:
            self._refuse(
                "GetSnapshotBlock", refused, f"block {ref.index} of {snapshot_id} is refused (injected)", 403
            )
        block = snap.blocks.get(ref.index)
        if block is None or self._token(snapshot_id, ref.index, block[0]) != ref.token:
            self._refuse(
                "GetSnapshotBlock",
                "ValidationException",
                f"invalid block token for block {ref.index} of {snapshot_id}",
            )
        data = block[1]
        return BlockBody(ref.index, data, hashlib.sha256(data).digest())
