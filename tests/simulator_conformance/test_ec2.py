"""EC2 control plane the product restores through, and STS AssumeRole: plain boto3, AWS's
documented results and error codes."""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING

from devkit.simulator import BLOCK_SIZE

from .conftest import ClientFactory, block, error_of

if TYPE_CHECKING:
    from devkit.simulator.fixtures import RunningSimulator


def _snap_of(sim: RunningSimulator, aws: ClientFactory, data: dict[int, bytes],
             size: int = 1) -> str:
    vol = sim.client.create_volume(size)
    for index, payload in data.items():
        sim.client.write_volume(vol, index * BLOCK_SIZE, payload)
    snap: str = aws("ec2").create_snapshot(VolumeId=vol)["SnapshotId"]
    return snap


def test_create_volume_from_snapshot_any_az(sim: RunningSimulator, aws: ClientFactory) -> None:
    sim.client.set_options(snapshot_delay=0)
    ec2 = aws("ec2")
    snap = _snap_of(sim, aws, {0: block(0), 77: block(77)})
    vol = ec2.create_volume(SnapshotId=snap, AvailabilityZone="us-east-1c", VolumeType="gp3",
                            TagSpecifications=[{"ResourceType": "volume",
                                                "Tags": [{"Key": "k", "Value": "v"}]}])
    assert vol["Size"] == 1 and vol["SnapshotId"] == snap and vol["AvailabilityZone"] == \
        "us-east-1c"
    described = ec2.describe_volumes(VolumeIds=[vol["VolumeId"]])["Volumes"][0]
    assert described["State"] == "available" and described["Tags"] == [{"Key": "k",
                                                                        "Value": "v"}]
    assert sim.client.read_volume(vol["VolumeId"], 77 * BLOCK_SIZE, BLOCK_SIZE) == block(77)
    assert sim.client.volume_sha256(vol["VolumeId"]) == sim.client.snapshot_sha256(snap)
    bigger = ec2.create_volume(SnapshotId=snap, Size=3, AvailabilityZone="us-east-1a")
    assert bigger["Size"] == 3
    err = error_of(lambda: ec2.create_volume(Size=2, AvailabilityZone="us-east-1z"))
    assert err["Error"]["Code"] == "InvalidParameterValue"
    sim.client.set_options(snapshot_delay=5)
    pending = _snap_of(sim, aws, {0: block(0)})
    err = error_of(lambda: ec2.create_volume(SnapshotId=pending, AvailabilityZone="us-east-1a"))
    assert err["Error"]["Code"] == "IncorrectState"


def test_attach_detach_delete(sim: RunningSimulator, aws: ClientFactory) -> None:
    ec2 = aws("ec2")
    inst = sim.client.create_instance("app", [{"size_gib": 1, "device": "/dev/xvda"}],
                                      az="us-east-1a")
    iid = inst["instance_id"]
    vol = ec2.create_volume(Size=1, AvailabilityZone="us-east-1a")["VolumeId"]
    far = ec2.create_volume(Size=1, AvailabilityZone="us-east-1b")["VolumeId"]
    att = ec2.attach_volume(VolumeId=vol, InstanceId=iid, Device="/dev/sdf")
    assert att["State"] == "attaching" and att["Device"] == "/dev/sdf"
    described = ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
    assert [m["DeviceName"] for m in described["BlockDeviceMappings"]] == ["/dev/xvda",
                                                                          "/dev/sdf"]
    assert error_of(lambda: ec2.attach_volume(VolumeId=far, InstanceId=iid, Device="/dev/sdg")
                    )["Error"]["Code"] == "InvalidVolume.ZoneMismatch"
    assert error_of(lambda: ec2.delete_volume(VolumeId=vol))["Error"]["Code"] == "VolumeInUse"
    assert ec2.detach_volume(VolumeId=vol)["State"] == "detaching"
    assert ec2.describe_volumes(VolumeIds=[vol])["Volumes"][0]["State"] == "available"
    ec2.delete_volume(VolumeId=vol)
    err = error_of(lambda: ec2.describe_volumes(VolumeIds=[vol]))
    assert err["Error"]["Code"] == "InvalidVolume.NotFound"


def test_create_snapshots_exclusions_and_tags(sim: RunningSimulator, aws: ClientFactory) -> None:
    ec2 = aws("ec2")
    inst = sim.client.create_instance("db", [
        {"size_gib": 1, "device": "/dev/xvda", "tags": {"role": "root"}},
        {"size_gib": 1, "device": "/dev/sdf", "tags": {"role": "data"}},
        {"size_gib": 1, "device": "/dev/sdg", "tags": {"role": "logs"}}])
    root, data, logs = inst["volume_ids"]
    snaps = ec2.create_snapshots(
        InstanceSpecification={"InstanceId": inst["instance_id"], "ExcludeBootVolume": True,
                               "ExcludeDataVolumeIds": [logs]},
        TagSpecifications=[{"ResourceType": "snapshot", "Tags": [{"Key": "job",
                                                                  "Value": "1"}]}],
        CopyTagsFromSource="volume")["Snapshots"]
    assert [s["VolumeId"] for s in snaps] == [data]
    tags = {t["Key"]: t["Value"] for t in snaps[0]["Tags"]}
    assert tags == {"role": "data", "job": "1"}
    del root


def test_images_and_run_instances(sim: RunningSimulator, aws: ClientFactory) -> None:
    sim.client.set_options(snapshot_delay=0)
    ec2 = aws("ec2")
    root_snap = _snap_of(sim, aws, {0: block("boot")})
    data_snap = _snap_of(sim, aws, {10: block("data")}, size=2)
    image_id = ec2.register_image(
        Name="restored-web1", RootDeviceName="/dev/xvda", Architecture="x86_64",
        VirtualizationType="hvm", EnaSupport=True,
        BlockDeviceMappings=[{"DeviceName": "/dev/xvda", "Ebs": {"SnapshotId": root_snap}}],
        TagSpecifications=[{"ResourceType": "image", "Tags": [{"Key": "k", "Value": "v"}]}],
    )["ImageId"]
    image = ec2.describe_images(ImageIds=[image_id])["Images"][0]
    assert image["State"] == "available" and image["RootDeviceType"] == "ebs"
    assert image["BlockDeviceMappings"][0]["Ebs"]["SnapshotId"] == root_snap
    assert ec2.describe_images(Owners=["self"], Filters=[
        {"Name": "name", "Values": ["restored-*"]}])["Images"][0]["ImageId"] == image_id
    assert error_of(lambda: ec2.register_image(
        Name="restored-web1", RootDeviceName="/dev/xvda",
        BlockDeviceMappings=[{"DeviceName": "/dev/xvda", "Ebs": {"SnapshotId": root_snap}}])
    )["Error"]["Code"] == "InvalidAMIName.Duplicate"
    assert error_of(lambda: ec2.delete_snapshot(SnapshotId=root_snap))["Error"]["Code"] == \
        "InvalidSnapshot.InUse"

    region_info = ec2.describe_availability_zones()["AvailabilityZones"]
    assert len(region_info) >= 2
    inst = sim.client.create_instance("seed", [{"size_gib": 1}], az="us-east-1b")
    subnet = ec2.describe_instances(InstanceIds=[inst["instance_id"]])[
        "Reservations"][0]["Instances"][0]["SubnetId"]
    group = ec2.describe_instances(InstanceIds=[inst["instance_id"]])[
        "Reservations"][0]["Instances"][0]["SecurityGroups"][0]["GroupId"]
    run = ec2.run_instances(
        ImageId=image_id, MinCount=1, MaxCount=1, InstanceType="m5.large", KeyName="ops",
        SubnetId=subnet, SecurityGroupIds=[group], PrivateIpAddress="10.0.9.9",
        UserData="#!/bin/sh\necho hi\n",
        BlockDeviceMappings=[
            {"DeviceName": "/dev/xvda", "Ebs": {"VolumeSize": 2, "VolumeType": "gp3"}},
            {"DeviceName": "/dev/sdf", "Ebs": {"SnapshotId": data_snap,
                                               "DeleteOnTermination": False}}],
        TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "Name",
                                                                  "Value": "web1"}]},
                           {"ResourceType": "volume", "Tags": [{"Key": "restored",
                                                                "Value": "yes"}]}])
    launched = run["Instances"][0]
    assert launched["State"]["Name"] == "pending"
    iid = launched["InstanceId"]
    desc = ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
    assert desc["State"]["Name"] == "running" and desc["InstanceType"] == "m5.large"
    assert desc["Placement"]["AvailabilityZone"] == "us-east-1b"
    assert desc["PrivateIpAddress"] == "10.0.9.9" and desc["KeyName"] == "ops"
    assert desc["ImageId"] == image_id and desc["SecurityGroups"][0]["GroupId"] == group
    assert {"Key": "Name", "Value": "web1"} in desc["Tags"]
    vols = {m["DeviceName"]: m["Ebs"]["VolumeId"] for m in desc["BlockDeviceMappings"]}
    assert sim.client.read_volume(vols["/dev/xvda"], 0, BLOCK_SIZE) == block("boot")
    assert sim.client.read_volume(vols["/dev/sdf"], 10 * BLOCK_SIZE, BLOCK_SIZE) == \
        block("data")
    root_vol = ec2.describe_volumes(VolumeIds=[vols["/dev/xvda"]])["Volumes"][0]
    assert root_vol["Size"] == 2 and {"Key": "restored", "Value": "yes"} in root_vol["Tags"]
    user_data = ec2.describe_instance_attribute(InstanceId=iid, Attribute="userData")
    assert base64.b64decode(user_data["UserData"]["Value"]) == b"#!/bin/sh\necho hi\n"

    assert ec2.stop_instances(InstanceIds=[iid])["StoppingInstances"][0]["CurrentState"][
        "Name"] == "stopping"
    assert ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0][
        "State"]["Name"] == "stopped"
    ec2.start_instances(InstanceIds=[iid])
    term = ec2.terminate_instances(InstanceIds=[iid])["TerminatingInstances"][0]
    assert term["CurrentState"]["Name"] == "shutting-down"
    remaining = {v["VolumeId"] for v in ec2.describe_volumes()["Volumes"]}
    assert vols["/dev/xvda"] not in remaining  # DeleteOnTermination
    assert vols["/dev/sdf"] in remaining

    err = error_of(lambda: ec2.run_instances(ImageId=image_id, MinCount=1, MaxCount=1,
                                             SecurityGroupIds=["sg-0123456789abcdef0"]))
    assert err["Error"]["Code"] == "InvalidGroup.NotFound"
    dereg = ec2.deregister_image(ImageId=image_id)
    assert dereg["ResponseMetadata"]["HTTPStatusCode"] == 200
    err = error_of(lambda: ec2.describe_images(ImageIds=[image_id]))
    assert err["Error"]["Code"] == "InvalidAMIID.NotFound"
    ec2.delete_snapshot(SnapshotId=root_snap)  # no longer in use


def test_two_regions_with_zones(sim: RunningSimulator, aws: ClientFactory) -> None:
    names = [r["RegionName"] for r in aws("ec2").describe_regions()["Regions"]]
    assert {"us-east-1", "eu-west-1"} <= set(names)
    for region in ("us-east-1", "eu-west-1"):
        zones = aws("ec2", region).describe_availability_zones()["AvailabilityZones"]
        assert [z["ZoneName"] for z in zones] == [f"{region}{c}" for c in "abc"]
    vol = aws("ec2", "eu-west-1").create_volume(Size=1, AvailabilityZone="eu-west-1b")
    err = error_of(lambda: aws("ec2").describe_volumes(VolumeIds=[vol["VolumeId"]]))
    assert err["Error"]["Code"] == "InvalidVolume.NotFound"


def test_sts_assume_role(sim: RunningSimulator, aws: ClientFactory) -> None:
    sts = aws("sts")
    role = "arn:aws:iam::123456789012:role/backup-operator"
    creds = sts.assume_role(RoleArn=role, RoleSessionName="bacula-ec2", DurationSeconds=900,
                            ExternalId="ext-1")
    assert creds["Credentials"]["AccessKeyId"].startswith("ASIA")
    assert creds["AssumedRoleUser"]["Arn"] == \
        "arn:aws:sts::123456789012:assumed-role/backup-operator/bacula-ec2"
    import boto3

    ec2 = boto3.client("ec2", endpoint_url=sim.endpoint, region_name="us-east-1",
                       aws_access_key_id=creds["Credentials"]["AccessKeyId"],
                       aws_secret_access_key=creds["Credentials"]["SecretAccessKey"],
                       aws_session_token=creds["Credentials"]["SessionToken"])
    assert ec2.describe_regions()["Regions"]
    assert sim.client.sts_sessions()[0]["role_arn"] == role
    err = error_of(lambda: sts.assume_role(RoleArn="arn:aws:iam::role-without-account", RoleSessionName="s1"))
    assert err["Error"]["Code"] == "ValidationError"
    assert sts.get_caller_identity()["Account"] == "123456789012"
