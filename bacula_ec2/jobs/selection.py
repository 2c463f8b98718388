"""Which instances and which of their volumes a job covers (product.md §3 "Selection")."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from ..aws import Aws
from ..formats.config import tag_dict
from ..naming import STANDALONE, device_short_name
from ..params import Parameters
from .context import JobError

_INSTANCE_ID = re.compile(r"^i-[0-9a-f]{8,17}$")
_GONE_STATES = {"terminated", "shutting-down"}


@dataclass
class VolumeTarget:
    volume: dict[str, Any]
    device: str  # as attached, e.g. /dev/sda1
    is_root: bool

    @property
    def volume_id(self) -> str:
        return str(self.volume["VolumeId"])

    @property
    def size_gib(self) -> int:
        return int(self.volume["Size"])


@dataclass
class InstanceTarget:
    """An instance and its volumes; or, `standalone`, the volumes selected on their own."""

    instance: dict[str, Any]
    volumes: list[VolumeTarget] = field(default_factory=list)
    excluded: list[VolumeTarget] = field(default_factory=list)
    standalone: bool = False

    @property
    def instance_id(self) -> str:
        return str(self.instance["InstanceId"])

    @property
    def name(self) -> str | None:
        return tag_dict(self.instance.get("Tags")).get("Name")

    @property
    def label(self) -> str:
        if self.standalone:
            return "standalone volumes"
        return f"{self.instance_id} ({self.name})" if self.name else self.instance_id


def _describe_selected(aws: Aws, params: Parameters) -> list[dict[str, Any]]:
    ids = [i for i in params.instances if _INSTANCE_ID.match(i)]
    names = [i for i in params.instances if not _INSTANCE_ID.match(i)]
    found: dict[str, dict[str, Any]] = {}
    if ids:
        for inst in aws.describe_instances(filters=[{"Name": "instance-id", "Values": ids}]):
            found[inst["InstanceId"]] = inst
        missing = [i for i in ids if i not in found]
        if missing:
            raise JobError(
                f"instance(s) {', '.join(missing)} not found in region {aws.region}: "
                "check instances= and region="
            )
    if names:
        by_name: dict[str, list[dict[str, Any]]] = {}
        for inst in aws.describe_instances(filters=[{"Name": "tag:Name", "Values": names}]):
            if inst.get("State", {}).get("Name") in _GONE_STATES:
                continue
            by_name.setdefault(tag_dict(inst.get("Tags")).get("Name", ""), []).append(inst)
        missing = [n for n in names if n not in by_name]
        if missing:
            raise JobError(
                f"no instance named {', '.join(repr(n) for n in missing)} in region {aws.region}: "
                "instances= takes instance ids or Name tags"
            )
        for group in by_name.values():
            for inst in group:
                found[inst["InstanceId"]] = inst
    if params.instance_tags or (params.instance_regex and not params.instances):
        filters = [{"Name": f"tag:{k}", "Values": [v]} for k, v in params.instance_tags.items()]
        for inst in aws.describe_instances(filters=filters or None):
            found.setdefault(inst["InstanceId"], inst)
    selected = list(found.values())
    if params.instance_regex:
        rx = re.compile(params.instance_regex)
        selected = [i for i in selected if rx.search(tag_dict(i.get("Tags")).get("Name", ""))]
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
        for inst in sorted(_describe_selected(aws, params), key=lambda i: str(i["InstanceId"])):
            name = tag_dict(inst.get("Tags")).get("Name")
            if inst["InstanceId"] in excluded or (name and name in excluded):
                continue
            if inst.get("State", {}).get("Name") in _GONE_STATES:
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
    found = {v["VolumeId"]: v for v in aws.describe_volumes_filtered(wanted)}
    missing = [v for v in wanted if v not in found]
    if missing:
        raise JobError(
            f"volume(s) {', '.join(missing)} not found in region {aws.region}: check volumes= and region="
        )
    target = InstanceTarget({"InstanceId": STANDALONE}, standalone=True)
    for vid in wanted:
        if vid in covered:
            continue
        vol = found[vid]
        attachment = (vol.get("Attachments") or [{}])[0]
        target.volumes.append(VolumeTarget(vol, str(attachment.get("Device") or "detached"), is_root=False))
    return target


def _instance_target(aws: Aws, params: Parameters, inst: dict[str, Any]) -> InstanceTarget:
    root = inst.get("RootDeviceName")
    mappings = [m for m in inst.get("BlockDeviceMappings", []) if m.get("Ebs", {}).get("VolumeId")]
    volumes = {v["VolumeId"]: v for v in aws.describe_volumes([m["Ebs"]["VolumeId"] for m in mappings])}
    target = InstanceTarget(inst)
    for m in sorted(mappings, key=lambda m: str(m["DeviceName"])):
        vol = volumes.get(m["Ebs"]["VolumeId"])
        if vol is None:
            continue
        vt = VolumeTarget(vol, str(m["DeviceName"]), is_root=m["DeviceName"] == root)
        (target.excluded if _volume_excluded(vt, params) else target.volumes).append(vt)
    return target
