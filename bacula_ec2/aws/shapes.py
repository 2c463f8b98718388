"""EC2's wire shapes, both ways: descriptions into `model`, the product's arguments into
requests. The only place that knows EC2's keys (`Filters`, `TagSpecifications`,
`BlockDeviceMappings`, `[{"Key": k, "Value": v}]` tag lists, ...).

Parsing accepts what boto3 returns and what the catalog's JSON documents recorded of it
(the same keys, times as ISO 8601 text): a restore reads the original's configuration from
there.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any

from .. import timefmt
from .model import (
    Attachment,
    BlockDevice,
    ImageSpec,
    Instance,
    LaunchSpec,
    MetadataOptions,
    Snapshot,
    Volume,
    VolumeSpec,
)

# ---------------------------------------------------------------------- tags and filters


def tag_list(tags: Mapping[str, str]) -> list[dict[str, str]]:
    """AWS's `[{"Key": k, "Value": v}]` form of a tag dict."""
    return [{"Key": k, "Value": v} for k, v in tags.items()]


def tag_dict(tags: Iterable[Mapping[str, Any]] | None) -> dict[str, str]:
    """A tag dict from AWS's tag list."""
    return {str(t["Key"]): str(t.get("Value", "")) for t in tags or []}


def tag_spec(resource: str, tags: Mapping[str, str]) -> dict[str, Any]:
    """One TagSpecifications entry."""
    return {"ResourceType": resource, "Tags": tag_list(tags)}


def match(name: str, values: Iterable[str]) -> dict[str, Any]:
    """One Describe* filter: `name` is any of `values`."""
    return {"Name": name, "Values": list(values)}


def tag_filters(tags: Mapping[str, str]) -> list[dict[str, Any]]:
    """Describe* filters for "has every one of these tags"."""
    return [match(f"tag:{k}", [v]) for k, v in tags.items()]


# ---------------------------------------------------------------------- descriptions


def _time(value: object) -> dt.datetime | None:
    if isinstance(value, dt.datetime):
        return value
    if isinstance(value, str) and value:
        try:
            return timefmt.parse_iso(value)
        except ValueError:
            return None
    return None


def _str(value: object) -> str | None:
    return None if value is None else str(value)


def _int(value: object) -> int | None:
    return None if value is None else int(str(value))


def _dict(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def instance(d: Mapping[str, Any]) -> Instance:
    """An instance from its DescribeInstances entry (or its configuration document)."""
    meta = _dict(d.get("MetadataOptions"))
    devices = []
    for m in d.get("BlockDeviceMappings") or []:
        ebs = _dict(m.get("Ebs"))
        dot = ebs.get("DeleteOnTermination")
        devices.append(
            BlockDevice(
                str(m.get("DeviceName") or ""),
                _str(ebs.get("VolumeId")) or None,
                None if dot is None else bool(dot),
            )
        )
    ena = d.get("EnaSupport")
    return Instance(
        instance_id=str(d.get("InstanceId") or ""),
        state=str(_dict(d.get("State")).get("Name") or ""),
        instance_type=_str(d.get("InstanceType")),
        availability_zone=_str(_dict(d.get("Placement")).get("AvailabilityZone")),
        subnet_id=_str(d.get("SubnetId")),
        security_group_ids=tuple(
            str(g["GroupId"]) for g in d.get("SecurityGroups") or [] if g.get("GroupId")
        ),
        key_name=_str(d.get("KeyName")),
        iam_instance_profile_arn=_str(_dict(d.get("IamInstanceProfile")).get("Arn")),
        root_device_name=_str(d.get("RootDeviceName")),
        block_devices=tuple(devices),
        architecture=_str(d.get("Architecture")),
        virtualization_type=_str(d.get("VirtualizationType")),
        ena_support=None if ena is None else bool(ena),
        boot_mode=_str(d.get("BootMode")),
        ebs_optimized=bool(d.get("EbsOptimized")),
        metadata_options=MetadataOptions(
            http_tokens=_str(meta.get("HttpTokens")),
            http_put_response_hop_limit=_int(meta.get("HttpPutResponseHopLimit")),
            http_endpoint=_str(meta.get("HttpEndpoint")),
        ),
        launch_time=_time(d.get("LaunchTime")),
        tags=tag_dict(d.get("Tags")),
        raw=MappingProxyType(dict(d)),
    )


def volume(d: Mapping[str, Any]) -> Volume:
    """A volume from its DescribeVolumes entry (or its configuration document)."""
    return Volume(
        volume_id=str(d.get("VolumeId") or ""),
        size_gib=int(d.get("Size") or 0),
        volume_type=_str(d.get("VolumeType")),
        iops=_int(d.get("Iops")),
        throughput=_int(d.get("Throughput")),
        encrypted=bool(d.get("Encrypted")),
        kms_key_id=_str(d.get("KmsKeyId")),
        availability_zone=_str(d.get("AvailabilityZone")),
        state=_str(d.get("State")),
        create_time=_time(d.get("CreateTime")),
        attachments=tuple(
            Attachment(_str(a.get("InstanceId")), _str(a.get("Device"))) for a in d.get("Attachments") or []
        ),
        tags=tag_dict(d.get("Tags")),
        raw=MappingProxyType(dict(d)),
    )


def snapshot(d: Mapping[str, Any]) -> Snapshot:
    """A snapshot from DescribeSnapshots, CreateSnapshot or CreateSnapshots."""
    return Snapshot(
        snapshot_id=str(d["SnapshotId"]),
        volume_id=str(d.get("VolumeId") or ""),
        state=_str(d.get("State")),
        start_time=_time(d.get("StartTime")),
        progress=_str(d.get("Progress")),
        tags=tag_dict(d.get("Tags")),
    )


# ---------------------------------------------------------------------- restore requests


def _performance(volume_type: str | None, iops: int | None, throughput: int | None) -> dict[str, Any]:
    """A new volume's type, IOPS and throughput, those that are given (CreateVolume and an
    image's EBS mapping take the same three)."""
    out: dict[str, Any] = {"VolumeType": volume_type} if volume_type else {}
    if iops is not None:
        out["Iops"] = iops
    if throughput is not None:
        out["Throughput"] = throughput
    return out


def create_volume_request(spec: VolumeSpec) -> dict[str, Any]:
    args: dict[str, Any] = {
        "SnapshotId": spec.snapshot_id,
        "AvailabilityZone": spec.zone,
        "ClientToken": spec.client_token,
        "TagSpecifications": [tag_spec("volume", spec.tags)] if spec.tags else [],
    }
    args.update(_performance(spec.volume_type, spec.iops, spec.throughput))
    if spec.kms_key:
        args.update(Encrypted=True, KmsKeyId=spec.kms_key)
    return args


def register_image_request(spec: ImageSpec) -> dict[str, Any]:
    mappings = []
    for dev in spec.devices:
        ebs: dict[str, Any] = {
            "SnapshotId": dev.snapshot_id,
            "VolumeSize": dev.size_gib,
            "DeleteOnTermination": dev.delete_on_termination,
        }
        ebs.update(_performance(dev.volume_type, dev.iops, dev.throughput))
        mappings.append({"DeviceName": dev.device_name, "Ebs": ebs})
    args: dict[str, Any] = {
        "Name": spec.name,
        "Description": spec.description,
        "RootDeviceName": spec.root_device_name,
        "BlockDeviceMappings": mappings,
        "TagSpecifications": [tag_spec("image", spec.tags)] if spec.tags else [],
    }
    if spec.architecture:
        args["Architecture"] = spec.architecture
    if spec.virtualization_type:
        args["VirtualizationType"] = spec.virtualization_type
    if spec.ena_support is not None:
        args["EnaSupport"] = spec.ena_support
    if spec.boot_mode in ("legacy-bios", "uefi", "uefi-preferred"):
        args["BootMode"] = spec.boot_mode
    return args


def run_instances_request(spec: LaunchSpec) -> dict[str, Any]:
    args: dict[str, Any] = {
        "ImageId": spec.image_id,
        "InstanceType": spec.instance_type,
        "ClientToken": spec.client_token,
        "TagSpecifications": [tag_spec("instance", spec.instance_tags), tag_spec("volume", spec.volume_tags)],
        "MinCount": 1,
        "MaxCount": 1,
    }
    if spec.subnet_id:
        args["SubnetId"] = spec.subnet_id
    if spec.availability_zone:
        args["Placement"] = {"AvailabilityZone": spec.availability_zone}
    if spec.security_group_ids:
        args["SecurityGroupIds"] = list(spec.security_group_ids)
    if spec.key_name:
        args["KeyName"] = spec.key_name
    if spec.private_ip:
        args["PrivateIpAddress"] = spec.private_ip
    if spec.iam_instance_profile_arn:
        args["IamInstanceProfile"] = {"Arn": spec.iam_instance_profile_arn}
    if spec.user_data:
        args["UserData"] = spec.user_data  # boto3 base64-encodes it
    meta = spec.metadata_options
    options = {
        key: value
        for key, value in (
            ("HttpTokens", meta.http_tokens),
            ("HttpPutResponseHopLimit", meta.http_put_response_hop_limit),
            ("HttpEndpoint", meta.http_endpoint),
        )
        if value is not None
    }
    if options:
        args["MetadataOptions"] = options
    if spec.ebs_optimized:
        args["EbsOptimized"] = True
    return args


# ---------------------------------------------------------------------- large requests

#: Describe* parameters that list ids (each id is a value, as in a filter).
ID_PARAMETERS = ("InstanceIds", "VolumeIds", "SnapshotIds", "ImageIds")


def _chunks(values: list[Any], size: int) -> list[list[Any]]:
    return [values[i : i + size] for i in range(0, len(values), size)] or [[]]


def chunk_request(request: Mapping[str, Any], limit: int) -> list[dict[str, Any]]:
    """The Describe* requests that together ask what `request` asks, none with more than
    `limit` values in one filter or id list (EC2: FilterLimitExceeded above 200). A filter
    is an "any of" set, so a big one splits into chunks; several big ones into every
    combination of their chunks (filters are ANDed). The answers overlap only where an item
    matches two chunks of one filter, which needs a multi-valued field: callers dedupe."""
    requests: list[dict[str, Any]] = [dict(request)]
    for name in ID_PARAMETERS:
        values = list(request.get(name) or [])
        if len(values) > limit:
            requests = [dict(r, **{name: chunk}) for r in requests for chunk in _chunks(values, limit)]
    filters = list(request.get("Filters") or [])
    for i, flt in enumerate(filters):
        values = list(flt.get("Values") or [])
        if len(values) <= limit:
            continue
        split: list[dict[str, Any]] = []
        for r in requests:
            for chunk in _chunks(values, limit):
                chunked = list(r["Filters"])
                chunked[i] = dict(flt, Values=chunk)
                split.append(dict(r, Filters=chunked))
        requests = split
    return requests


#: The id field of the items of each Describe* answer list.
ITEM_IDS = {
    "Reservations": "InstanceId",
    "Volumes": "VolumeId",
    "Snapshots": "SnapshotId",
    "Images": "ImageId",
}


def item_id(key: str, item: Mapping[str, Any]) -> str:
    """The id of one item of the Describe* answer list `key` (an instance of "Reservations")."""
    return str(item[ITEM_IDS[key]])
