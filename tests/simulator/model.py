"""The simulator's world: regions, instances, volumes, snapshots and the bytes they hold.

Everything mutable sits behind one world lock, so a multi-volume snapshot is captured
atomically with respect to every write (crash-consistent, like EC2 CreateSnapshots).
Block data is kept as immutable :class:`Block` objects (bytes plus their precomputed
SHA-256), so a snapshot is a shallow copy of a volume's ``index -> Block`` dict and the
EBS read path serves stored bytes without copying or hashing them.

Snapshot states are computed lazily from a completion deadline (no timers): a snapshot is
``pending`` until ``complete_at`` and ``completed`` after it.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import re
import secrets
import threading
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .errors import SimError

BLOCK_SIZE = 524288
GIB = 1 << 30
BLOCKS_PER_GIB = GIB // BLOCK_SIZE
OWNER_ID = "123456789012"
DEFAULT_REGION = "us-east-1"
DEFAULT_SNAPSHOT_DELAY = 0.3
MAX_VOLUME_GIB = 65536
VOLUME_TYPES = ("gp2", "gp3", "io1", "io2", "st1", "sc1", "standard")

_REGION_RE = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d+$")


def new_id(prefix: str) -> str:
    """An AWS-style long resource id: ``prefix-`` and 17 hex digits."""
    return f"{prefix}-{secrets.token_hex(9)[:17]}"


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Block:
    """One 512 KiB block: immutable data and its base64 SHA-256 (what EBS returns)."""

    data: bytes
    checksum: str

    @staticmethod
    def of(data: bytes) -> Block:
        return Block(data, base64.b64encode(hashlib.sha256(data).digest()).decode())


ZERO_BLOCK = Block.of(bytes(BLOCK_SIZE))


@dataclass
class Attachment:
    instance_id: str
    device: str
    delete_on_termination: bool
    attach_time: datetime


@dataclass
class Volume:
    id: str
    region: str
    az: str
    size_gib: int
    volume_type: str
    iops: int | None
    throughput: int | None
    encrypted: bool
    kms_key_id: str | None
    tags: dict[str, str]
    create_time: datetime
    snapshot_id: str | None = None
    attachment: Attachment | None = None
    blocks: dict[int, Block] = field(default_factory=dict)
    version: int = 0  # bumped on every write; keys the content-hash cache

    @property
    def state(self) -> str:
        return "in-use" if self.attachment else "available"

    @property
    def nblocks(self) -> int:
        return self.size_gib * BLOCKS_PER_GIB


@dataclass
class Snapshot:
    id: str
    region: str
    volume_id: str
    volume_size: int
    description: str
    tags: dict[str, str]
    start_time: datetime
    created_at: float  # time.monotonic() at capture
    complete_at: float  # time.monotonic() deadline for "completed"
    blocks: dict[int, Block]  # never mutated after capture
    encrypted: bool
    kms_key_id: str | None
    source: tuple[str, int]  # (volume id, volume version) it captured
    seq: int  # creation order, for stable paging
    owner_id: str = OWNER_ID
    _indices: list[int] | None = None

    def state(self, now: float | None = None) -> str:
        return "completed" if (now or time.monotonic()) >= self.complete_at else "pending"

    def progress(self, now: float | None = None) -> str:
        now = now or time.monotonic()
        if now >= self.complete_at:
            return "100%"
        span = self.complete_at - self.created_at
        return f"{min(99, int((now - self.created_at) / span * 100))}%"

    def indices(self) -> list[int]:
        """Written block indexes in numeric order (computed once; the dict never changes)."""
        if self._indices is None:
            self._indices = sorted(self.blocks)
        return self._indices


@dataclass
class Instance:
    id: str
    region: str
    az: str
    instance_type: str
    image_id: str
    subnet_id: str
    vpc_id: str
    security_groups: list[tuple[str, str]]  # (group id, group name)
    private_ip: str
    eni_id: str
    mac: str
    key_name: str | None
    iam_instance_profile: str | None  # profile ARN
    root_device_name: str
    tags: dict[str, str]
    user_data: bytes | None
    launch_time: datetime
    reservation_id: str
    architecture: str
    devices: list[tuple[str, str]]  # (device name, volume id), in attach order
    state: str = "running"

    @property
    def name(self) -> str | None:
        return self.tags.get("Name")


_STATE_CODES = {"pending": 0, "running": 16, "shutting-down": 32, "terminated": 48,
                "stopping": 64, "stopped": 80}


def state_code(state: str) -> int:
    return _STATE_CODES[state]


_ID_RES = {
    "instance": (re.compile(r"^i-[0-9a-f]{8}([0-9a-f]{9})?$"), "InvalidInstanceID"),
    "volume": (re.compile(r"^vol-[0-9a-f]{8}([0-9a-f]{9})?$"), "InvalidVolumeID"),
    "snapshot": (re.compile(r"^snap-[0-9a-f]{8}([0-9a-f]{9})?$"), "InvalidSnapshotID"),
}
_NOT_FOUND = {
    "instance": ("InvalidInstanceID.NotFound", "instance ID"),
    "volume": ("InvalidVolume.NotFound", "volume"),
    "snapshot": ("InvalidSnapshot.NotFound", "snapshot"),
}


def check_id(kind: str, resource_id: str) -> None:
    """Raise EC2's ``…ID.Malformed`` error for an id that cannot be a ``kind`` id."""
    regex, code = _ID_RES[kind]
    if not regex.match(resource_id):
        raise SimError(f"{code}.Malformed", f'Invalid id: "{resource_id}"')


def not_found(kind: str, ids: Sequence[str]) -> SimError:
    """EC2's not-found error, worded like AWS for one or several ids."""
    code, noun = _NOT_FOUND[kind]
    if len(ids) == 1:
        return SimError(code, f"The {noun} '{ids[0]}' does not exist")
    noun = noun.replace("ID", "IDs") if "ID" in noun else noun + "s"
    return SimError(code, f"The {noun} '{', '.join(ids)}' do not exist")


class Region:
    """One region's resources. All mutation goes through the owning world's lock."""

    def __init__(self, world: World, name: str) -> None:
        self.world = world
        self.name = name
        self.azs = [f"{name}{z}" for z in "abc"]
        self.instances: dict[str, Instance] = {}
        self.volumes: dict[str, Volume] = {}
        self.snapshots: dict[str, Snapshot] = {}
        self.vpc_id = new_id("vpc")
        self.subnets = {az: new_id("subnet") for az in self.azs}
        self.default_sg = (new_id("sg"), "default")
        self.default_kms_key = f"arn:aws:kms:{name}:{OWNER_ID}:key/{uuid.uuid4()}"
        self._ip = itertools.count(10)

    # ----------------------------------------------------------------- lookups

    def instance(self, instance_id: str) -> Instance:
        check_id("instance", instance_id)
        try:
            return self.instances[instance_id]
        except KeyError:
            raise not_found("instance", [instance_id]) from None

    def volume(self, volume_id: str) -> Volume:
        check_id("volume", volume_id)
        try:
            return self.volumes[volume_id]
        except KeyError:
            raise not_found("volume", [volume_id]) from None

    def snapshot(self, snapshot_id: str) -> Snapshot:
        check_id("snapshot", snapshot_id)
        try:
            return self.snapshots[snapshot_id]
        except KeyError:
            raise not_found("snapshot", [snapshot_id]) from None

    def select(self, kind: str, ids: Iterable[str]) -> list[Any]:
        """Resources by id, in request order; one error naming every missing id."""
        tables: dict[str, Mapping[str, Any]] = {
            "instance": self.instances, "volume": self.volumes, "snapshot": self.snapshots}
        table = tables[kind]
        ids = list(dict.fromkeys(ids))
        for rid in ids:
            check_id(kind, rid)
        missing = [rid for rid in ids if rid not in table]
        if missing:
            raise not_found(kind, missing)
        return [table[rid] for rid in ids]

    def taggable(self, resource_id: str) -> Instance | Volume | Snapshot:
        """Any resource CreateTags/DeleteTags can name."""
        for prefix, getter in (("i-", self.instance), ("vol-", self.volume),
                               ("snap-", self.snapshot)):
            if resource_id.startswith(prefix):
                return getter(resource_id)
        raise SimError("InvalidID", f'The ID \'{resource_id}\' is not valid')

    # ----------------------------------------------------------------- creation

    def create_volume(
        self,
        size_gib: int,
        az: str | None = None,
        volume_type: str = "gp3",
        iops: int | None = None,
        throughput: int | None = None,
        encrypted: bool = False,
        kms_key_id: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> Volume:
        if not isinstance(size_gib, int) or not 1 <= size_gib <= MAX_VOLUME_GIB:
            raise SimError("InvalidParameterValue", f"Invalid volume size: {size_gib!r}")
        if volume_type not in VOLUME_TYPES:
            raise SimError("InvalidParameterValue", f"Invalid volume type: {volume_type!r}")
        az = az or self.azs[0]
        if az not in self.azs:
            raise SimError("InvalidParameterValue", f"Invalid availability zone: [{az}]")
        if iops is None:
            iops = {"gp3": 3000, "io1": 3000, "io2": 3000,
                    "gp2": min(16000, max(100, 3 * size_gib))}.get(volume_type)
        if throughput is None and volume_type == "gp3":
            throughput = 125
        if encrypted and kms_key_id is None:
            kms_key_id = self.default_kms_key
        vol = Volume(
            id=new_id("vol"), region=self.name, az=az, size_gib=size_gib,
            volume_type=volume_type, iops=iops, throughput=throughput, encrypted=encrypted,
            kms_key_id=kms_key_id if encrypted else None, tags=dict(tags or {}),
            create_time=utcnow(),
        )
        with self.world.lock:
            self.volumes[vol.id] = vol
        return vol

    def create_instance(
        self,
        name: str | None,
        volumes: Sequence[Mapping[str, Any]],
        az: str | None = None,
        tags: Mapping[str, str] | None = None,
        instance_type: str = "t3.micro",
        user_data: bytes | None = None,
        image_id: str | None = None,
        key_name: str | None = "sim-key",
        iam_instance_profile: str | None = None,
        architecture: str = "x86_64",
    ) -> Instance:
        """A running instance with its volumes attached in the given (device) order."""
        if not volumes:
            raise SimError("InvalidParameterValue", "An instance needs at least a root volume")
        az = az or self.azs[0]
        if az not in self.azs:
            raise SimError("InvalidParameterValue", f"Invalid availability zone: [{az}]")
        allowed = {"size_gib", "device", "volume_type", "iops", "throughput", "encrypted",
                   "kms_key_id", "delete_on_termination", "tags"}
        devices: list[str] = []
        for i, spec in enumerate(volumes):
            extra = set(spec) - allowed
            if extra or "size_gib" not in spec:
                raise SimError("InvalidParameterValue",
                               f"volume spec {i}: needs size_gib; unknown keys {sorted(extra)}")
            devices.append(str(spec.get("device") or
                               ("/dev/xvda" if i == 0 else f"/dev/sd{chr(ord('f') + i - 1)}")))
        if len(set(devices)) != len(devices):
            raise SimError("InvalidParameterValue", f"Duplicate device names: {devices}")
        instance_id = new_id("i")
        now = utcnow()
        all_tags = {"Name": name} if name else {}
        all_tags.update(tags or {})
        with self.world.lock:
            n = next(self._ip)
            inst = Instance(
                id=instance_id, region=self.name, az=az, instance_type=instance_type,
                image_id=image_id or new_id("ami"), subnet_id=self.subnets[az],
                vpc_id=self.vpc_id, security_groups=[self.default_sg],
                private_ip=f"10.0.{n // 250}.{n % 250 + 4}", eni_id=new_id("eni"),
                mac="02:" + ":".join(secrets.token_hex(1) for _ in range(5)),
                key_name=key_name,
                iam_instance_profile=(
                    f"arn:aws:iam::{OWNER_ID}:instance-profile/{iam_instance_profile}"
                    if iam_instance_profile else None),
                root_device_name=devices[0], tags=all_tags, user_data=user_data,
                launch_time=now, reservation_id=new_id("r"), architecture=architecture,
                devices=[],
            )
            for i, (spec, device) in enumerate(zip(volumes, devices, strict=True)):
                vol = self.create_volume(
                    size_gib=spec["size_gib"], az=az,
                    volume_type=spec.get("volume_type", "gp3"), iops=spec.get("iops"),
                    throughput=spec.get("throughput"),
                    encrypted=bool(spec.get("encrypted", False)),
                    kms_key_id=spec.get("kms_key_id"), tags=spec.get("tags"),
                )
                vol.attachment = Attachment(
                    instance_id, device, bool(spec.get("delete_on_termination", i == 0)), now)
                inst.devices.append((device, vol.id))
            self.instances[instance_id] = inst
        return inst

    # ----------------------------------------------------------------- data

    def write_volume(self, volume_id: str, offset: int, data: bytes | memoryview) -> int:
        """Write ``data`` at any byte offset (read-modify-write of partial blocks)."""
        vol = self.volume(volume_id)
        end = offset + len(data)
        if offset < 0 or end > vol.size_gib * GIB:
            raise SimError("InvalidParameterValue",
                           f"write [{offset}, {end}) outside volume of {vol.size_gib} GiB")
        view = memoryview(data)
        full: dict[int, Block] = {}
        partial: list[tuple[int, int, memoryview]] = []
        pos = offset
        while pos < end:  # hash whole blocks before taking the lock
            index, in_block = divmod(pos, BLOCK_SIZE)
            n = min(BLOCK_SIZE - in_block, end - pos)
            chunk = view[pos - offset:pos - offset + n]
            if n == BLOCK_SIZE:
                full[index] = Block.of(bytes(chunk))
            else:
                partial.append((index, in_block, chunk))
            pos += n
        with self.world.lock:
            blocks = vol.blocks
            blocks.update(full)
            for index, in_block, chunk in partial:
                old = blocks.get(index, ZERO_BLOCK)
                buf = bytearray(old.data)
                buf[in_block:in_block + len(chunk)] = chunk
                blocks[index] = Block.of(bytes(buf))
            vol.version += 1
        return len(data)

    def read_volume(self, volume_id: str, offset: int, length: int) -> bytes:
        vol = self.volume(volume_id)
        end = offset + length
        if offset < 0 or length < 0 or end > vol.size_gib * GIB:
            raise SimError("InvalidParameterValue",
                           f"read [{offset}, {end}) outside volume of {vol.size_gib} GiB")
        with self.world.lock:
            blocks = dict(vol.blocks)
        out = bytearray()
        pos = offset
        while pos < end:
            index, in_block = divmod(pos, BLOCK_SIZE)
            n = min(BLOCK_SIZE - in_block, end - pos)
            out += blocks.get(index, ZERO_BLOCK).data[in_block:in_block + n]
            pos += n
        return bytes(out)

    def volume_sha256(self, volume_id: str) -> str:
        vol = self.volume(volume_id)
        with self.world.lock:
            blocks = dict(vol.blocks)
            key = f"{vol.id}@{vol.version}"
        return self.world.content_sha256(key, blocks, vol.nblocks)

    def snapshot_sha256(self, snapshot_id: str) -> str:
        snap = self.snapshot(snapshot_id)
        return self.world.content_sha256(snap.id, snap.blocks,
                                         snap.volume_size * BLOCKS_PER_GIB)

    # ----------------------------------------------------------------- snapshots

    def _capture(self, vol: Volume, description: str, tags: Mapping[str, str],
                 complete_at: float, now: float) -> Snapshot:
        """Freeze ``vol``'s current blocks into a new snapshot (caller holds the lock)."""
        snap = Snapshot(
            id=new_id("snap"), region=self.name, volume_id=vol.id, volume_size=vol.size_gib,
            description=description, tags=dict(tags), start_time=utcnow(), created_at=now,
            complete_at=complete_at, blocks=dict(vol.blocks), encrypted=vol.encrypted,
            kms_key_id=vol.kms_key_id, source=(vol.id, vol.version),
            seq=next(self.world.seq),
        )
        self.snapshots[snap.id] = snap
        return snap

    def create_snapshot(self, volume_id: str, description: str = "",
                        tags: Mapping[str, str] | None = None) -> Snapshot:
        with self.world.lock:
            vol = self.volume(volume_id)
            now = time.monotonic()
            return self._capture(vol, description, tags or {},
                                 now + self.world.snapshot_delay, now)

    def create_snapshots(
        self,
        instance_id: str,
        exclude_boot_volume: bool = False,
        exclude_volume_ids: Sequence[str] = (),
        description: str = "",
        tags: Mapping[str, str] | None = None,
        copy_tags_from_volume: bool = False,
    ) -> list[Snapshot]:
        """One snapshot per attached volume, all captured under one lock (crash-consistent).

        The set shares one completion deadline, so its snapshots complete together.
        """
        with self.world.lock:
            inst = self.instance(instance_id)
            for vid in exclude_volume_ids:
                check_id("volume", vid)
            now = time.monotonic()
            complete_at = now + self.world.snapshot_delay
            snaps = []
            for device, vid in inst.devices:
                if vid in exclude_volume_ids or (
                        exclude_boot_volume and device == inst.root_device_name):
                    continue
                vol = self.volumes[vid]
                snap_tags = dict(vol.tags) if copy_tags_from_volume else {}
                snap_tags.update(tags or {})
                snaps.append(self._capture(vol, description, snap_tags, complete_at, now))
            return snaps

    def delete_snapshot(self, snapshot_id: str) -> None:
        with self.world.lock:
            self.snapshot(snapshot_id)
            del self.snapshots[snapshot_id]


class World:
    """All regions plus the knobs; regions spring into existence when first named."""

    def __init__(self, snapshot_delay: float = DEFAULT_SNAPSHOT_DELAY) -> None:
        self.lock = threading.RLock()
        self.default_snapshot_delay = snapshot_delay
        self.snapshot_delay = snapshot_delay
        self.regions: dict[str, Region] = {}
        self.seq = itertools.count(1)
        self._sha_cache: dict[str, str] = {}

    def region(self, name: str) -> Region:
        region = self.regions.get(name)
        if region is None:
            if not _REGION_RE.match(name):
                raise SimError("InvalidParameterValue", f"Invalid region name: {name!r}")
            with self.lock:
                region = self.regions.setdefault(name, Region(self, name))
        return region

    def reset(self) -> None:
        """Forget every resource and restore the options given at start-up."""
        with self.lock:
            self.regions.clear()
            self._sha_cache.clear()
            self.snapshot_delay = self.default_snapshot_delay

    def set_options(self, snapshot_delay: float | None = None) -> dict[str, Any]:
        with self.lock:
            if snapshot_delay is not None:
                if snapshot_delay < 0:
                    raise SimError("InvalidParameterValue", "snapshot_delay must be >= 0")
                self.snapshot_delay = float(snapshot_delay)
            return self.options()

    def options(self) -> dict[str, Any]:
        return {"snapshot_delay": self.snapshot_delay}

    def content_sha256(self, key: str, blocks: Mapping[int, Block], nblocks: int) -> str:
        """SHA-256 over a whole disk image (zeros where unwritten), cached per ``key``.

        Streams block by block and reuses one zero block, so nothing disk-sized is built.
        Keys are a snapshot id or ``volume@version``: a volume and its snapshot are always
        hashed separately, so comparing them really compares their bytes.
        """
        cached = self._sha_cache.get(key)
        if cached is not None:
            return cached
        digest = hashlib.sha256()
        zero = ZERO_BLOCK.data
        for index in range(nblocks):
            block = blocks.get(index)
            digest.update(zero if block is None else block.data)
        result = digest.hexdigest()
        with self.lock:
            self._sha_cache[key] = result
        return result
