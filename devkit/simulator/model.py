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
import math
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
from .options import Options

BLOCK_SIZE = 524288
GIB = 1 << 30
BLOCKS_PER_GIB = GIB // BLOCK_SIZE
OWNER_ID = "123456789012"
DEFAULT_REGION = "us-east-1"
DEFAULT_SNAPSHOT_DELAY = 0.3
MAX_VOLUME_GIB = 65536
VOLUME_TYPES = ("gp2", "gp3", "io1", "io2", "st1", "sc1", "standard")

_REGION_RE = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d+$")
_KEY_ID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_KEY_ARN_RE = re.compile(r"arn:aws[a-z-]*:kms:([a-z0-9-]+):\d{12}:key/[A-Za-z0-9-]+")


def kms_denied(operation: str, snapshot_id: str | None) -> SimError:
    """EBS direct's refusal when the caller may not use a snapshot's KMS key."""
    what = f"snapshot {snapshot_id}" if snapshot_id else "the new snapshot"
    return SimError("AccessDeniedException",
                    f"{operation}: access to the KMS key of {what} is denied "
                    f"(kms:Decrypt / kms:GenerateDataKeyWithoutPlaintext).", 403,
                    "DEPENDENCY_ACCESS_DENIED")


def key_arn_region(key: str) -> str | None:
    """The region of a KMS key ARN (``arn:aws:kms:<region>:<12 digits>:key/<id>``), or None
    for anything else (an alias, a bare id, an alias ARN)."""
    match = _KEY_ARN_RE.fullmatch(key)
    return match.group(1) if match else None


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
    lineage: str = ""  # snapshots sharing it can be diffed by ListChangedBlocks
    deleted: bool = False
    # The blocks of this volume's previous EC2 snapshot (or of the snapshot it was created
    # from): what a new snapshot must copy is what differs (``snapshot_mib_per_s``).
    last_snapshot_blocks: dict[int, Block] | None = None
    last_snapshot_request: float | None = None  # monotonic time of its last CreateSnapshot
    modification: dict[str, Any] | None = None  # last ModifyVolume (see modification_state)
    seq: int = 0  # creation order, for stable paging

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
    # Lineage: EC2 snapshots of one volume (and of volumes created from them) share it, and
    # an EBS-direct child inherits its parent's, so ListChangedBlocks can refuse the rest.
    lineage: str = ""
    parent_id: str | None = None
    origin: str = "ec2"  # "ec2" (CreateSnapshot/CreateSnapshots) | "ebs" (StartSnapshot)
    # EBS direct write side: open for PutSnapshotBlock until CompleteSnapshot or timeout.
    open: bool = False
    timeout_s: float = 0.0  # auto-cancel after this long without a put/complete
    # start_snapshot_timeout="absolute": Timeout counts from StartSnapshot, not the last put
    timeout_absolute: bool = False
    last_activity: float = 0.0
    written: set[int] = field(default_factory=set)  # indexes put into this snapshot
    client_token: str | None = None
    fingerprint: str | None = None  # StartSnapshot parameters, for ClientToken conflicts
    sse_type: str = "none"
    completed_at: float | None = None  # when CompleteSnapshot sealed it (monotonic)
    # When this snapshot's own copy is done; a CreateSnapshots set completes together at
    # ``complete_at`` (its slowest member), so a faster member shows 99% until then.
    own_done_at: float | None = None

    def state(self, now: float | None = None) -> str:
        now = time.monotonic() if now is None else now
        if self.open:
            anchor = self.created_at if self.timeout_absolute else self.last_activity
            return "error" if now >= anchor + self.timeout_s else "pending"
        if self.complete_at == math.inf:
            return "error"
        return "completed" if now >= self.complete_at else "pending"

    def progress(self, now: float | None = None) -> str:
        now = time.monotonic() if now is None else now
        if now >= self.complete_at:
            return "100%"
        if self.open or self.complete_at == math.inf:
            return "0%"
        done = self.complete_at if self.own_done_at is None else self.own_done_at
        span = done - self.created_at
        if span <= 0 or now >= done:
            return "99%"
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
    seq: int = 0  # creation order, for stable paging
    state_reason: tuple[str, str] | None = None  # (Code, Message) of a failed launch

    @property
    def name(self) -> str | None:
        return self.tags.get("Name")


@dataclass
class Image:
    """A registered AMI: EBS-backed, its block device mappings name snapshots."""

    id: str
    region: str
    name: str
    description: str
    architecture: str
    root_device_name: str
    mappings: list[dict[str, Any]]  # boto3-shaped BlockDeviceMapping dicts
    virtualization_type: str
    ena_support: bool
    boot_mode: str | None
    tags: dict[str, str]
    creation_date: datetime
    state: str = "available"
    seq: int = 0  # creation order, for stable paging


_STATE_CODES = {"pending": 0, "running": 16, "shutting-down": 32, "terminated": 48,
                "stopping": 64, "stopped": 80}


def state_code(state: str) -> int:
    return _STATE_CODES[state]


_ID_RES = {
    "instance": (re.compile(r"^i-[0-9a-f]{8}([0-9a-f]{9})?$"), "InvalidInstanceID"),
    "volume": (re.compile(r"^vol-[0-9a-f]{8}([0-9a-f]{9})?$"), "InvalidVolumeID"),
    "snapshot": (re.compile(r"^snap-[0-9a-f]{8}([0-9a-f]{9})?$"), "InvalidSnapshotID"),
    "image": (re.compile(r"^ami-[0-9a-f]{8}([0-9a-f]{9})?$"), "InvalidAMIID"),
}
_NOT_FOUND = {
    "instance": ("InvalidInstanceID.NotFound", "instance ID"),
    "volume": ("InvalidVolume.NotFound", "volume"),
    "snapshot": ("InvalidSnapshot.NotFound", "snapshot"),
    "image": ("InvalidAMIID.NotFound", "image id"),
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


def modification_state(mod: Mapping[str, Any], now: float | None = None) -> str:
    """``modifying`` for one step (``snapshot_delay``), ``optimizing`` for one more, then
    ``completed`` (computed lazily, like snapshot states)."""
    now = time.monotonic() if now is None else now
    steps = (now - mod["_started"]) / mod["_step"]
    return "modifying" if steps < 1 else "optimizing" if steps < 2 else "completed"


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
        self.security_groups: dict[str, str] = dict([self.default_sg])  # id -> name
        self.images: dict[str, Image] = {}
        self.default_kms_key = f"arn:aws:kms:{name}:{OWNER_ID}:key/{uuid.uuid4()}"
        self._ip = itertools.count(10)
        self._client_tokens: dict[str, Snapshot] = {}
        # EC2 eventual consistency (``ec2_not_found_window``), all read by the EC2 layer only:
        self.ec2_hidden_until: dict[str, float] = {}  # new id -> when Describe first sees it
        self.ghosts: dict[str, tuple[Any, float]] = {}  # deleted id -> (resource, listed until)
        self.shutting_down_until: dict[str, float] = {}  # terminated instance -> until
        # Snapshots deleted while pending keep counting against the per-volume and
        # per-region limits until their copy would have finished (AWS knowledge center).
        self.deleted_in_progress: list[tuple[str, float]] = []  # (volume id, complete_at)

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
            "instance": self.instances, "volume": self.volumes, "snapshot": self.snapshots,
            "image": self.images}
        table = tables[kind]
        ids = list(dict.fromkeys(ids))
        for rid in ids:
            check_id(kind, rid)
        missing = [rid for rid in ids if rid not in table]
        if missing:
            raise not_found(kind, missing)
        return [table[rid] for rid in ids]

    def image(self, image_id: str) -> Image:
        check_id("image", image_id)
        try:
            return self.images[image_id]
        except KeyError:
            raise SimError("InvalidAMIID.NotFound",
                           f"The image id '[{image_id}]' does not exist") from None

    def taggable(self, resource_id: str) -> Instance | Volume | Snapshot | Image:
        """Any resource CreateTags/DeleteTags can name."""
        getters: tuple[tuple[str, Any], ...] = (
            ("i-", self.instance), ("vol-", self.volume), ("snap-", self.snapshot),
            ("ami-", self.image))
        for prefix, getter in getters:
            if resource_id.startswith(prefix):
                found: Instance | Volume | Snapshot | Image = getter(resource_id)
                return found
        raise SimError("InvalidID", f'The ID \'{resource_id}\' is not valid')

    # ----------------------------------------------------------------- creation

    def create_volume(
        self,
        size_gib: int | None = None,
        az: str | None = None,
        volume_type: str = "gp3",
        iops: int | None = None,
        throughput: int | None = None,
        encrypted: bool = False,
        kms_key_id: str | None = None,
        tags: Mapping[str, str] | None = None,
        snapshot_id: str | None = None,
        kms_checked: bool = True,
    ) -> Volume:
        """A new available volume; from ``snapshot_id`` it holds that snapshot's data.

        ``kms_checked`` (EC2 calls; the control API seeds without): with the ``kms`` knob a
        KmsKeyId needs Encrypted, and a key the caller may not use (:meth:`kms_usable`)
        gives what EC2 gives, asynchronously: the call answers ``creating`` and the volume
        is gone (``deleted``, never stored), so the next Describe says NotFound.
        """
        if kms_checked and self.world.opts.kms and kms_key_id is not None and not encrypted:
            raise SimError("InvalidParameterDependency",
                           "The parameter KmsKeyId requires the parameter Encrypted to be set.")
        if kms_key_id is not None and _KEY_ID_RE.fullmatch(kms_key_id):
            kms_key_id = f"arn:aws:kms:{self.name}:{OWNER_ID}:key/{kms_key_id}"
        source: Snapshot | None = None
        if snapshot_id is not None:
            source = self.snapshot(snapshot_id)
            if source.state() != "completed":
                raise SimError("IncorrectState",
                               f"Snapshot is in invalid state - {source.state()}")
            if size_gib is None:
                size_gib = source.volume_size
            elif size_gib < source.volume_size:
                raise SimError("InvalidParameterValue",
                               f"Volume of {size_gib}GiB is too small; minimum is "
                               f"{source.volume_size}GiB.")
            if source.encrypted:
                encrypted = True
                kms_key_id = kms_key_id or source.kms_key_id
        if size_gib is None:
            raise SimError("MissingParameter", "The request must contain the parameter size/snapshotId")
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
            create_time=utcnow(), seq=next(self.world.seq),
        )
        vol.lineage = f"vol:{vol.id}"
        if source is not None:
            # Same Block objects: a later snapshot of this volume diffs against the source
            # by what was written since, like EBS's incremental chain.
            vol.blocks = dict(source.blocks)
            vol.snapshot_id = source.id
            vol.lineage = source.lineage
            vol.last_snapshot_blocks = source.blocks
        if kms_checked and vol.encrypted and not self.kms_usable(vol.kms_key_id):
            vol.deleted = True
            return vol
        with self.world.lock:
            self.volumes[vol.id] = vol
        return vol

    def kms_usable(self, key: str | None) -> bool:
        """Whether the caller may use KMS key ``key`` (None: not encrypted, always usable):
        not in ``kms_denied_keys`` and, with the ``kms`` knob, a key ARN of this region."""
        if key is None:
            return True
        opts = self.world.opts
        if key in opts.kms_denied_keys:
            return False
        return not opts.kms or key_arn_region(key) == self.name

    def delete_volume(self, volume_id: str) -> None:
        with self.world.lock:
            vol = self.volume(volume_id)
            if vol.attachment is not None:
                raise SimError("VolumeInUse", f"Volume {volume_id} is currently attached to "
                               f"{vol.attachment.instance_id}")
            del self.volumes[volume_id]

    def attach_volume(self, volume_id: str, instance_id: str, device: str) -> Volume:
        with self.world.lock:
            vol = self.volume(volume_id)
            inst = self.instance(instance_id)
            if vol.attachment is not None:
                raise SimError("VolumeInUse",
                               f"{volume_id} is already attached to an instance")
            if inst.state == "terminated":
                raise SimError("IncorrectInstanceState",
                               f"The instance '{instance_id}' is not in a valid state.")
            if vol.az != inst.az:
                raise SimError("InvalidVolume.ZoneMismatch",
                               f"The volume '{volume_id}' is not in the same availability "
                               f"zone as instance '{instance_id}'")
            if any(d == device for d, _ in inst.devices):
                raise SimError("InvalidParameterValue",
                               f"Invalid value '{device}' for unixDevice. Attachment point "
                               f"{device} is already in use")
            vol.attachment = Attachment(instance_id, device, False, utcnow())
            inst.devices.append((device, vol.id))
            return vol

    def detach_volume(self, volume_id: str, instance_id: str | None = None,
                      device: str | None = None) -> tuple[Volume, Attachment]:
        with self.world.lock:
            vol = self.volume(volume_id)
            att = vol.attachment
            if att is None or (instance_id and att.instance_id != instance_id) or (
                    device and att.device != device):
                raise SimError("IncorrectState", f"Volume '{volume_id}' is in the "
                               f"'available' state.")
            inst = self.instances[att.instance_id]
            if att.device == inst.root_device_name and inst.state not in (
                    "stopped", "terminated"):
                raise SimError("IncorrectState",
                               f"Unable to detach root volume '{volume_id}' from instance "
                               f"'{inst.id}'")
            inst.devices = [(d, v) for d, v in inst.devices if v != volume_id]
            vol.attachment = None
            return vol, att

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
        security_group_ids: Sequence[str] | None = None,
        private_ip: str | None = None,
        subnet_id: str | None = None,
        kms_checked: bool = True,
    ) -> Instance:
        """A running instance with its volumes attached in the given (device) order.

        A volume spec with ``snapshot_id`` is created from that snapshot (RunInstances from an
        image); ``size_gib`` is then optional. A volume whose KMS key the caller may not use
        (``kms_checked``, see :meth:`create_volume`) fails the launch as on EC2: the
        instance is ``terminated`` with StateReason ``Client.InternalError``.
        """
        if not volumes:
            raise SimError("InvalidParameterValue", "An instance needs at least a root volume")
        if subnet_id is not None:
            by_subnet = {sid: zone for zone, sid in self.subnets.items()}
            if subnet_id not in by_subnet:
                raise SimError("InvalidSubnetID.NotFound",
                               f"The subnet ID '{subnet_id}' does not exist")
            if az is not None and az != by_subnet[subnet_id]:
                raise SimError("InvalidParameterValue", f"The subnet '{subnet_id}' is not in "
                               f"availability zone {az}")
            az = by_subnet[subnet_id]
        az = az or self.azs[0]
        if az not in self.azs:
            raise SimError("InvalidParameterValue", f"Invalid availability zone: [{az}]")
        groups = [self.default_sg]
        if security_group_ids:
            known = dict(self.security_groups)
            missing = [g for g in security_group_ids if g not in known]
            if missing:
                raise SimError("InvalidGroup.NotFound",
                               f"The security group '{missing[0]}' does not exist")
            groups = [(g, known[g]) for g in dict.fromkeys(security_group_ids)]
        if private_ip is not None:
            if not re.fullmatch(r"10\.0\.\d{1,3}\.\d{1,3}", private_ip):
                raise SimError("InvalidParameterValue", f"Address {private_ip} does not fall "
                               f"within the subnet's address range")
            if any(i.private_ip == private_ip and i.state != "terminated"
                   for i in self.instances.values()):
                raise SimError("InvalidIPAddress.InUse",
                               f"Address {private_ip} is in use.")
        allowed = {"size_gib", "device", "volume_type", "iops", "throughput", "encrypted",
                   "kms_key_id", "delete_on_termination", "tags", "snapshot_id"}
        devices: list[str] = []
        for i, spec in enumerate(volumes):
            extra = set(spec) - allowed
            if extra or ("size_gib" not in spec and "snapshot_id" not in spec):
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
                vpc_id=self.vpc_id, security_groups=groups,
                private_ip=private_ip or f"10.0.{n // 250}.{n % 250 + 4}",
                eni_id=new_id("eni"),
                mac="02:" + ":".join(secrets.token_hex(1) for _ in range(5)),
                key_name=key_name,
                iam_instance_profile=(
                    f"arn:aws:iam::{OWNER_ID}:instance-profile/{iam_instance_profile}"
                    if iam_instance_profile else None),
                root_device_name=devices[0], tags=all_tags, user_data=user_data,
                launch_time=now, reservation_id=new_id("r"), architecture=architecture,
                devices=[], seq=next(self.world.seq),
            )
            for i, (spec, device) in enumerate(zip(volumes, devices, strict=True)):
                vol = self.create_volume(
                    size_gib=spec.get("size_gib"), az=az,
                    volume_type=spec.get("volume_type") or "gp3", iops=spec.get("iops"),
                    throughput=spec.get("throughput"),
                    encrypted=bool(spec.get("encrypted", False)),
                    kms_key_id=spec.get("kms_key_id"), tags=spec.get("tags"),
                    snapshot_id=spec.get("snapshot_id"), kms_checked=kms_checked,
                )
                if vol.deleted:
                    inst.state_reason = ("Client.InternalError",
                                         "Client.InternalError: Client error on launch")
                    continue
                vol.attachment = Attachment(
                    instance_id, device, bool(spec.get("delete_on_termination", i == 0)), now)
                inst.devices.append((device, vol.id))
            self.instances[instance_id] = inst
            if inst.state_reason is not None:
                self.set_instance_state(instance_id, "terminate")
        return inst

    def set_instance_state(self, instance_id: str, action: str) -> tuple[str, str, str]:
        """Stop/start/terminate: (previous state, transitional state reported, new state).

        Transitions are immediate (the API answers stopping/pending/shutting-down, later
        Describe calls see stopped/running/terminated). Terminating deletes the volumes marked
        DeleteOnTermination and detaches the others.
        """
        with self.world.lock:
            inst = self.instance(instance_id)
            prev = inst.state
            if action == "terminate":
                if prev != "terminated":
                    for _, vid in inst.devices:
                        vol = self.volumes.get(vid)
                        if vol is None or vol.attachment is None:
                            continue
                        delete = vol.attachment.delete_on_termination
                        vol.attachment = None
                        if delete:
                            del self.volumes[vid]
                    inst.devices = []
                    inst.state = "terminated"
                return prev, "shutting-down" if prev != "terminated" else prev, "terminated"
            if prev == "terminated":
                raise SimError("IncorrectInstanceState", f"The instance '{instance_id}' is not "
                               f"in a state from which it can be {action}ed.")
            if action == "stop":
                inst.state = "stopped"
                return prev, "stopping" if prev != "stopped" else prev, "stopped"
            inst.state = "running"
            return prev, "pending" if prev != "running" else prev, "running"

    def register_image(self, name: str, root_device_name: str,
                       mappings: Sequence[Mapping[str, Any]], description: str = "",
                       architecture: str = "x86_64", virtualization_type: str = "hvm",
                       ena_support: bool = True, boot_mode: str | None = None,
                       tags: Mapping[str, str] | None = None) -> Image:
        """An EBS-backed AMI whose mappings name completed snapshots of this region."""
        with self.world.lock:
            if any(i.name == name for i in self.images.values()):
                raise SimError("InvalidAMIName.Duplicate",
                               f"AMI name {name} is already in use by AMI "
                               f"{next(i.id for i in self.images.values() if i.name == name)}")
            if not re.fullmatch(r"[A-Za-z0-9()\[\]./\-'@_ ]{3,128}", name):
                raise SimError("InvalidAMIName.Malformed", f"AMI name '{name}' is invalid")
            clean: list[dict[str, Any]] = []
            for m in mappings:
                entry = {k: v for k, v in m.items() if k in ("DeviceName", "Ebs", "NoDevice",
                                                              "VirtualName")}
                ebs = dict(entry.get("Ebs") or {})
                if ebs.get("SnapshotId"):
                    snap = self.snapshot(ebs["SnapshotId"])
                    if snap.state() != "completed":
                        raise SimError("IncorrectState",
                                       f"Snapshot '{snap.id}' is not in completed state")
                    ebs.setdefault("VolumeSize", snap.volume_size)
                    ebs.setdefault("Encrypted", snap.encrypted)
                if ebs:
                    ebs.setdefault("DeleteOnTermination", True)
                    ebs.setdefault("VolumeType", "gp3")
                    entry["Ebs"] = ebs
                clean.append(entry)
            root = next((m for m in clean if m.get("DeviceName") == root_device_name), None)
            if root is None or not (root.get("Ebs") or {}).get("SnapshotId"):
                raise SimError("InvalidBlockDeviceMapping",
                               f"The root device {root_device_name} needs a snapshot mapping")
            image = Image(
                id=new_id("ami"), region=self.name, name=name, description=description,
                architecture=architecture, root_device_name=root_device_name, mappings=clean,
                virtualization_type=virtualization_type, ena_support=ena_support,
                boot_mode=boot_mode, tags=dict(tags or {}), creation_date=utcnow(),
                seq=next(self.world.seq))
            self.images[image.id] = image
            return image

    def deregister_image(self, image_id: str, delete_snapshots: bool = False) -> list[str]:
        with self.world.lock:
            image = self.image(image_id)
            del self.images[image_id]
            deleted = []
            if delete_snapshots:
                for m in image.mappings:
                    sid = (m.get("Ebs") or {}).get("SnapshotId")
                    if sid and sid in self.snapshots:
                        del self.snapshots[sid]
                        deleted.append(sid)
            return deleted

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

    def trim_volume(self, volume_id: str, offset: int, length: int) -> int:
        """Unwrite (TRIM/discard) ``[offset, offset+length)``: whole blocks inside it become
        unwritten again (a later snapshot does not have them); partial edges read as zeros
        but stay written. Returns how many blocks became unwritten."""
        vol = self.volume(volume_id)
        end = offset + length
        if offset < 0 or length < 0 or end > vol.size_gib * GIB:
            raise SimError("InvalidParameterValue",
                           f"trim [{offset}, {end}) outside volume of {vol.size_gib} GiB")
        first_whole = -(-offset // BLOCK_SIZE)
        last_whole = end // BLOCK_SIZE  # exclusive
        with self.world.lock:
            dropped = 0
            for index in [i for i in vol.blocks if first_whole <= i < last_whole]:
                del vol.blocks[index]
                dropped += 1
            vol.version += 1
        edges = [(offset, end)] if last_whole < first_whole else [
            (offset, min(end, first_whole * BLOCK_SIZE)),
            (max(offset, last_whole * BLOCK_SIZE), end)]
        for lo, hi in edges:
            if hi > lo and (lo // BLOCK_SIZE) in vol.blocks:
                self.write_volume(volume_id, lo, bytes(hi - lo))
        return dropped

    def modify_volume(self, volume_id: str, size_gib: int | None = None,
                      volume_type: str | None = None, iops: int | None = None,
                      throughput: int | None = None) -> dict[str, Any]:
        """ModifyVolume: grow the volume (visible at once) and record the modification."""
        with self.world.lock:
            vol = self.volume(volume_id)
            if size_gib is None and volume_type is None and iops is None and throughput is None:
                raise SimError("MissingParameter", "The request must contain one of the "
                               "parameters size, volumeType, iops or throughput")
            if size_gib is not None:
                if not isinstance(size_gib, int) or size_gib > MAX_VOLUME_GIB:
                    raise SimError("InvalidParameterValue",
                                   f"Invalid volume size: {size_gib!r}")
                if size_gib < vol.size_gib:
                    raise SimError("InvalidParameterValue",
                                   f"New size cannot be smaller than existing size "
                                   f"({vol.size_gib} GiB)")
            if volume_type is not None and volume_type not in VOLUME_TYPES:
                raise SimError("InvalidParameterValue", f"Invalid volume type: {volume_type!r}")
            now = time.monotonic()
            prev = vol.modification
            if prev is not None and modification_state(prev, now) != "completed":
                raise SimError("IncorrectModificationState",
                               f"Volume '{volume_id}' is already being modified")
            mod: dict[str, Any] = {
                "VolumeId": vol.id, "OriginalSize": vol.size_gib,
                "OriginalVolumeType": vol.volume_type, "OriginalIops": vol.iops,
                "OriginalThroughput": vol.throughput,
                "TargetSize": size_gib if size_gib is not None else vol.size_gib,
                "TargetVolumeType": volume_type or vol.volume_type,
                "TargetIops": iops if iops is not None else vol.iops,
                "TargetThroughput": throughput if throughput is not None else vol.throughput,
                "StartTime": utcnow(), "_started": now,
                "_step": max(self.world.opts.snapshot_delay, 0.05),
            }
            vol.size_gib = mod["TargetSize"]
            vol.volume_type = mod["TargetVolumeType"]
            vol.iops = mod["TargetIops"]
            vol.throughput = mod["TargetThroughput"]
            vol.modification = mod
            return mod

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

    def _copy_seconds(self, vol: Volume) -> float:
        """Seconds EBS needs to copy what ``vol`` wrote since its previous snapshot (all its
        written blocks for a first snapshot) at ``snapshot_mib_per_s``; 0 when off."""
        rate = self.world.opts.snapshot_mib_per_s
        if rate <= 0:
            return 0.0
        prev = vol.last_snapshot_blocks
        if prev is None:
            changed = len(vol.blocks)
        else:
            changed = sum(1 for i, b in vol.blocks.items() if prev.get(i) is not b)
        return changed * BLOCK_SIZE / (1 << 20) / rate

    def _in_progress(self, now: float, volume_id: str | None = None) -> int:
        """Snapshots not yet completed (of ``volume_id``, or in the region), deleted ones
        whose copy is still running included."""
        if volume_id is None:  # the region quota counts snapshots in the pending state
            n = sum(1 for s in self.snapshots.values() if s.state(now) == "pending")
        else:  # per volume, incomplete (error) snapshots count too
            n = sum(1 for s in self.snapshots.values()
                    if s.volume_id == volume_id and s.state(now) != "completed")
        return n + sum(1 for vid, until in self.deleted_in_progress
                       if until > now and (volume_id is None or vid == volume_id))

    def _check_snapshot_limits(self, vols: Sequence[Volume], now: float) -> None:
        """The three EC2 snapshot limits; a set that hits one creates nothing."""
        opts = self.world.opts
        interval = opts.snapshot_interval_per_volume
        if interval > 0:
            for vol in vols:
                if vol.last_snapshot_request is not None and \
                        now < vol.last_snapshot_request + interval:
                    raise SimError("SnapshotCreationPerVolumeRateExceeded",
                                   "The maximum per volume CreateSnapshot request rate has been "
                                   "exceeded. Use an increasing or variable sleep interval "
                                   "between requests.")
        if opts.concurrent_snapshots_per_volume > 0:
            for vol in vols:
                limit = 1 if vol.volume_type in ("st1", "sc1") \
                    else opts.concurrent_snapshots_per_volume
                if self._in_progress(now, vol.id) >= limit:
                    raise SimError("ConcurrentSnapshotLimitExceeded",
                                   "Maximum allowed in-progress snapshots for a single volume "
                                   "exceeded.")
        limit = opts.pending_snapshots_per_region
        if limit > 0 and self._in_progress(now) + len(vols) > limit:
            raise SimError("PendingSnapshotLimitExceeded",
                           "The limit on the number of Amazon EBS snapshots in the pending "
                           "state has been exceeded.")

    def _capture(self, vol: Volume, description: str, tags: Mapping[str, str],
                 complete_at: float, now: float) -> Snapshot:
        """Freeze ``vol``'s current blocks into a new snapshot (caller holds the lock)."""
        snap = Snapshot(
            id=new_id("snap"), region=self.name, volume_id=vol.id, volume_size=vol.size_gib,
            description=description, tags=dict(tags), start_time=utcnow(), created_at=now,
            complete_at=complete_at, blocks=dict(vol.blocks), encrypted=vol.encrypted,
            kms_key_id=vol.kms_key_id, source=(vol.id, vol.version),
            seq=next(self.world.seq), lineage=vol.lineage or f"vol:{vol.id}",
            sse_type="sse-ebs" if vol.encrypted else "none",
        )
        self.snapshots[snap.id] = snap
        vol.last_snapshot_blocks = snap.blocks
        vol.last_snapshot_request = now
        return snap

    def create_snapshot(self, volume_id: str, description: str = "",
                        tags: Mapping[str, str] | None = None) -> Snapshot:
        with self.world.lock:
            vol = self.volume(volume_id)
            now = time.monotonic()
            self._check_snapshot_limits([vol], now)
            done = now + max(self.world.snapshot_delay, self._copy_seconds(vol))
            return self._capture(vol, description, tags or {}, done, now)

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

        The set shares one completion deadline (its slowest member's), so its snapshots
        complete together; each member's Progress stops at 99% once its own copy is done.
        """
        with self.world.lock:
            inst = self.instance(instance_id)
            for vid in exclude_volume_ids:
                check_id("volume", vid)
            now = time.monotonic()
            vols = [self.volumes[vid] for device, vid in inst.devices
                    if vid not in exclude_volume_ids and not (
                        exclude_boot_volume and device == inst.root_device_name)]
            self._check_snapshot_limits(vols, now)
            own = [now + max(self.world.snapshot_delay, self._copy_seconds(v)) for v in vols]
            complete_at = max(own, default=now)
            snaps = []
            for vol, done in zip(vols, own, strict=True):
                snap_tags = dict(vol.tags) if copy_tags_from_volume else {}
                snap_tags.update(tags or {})
                snap = self._capture(vol, description, snap_tags, complete_at, now)
                snap.own_done_at = done
                snaps.append(snap)
            return snaps

    def delete_snapshot(self, snapshot_id: str) -> None:
        with self.world.lock:
            self.snapshot(snapshot_id)
            for image in self.images.values():
                if any((m.get("Ebs") or {}).get("SnapshotId") == snapshot_id
                       for m in image.mappings):
                    raise SimError("InvalidSnapshot.InUse", f"The snapshot {snapshot_id} is "
                                   f"currently in use by {image.id}")
            snap = self.snapshots.pop(snapshot_id)
            now = time.monotonic()
            if snap.origin == "ec2" and snap.state(now) == "pending":
                self.deleted_in_progress = [(v, t) for v, t in self.deleted_in_progress
                                            if t > now]
                self.deleted_in_progress.append((snap.volume_id, snap.complete_at))

    # ----------------------------------------------------------------- EBS direct writes

    def start_snapshot(
        self,
        volume_size: int,
        parent: Snapshot | None = None,
        description: str = "",
        tags: Mapping[str, str] | None = None,
        client_token: str | None = None,
        encrypted: bool | None = None,
        kms_key_arn: str | None = None,
        timeout_minutes: int = 60,
    ) -> Snapshot:
        """StartSnapshot's rules (ebs-direct-facts.md 1.6); returns the pending snapshot.

        A repeated ClientToken with identical parameters returns the original snapshot; with
        different ones, ConflictException.
        """
        fingerprint = repr((volume_size, parent.id if parent else None, description,
                            sorted((tags or {}).items()), encrypted, kms_key_arn,
                            timeout_minutes))
        with self.world.lock:
            if client_token is not None:
                earlier = self._client_tokens.get(client_token)
                if earlier is not None:
                    if earlier.fingerprint != fingerprint:
                        raise SimError("ConflictException",
                                       "The request uses the same client token as a previous, "
                                       "but non-identical request.", 409)
                    return earlier
            if parent is not None and encrypted is not None:
                raise SimError("ValidationException",
                               "ParentSnapshotId can't be combined with Encrypted.", 400,
                               "INVALID_PARAMETER_VALUE")
            if volume_size > MAX_VOLUME_GIB:
                raise SimError("ValidationException",
                               f"The volume size {volume_size} GiB is larger than the maximum "
                               f"of {MAX_VOLUME_GIB} GiB.", 400, "INVALID_VOLUME_SIZE")
            if parent is not None and volume_size < parent.volume_size:
                raise SimError("ValidationException",
                               f"The volume size {volume_size} GiB is smaller than the parent "
                               f"snapshot's {parent.volume_size} GiB.", 400,
                               "INVALID_VOLUME_SIZE")
            is_encrypted = bool(encrypted) or bool(parent and parent.encrypted)
            if kms_key_arn is not None and not is_encrypted:
                raise SimError("ValidationException",
                               "KmsKeyArn can be specified only when Encrypted is true.", 400,
                               "INVALID_PARAMETER_VALUE")
            key = None
            sse = "none"
            if is_encrypted:
                key = kms_key_arn or (parent.kms_key_id if parent else None) \
                    or self.default_kms_key
                sse = "sse-kms" if key != self.default_kms_key else "sse-ebs"
            if (kms_key_arn is not None and self.world.opts.kms
                    and key_arn_region(kms_key_arn) != self.name):
                raise SimError("ValidationException",
                               f"KmsKeyArn must be the ARN of a KMS key in {self.name} "
                               f"(arn:aws:kms:{self.name}:<account>:key/<key id>).", 400,
                               "INVALID_CUSTOMER_KEY")
            if key is not None and key in self.world.opts.kms_denied_keys:
                raise kms_denied("StartSnapshot", parent.id if parent else None)
            pending = sum(1 for s in self.snapshots.values() if s.open and
                          s.state() == "pending")
            if pending >= self.world.opts.max_pending_snapshots:
                raise SimError("ConcurrentLimitExceededException",
                               "You have reached the limit for concurrent snapshots.", 400)
            now = time.monotonic()
            snap = Snapshot(
                id=new_id("snap"), region=self.name, volume_id="vol-ffffffff",
                volume_size=volume_size, description=description, tags=dict(tags or {}),
                start_time=utcnow(), created_at=now, complete_at=math.inf,
                blocks=dict(parent.blocks) if parent else {}, encrypted=is_encrypted,
                kms_key_id=key, source=("", 0), seq=next(self.world.seq),
                parent_id=parent.id if parent else None, origin="ebs", open=True,
                timeout_s=timeout_minutes * self.world.opts.timeout_minute,
                timeout_absolute=self.world.opts.start_snapshot_timeout == "absolute",
                last_activity=now, client_token=client_token, fingerprint=fingerprint,
                sse_type=sse,
            )
            snap.lineage = parent.lineage if parent else f"snap:{snap.id}"
            self.snapshots[snap.id] = snap
            if client_token is not None:
                self._client_tokens[client_token] = snap
            return snap

    def put_block(self, snap: Snapshot, index: int, block: Block) -> None:
        """Store (or overwrite) one block of an open snapshot."""
        with self.world.lock:
            snap.blocks[index] = block
            snap.written.add(index)
            snap._indices = None
            snap.last_activity = time.monotonic()

    def seal(self, snap: Snapshot) -> None:
        """CompleteSnapshot accepted: pending for ``snapshot_delay``, then completed."""
        with self.world.lock:
            now = time.monotonic()
            snap.open = False
            snap.completed_at = now
            snap.complete_at = now + self.world.opts.snapshot_delay
            snap._indices = None

    def ebs_hidden(self, snap: Snapshot, now: float | None = None) -> bool:
        """Inside the ``not_found_window`` after creation or completion (eventual consistency)."""
        window = self.world.opts.not_found_window
        if window <= 0:
            return False
        now = time.monotonic() if now is None else now
        return now < snap.created_at + window or snap.complete_at <= now < snap.complete_at + window


class World:
    """All regions plus the knobs; regions spring into existence when first named."""

    def __init__(self, snapshot_delay: float = DEFAULT_SNAPSHOT_DELAY,
                 options: Mapping[str, Any] | None = None) -> None:
        self.lock = threading.RLock()
        self.default_snapshot_delay = snapshot_delay
        self.default_options = dict(options or {})  # start-up knobs, restored by reset()
        self.opts = self._initial_options()
        self.regions: dict[str, Region] = {}
        self.seq = itertools.count(1)
        self._sha_cache: dict[str, str] = {}
        self.on_reset: list[Any] = []  # callables run by reset() (policy counters, buckets)
        self.sts_sessions: list[dict[str, Any]] = []  # AssumeRole calls seen, for tests
        # Session tokens this simulator issued -> expiry (epoch seconds, service clock)
        self.session_tokens: dict[str, float] = {}

    def _initial_options(self) -> Options:
        opts = Options(snapshot_delay=self.default_snapshot_delay)
        opts.update(self.default_options)
        return opts

    @property
    def snapshot_delay(self) -> float:
        return self.opts.snapshot_delay

    @snapshot_delay.setter
    def snapshot_delay(self, value: float) -> None:
        self.opts.snapshot_delay = value

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
            self.sts_sessions.clear()
            self.session_tokens.clear()
            self.opts = self._initial_options()
            for hook in self.on_reset:
                hook()

    def set_options(self, snapshot_delay: float | None = None, **knobs: Any) -> dict[str, Any]:
        """Change knobs (see :class:`~.options.Options`); returns every current value."""
        values = dict(knobs)
        if snapshot_delay is not None:
            values["snapshot_delay"] = snapshot_delay
        with self.lock:
            trial = Options(**self.opts.as_dict())
            trial.update(values)  # validate everything before changing anything
            self.opts = trial
            return self.options()

    def options(self) -> dict[str, Any]:
        return self.opts.as_dict()

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
