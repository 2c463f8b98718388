"""Instance and volume configuration documents (`i-X.json`, `vol-Y-<dev>-<N>G.json`).

Built from the EC2 Describe* answers (`Instance.raw`, `Volume.raw`: EC2's description as it
came, so the document records the original whole); they are what a restore to a new
instance or volume needs to recreate the original. Plain JSON, stable key order, ISO 8601
times. `instance_of` and `volume_of` read a document's description back into the model.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from typing import Any

from ..aws import shapes
from ..aws.model import Instance, Snapshot, Volume

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


def instance_document(
    instance: Instance,
    *,
    region: str,
    user_data: str | None,
    snapshots: list[Snapshot],
    job: dict[str, Any],
) -> dict[str, Any]:
    return {
        "kind": "bacula-ec2 instance",
        "version": CONFIG_VERSION,
        "region": region,
        "instance_id": instance.instance_id,
        "name": instance.name,
        "backup": job,
        "snapshots": [
            {
                "snapshot_id": s.snapshot_id,
                "volume_id": s.volume_id,
                "start_time": _plain(s.start_time),
            }
            for s in snapshots
        ],
        "user_data": user_data,
        "instance": _section(instance.raw, _INSTANCE_KEYS),
    }


def volume_document(
    volume: Volume,
    *,
    region: str,
    instance_id: str | None,
    device: str,
    snapshot: Snapshot | None,
    base_snapshot_id: str | None,
    level: str,
    job: dict[str, Any],
) -> dict[str, Any]:
    return {
        "kind": "bacula-ec2 volume",
        "version": CONFIG_VERSION,
        "region": region,
        "volume_id": volume.volume_id,
        "instance_id": instance_id,
        "device": device,
        "size_gib": volume.size_gib,
        "level": level,
        "snapshot_id": snapshot.snapshot_id if snapshot else None,
        "base_snapshot_id": base_snapshot_id,
        "backup": job,
        "volume": _section(volume.raw, _VOLUME_KEYS),
    }


def _section(description: Mapping[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    return {k: _plain(description[k]) for k in keys if k in description}


def instance_of(doc: Mapping[str, Any]) -> Instance:
    """The original instance as an instance document recorded it."""
    section = doc.get("instance")
    return shapes.instance(section if isinstance(section, Mapping) else {})


def volume_of(doc: Mapping[str, Any]) -> Volume:
    """The original volume as a volume document recorded it (an empty one if none)."""
    section = doc.get("volume")
    return shapes.volume(section if isinstance(section, Mapping) else {})


def encode(doc: dict[str, Any]) -> bytes:
    return (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode()
