"""Which instances and which of their volumes a job covers (product.md §3 "Selection")."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..aws import Aws
from ..aws.model import Instance, Volume
from ..naming import STANDALONE, device_short_name
from ..params import Parameters
from .context import JobError

_INSTANCE_ID = re.compile(r"^i-[0-9a-f]{8,17}$")
_GONE_STATES = {"terminated", "shutting-down"}


@dataclass
class VolumeTarget:
    volume: Volume
    device: str  # as attached, e.g. /dev/sda1
    is_root: bool

    @property
    def volume_id(self) -> str:
        return self.volume.volume_id

    @property
    def size_gib(self) -> int:
        return self.volume.size_gib


@dataclass
class InstanceTarget:
    """An instance and its volumes; or, `standalone`, the volumes selected on their own."""

    instance: Instance
    volumes: list[VolumeTarget] = field(default_factory=list)
    excluded: list[VolumeTarget] = field(default_factory=list)
    standalone: bool = False

    @property
    def instance_id(self) -> str:
        return self.instance.instance_id

    @property
    def name(self) -> str | None:
        return self.instance.name

    @property
    def label(self) -> str:
        if self.standalone:
            return "standalone volumes"
        return f"{self.instance_id} ({self.name})" if self.name else self.instance_id


def _describe_selected(aws: Aws, params: Parameters) -> list[Instance]:
    ids = [i for i in params.instances if _INSTANCE_ID.match(i)]
    names = [i for i in params.instances if not _INSTANCE_ID.match(i)]
    found: dict[str, Instance] = {}
    if ids:
        for inst in aws.describe_instances(ids=ids):
            found[inst.instance_id] = inst
        missing = [i for i in ids if i not in found]
        if missing:
            raise JobError(
                f"instance(s) {', '.join(missing)} not found in region {aws.region}: "
                "check instances= and region="
            )
    if names:
        by_name: dict[str, list[Instance]] = {}
        for inst in aws.describe_instances(names=names):
            if inst.state in _GONE_STATES:
                continue
            by_name.setdefault(inst.name or "", []).append(inst)
        missing = [n for n in names if n not in by_name]
        if missing:
            raise JobError(
                f"no instance named {', '.join(repr(n) for n in missing)} in region {aws.region}: "
                "instances= takes instance ids or Name tags"
            )
        for group in by_name.values():
            for inst in group:
                found[inst.instance_id] = inst
    if params.instance_tags or (params.instance_regex and not params.instances):
        for inst in aws.describe_instances(tags=params.instance_tags):
            found.setdefault(inst.instance_id, inst)
    selected = list(found.values())
    if params.instance_regex:
        rx = re.compile(params.instance_regex)
        selected = [i for i in selected if rx.search(i.name or "")]
    return selected


def _volume_excluded(target: VolumeTarget, params: Parameters) -> bool:
    if params.exclude_boot_volume and target.is_root:
        return True
    short = device_short_name(target.device)
    for item in params.exclude_volumes:
        if item == target.volume_id or device_short_name(item) == short:
            return True
    return False


def select_instances(aws: Aws, params: Parameters) -> list[InstanceTarget]:
    """Resolve the selection to instances and volumes; nothing selected is an error."""
    if not params.selects_instances() and not params.volumes:
        raise JobError("nothing selected: set instances=, instance_tags=, instance_regex= or volumes=")
    targets: list[InstanceTarget] = []
    if params.selects_instances():
        excluded = set(params.exclude_instances)
        for inst in sorted(_describe_selected(aws, params), key=lambda i: i.instance_id):
            name = inst.name
            if inst.instance_id in excluded or (name and name in excluded):
                continue
            if inst.state in _GONE_STATES:
                continue
            targets.append(_instance_target(aws, params, inst))
        if not targets and not params.volumes:
            raise JobError(
                f"the selection matched no instance in region {aws.region} "
                "(check instances=, instance_tags=, instance_regex=, exclude_instances=)"
            )
    if params.volumes:
        covered = {v.volume_id for t in targets for v in t.volumes}
        standalone = _standalone_target(aws, params, covered)
        if standalone.volumes:
            targets.append(standalone)
    return targets


def _standalone_target(aws: Aws, params: Parameters, covered: set[str]) -> InstanceTarget:
    """volumes=: each by id, snapshotted on its own (a volume already backed up with its
    instance in this job is not read twice)."""
    wanted = list(dict.fromkeys(params.volumes))
    bad = [v for v in wanted if not re.match(r"^vol-[0-9a-f]{8,17}$", v)]
    if bad:
        raise JobError(f"volumes= takes volume ids (vol-...): {', '.join(bad)}")
    found = {v.volume_id: v for v in aws.describe_volumes_filtered(wanted)}
    missing = [v for v in wanted if v not in found]
    if missing:
        raise JobError(
            f"volume(s) {', '.join(missing)} not found in region {aws.region}: check volumes= and region="
        )
    target = InstanceTarget(Instance(STANDALONE), standalone=True)
    for vid in wanted:
        if vid in covered:
            continue
        vol = found[vid]
        target.volumes.append(VolumeTarget(vol, vol.attachment.device or "detached", is_root=False))
    return target


def _instance_target(aws: Aws, params: Parameters, inst: Instance) -> InstanceTarget:
    devices = inst.ebs_devices
    volumes = {v.volume_id: v for v in aws.describe_volumes([str(d.volume_id) for d in devices])}
    target = InstanceTarget(inst)
    for dev in devices:
        vol = volumes.get(str(dev.volume_id))
        if vol is None:
            continue
        vt = VolumeTarget(vol, dev.device_name, is_root=dev.device_name == inst.root_device_name)
        (target.excluded if _volume_excluded(vt, params) else target.volumes).append(vt)
    return target
