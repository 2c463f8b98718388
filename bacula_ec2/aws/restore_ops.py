"""EC2 control-plane calls a restore into AWS needs: volumes, attachments, images,
instances, and deleting what a failed restore created.

Creating calls carry a ClientToken where EC2 has one (CreateVolume, RunInstances), so a
retried request cannot create a second resource. Waiters poll with a growing interval and
stop on the job's cancel event.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ..retry import Cancelled
from .client import Aws, AwsError, tag_list


def _spec(resource: str, tags: dict[str, str]) -> list[dict[str, Any]]:
    return [{"ResourceType": resource, "Tags": tag_list(tags)}] if tags else []


def availability_zones(aws: Aws) -> list[str]:
    out = aws._call("DescribeAvailabilityZones", lambda: aws.ec2.describe_availability_zones())
    zones = [z for z in out.get("AvailabilityZones", []) if z.get("State", "available") == "available"]
    return sorted(str(z["ZoneName"]) for z in zones)


def describe_instance(aws: Aws, instance_id: str) -> dict[str, Any]:
    found = aws.describe_instances(instance_ids=[instance_id])
    if not found:
        raise AwsError("DescribeInstances", "InvalidInstanceID.NotFound", f"no instance {instance_id}")
    return found[0]


def wait_for(
    aws: Aws,
    what: str,
    check: Callable[[], bool],
    timeout: float,
    max_interval: float = 5.0,
) -> None:
    """Poll `check` until it is true; AwsError on timeout, Cancelled on cancel."""
    deadline = time.monotonic() + timeout
    interval = 0.1
    while not check():
        if time.monotonic() > deadline:
            raise AwsError(what, "Timeout", f"still not done after {timeout:.0f} s")
        if aws.cancel is not None:
            if aws.cancel.wait(interval):
                raise Cancelled(f"cancelled while waiting: {what}")
        else:
            time.sleep(interval)
        interval = min(max_interval, interval * 1.5)


# ---------------------------------------------------------------------- volumes
def create_volume(
    aws: Aws,
    *,
    snapshot_id: str,
    zone: str,
    volume_type: str | None,
    iops: int | None,
    throughput: int | None,
    kms_key: str | None,
    tags: dict[str, str],
    client_token: str,
) -> str:
    args: dict[str, Any] = {
        "SnapshotId": snapshot_id,
        "AvailabilityZone": zone,
        "ClientToken": client_token,
        "TagSpecifications": _spec("volume", tags),
    }
    if volume_type:
        args["VolumeType"] = volume_type
    if iops is not None:
        args["Iops"] = iops
    if throughput is not None:
        args["Throughput"] = throughput
    if kms_key:
        args.update(Encrypted=True, KmsKeyId=kms_key)
    out = aws._call("CreateVolume", lambda: aws.ec2.create_volume(**args))
    return str(out["VolumeId"])


def volume_state(aws: Aws, volume_id: str) -> str:
    vols = aws.describe_volumes([volume_id])
    return str(vols[0].get("State", "")) if vols else "deleted"


def wait_volume(aws: Aws, volume_id: str, state: str, timeout: float) -> None:
    def check() -> bool:
        now = volume_state(aws, volume_id)
        if now == "error":
            raise AwsError("CreateVolume", "VolumeError", f"volume {volume_id} is in state error")
        return now == state

    wait_for(aws, f"volume {volume_id} {state}", check, timeout)


def attach_volume(aws: Aws, volume_id: str, instance_id: str, device: str) -> None:
    aws._call(
        "AttachVolume",
        lambda: aws.ec2.attach_volume(VolumeId=volume_id, InstanceId=instance_id, Device=device),
        retry=False,
    )


def delete_volume(aws: Aws, volume_id: str) -> None:
    try:
        aws._call("DeleteVolume", lambda: aws.ec2.delete_volume(VolumeId=volume_id))
    except AwsError as exc:
        if exc.code != "InvalidVolume.NotFound":
            raise


def detach_volume(aws: Aws, volume_id: str) -> None:
    try:
        aws._call("DetachVolume", lambda: aws.ec2.detach_volume(VolumeId=volume_id, Force=True))
    except AwsError as exc:
        if exc.code not in ("InvalidVolume.NotFound", "IncorrectState", "InvalidAttachment.NotFound"):
            raise


def tagged_volumes(aws: Aws, key: str, value: str) -> list[dict[str, Any]]:
    return list(
        aws._pages(
            "DescribeVolumes",
            aws.ec2.describe_volumes,
            "Volumes",
            Filters=[{"Name": f"tag:{key}", "Values": [value]}],
        )
    )


# ---------------------------------------------------------------------- images
def register_image(
    aws: Aws,
    *,
    name: str,
    description: str,
    root_device: str,
    mappings: list[dict[str, Any]],
    architecture: str | None,
    virtualization_type: str | None,
    ena_support: bool | None,
    boot_mode: str | None,
    tags: dict[str, str],
) -> str:
    args: dict[str, Any] = {
        "Name": name,
        "Description": description,
        "RootDeviceName": root_device,
        "BlockDeviceMappings": mappings,
        "TagSpecifications": _spec("image", tags),
    }
    if architecture:
        args["Architecture"] = architecture
    if virtualization_type:
        args["VirtualizationType"] = virtualization_type
    if ena_support is not None:
        args["EnaSupport"] = ena_support
    if boot_mode in ("legacy-bios", "uefi", "uefi-preferred"):
        args["BootMode"] = boot_mode
    # Not retried blindly: a second RegisterImage would fail on the (unique) name anyway.
    out = aws._call("RegisterImage", lambda: aws.ec2.register_image(**args), retry=False)
    return str(out["ImageId"])


def deregister_image(aws: Aws, image_id: str) -> None:
    try:
        aws._call("DeregisterImage", lambda: aws.ec2.deregister_image(ImageId=image_id))
    except AwsError as exc:
        if exc.code not in ("InvalidAMIID.NotFound", "InvalidAMIID.Unavailable"):
            raise


# ---------------------------------------------------------------------- instances
def run_instance(aws: Aws, args: dict[str, Any]) -> str:
    """RunInstances for one instance; `args` must carry a ClientToken (idempotent retries)."""
    call = dict(args, MinCount=1, MaxCount=1)
    out = aws._call("RunInstances", lambda: aws.ec2.run_instances(**call))
    return str(out["Instances"][0]["InstanceId"])


def instance_state(aws: Aws, instance_id: str) -> str:
    found = aws.describe_instances(instance_ids=[instance_id])
    return str(found[0].get("State", {}).get("Name", "")) if found else "terminated"


def wait_instance(aws: Aws, instance_id: str, states: tuple[str, ...], timeout: float) -> str:
    seen: list[str] = []

    def check() -> bool:
        seen.append(instance_state(aws, instance_id))
        if seen[-1] == "terminated" and "terminated" not in states:
            raise AwsError("RunInstances", "InstanceTerminated", f"instance {instance_id} terminated")
        return seen[-1] in states

    wait_for(aws, f"instance {instance_id} {'/'.join(states)}", check, timeout)
    return seen[-1]


def stop_instance(aws: Aws, instance_id: str) -> None:
    aws._call("StopInstances", lambda: aws.ec2.stop_instances(InstanceIds=[instance_id]))


def terminate_instance(aws: Aws, instance_id: str) -> None:
    try:
        aws._call("TerminateInstances", lambda: aws.ec2.terminate_instances(InstanceIds=[instance_id]))
    except AwsError as exc:
        if exc.code != "InvalidInstanceID.NotFound":
            raise
