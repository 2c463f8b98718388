"""The only place that talks to AWS: EC2 control plane and EBS direct.

`client.Aws` holds the boto3 clients and the control-plane calls the jobs need (the restore
ones mixed in from `restore_ops`); other modules here add capabilities on top of it (one
file per capability). It is built from an `AwsSettings` (`settings.py`), never from the
parameter model. Everything above this package sees the product's own model (`model.py`:
frozen dataclasses, tags as dicts, times as datetimes) and our own exceptions; EC2's request
and response shapes stay in `shapes.py`.
"""

from .client import Aws, AwsError, BlockBody, BlockRef, ChecksumMismatch, classify
from .model import (
    Attachment,
    BlockDevice,
    ImageDevice,
    ImageSpec,
    Instance,
    LaunchSpec,
    MetadataOptions,
    Snapshot,
    Volume,
    VolumeSpec,
)
from .settings import AwsSettings, Secret

__all__ = [
    "Attachment",
    "Aws",
    "AwsError",
    "AwsSettings",
    "BlockBody",
    "BlockDevice",
    "BlockRef",
    "ChecksumMismatch",
    "ImageDevice",
    "ImageSpec",
    "Instance",
    "LaunchSpec",
    "MetadataOptions",
    "Secret",
    "Snapshot",
    "Volume",
    "VolumeSpec",
    "classify",
]
