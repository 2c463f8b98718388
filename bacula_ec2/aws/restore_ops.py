"""The EC2 control-plane calls a restore into AWS needs: volumes, attachments, images,
instances, and deleting what a failed restore created. Part of the `Aws` facade
(`client.Aws` mixes `RestoreCalls` in): callers write `aws.create_volume(spec)`.

Creating calls carry a ClientToken where EC2 has one (CreateVolume, RunInstances), so a
retried request cannot create a second resource. Waiters poll with a growing interval and
stop on the job's cancel event.

EC2 is eventually consistent (EC2 API reference, "Eventual consistency in the Amazon EC2
API"): an id a create just returned may be `Invalid*.NotFound` to Describe*, AttachVolume,
DeleteSnapshot, DeregisterImage or TerminateInstances for a while, and a deleted or
terminated resource may still be listed for a while. So the calls about an id this restore
created take `fresh=True` until the restore has seen the resource itself (a Describe that
listed it): a NotFound is then "not visible yet" and retried within the retry policy's
`not_found_window` (errors.fresh_not_found). A delete, a deregister or a terminate counts as
done only once a Describe no longer lists the resource (or lists it deleted / terminated /
deregistered): `*_gone`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Protocol

from ..retry import REAL_CLOCK, Clock, RetryPolicy, RetryStats, call_with_retry
from . import errors, shapes
from .errors import AwsError, Kind
from .model import ImageSpec, LaunchSpec, VolumeSpec
from .wait import Step, WaitParams, wait_until

#: How long a delete may take to show in Describe (a deleted resource "may still be listed
#: for a while"; minutes at most in practice).
GONE_TIMEOUT = 300.0
#: wait_volume's code for a volume that is deleted while it waits for another state.
VOLUME_DELETED = "VolumeDeleted"


class _Connected(Protocol):
    """What the restore calls use of `client.Aws`."""

    ec2: Any
    cancel: threading.Event | None
    clock: Clock
    policy: RetryPolicy
    stats: RetryStats

    def _call(
        self,
        operation: str,
        fn: Callable[[], Any],
        retry: bool = True,
        *,
        resource: str | None = None,
        fresh: bool = False,
        deletes: bool = False,
    ) -> Any: ...
    def _ec2(
        self,
        operation: str,
        fn: Callable[[], Any],
        *,
        resource: str,
        fresh: bool,
        retry: bool = True,
        deletes: bool = False,
    ) -> Any: ...
    def _gone(
        self, what: str, listed: Callable[[], str | None], gone_states: tuple[str, ...], timeout: float
    ) -> None: ...
    def new_volume_state(self, volume_id: str, fresh: bool) -> str: ...
    def new_instance_state(self, instance_id: str, fresh: bool) -> str: ...


class _Final(Exception):
    """Carries an answer out of `call_with_retry` untouched (a call retried only when NotFound)."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


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

    # ------------------------------------------------------------------ plumbing
    def _ec2(
        self: _Connected,
        operation: str,
        fn: Callable[[], Any],
        *,
        resource: str,
        fresh: bool,
        retry: bool = True,
        deletes: bool = False,
    ) -> Any:
        """One EC2 call about `resource`. `fresh`: an id this restore created and has not seen
        listed yet, so NotFound is retried within the policy's window. `deletes`: the call
        removes it (after an answer that may have done it, NotFound means done; the client's
        `_call`). `retry=False`: nothing but a fresh NotFound is tried again (a call that must
        not be repeated blindly, like AttachVolume)."""
        if retry:
            return self._call(operation, fn, resource=resource, fresh=fresh, deletes=deletes)

        def once() -> Any:
            try:
                return errors.call(operation, fn, resource=resource, fresh=fresh)
            except errors.RetryableAwsError as exc:
                if exc.kind is Kind.NOT_YET_VISIBLE:
                    raise
                raise _Final(exc) from exc

        try:
            return call_with_retry(
                once,
                what=errors.subject(operation, resource),
                policy=self.policy,
                stats=self.stats,
                cancel=self.cancel,
                clock=self.clock,
            )
        except _Final as box:
            raise box.error from box.error.__cause__

    def _gone(
        self: _Connected,
        what: str,
        listed: Callable[[], str | None],
        gone_states: tuple[str, ...],
        timeout: float,
    ) -> None:
        """Until `listed()` (the state a Describe lists, None when it lists nothing) is None or
        one of `gone_states`; AwsError Timeout if the resource is still there after `timeout`."""

        def check() -> bool:
            state = listed()
            return state is None or state in gone_states

        _wait_for(self.cancel, f"{what} gone", check, timeout, self.clock)

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

    def new_volume_state(self: _Connected, volume_id: str, fresh: bool) -> str:
        """The volume's state (DescribeVolumes by id); `deleted` once EC2 does not know it."""
        try:
            out = self._ec2(
                "DescribeVolumes",
                lambda: self.ec2.describe_volumes(VolumeIds=[volume_id]),
                resource=volume_id,
                fresh=fresh,
            )
        except AwsError as exc:
            if not fresh and exc.code == "InvalidVolume.NotFound":
                return "deleted"
            raise
        vols = [shapes.volume(d) for d in out.get("Volumes", [])]
        return (vols[0].state or "") if vols else "deleted"

    def wait_volume(
        self: _Connected, volume_id: str, state: str, timeout: float, *, fresh: bool = False
    ) -> None:
        """Until the volume is in `state`; AwsError if it goes to `error`, is gone, or on
        timeout. `fresh`: just created, EC2 may not list it yet."""

        def check() -> bool:
            now = self.new_volume_state(volume_id, fresh)
            if now in ("deleted", "deleting") and state not in ("deleted", "deleting"):
                raise AwsError("CreateVolume", VOLUME_DELETED, f"volume {volume_id} is {now}")
            if now == "error":
                raise AwsError("CreateVolume", "VolumeError", f"volume {volume_id} is in state error")
            return now == state

        _wait_for(self.cancel, f"volume {volume_id} {state}", check, timeout, self.clock)

    def attach_volume(
        self: _Connected, volume_id: str, instance_id: str, device: str, *, fresh: bool = False
    ) -> None:
        """AttachVolume; only a NotFound of a fresh volume is tried again (a second attach of
        an attached volume would fail)."""
        self._ec2(
            "AttachVolume",
            lambda: self.ec2.attach_volume(VolumeId=volume_id, InstanceId=instance_id, Device=device),
            resource=volume_id,
            fresh=fresh,
            retry=False,
        )

    def delete_volume(self: _Connected, volume_id: str, *, fresh: bool = False) -> None:
        """Delete a volume; one that is already gone is fine (unless `fresh`: then NotFound
        means "not visible yet" and is tried again)."""
        try:
            self._ec2(
                "DeleteVolume",
                lambda: self.ec2.delete_volume(VolumeId=volume_id),
                resource=volume_id,
                fresh=fresh,
                deletes=True,
            )
        except AwsError as exc:
            if exc.code != "InvalidVolume.NotFound":
                raise

    def volume_gone(self: _Connected, volume_id: str, timeout: float = GONE_TIMEOUT) -> None:
        """Until DescribeVolumes no longer lists the volume (a deleted one lingers as `deleting`)."""

        def listed() -> str | None:
            state = self.new_volume_state(volume_id, False)
            return None if state == "deleted" else state

        self._gone(f"volume {volume_id}", listed, ("deleted",), timeout)

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

    def deregister_image(self: _Connected, image_id: str, *, fresh: bool = False) -> None:
        """Deregister an image; one that is already gone is fine (unless `fresh`: NotFound is
        then tried again)."""
        try:
            self._ec2(
                "DeregisterImage",
                lambda: self.ec2.deregister_image(ImageId=image_id),
                resource=image_id,
                fresh=fresh,
                deletes=True,
            )
        except AwsError as exc:
            if exc.code not in ("InvalidAMIID.NotFound", "InvalidAMIID.Unavailable"):
                raise

    def image_gone(self: _Connected, image_id: str, timeout: float = GONE_TIMEOUT) -> None:
        """Until DescribeImages no longer lists the image (or lists it deregistered)."""

        def listed() -> str | None:
            try:
                out = self._ec2(
                    "DescribeImages",
                    lambda: self.ec2.describe_images(ImageIds=[image_id]),
                    resource=image_id,
                    fresh=False,
                )
            except AwsError as exc:
                if exc.code in ("InvalidAMIID.NotFound", "InvalidAMIID.Unavailable"):
                    return None
                raise
            images = out.get("Images", [])
            return str(images[0].get("State", "available")) if images else None

        self._gone(f"image {image_id}", listed, ("deregistered",), timeout)

    # ------------------------------------------------------------------ snapshots
    def snapshot_gone(self: _Connected, snapshot_id: str, timeout: float = GONE_TIMEOUT) -> None:
        """Until DescribeSnapshots no longer lists the snapshot."""

        def listed() -> str | None:
            try:
                out = self._ec2(
                    "DescribeSnapshots",
                    lambda: self.ec2.describe_snapshots(SnapshotIds=[snapshot_id], OwnerIds=["self"]),
                    resource=snapshot_id,
                    fresh=False,
                )
            except AwsError as exc:
                if exc.code == "InvalidSnapshot.NotFound":
                    return None
                raise
            snaps = out.get("Snapshots", [])
            return str(snaps[0].get("State", "")) if snaps else None

        self._gone(f"snapshot {snapshot_id}", listed, (), timeout)

    # ------------------------------------------------------------------ instances
    def run_instance(self: _Connected, spec: LaunchSpec) -> str:
        """RunInstances for one instance (idempotent through its ClientToken); its id."""
        args = shapes.run_instances_request(spec)
        out = self._call("RunInstances", lambda: self.ec2.run_instances(**args))
        return str(out["Instances"][0]["InstanceId"])

    def new_instance_state(self: _Connected, instance_id: str, fresh: bool) -> str:
        """The instance's state (DescribeInstances by id); `terminated` once EC2 does not know it."""
        try:
            out = self._ec2(
                "DescribeInstances",
                lambda: self.ec2.describe_instances(InstanceIds=[instance_id]),
                resource=instance_id,
                fresh=fresh,
            )
        except AwsError as exc:
            if not fresh and exc.code == "InvalidInstanceID.NotFound":
                return "terminated"
            raise
        found = [shapes.instance(i) for r in out.get("Reservations", []) for i in r.get("Instances", [])]
        return found[0].state if found else "terminated"

    def wait_instance(
        self: _Connected,
        instance_id: str,
        states: tuple[str, ...],
        timeout: float,
        *,
        fresh: bool = False,
    ) -> str:
        """Until the instance is in one of `states`; the state it reached. AwsError if it
        terminates unexpectedly or on timeout. `fresh`: just launched, EC2 may not list it yet."""
        seen: list[str] = []

        def check() -> bool:
            seen.append(self.new_instance_state(instance_id, fresh))
            if seen[-1] == "terminated" and "terminated" not in states:
                raise AwsError("RunInstances", "InstanceTerminated", f"instance {instance_id} terminated")
            return seen[-1] in states

        _wait_for(self.cancel, f"instance {instance_id} {'/'.join(states)}", check, timeout, self.clock)
        return seen[-1]

    def stop_instance(self: _Connected, instance_id: str) -> None:
        self._call("StopInstances", lambda: self.ec2.stop_instances(InstanceIds=[instance_id]))

    def terminate_instance(self: _Connected, instance_id: str, *, fresh: bool = False) -> None:
        """Terminate an instance; one that is already gone is fine (unless `fresh`)."""
        try:
            self._ec2(
                "TerminateInstances",
                lambda: self.ec2.terminate_instances(InstanceIds=[instance_id]),
                resource=instance_id,
                fresh=fresh,
                deletes=True,
            )
        except AwsError as exc:
            if exc.code != "InvalidInstanceID.NotFound":
                raise

    def instance_volume_ids(self: _Connected, instance_id: str, *, fresh: bool = False) -> list[str]:
        """The ids of the volumes attached to an instance (none once EC2 does not know it)."""
        try:
            out = self._ec2(
                "DescribeInstances",
                lambda: self.ec2.describe_instances(InstanceIds=[instance_id]),
                resource=instance_id,
                fresh=fresh,
            )
        except AwsError as exc:
            if not fresh and exc.code == "InvalidInstanceID.NotFound":
                return []
            raise
        found = [shapes.instance(i) for r in out.get("Reservations", []) for i in r.get("Instances", [])]
        return [str(b.volume_id) for inst in found for b in inst.block_devices if b.volume_id]

    def instance_gone(self: _Connected, instance_id: str, timeout: float = GONE_TIMEOUT) -> None:
        """Until DescribeInstances lists the instance terminated (or no longer lists it)."""

        def listed() -> str | None:
            state = self.new_instance_state(instance_id, False)
            return None if state == "terminated" else state

        self._gone(f"instance {instance_id}", listed, ("terminated",), timeout)
