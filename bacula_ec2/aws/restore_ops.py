"""The EC2 control-plane calls a restore into AWS needs: volumes, attachments, images,
instances, and deleting what a failed restore created. Part of the `Aws` facade
(`client.Aws` mixes `RestoreCalls` in): callers write `aws.create_volume(spec)`.

Creating calls carry a ClientToken where EC2 has one (CreateVolume, RunInstances), so a
retried request cannot create a second resource. Waiters poll with a growing interval and
stop on the job's cancel event.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Protocol

from ..retry import REAL_CLOCK, Clock
from . import shapes
from .errors import AwsError
from .model import ImageSpec, LaunchSpec, VolumeSpec
from .wait import Step, WaitParams, wait_until


class _Connected(Protocol):
    """What the restore calls use of `client.Aws`."""

    ec2: Any
    cancel: threading.Event | None
    clock: Clock

    def _call(self, operation: str, fn: Callable[[], Any], retry: bool = True) -> Any: ...
    def volume_state(self, volume_id: str) -> str: ...
    def instance_state(self, instance_id: str) -> str: ...


def _wait_for(
    cancel: threading.Event | None,
    what: str,
    check: Callable[[], bool],
    timeout: float,
    clock: Clock = REAL_CLOCK,
) -> None:
    """Poll `check` until it is true (the one waiter, aws/wait.py); AwsError on timeout,
    Cancelled on cancel."""
    wait_until(
        lambda: Step(check()),
        operation=what,
        what=what,
        params=WaitParams.for_state(timeout),
        clock=clock,
        cancel=cancel,
    )


class RestoreCalls:
    """CreateVolume, AttachVolume, RegisterImage, RunInstances and their clean-up."""

    def availability_zones(self: _Connected) -> list[str]:
        """The region's zones that are available, sorted."""
        out = self._call("DescribeAvailabilityZones", lambda: self.ec2.describe_availability_zones())
        zones = [z for z in out.get("AvailabilityZones", []) if z.get("State", "available") == "available"]
        return sorted(str(z["ZoneName"]) for z in zones)

    # ------------------------------------------------------------------ volumes
    def create_volume(self: _Connected, spec: VolumeSpec) -> str:
        """A new volume from a snapshot; its id."""
        args = shapes.create_volume_request(spec)
        out = self._call("CreateVolume", lambda: self.ec2.create_volume(**args))
        return str(out["VolumeId"])

    def wait_volume(self: _Connected, volume_id: str, state: str, timeout: float) -> None:
        """Until the volume is in `state`; AwsError if it goes to `error` or on timeout."""

        def check() -> bool:
            now = self.volume_state(volume_id)
            if now == "error":
                raise AwsError("CreateVolume", "VolumeError", f"volume {volume_id} is in state error")
            return now == state

        _wait_for(self.cancel, f"volume {volume_id} {state}", check, timeout, self.clock)

    def attach_volume(self: _Connected, volume_id: str, instance_id: str, device: str) -> None:
        self._call(
            "AttachVolume",
            lambda: self.ec2.attach_volume(VolumeId=volume_id, InstanceId=instance_id, Device=device),
            retry=False,
        )

    def delete_volume(self: _Connected, volume_id: str) -> None:
        """Delete a volume; one that is already gone is fine."""
        try:
            self._call("DeleteVolume", lambda: self.ec2.delete_volume(VolumeId=volume_id))
        except AwsError as exc:
            if exc.code != "InvalidVolume.NotFound":
                raise

    def detach_volume(self: _Connected, volume_id: str) -> None:
        """Force-detach a volume; one that is gone or not attached is fine."""
        try:
            self._call("DetachVolume", lambda: self.ec2.detach_volume(VolumeId=volume_id, Force=True))
        except AwsError as exc:
            if exc.code not in ("InvalidVolume.NotFound", "IncorrectState", "InvalidAttachment.NotFound"):
                raise

    # ------------------------------------------------------------------ images
    def register_image(self: _Connected, spec: ImageSpec) -> str:
        """A new image from snapshots; its id."""
        args = shapes.register_image_request(spec)
        # Not retried blindly: a second RegisterImage would fail on the (unique) name anyway.
        out = self._call("RegisterImage", lambda: self.ec2.register_image(**args), retry=False)
        return str(out["ImageId"])

    def deregister_image(self: _Connected, image_id: str) -> None:
        """Deregister an image; one that is already gone is fine."""
        try:
            self._call("DeregisterImage", lambda: self.ec2.deregister_image(ImageId=image_id))
        except AwsError as exc:
            if exc.code not in ("InvalidAMIID.NotFound", "InvalidAMIID.Unavailable"):
                raise

    # ------------------------------------------------------------------ instances
    def run_instance(self: _Connected, spec: LaunchSpec) -> str:
        """RunInstances for one instance (idempotent through its ClientToken); its id."""
        args = shapes.run_instances_request(spec)
        out = self._call("RunInstances", lambda: self.ec2.run_instances(**args))
        return str(out["Instances"][0]["InstanceId"])

    def wait_instance(self: _Connected, instance_id: str, states: tuple[str, ...], timeout: float) -> str:
        """Until the instance is in one of `states`; the state it reached. AwsError if it
        terminates unexpectedly or on timeout."""
        seen: list[str] = []

        def check() -> bool:
            seen.append(self.instance_state(instance_id))
            if seen[-1] == "terminated" and "terminated" not in states:
                raise AwsError("RunInstances", "InstanceTerminated", f"instance {instance_id} terminated")
            return seen[-1] in states

        _wait_for(self.cancel, f"instance {instance_id} {'/'.join(states)}", check, timeout, self.clock)
        return seen[-1]

    def stop_instance(self: _Connected, instance_id: str) -> None:
        self._call("StopInstances", lambda: self.ec2.stop_instances(InstanceIds=[instance_id]))

    def terminate_instance(self: _Connected, instance_id: str) -> None:
        """Terminate an instance; one that is already gone is fine."""
        try:
            self._call("TerminateInstances", lambda: self.ec2.terminate_instances(InstanceIds=[instance_id]))
        except AwsError as exc:
            if exc.code != "InvalidInstanceID.NotFound":
                raise
