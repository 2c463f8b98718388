"""The `deny_tags` knob: CreateTags refused as an IAM deny refuses it (403
UnauthorizedOperation, nothing applied), tags at creation time unaffected."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .conftest import ClientFactory, error_of

if TYPE_CHECKING:
    from devkit.simulator.fixtures import RunningSimulator


def test_denied_tag_refuses_the_whole_request(sim: RunningSimulator, aws: ClientFactory) -> None:
    sim.client.set_options(snapshot_delay=0, deny_tags=["state=base", "locked"])
    ec2 = aws("ec2")
    vol = sim.client.create_volume(1)
    snap = ec2.create_snapshot(
        VolumeId=vol,
        TagSpecifications=[{"ResourceType": "snapshot", "Tags": [{"Key": "locked", "Value": "at birth"}]}],
    )["SnapshotId"]

    def tags() -> dict[str, str]:
        (s,) = ec2.describe_snapshots(SnapshotIds=[snap])["Snapshots"]
        return {t["Key"]: t["Value"] for t in s.get("Tags", [])}

    assert tags() == {"locked": "at birth"}  # TagSpecifications are not CreateTags
    for denied in ([{"Key": "state", "Value": "base"}], [{"Key": "locked", "Value": "x"}]):
        err = error_of(lambda d=denied: ec2.create_tags(  # type: ignore[misc]
            Resources=[snap], Tags=[{"Key": "other", "Value": "1"}, *d]))
        assert err["Error"]["Code"] == "UnauthorizedOperation"
        assert err["ResponseMetadata"]["HTTPStatusCode"] == 403
        assert "not authorized" in err["Error"]["Message"]
    assert tags() == {"locked": "at birth"}, "a refused request applies nothing"
    ec2.create_tags(Resources=[snap], Tags=[{"Key": "state", "Value": "pending"}])  # other value: allowed
    assert tags()["state"] == "pending"
    sim.client.set_options(deny_tags=[])
    ec2.create_tags(Resources=[snap], Tags=[{"Key": "state", "Value": "base"}])
    assert tags()["state"] == "base"
