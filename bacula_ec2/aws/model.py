"""The product's own model of what it reads from and asks of EC2.

`aws/` returns these and takes these; nothing above it sees a boto3 request or response.
Tags are plain `dict[str, str]`, times `datetime` (UTC, or None when EC2 gave none).

`Instance.raw` and `Volume.raw` are EC2's description as it came (or as the catalog's JSON
document recorded it): the configuration documents (`formats/config.py`) are the user's
record of the original and keep it whole. Job code reads the typed fields, never `raw`.

The `*Spec` classes are what a restore asks for: a new volume, image or instance.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any


def _no_description() -> Mapping[str, Any]:
    return MappingProxyType({})


# ---------------------------------------------------------------------- described


@dataclass(frozen=True)
class BlockDevice:
    """One block device mapping of an instance (`volume_id` None: not an EBS volume)."""

    device_name: str
    volume_id: str | None = None
    delete_on_termination: bool | None = None


@dataclass(frozen=True)
class MetadataOptions:
    """The instance metadata settings a restored instance keeps (None: not set)."""

    http_tokens: str | None = None
    http_put_response_hop_limit: int | None = None
    http_endpoint: str | None = None


@dataclass(frozen=True)
class Instance:
    instance_id: str
    state: str = ""  # pending, running, stopped, terminated, ...
    instance_type: str | None = None
    availability_zone: str | None = None
    subnet_id: str | None = None
    security_group_ids: tuple[str, ...] = ()
    key_name: str | None = None
    iam_instance_profile_arn: str | None = None
    root_device_name: str | None = None
    block_devices: tuple[BlockDevice, ...] = ()
    architecture: str | None = None
    virtualization_type: str | None = None
    ena_support: bool | None = None
    boot_mode: str | None = None
    ebs_optimized: bool = False
    metadata_options: MetadataOptions = MetadataOptions()
    launch_time: dt.datetime | None = None
    tags: dict[str, str] = field(default_factory=dict)
    raw: Mapping[str, Any] = field(default_factory=_no_description, repr=False, compare=False)

    @property
    def name(self) -> str | None:
        return self.tags.get("Name")

    @property
    def ebs_devices(self) -> list[BlockDevice]:
        """The mappings that are EBS volumes, by device name."""
        return sorted((b for b in self.block_devices if b.volume_id), key=lambda b: b.device_name)


@dataclass(frozen=True)
class Attachment:
    instance_id: str | None = None
    device: str | None = None


@dataclass(frozen=True)
class Volume:
    volume_id: str
    size_gib: int = 0
    volume_type: str | None = None
    iops: int | None = None
    throughput: int | None = None
    encrypted: bool = False
    kms_key_id: str | None = None
    availability_zone: str | None = None
    state: str | None = None
    create_time: dt.datetime | None = None
    attachments: tuple[Attachment, ...] = ()
    tags: dict[str, str] = field(default_factory=dict)
    raw: Mapping[str, Any] = field(default_factory=_no_description, repr=False, compare=False)

    @property
    def attachment(self) -> Attachment:
        """The first attachment, or an empty one for a detached volume."""
        return self.attachments[0] if self.attachments else Attachment()


@dataclass(frozen=True)
class Snapshot:
    snapshot_id: str
    volume_id: str = ""
    state: str | None = None  # pending, completed, error (None: EC2 did not say)
    start_time: dt.datetime | None = None
    progress: str | None = None
    tags: dict[str, str] = field(default_factory=dict)


# ---------------------------------------------------------------------- requested


@dataclass(frozen=True)
class VolumeSpec:
    """CreateVolume from a snapshot."""

    snapshot_id: str
    zone: str
    client_token: str
    volume_type: str | None = None
    iops: int | None = None
    throughput: int | None = None
    kms_key: str | None = None
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ImageDevice:
    """One EBS device of a new image, made from a snapshot."""

    device_name: str | None
    snapshot_id: str
    size_gib: int
    delete_on_termination: bool = True
    volume_type: str | None = None
    iops: int | None = None
    throughput: int | None = None


@dataclass(frozen=True)
class ImageSpec:
    """RegisterImage from snapshots."""

    name: str
    description: str
    root_device_name: str
    devices: tuple[ImageDevice, ...]
    architecture: str | None = None
    virtualization_type: str | None = None
    ena_support: bool | None = None
    boot_mode: str | None = None
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class LaunchSpec:
    """RunInstances for one instance; `client_token` makes retries idempotent."""

    image_id: str
    instance_type: str
    client_token: str
    instance_tags: dict[str, str] = field(default_factory=dict)
    volume_tags: dict[str, str] = field(default_factory=dict)
    subnet_id: str | None = None
    availability_zone: str | None = None
    security_group_ids: tuple[str, ...] = ()
    key_name: str | None = None
    private_ip: str | None = None
    iam_instance_profile_arn: str | None = None
    user_data: bytes | None = None
    metadata_options: MetadataOptions = MetadataOptions()
    ebs_optimized: bool = False
