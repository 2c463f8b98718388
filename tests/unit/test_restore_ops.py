"""The restore's EC2 calls under eventual consistency (aws/restore_ops.py), against a scripted
EC2 client and a fake clock: a NotFound for an id the restore just created is "not visible
yet" and tried again (within the policy's window), for one it has seen it means "gone"; a
removal counts only once Describe no longer lists the resource; AttachVolume repeats only a
NotFound."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from botocore.exceptions import ClientError

from bacula_ec2.aws import Aws, AwsError
from bacula_ec2.retry import RetriesExhausted, RetryPolicy, RetryStats
from devkit.fake_aws import FakeClock


def refusal(code: str, status: int = 400) -> ClientError:
    return ClientError(
        {
            "Error": {"Code": code, "Message": f"{code} (scripted)"},
            "ResponseMetadata": {"HTTPStatusCode": status},
        },
        "Op",
    )


class ScriptedEc2:
    """Each method answers from its script, one entry per call (the last one repeats); an
    exception entry is raised."""

    def __init__(self, **scripts: list[Any]) -> None:
        self.scripts = scripts
        self.calls: dict[str, int] = {}

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name not in self.scripts:
            raise AttributeError(name)

        def method(**_kw: Any) -> Any:
            n = self.calls.get(name, 0)
            self.calls[name] = n + 1
            script = self.scripts[name]
            answer = script[min(n, len(script) - 1)]
            if isinstance(answer, BaseException):
                raise answer
            return answer

        return method


def aws_on(ec2: ScriptedEc2, window: float = 0.3) -> Aws:
    """The real `Aws` calls (`_call` and the restore's) on a scripted client; retries and
    waits run on a fake clock."""
    aws = Aws.__new__(Aws)
    aws.ec2 = ec2
    aws.cancel = None
    aws.clock = FakeClock()
    aws.policy = RetryPolicy(attempts=3, base_delay=0.001, max_delay=0.01, not_found_window=window)
    aws.stats = RetryStats()
    return aws


NOT_FOUND_AMI = refusal("InvalidAMIID.NotFound")


def test_a_fresh_image_is_deregistered_once_ec2_sees_it() -> None:
    ec2 = ScriptedEc2(deregister_image=[NOT_FOUND_AMI, NOT_FOUND_AMI, {}])
    aws_on(ec2).deregister_image("ami-1", fresh=True)
    assert ec2.calls["deregister_image"] == 3
    # An image the restore has seen: NotFound is "already gone", asked once.
    ec2 = ScriptedEc2(deregister_image=[NOT_FOUND_AMI])
    aws_on(ec2).deregister_image("ami-1", fresh=False)
    assert ec2.calls["deregister_image"] == 1


def test_a_fresh_id_that_never_shows_up_fails_after_the_window() -> None:
    ec2 = ScriptedEc2(terminate_instances=[refusal("InvalidInstanceID.NotFound")])
    aws = aws_on(ec2, window=0.2)
    began = aws.clock.now()
    with pytest.raises(RetriesExhausted, match="TerminateInstances i-1"):
        aws.terminate_instance("i-1", fresh=True)
    assert aws.clock.now() - began > 0.2
    assert ec2.calls["terminate_instances"] > 2


def test_a_delete_that_may_have_happened_then_not_found_is_done() -> None:
    """A 5xx may have deleted the snapshot: the NotFound that follows means done, at once,
    even for a fresh id (the client's deletes=)."""
    ec2 = ScriptedEc2(delete_snapshot=[refusal("InternalError", 500), refusal("InvalidSnapshot.NotFound")])
    aws_on(ec2, window=60.0).delete_snapshot("snap-1", fresh=True)
    assert ec2.calls["delete_snapshot"] == 2


def test_removal_counts_once_describe_no_longer_lists_it() -> None:
    listed = {"Images": [{"ImageId": "ami-1", "State": "available"}]}
    ec2 = ScriptedEc2(describe_images=[listed, listed, {"Images": []}])
    aws_on(ec2).image_gone("ami-1", timeout=60)
    assert ec2.calls["describe_images"] == 3
    ec2 = ScriptedEc2(describe_images=[listed, NOT_FOUND_AMI])
    aws_on(ec2).image_gone("ami-1", timeout=60)
    assert ec2.calls["describe_images"] == 2
    ec2 = ScriptedEc2(describe_images=[listed, {"Images": [{"ImageId": "ami-1", "State": "deregistered"}]}])
    aws_on(ec2).image_gone("ami-1", timeout=60)
    # Still listed when the time is up: not done, and the error says which resource.
    ec2 = ScriptedEc2(describe_images=[listed])
    with pytest.raises(AwsError, match="image ami-1 gone"):
        aws_on(ec2).image_gone("ami-1", timeout=20)


def test_a_deleted_volume_listed_as_deleting_is_waited_for() -> None:
    deleting = {"Volumes": [{"VolumeId": "vol-1", "State": "deleting", "Size": 1}]}
    ec2 = ScriptedEc2(describe_volumes=[deleting, deleting, refusal("InvalidVolume.NotFound")])
    aws_on(ec2).volume_gone("vol-1", timeout=60)
    assert ec2.calls["describe_volumes"] == 3


def test_instance_gone_once_terminated_or_unknown() -> None:
    def state(name: str) -> dict[str, Any]:
        return {"Reservations": [{"Instances": [{"InstanceId": "i-1", "State": {"Name": name}}]}]}

    ec2 = ScriptedEc2(describe_instances=[state("shutting-down"), state("terminated")])
    aws_on(ec2).instance_gone("i-1", timeout=60)
    assert ec2.calls["describe_instances"] == 2
    ec2 = ScriptedEc2(describe_instances=[state("running"), refusal("InvalidInstanceID.NotFound")])
    aws_on(ec2).instance_gone("i-1", timeout=60)


def test_a_fresh_volume_is_waited_for_until_available() -> None:
    def vol(state: str) -> dict[str, Any]:
        return {"Volumes": [{"VolumeId": "vol-1", "State": state, "Size": 1}]}

    not_found = refusal("InvalidVolume.NotFound")
    ec2 = ScriptedEc2(describe_volumes=[not_found, not_found, vol("creating"), vol("available")])
    aws_on(ec2).wait_volume("vol-1", "available", 60, fresh=True)
    assert ec2.calls["describe_volumes"] == 4
    # Not fresh: NotFound means the volume is gone, which fails the wait at once.
    ec2 = ScriptedEc2(describe_volumes=[not_found, vol("available")])
    with pytest.raises(AwsError, match="vol-1 is deleted"):
        aws_on(ec2).wait_volume("vol-1", "available", 60, fresh=False)
    assert ec2.calls["describe_volumes"] == 1


def test_attach_repeats_only_a_not_found() -> None:
    ec2 = ScriptedEc2(attach_volume=[refusal("InvalidVolume.NotFound"), {}])
    aws_on(ec2).attach_volume("vol-1", "i-1", "/dev/sdf", fresh=True)
    assert ec2.calls["attach_volume"] == 2
    # A 5xx may have attached it: a second AttachVolume would fail on an attached volume.
    ec2 = ScriptedEc2(attach_volume=[refusal("InternalError", 500), {}])
    with pytest.raises(AwsError, match="InternalError"):
        aws_on(ec2).attach_volume("vol-1", "i-1", "/dev/sdf", fresh=True)
    assert ec2.calls["attach_volume"] == 1
