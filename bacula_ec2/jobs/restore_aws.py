"""Restore into AWS: the latest state of each volume's chain becomes a new snapshot (EBS
direct writes), then a new volume, or a new instance, or stays a snapshot.

Staging. The parts of a chain arrive in any order, so the newest-wins rule is applied where
it already lives: `LocalRestore` assembles each volume into a sparse raw image in a staging
directory (`restore_workdir=`, else the FD working directory), with one bit per block for
"holds data". At FINISH (before it is answered, so a failure is the job's Fatal "Restore
Error") the chains are checked, and only the blocks that hold data are uploaded
(`bacula_ec2.aws.upload`): memory is bounded by the blocks in flight and the bitmap
(4 MiB for 16 TiB), disk by the volumes' allocated data.

Safety. Nothing existing is modified: every resource is new, tagged with its origin
(`bacula-ec2:restored-from`) and the restore job (`bacula-ec2:restore-job`). On any failure
everything this restore created is removed again: the instance is terminated, volumes
(found by the job tag too) detached and deleted, the image deregistered, the snapshots
deleted (a snapshot EBS refuses to delete while pending is cancelled by its StartSnapshot
Timeout; the job log says so). Each removal counts only once a Describe confirms it (EC2 is
eventually consistent: a new id may be NotFound for a while, a deleted resource still listed).

Before the first block is uploaded, what AWS would refuse later is checked: the target
region answers (DescribeAvailabilityZones) and has the zone the volumes go to, the KMS key is
in that region, and no new resource would carry more than 50 tags.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from .. import naming
from ..aws import Aws, AwsError
from ..aws.model import ImageDevice, ImageSpec, Instance, LaunchSpec, Volume, VolumeSpec
from ..aws.restore_ops import VOLUME_DELETED
from ..aws.upload import SnapshotWriter, file_reader, start_timeout_minutes, upload_fits
from ..formats import config
from ..formats.blockimage import BLOCK_SIZE, ImageHeader
from ..params import MAX_TAGS, kms_key_region, zone_region
from ..retry import Cancelled, RetriesExhausted, RetryStats
from . import progress
from .chain import TAG
from .context import JobContext, connect
from .restore_local import LocalRestore, Part, RestoreFailed, VolumeImage

TAG_FROM = TAG + "restored-from"
TAG_JOB = TAG + "restore-job"
TAG_TEMPORARY = TAG + "restore-temporary"
KEEPALIVE_SECONDS = 60.0
IOPS_TYPES = ("io1", "io2", "gp3")


class RestoreOptionRefused(RestoreFailed):
    """A restore option does not fit the backup or the target region (a zone of another
    region, a KMS key of another region): the admin changes the option (bec2: exit 2)."""


def _user_tags(tags: dict[str, str]) -> dict[str, str]:
    """Tags that may be copied to a new resource (aws:* is reserved, ours are per resource)."""
    return {k: v for k, v in tags.items() if not k.startswith(("aws:", TAG))}


def _token(*parts: str) -> str:
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:40]


@dataclass
class VolumePlan:
    """One assembled volume and what the backup says about it."""

    image: VolumeImage
    chain: list[Part]
    doc: dict[str, Any]  # the volume JSON document ({} if it was not restored)
    instance_id: str  # the catalog folder it came from
    region: str | None
    snapshot_id: str = ""  # the new snapshot
    volume_id: str = ""  # the new volume

    @property
    def header(self) -> ImageHeader:
        return self.chain[-1].header

    @property
    def source_id(self) -> str:
        return self.image.volume_id

    @property
    def size_gib(self) -> int:
        return max(1, -(-self.header.volume_size // naming.GIB))

    @property
    def device(self) -> str | None:
        return self.doc.get("device") or self.header.device

    @property
    def volume(self) -> Volume:
        """The original volume, as its document recorded it (empty without a document)."""
        return config.volume_of(self.doc)


@dataclass
class Ledger:
    """What this restore created, per region, for the roll-back."""

    snapshots: list[tuple[Aws, str]] = field(default_factory=list)
    volumes: list[tuple[Aws, str]] = field(default_factory=list)
    images: list[tuple[Aws, str]] = field(default_factory=list)
    instances: list[tuple[Aws, str]] = field(default_factory=list)
    regions: dict[str, Aws] = field(default_factory=dict)
    #: Ids a Describe has listed: until then EC2 may answer NotFound for them (fresh).
    seen: set[str] = field(default_factory=set)
    #: StartSnapshot Timeout (minutes) of each snapshot written.
    timeouts: dict[str, int] = field(default_factory=dict)

    def fresh(self, resource_id: str) -> bool:
        return resource_id not in self.seen


class AwsRestore:
    """Receives restored files like LocalRestore; at `finish` builds the AWS resources."""

    def __init__(
        self,
        ctx: JobContext,
        workdir: str,
        where: str | None,
        aws_factory: Callable[[str | None], Aws] | None = None,
    ) -> None:
        self.ctx = ctx
        self.params = ctx.params
        if not os.path.isabs(workdir):
            raise RestoreFailed(f"the restore staging directory '{workdir}' is not an absolute path")
        os.makedirs(workdir, exist_ok=True)
        self.staging = tempfile.mkdtemp(prefix=f"bacula-ec2-restore-{ctx.job_id}-", dir=workdir)
        self.local = LocalRestore(ctx, self.staging, where, replace="a", verb="staged")
        self.ledger = Ledger()
        self.results: list[str] = []
        self._aws_factory = aws_factory or self._default_aws
        self._last_keepalive = time.monotonic()
        self._zones: dict[str, str] = {}  # source volume id -> the zone its new volume goes to
        self._region_zone_cache: dict[str, list[str]] = {}  # region -> its available zones

    # ------------------------------------------------------------------ stream (delegated)
    @property
    def files(self) -> int:
        return self.local.files

    def start(self, fname: str, mtime: int | None = None, size: int | None = None) -> bool:
        return self.local.start(fname, mtime=mtime, size=size)

    def data(self, chunk: memoryview) -> None:
        self.local.data(chunk)

    def end(self) -> None:
        self.local.end()

    def abandon(self) -> None:
        self.local.abandon()

    def abandon_all(self) -> None:
        """Nothing will be created: drop the staged files."""
        self.local.abandon()
        self.close()

    def close(self) -> None:
        """Remove the staging directory (idempotent; also after EOF without FINISH)."""
        self.local.close()
        shutil.rmtree(self.staging, ignore_errors=True)

    def summary(self) -> str:
        what = "; ".join(self.results) if self.results else "nothing"
        return f"restore into AWS finished: {self.files} file(s) read; {what}; {self.retry_stats().text()}"

    def retry_stats(self) -> RetryStats:
        """The retries of every region's AWS clients this restore used."""
        total = RetryStats()
        for aws in self.ledger.regions.values():
            total.add(aws.stats)
        return total

    # ------------------------------------------------------------------ AWS
    def _default_aws(self, region: str | None) -> Aws:
        return connect(self.params, region=region, cancel=self.ctx.cancel)

    def aws(self, region: str | None) -> Aws:
        key = region or ""
        if key not in self.ledger.regions:
            self.ledger.regions[key] = self._aws_factory(region)
        return self.ledger.regions[key]

    def _target_region(self, plan: VolumePlan) -> str | None:
        return self.params.restore_region or plan.region or self.params.region

    def keepalive(self, text: str | Callable[[], str], force: bool = False) -> None:
        """An info message at most once a minute: the FD waits up to an hour per read."""
        now = time.monotonic()
        if force or now - self._last_keepalive >= progress.interval(KEEPALIVE_SECONDS):
            self._last_keepalive = now
            self.ctx.reporter.info(text() if callable(text) else text)

    # ------------------------------------------------------------------ finish
    def finish(self) -> None:
        """Check the chains, then create snapshots / volumes / the instance; undo on failure."""
        try:
            assembled = self.local.assemble()
            plans = self._plans(assembled)
            attach_zone = self._check_options(plans)
            self._check_places(plans, attach_zone)
            self._snapshots(plans)
            mode = self.params.restore_as
            if mode == "volume":
                self._volumes(plans, attach_zone)
            elif mode == "instance":
                self._instance(plans)
            else:
                for plan in plans:
                    self.results.append(f"snapshot {plan.snapshot_id} (from {plan.source_id})")
        except BaseException as exc:
            self.ctx.reporter.info(
                f"restore into AWS failed ({type(exc).__name__}); removing what it created"
            )
            self.rollback()
            raise
        finally:
            self.close()

    def _plans(self, assembled: list[tuple[VolumeImage, list[Part]]]) -> list[VolumePlan]:
        if not assembled:
            raise RestoreFailed(
                "nothing to restore into AWS: the restore holds no block image (.bimg); "
                "select the volumes' files"
            )
        plans = []
        for image, chain in assembled:
            doc_path = image.path[: -len(".img")] + ".json"
            doc: dict[str, Any] = {}
            if os.path.exists(doc_path):
                with open(doc_path, encoding="utf-8") as fh:
                    doc = json.load(fh)
            header = chain[-1].header
            plans.append(
                VolumePlan(
                    image=image,
                    chain=chain,
                    doc=doc,
                    instance_id=os.path.basename(os.path.dirname(image.path)),
                    region=header.region or doc.get("region"),
                )
            )
        return sorted(plans, key=lambda p: (p.instance_id, p.device or "", p.source_id))

    def _instance_doc(self, instance_id: str) -> dict[str, Any] | None:
        path = os.path.join(self.staging, "@amazon-ec2", instance_id, f"{instance_id}.json")
        if not os.path.exists(path):
            return None
        with open(path, encoding="utf-8") as fh:
            doc: dict[str, Any] = json.load(fh)
        return doc

    def _check_options(self, plans: list[VolumePlan]) -> str | None:
        """Refuse impossible combinations before anything is created; returns the attach AZ."""
        p = self.params
        mode = p.restore_as
        instance_only = [
            name
            for name in (
                "restore_instance_type",
                "restore_subnet",
                "restore_key_name",
                "restore_private_ip",
            )
            if getattr(p, name) is not None
        ] + (["restore_security_groups"] if p.restore_security_groups else [])
        if mode != "instance" and instance_only:
            self.ctx.reporter.warning(f"restore_as={mode}: ignoring {', '.join(instance_only)}")
        if mode == "instance":
            instances = {plan.instance_id for plan in plans}
            if len(instances) != 1:
                raise RestoreFailed(
                    f"restore_as=instance restores one instance at a time; the restore holds "
                    f"volumes of {', '.join(sorted(instances))}"
                )
            (iid,) = instances
            doc = self._instance_doc(iid)
            if doc is None:
                raise RestoreFailed(f"restore_as=instance needs {iid}.json in the restore: select it too")
            root = config.instance_of(doc).root_device_name
            if root not in {plan.device for plan in plans}:
                raise RestoreFailed(
                    f"restore_as=instance: the root volume ({root}) of {iid} is not in the restore "
                    "(was it excluded from the backup?); restore_as=volume restores the others"
                )
        if p.restore_attach_instance or p.restore_attach_device:
            if mode != "volume":
                raise RestoreFailed("restore_attach_instance works with restore_as=volume only")
            if not (p.restore_attach_instance and p.restore_attach_device):
                raise RestoreFailed("restore_attach_instance and restore_attach_device go together")
            if len(plans) != 1:
                raise RestoreFailed(
                    f"restore_attach_instance attaches one volume; the restore holds {len(plans)} "
                    f"({', '.join(pl.source_id for pl in plans)}): mark only one volume's files"
                )
            aws = self.aws(self._target_region(plans[0]))
            zone = aws.describe_instance(p.restore_attach_instance).availability_zone or ""
            if p.restore_availability_zone and p.restore_availability_zone != zone:
                raise RestoreFailed(
                    f"instance {p.restore_attach_instance} is in {zone}, not in "
                    f"restore_availability_zone={p.restore_availability_zone}"
                )
            return zone
        return None

    def _check_places(self, plans: list[VolumePlan], attach_zone: str | None) -> None:
        """Before any block goes up: each target region answers and has the zones the new
        volumes or the instance go to, the KMS key is in it, and every new resource's tags fit."""
        p = self.params
        mode = p.restore_as
        for region in sorted({self._target_region(plan) or "" for plan in plans}):
            aws = self.aws(region or None)
            zones = self._region_zones(aws)
            group = [plan for plan in plans if (self._target_region(plan) or "") == region]
            wanted: dict[str, str] = {}  # zone -> why
            if mode == "volume":
                for plan in group:
                    zone, why = self._zone(aws, plan, attach_zone, zones)
                    self._zones[plan.source_id] = zone
                    wanted.setdefault(zone, why)
            elif mode == "instance" and p.restore_availability_zone:
                wanted[p.restore_availability_zone] = "restore_availability_zone"
            for zone, why in wanted.items():
                self._check_zone(aws, zones, zone, why)
        for plan in plans:
            self._check_tag_count(f"the snapshot from {plan.source_id}", self._snapshot_tags(plan))
            if mode == "volume":
                self._check_tag_count(
                    f"the volume from {plan.source_id}",
                    self._resource_tags(plan.source_id, plan.volume.tags),
                )
        if mode == "instance":
            iid = plans[0].instance_id
            inst = config.instance_of(self._instance_doc(iid) or {})
            self._check_tag_count(f"the instance from {iid}", self._resource_tags(iid, inst.tags))

    def check_regions(self, source_regions: Iterable[str | None]) -> None:
        """Before anything is staged, when the fronts know where the volumes come from (bec2
        from its manifests): each target region answers and holds restore_availability_zone=,
        and the KMS key is in it. `finish` checks the same again, with every zone."""
        p = self.params
        targets = {p.restore_region or source or p.region for source in source_regions}
        for region in sorted(r or "" for r in targets):
            aws = self.aws(region or None)
            zones = self._region_zones(aws)
            if p.restore_availability_zone and p.restore_as != "snapshot":
                self._check_zone(aws, zones, p.restore_availability_zone, "restore_availability_zone")

    def _region_zones(self, aws: Aws) -> list[str]:
        """The available zones of the region `aws` works in (asked once per region); the KMS
        key must be of that region too."""
        p = self.params
        if p.restore_kms_key and kms_key_region(p.restore_kms_key) != aws.region:
            raise RestoreOptionRefused(
                f"restore_kms_key {p.restore_kms_key} is a key of {kms_key_region(p.restore_kms_key)}; "
                f"the restore goes to {aws.region} (a KMS key encrypts only in its own region)"
            )
        if aws.region in self._region_zone_cache:
            return self._region_zone_cache[aws.region]
        try:
            zones = aws.availability_zones()
        except (AwsError, RetriesExhausted) as exc:
            raise RestoreFailed(
                f"the restore's region {aws.region} does not answer DescribeAvailabilityZones "
                f"(is it enabled for this account?): {exc}"
            ) from exc
        if not zones:
            raise RestoreFailed(f"no availability zone is available in {aws.region}")
        self._region_zone_cache[aws.region] = zones
        return zones

    def _check_zone(self, aws: Aws, zones: list[str], zone: str, why: str) -> None:
        """RestoreFailed unless `zone` is one of `zones` (the available zones of aws.region)."""
        if zone in zones:
            return
        listed = f"its zones: {', '.join(zones)}"
        if why != "restore_availability_zone":
            raise RestoreOptionRefused(
                f"{why} {zone} is not an available zone of {aws.region}; {listed}; "
                "restore_availability_zone= picks one"
            )
        home = zone_region(zone)
        if home and home != aws.region:
            how = (
                f"restore_region={self.params.restore_region}"
                if self.params.restore_region
                else "the backup's region, as restore_region= is not set"
            )
            raise RestoreOptionRefused(
                f"restore_availability_zone {zone} is a zone of {home}, but the restore goes to "
                f"{aws.region} ({how}): set restore_region={home} to restore into {home}, or pick "
                f"one of the zones of {aws.region}: {', '.join(zones)}"
            )
        raise RestoreOptionRefused(
            f"restore_availability_zone {zone} is not an available zone of {aws.region}; {listed}"
        )

    @staticmethod
    def _check_tag_count(what: str, tags: dict[str, str]) -> None:
        if len(tags) > MAX_TAGS:
            raise RestoreFailed(
                f"{what} would carry {len(tags)} tags (the original's, restore_tags= and "
                f"bacula-ec2's own); AWS allows {MAX_TAGS} per resource"
            )

    # ------------------------------------------------------------------ snapshots
    def _snapshot_tags(self, plan: VolumePlan) -> dict[str, str]:
        tags = dict(self.params.restore_tags)
        tags.update({TAG_FROM: plan.source_id, TAG_JOB: self.ctx.job_name})
        if self.params.restore_as != "snapshot" and not self.params.keep_restore_snapshots:
            tags[TAG_TEMPORARY] = "yes"
        return tags

    def _snapshots(self, plans: list[VolumePlan]) -> None:
        for plan in plans:
            self._upload(plan)
        by_region: dict[str, list[VolumePlan]] = {}
        for plan in plans:
            by_region.setdefault(self._target_region(plan) or "", []).append(plan)
        for region, group in by_region.items():
            aws = self.aws(region or None)
            ids = [pl.snapshot_id for pl in group]
            aws.wait_snapshots(
                ids,
                timeout=float(self.params.snapshot_timeout),
                progress=lambda snaps: self.keepalive(
                    lambda: (
                        "waiting for the new snapshot(s) to complete: "
                        + ", ".join(f"{s.snapshot_id} {s.progress or s.state or '?'}" for s in snaps)
                    )
                ),
            )
            self.ledger.seen.update(ids)

    def _upload(self, plan: VolumePlan) -> None:
        p = self.params
        region = self._target_region(plan)
        aws = self.aws(region)
        vol = plan.volume
        same_region = region == plan.region
        encrypted = vol.encrypted or bool(p.restore_kms_key)
        kms = p.restore_kms_key or (vol.kms_key_id if same_region and vol.encrypted else None)
        writer = SnapshotWriter(aws, p.concurrent_threads)
        # The Timeout is sized for this volume's data, and the snapshot is opened only now,
        # just before its blocks flow (nothing waits between StartSnapshot and the puts).
        total = plan.image.count_data_blocks()
        rate = p.restore_min_kib_per_s * 1024
        minutes = start_timeout_minutes(total * BLOCK_SIZE, rate)
        if not upload_fits(total * BLOCK_SIZE, rate):
            self.ctx.reporter.warning(
                f"volume {plan.source_id}: {total * BLOCK_SIZE / naming.GIB:.1f} GiB to write; at "
                f"restore_min_kib_per_s={p.restore_min_kib_per_s} that takes longer than the "
                f"{minutes} minutes StartSnapshot allows at most: the upload must be faster"
            )
        try:
            sid = writer.start(
                plan.size_gib,
                client_token=_token(self.ctx.job_name, str(self.ctx.job_id), plan.source_id),
                description=naming.description(
                    f"bacula-ec2 restore of {plan.source_id} by {self.ctx.job_name}"
                ),
                tags=self._snapshot_tags(plan),
                encrypted=encrypted,
                kms_key_arn=kms,
                timeout_minutes=minutes,
            )
        except (AwsError, RetriesExhausted) as exc:
            self._kms_refused(exc, plan, kms, encrypted, "")
            raise
        self.ledger.snapshots.append((aws, sid))
        self.ledger.timeouts[sid] = minutes
        plan.snapshot_id = sid
        self.keepalive(
            f"volume {plan.source_id}: writing {total} data block(s) into the new snapshot {sid} "
            f"in {aws.region} (StartSnapshot Timeout {minutes} min)",
            force=True,
        )
        fd = os.open(plan.image.path, os.O_RDONLY)
        began = time.monotonic()
        # Progress in the job log at most once a minute: also the keep-alive of the upload.
        tracker = progress.Tracker(
            f"{plan.source_id} -> {sid}", "uploaded", total * BLOCK_SIZE, progress.emitter(self.ctx.reporter)
        )
        try:
            result = writer.upload(
                sid,
                plan.image.data_blocks(),
                file_reader(fd),
                progress=lambda done: tracker.update(done * BLOCK_SIZE),
            )
        except (AwsError, RetriesExhausted) as exc:
            self._kms_refused(exc, plan, kms, encrypted, sid)
            raise
        finally:
            os.close(fd)
        tracker.finish()
        seconds = max(time.monotonic() - began, 1e-6)
        mib = result.blocks * 0.5
        parts = " + ".join(pt.label() for pt in plan.chain)
        self.ctx.reporter.info(
            f"volume {plan.source_id} ({plan.size_gib} GiB, {parts}) -> snapshot {sid}: "
            f"{result.blocks} blocks, {mib:.0f} MiB in {seconds:.1f} s ({mib / seconds:.1f} MiB/s)"
        )

    @staticmethod
    def _kms_refused(
        exc: BaseException, plan: VolumePlan, kms: str | None, encrypted: bool, sid: str
    ) -> None:
        """RestoreFailed naming the key if AWS refused to encrypt with it (KMS said no:
        EBS direct's DEPENDENCY_ACCESS_DENIED, or access denied on an encrypted snapshot)."""
        if not encrypted:
            return
        cause: BaseException | None = exc
        while cause is not None and not isinstance(cause, AwsError):
            cause = cause.__cause__
        if cause is None:
            return
        if cause.reason != "DEPENDENCY_ACCESS_DENIED" and "AccessDenied" not in cause.code:
            return
        key = f"KMS key {kms}" if kms else "the account's default EBS KMS key"
        target = f"snapshot {sid}" if sid else "a new snapshot"
        raise RestoreFailed(
            f"volume {plan.source_id}: {key} may not be used to encrypt {target} "
            f"(the key policy or IAM must allow kms:GenerateDataKeyWithoutPlaintext and "
            f"kms:Decrypt for this role; restore_kms_key= names another key): {cause}"
        ) from exc

    # ------------------------------------------------------------------ volumes
    def _volume_shape(self, plan: VolumePlan) -> tuple[str | None, int | None, int | None]:
        """(type, iops, throughput): overrides, else the original's where the type takes them."""
        p = self.params
        vol = plan.volume
        if p.restore_volume_type:
            vtype: str | None = p.restore_volume_type
            iops, throughput = p.restore_iops, p.restore_throughput
        else:
            vtype = vol.volume_type
            iops = p.restore_iops or (vol.iops if vtype in IOPS_TYPES else None)
            throughput = p.restore_throughput or (vol.throughput if vtype == "gp3" else None)
        return vtype, iops, throughput

    def _resource_tags(self, source_id: str, original: dict[str, str]) -> dict[str, str]:
        tags = _user_tags(original)
        tags.update(self.params.restore_tags)
        if self.params.restore_name:
            tags["Name"] = self.params.restore_name
        tags.update({TAG_FROM: source_id, TAG_JOB: self.ctx.job_name})
        return tags

    def _zone(self, aws: Aws, plan: VolumePlan, attach_zone: str | None, zones: list[str]) -> tuple[str, str]:
        """(zone, what chose it) of the new volume; `zones`: the region's available zones."""
        if self.params.restore_availability_zone:
            return self.params.restore_availability_zone, "restore_availability_zone"
        if attach_zone:
            return attach_zone, f"the zone of {self.params.restore_attach_instance}"
        original = plan.volume.availability_zone
        if original and aws.region == plan.region:
            return original, f"the zone of the original volume {plan.source_id},"
        return zones[0], "the first zone"

    def _volumes(self, plans: list[VolumePlan], attach_zone: str | None) -> None:
        p = self.params
        timeout = float(p.snapshot_timeout)
        for plan in plans:
            aws = self.aws(self._target_region(plan))
            vtype, iops, throughput = self._volume_shape(plan)
            zone = self._zones[plan.source_id]
            vid = aws.create_volume(
                VolumeSpec(
                    snapshot_id=plan.snapshot_id,
                    zone=zone,
                    client_token=_token(self.ctx.job_name, str(self.ctx.job_id), "volume", plan.source_id),
                    volume_type=vtype,
                    iops=iops,
                    throughput=throughput,
                    kms_key=None,  # the snapshot carries the encryption
                    tags=self._resource_tags(plan.source_id, plan.volume.tags),
                )
            )
            self.ledger.volumes.append((aws, vid))
            plan.volume_id = vid
            aws.wait_volume(vid, "available", timeout, fresh=True)
            self.ledger.seen.add(vid)
            line = f"volume {vid} in {zone} (from {plan.source_id})"
            if p.restore_attach_instance and p.restore_attach_device:
                aws.attach_volume(vid, p.restore_attach_instance, p.restore_attach_device, fresh=False)
                aws.wait_volume(vid, "in-use", timeout)
                line += f", attached to {p.restore_attach_instance} as {p.restore_attach_device}"
            self.ctx.reporter.info(f"created {line}")
            self.results.append(line)
        self._drop_temporary_snapshots()

    # ------------------------------------------------------------------ instance
    def _instance(self, plans: list[VolumePlan]) -> None:
        p = self.params
        iid = plans[0].instance_id
        doc = self._instance_doc(iid) or {}
        inst = config.instance_of(doc)
        region = self._target_region(plans[0])
        aws = self.aws(region)
        same_region = region == (doc.get("region") or plans[0].region)
        original = {b.device_name: b for b in inst.block_devices}
        devices = []
        for plan in plans:
            vtype, iops, throughput = self._volume_shape(plan)
            was = original.get(plan.device or "")
            devices.append(
                ImageDevice(
                    device_name=plan.device,
                    snapshot_id=plan.snapshot_id,
                    size_gib=plan.size_gib,
                    delete_on_termination=was is None
                    or was.delete_on_termination is None
                    or was.delete_on_termination,
                    volume_type=vtype,
                    iops=iops,
                    throughput=throughput,
                )
            )
        missing = sorted(set(original) - {pl.device for pl in plans})
        if missing:
            self.ctx.reporter.warning(
                f"instance {iid}: device(s) {', '.join(str(m) for m in missing)} were not in the backup "
                "or the restore; the new instance has only the restored ones"
            )
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
        temp_tags = {TAG_FROM: iid, TAG_JOB: self.ctx.job_name, **p.restore_tags}
        if not p.keep_restore_snapshots:
            temp_tags[TAG_TEMPORARY] = "yes"
        image_id = aws.register_image(
            ImageSpec(
                name=f"bacula-ec2-restore-{iid}-{self.ctx.job_id}-{stamp}",
                description=f"bacula-ec2 restore of {iid} by {self.ctx.job_name}",
                root_device_name=str(inst.root_device_name),
                devices=tuple(devices),
                architecture=inst.architecture,
                virtualization_type=inst.virtualization_type,
                ena_support=inst.ena_support,
                boot_mode=inst.boot_mode,
                tags=temp_tags,
            )
        )
        self.ledger.images.append((aws, image_id))
        new_id = aws.run_instance(self._launch_spec(doc, inst, image_id, same_region))
        self.ledger.instances.append((aws, new_id))
        timeout = float(p.snapshot_timeout)
        aws.wait_instance(new_id, ("running",), timeout, fresh=True)
        self.ledger.seen.add(new_id)
        state = "running"
        if not p.restore_start:
            aws.stop_instance(new_id)
            state = aws.wait_instance(new_id, ("stopped",), timeout)
        found = aws.describe_instance(new_id)
        vols = [f"{b.device_name}={b.volume_id}" for b in found.block_devices]
        line = (
            f"instance {new_id} ({found.instance_type}, {found.availability_zone}, {state}; "
            f"volumes {', '.join(vols)}) from {iid}"
        )
        self.ctx.reporter.info(f"created {line}")
        self.results.append(line)
        if p.keep_restore_snapshots:
            self.results.append(f"image {image_id} kept")
        else:
            aws.deregister_image(image_id, fresh=self.ledger.fresh(image_id))
            aws.image_gone(image_id)
            self.ledger.images.remove((aws, image_id))
        self._drop_temporary_snapshots()

    def _launch_spec(
        self, doc: dict[str, Any], inst: Instance, image_id: str, same_region: bool
    ) -> LaunchSpec:
        """The new instance: the original's settings (those that hold in this region) under
        the restore options."""
        p = self.params
        iid = str(doc.get("instance_id") or inst.instance_id)
        zone = p.restore_availability_zone
        subnet = p.restore_subnet
        if not subnet and same_region and inst.subnet_id and (zone is None or zone == inst.availability_zone):
            subnet = inst.subnet_id
        groups = p.restore_security_groups or (list(inst.security_group_ids) if same_region else [])
        key = p.restore_key_name or (inst.key_name if same_region else None)
        if not same_region and not (p.restore_subnet and p.restore_security_groups):
            self.ctx.reporter.warning(
                f"instance {iid} restored into another region: its subnet, security groups, key pair "
                "and instance profile are not copied unless given (restore_subnet=, ...)"
            )
        return LaunchSpec(
            image_id=image_id,
            instance_type=p.restore_instance_type or inst.instance_type or "t3.micro",
            client_token=_token(self.ctx.job_name, str(self.ctx.job_id), "instance", iid)[:64],
            instance_tags=self._resource_tags(iid, inst.tags),
            volume_tags={TAG_FROM: iid, TAG_JOB: self.ctx.job_name, **p.restore_tags},
            subnet_id=subnet,
            availability_zone=zone,
            security_group_ids=tuple(groups),
            key_name=key,
            private_ip=p.restore_private_ip,
            iam_instance_profile_arn=inst.iam_instance_profile_arn if same_region else None,
            user_data=base64.b64decode(doc["user_data"]) if doc.get("user_data") else None,
            metadata_options=inst.metadata_options,
            ebs_optimized=inst.ebs_optimized,
        )

    # ------------------------------------------------------------------ clean-up
    def _drop_temporary_snapshots(self) -> None:
        if self.params.keep_restore_snapshots:
            self.results.append("snapshot(s) kept: " + ", ".join(sid for _aws, sid in self.ledger.snapshots))
            return
        for aws, sid in list(self.ledger.snapshots):
            try:
                aws.delete_snapshot(sid, fresh=self.ledger.fresh(sid))
                aws.snapshot_gone(sid)
                self.ledger.snapshots.remove((aws, sid))
            except (AwsError, RetriesExhausted) as exc:
                self.ctx.reporter.warning(f"could not delete the temporary snapshot {sid}: {exc}")

    def rollback(self) -> None:
        """Remove everything this restore created (best effort, each failure reported). A
        removal counts once a Describe confirms it; an id not yet seen listed is `fresh`
        (NotFound then means "not visible yet", not "gone")."""
        led = self.ledger
        left: list[str] = []
        timeout = min(600.0, float(self.params.snapshot_timeout))

        def attempt(what: str, fn: Callable[[], None]) -> None:
            try:
                fn()
            except (AwsError, RetriesExhausted, Cancelled, OSError) as exc:
                left.append(what)
                self.ctx.reporter.warning(f"could not remove {what}: {exc}")

        # A cancel must not stop the clean-up: wait without it from here on.
        for aws in led.regions.values():
            aws.cancel = None
        volumes = {(id(aws), vid): (aws, vid) for aws, vid in led.volumes}
        for aws, iid in reversed(led.instances):

            def terminate(aws: Aws = aws, iid: str = iid) -> None:
                # Its volumes too, whatever their DeleteOnTermination (the original's).
                try:
                    for vid in aws.instance_volume_ids(iid, fresh=led.fresh(iid)):
                        volumes.setdefault((id(aws), vid), (aws, vid))
                        led.seen.add(vid)
                    led.seen.add(iid)
                except (AwsError, RetriesExhausted) as exc:
                    self.ctx.reporter.warning(f"could not list the volumes of instance {iid}: {exc}")
                aws.terminate_instance(iid, fresh=led.fresh(iid))
                aws.instance_gone(iid, timeout)

            attempt(f"instance {iid}", terminate)
        for aws in led.regions.values():
            try:
                for vol in aws.tagged_volumes(TAG_JOB, self.ctx.job_name):
                    volumes.setdefault((id(aws), vol.volume_id), (aws, vol.volume_id))
                    led.seen.add(vol.volume_id)
            except (AwsError, RetriesExhausted) as exc:
                self.ctx.reporter.warning(
                    f"could not list the volumes of this restore in {aws.region}: {exc}"
                )
        for aws, vid in volumes.values():

            def drop(aws: Aws = aws, vid: str = vid) -> None:
                state = aws.new_volume_state(vid, led.fresh(vid))
                led.seen.add(vid)
                if state == "in-use":
                    aws.detach_volume(vid)
                    try:
                        aws.wait_volume(vid, "available", timeout)
                        state = "available"
                    except AwsError as exc:
                        if exc.code != VOLUME_DELETED:  # its instance's termination deletes it
                            raise
                        state = "deleting"
                if state not in ("deleting", "deleted"):
                    aws.delete_volume(vid)
                aws.volume_gone(vid, timeout)

            attempt(f"volume {vid}", drop)
        for aws, image_id in led.images:

            def deregister(aws: Aws = aws, image_id: str = image_id) -> None:
                aws.deregister_image(image_id, fresh=led.fresh(image_id))
                aws.image_gone(image_id, timeout)

            attempt(f"image {image_id}", deregister)
        for aws, sid in led.snapshots:

            def delete(aws: Aws = aws, sid: str = sid) -> None:
                aws.delete_snapshot(sid, fresh=led.fresh(sid))
                aws.snapshot_gone(sid, timeout)

            attempt(f"snapshot {sid}", delete)
        if left:
            longest = max(led.timeouts.values(), default=0)
            pending = (
                f"; a pending snapshot that cannot be deleted is cancelled by AWS at its StartSnapshot "
                f"Timeout ({longest} minutes at most)"
                if longest
                else ""
            )
            self.ctx.reporter.warning(
                f"left behind after the failed restore: {', '.join(left)} (tagged {TAG_JOB}="
                f"{self.ctx.job_name}){pending}"
            )
        led.instances.clear()
        led.volumes.clear()
        led.images.clear()
        led.snapshots.clear()
