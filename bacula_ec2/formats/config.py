"""Instance and volume configuration documents (`i-X.json`, `vol-Y-<dev>-<N>G.json`).

Built from the EC2 Describe* answers; they are what a restore to a new instance or volume
needs to recreate the original. Plain JSON, stable key order, ISO 8601 times.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

CONFIG_VERSION = 1

_INSTANCE_KEYS = (
    "InstanceId",
    "InstanceType",
    "ImageId",
    "Architecture",
    "Placement",
    "SubnetId",
    "VpcId",
    "PrivateIpAddress",
    "PrivateDnsName",
    "SecurityGroups",
    "NetworkInterfaces",
    "BlockDeviceMappings",
    "RootDeviceName",
    "RootDeviceType",
    "Tags",
    "KeyName",
    "IamInstanceProfile",
    "VirtualizationType",
    "BootMode",
    "EnaSupport",
    "SriovNetSupport",
    "EbsOptimized",
    "Hypervisor",
    "MetadataOptions",
    "CpuOptions",
    "HibernationOptions",
    "Monitoring",
    "State",
    "LaunchTime",
    "PlatformDetails",
    "Platform",
    "CapacityReservationSpecification",
    "EnclaveOptions",
    "MaintenanceOptions",
    "PrivateDnsNameOptions",
    "CurrentInstanceBootMode",
)

_VOLUME_KEYS = (
    "VolumeId",
    "VolumeType",
    "Size",
    "Iops",
    "Throughput",
    "Encrypted",
    "KmsKeyId",
    "AvailabilityZone",
    "Tags",
    "MultiAttachEnabled",
    "SnapshotId",
    "CreateTime",
    "Attachments",
)


def _plain(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value


def tag_dict(tags: list[dict[str, str]] | None) -> dict[str, str]:
    return {t["Key"]: t.get("Value", "") for t in tags or []}


def instance_document(
    instance: dict[str, Any],
    *,
    region: str,
    user_data: str | None,
    snapshots: list[dict[str, Any]],
    job: dict[str, Any],
) -> dict[str, Any]:
    return {
        "kind": "bacula-ec2 instance",
        "version": CONFIG_VERSION,
        "region": region,
        "instance_id": instance["InstanceId"],
        "name": tag_dict(instance.get("Tags")).get("Name"),
        "backup": job,
        "snapshots": [
            {
                "snapshot_id": s["SnapshotId"],
                "volume_id": s.get("VolumeId"),
                "start_time": _plain(s.get("StartTime")),
            }
            for s in snapshots
        ],
        "user_data": user_data,
        "instance": {k: _plain(instance[k]) for k in _INSTANCE_KEYS if k in instance},
    }


def volume_document(
    volume: dict[str, Any],
    *,
    region: str,
    instance_id: str | None,
    device: str,
    snapshot: dict[str, Any] | None,
    base_snapshot_id: str | None,
    level: str,
    job: dict[str, Any],
) -> dict[str, Any]:
    return {
        "kind": "bacula-ec2 volume",
        "version": CONFIG_VERSION,
        "region": region,
        "volume_id": volume["VolumeId"],
        "instance_id": instance_id,
        "device": device,
        "size_gib": volume.get("Size"),
        "level": level,
        "snapshot_id": snapshot["SnapshotId"] if snapshot else None,
        "base_snapshot_id": base_snapshot_id,
        "backup": job,
        "volume": {k: _plain(volume[k]) for k in _VOLUME_KEYS if k in volume},
    }


def encode(doc: dict[str, Any]) -> bytes:
    return (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode()
