"""The product's own model of EC2 (`aws/model.py`) and the one place that knows EC2's shapes
(`aws/shapes.py`): what a backup reads live is what a restore reads back from the catalog's
JSON document; requests carry what they were asked for and nothing else; the settings
`aws/` connects with never show a secret."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from bacula_ec2.aws import shapes
from bacula_ec2.aws.model import ImageDevice, ImageSpec, LaunchSpec, MetadataOptions, VolumeSpec
from bacula_ec2.formats import config
from bacula_ec2.jobs import chain
from bacula_ec2.jobs.context import aws_settings
from bacula_ec2.params import parse_parameters

text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)
ident = st.from_regex(r"[a-z0-9]{1,10}", fullmatch=True)
times = st.datetimes(
    min_value=dt.datetime(2000, 1, 1), max_value=dt.datetime(2100, 1, 1), timezones=st.just(dt.UTC)
)
tags = st.lists(st.fixed_dictionaries({"Key": text, "Value": text}), max_size=4)


def maybe(key: str, value: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.one_of(st.just({}), value.map(lambda v: {key: v}))


def described(*parts: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
    def merge(ds: tuple[dict[str, Any], ...]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for d in ds:
            out.update(d)
        return out

    return st.tuples(*parts).map(merge)


mapping = st.fixed_dictionaries(
    {"DeviceName": st.from_regex(r"/dev/(sd|xvd)[a-z]", fullmatch=True)},
    optional={
        "Ebs": st.fixed_dictionaries(
            {},
            optional={
                "VolumeId": ident.map(lambda s: f"vol-{s}"),
                "DeleteOnTermination": st.booleans(),
                "AttachTime": times,
            },
        )
    },
)
instances = described(
    ident.map(lambda s: {"InstanceId": f"i-{s}"}),
    maybe("State", st.fixed_dictionaries({"Name": st.sampled_from(["running", "stopped", "terminated"])})),
    maybe("InstanceType", st.sampled_from(["t3.micro", "m7g.large"])),
    maybe("Placement", st.fixed_dictionaries({"AvailabilityZone": st.sampled_from(["eu-west-1a", "b"])})),
    maybe("SubnetId", ident),
    maybe("SecurityGroups", st.lists(st.fixed_dictionaries({}, optional={"GroupId": ident}), max_size=3)),
    maybe("KeyName", text),
    maybe("IamInstanceProfile", st.fixed_dictionaries({}, optional={"Arn": text})),
    maybe("RootDeviceName", st.sampled_from(["/dev/sda1", "/dev/xvda"])),
    maybe("BlockDeviceMappings", st.lists(mapping, max_size=4)),
    maybe("Architecture", st.sampled_from(["x86_64", "arm64"])),
    maybe("VirtualizationType", st.just("hvm")),
    maybe("EnaSupport", st.booleans()),
    maybe("BootMode", st.sampled_from(["uefi", "legacy-bios"])),
    maybe("EbsOptimized", st.booleans()),
    maybe(
        "MetadataOptions",
        st.fixed_dictionaries(
            {},
            optional={
                "HttpTokens": st.sampled_from(["required", "optional"]),
                "HttpPutResponseHopLimit": st.integers(1, 64),
                "HttpEndpoint": st.sampled_from(["enabled", "disabled"]),
                "State": st.just("applied"),
            },
        ),
    ),
    maybe("LaunchTime", times),
    maybe("Tags", tags),
    maybe("NotInTheDocument", text),
)
volumes = described(
    ident.map(lambda s: {"VolumeId": f"vol-{s}"}),
    st.integers(1, 16384).map(lambda n: {"Size": n}),
    maybe("VolumeType", st.sampled_from(["gp3", "io2", "st1"])),
    maybe("Iops", st.integers(100, 64000)),
    maybe("Throughput", st.integers(125, 1000)),
    maybe("Encrypted", st.booleans()),
    maybe("KmsKeyId", text),
    maybe("AvailabilityZone", st.sampled_from(["eu-west-1a", "us-east-1f"])),
    maybe("CreateTime", times),
    maybe(
        "Attachments",
        st.lists(
            st.fixed_dictionaries(
                {}, optional={"InstanceId": ident, "Device": st.just("/dev/sdf"), "AttachTime": times}
            ),
            max_size=2,
        ),
    ),
    maybe("Tags", tags),
)
JOB = {"job_name": "web.2026-11-26_16.01.42_33", "job_id": 33, "level": "F"}


@settings(max_examples=200, deadline=None)
@given(instances)
def test_an_instance_reads_back_from_its_document_as_it_was_described(desc: dict[str, Any]) -> None:
    live = shapes.instance(desc)
    doc = config.instance_document(live, region="eu-west-1", user_data=None, snapshots=[], job=JOB)
    stored = json.loads(config.encode(doc))
    assert config.instance_of(stored) == live
    assert stored["instance_id"] == desc["InstanceId"]
    assert stored["name"] == shapes.tag_dict(desc.get("Tags")).get("Name")
    assert "NotInTheDocument" not in stored["instance"]  # the document keeps its own keys only


@settings(max_examples=200, deadline=None)
@given(volumes, st.booleans())
def test_a_volume_reads_back_from_its_document_as_it_was_described(desc: dict[str, Any], snap: bool) -> None:
    live = shapes.volume(desc)
    snapshot = shapes.snapshot({"SnapshotId": "snap-1", "VolumeId": desc["VolumeId"]}) if snap else None
    doc = config.volume_document(
        live,
        region="eu-west-1",
        instance_id="i-1",
        device="/dev/sdf",
        snapshot=snapshot,
        base_snapshot_id=None,
        level="F",
        job=JOB,
    )
    stored = json.loads(config.encode(doc))
    assert config.volume_of(stored) == live
    assert (stored["volume_id"], stored["size_gib"]) == (desc["VolumeId"], desc["Size"])
    assert stored["snapshot_id"] == ("snap-1" if snap else None)


def test_a_document_without_a_description_reads_as_an_empty_one() -> None:
    assert config.volume_of({}).volume_id == "" and not config.volume_of({"volume": None}).encrypted
    assert config.instance_of({}).block_devices == ()


def test_a_snapshot_ec2_did_not_give_a_state_for_counts_as_completed_in_a_chain() -> None:
    base = {"Key": chain.STATE_TAG, "Value": chain.BASE}
    job = {"Key": chain.TAG + "job", "Value": "web"}
    snaps = [
        shapes.snapshot({"SnapshotId": "snap-a", "VolumeId": "vol-1", "Tags": [base, job]}),
        shapes.snapshot(
            {"SnapshotId": "snap-b", "VolumeId": "vol-1", "State": "pending", "Tags": [base, job]}
        ),
        shapes.snapshot(
            {"SnapshotId": "snap-c", "VolumeId": "vol-2", "State": "completed", "Tags": [base, job]}
        ),
    ]
    assert [k.snapshot_id for k in chain.committed(snaps, "web", "vol-1")] == ["snap-a"]


def test_requests_carry_what_was_asked_and_nothing_else() -> None:
    bare = shapes.create_volume_request(VolumeSpec("snap-1", "eu-west-1a", "tok"))
    assert bare == {
        "SnapshotId": "snap-1",
        "AvailabilityZone": "eu-west-1a",
        "ClientToken": "tok",
        "TagSpecifications": [],
    }
    full = shapes.create_volume_request(
        VolumeSpec("snap-1", "z", "tok", "gp3", 3000, 125, "arn:kms", {"Name": "x"})
    )
    assert full["TagSpecifications"] == [{"ResourceType": "volume", "Tags": [{"Key": "Name", "Value": "x"}]}]
    assert (full["VolumeType"], full["Iops"], full["Throughput"]) == ("gp3", 3000, 125)
    assert (full["Encrypted"], full["KmsKeyId"]) == (True, "arn:kms")

    image = shapes.register_image_request(
        ImageSpec("n", "d", "/dev/sda1", (ImageDevice("/dev/sda1", "snap-1", 8, False),), boot_mode="bogus")
    )
    assert image["BlockDeviceMappings"] == [
        {
            "DeviceName": "/dev/sda1",
            "Ebs": {"SnapshotId": "snap-1", "VolumeSize": 8, "DeleteOnTermination": False},
        }
    ]
    assert "BootMode" not in image and "EnaSupport" not in image and image["TagSpecifications"] == []

    launch = shapes.run_instances_request(LaunchSpec("ami-1", "t3.micro", "tok"))
    assert launch == {
        "ImageId": "ami-1",
        "InstanceType": "t3.micro",
        "ClientToken": "tok",
        "TagSpecifications": [
            {"ResourceType": "instance", "Tags": []},
            {"ResourceType": "volume", "Tags": []},
        ],
        "MinCount": 1,
        "MaxCount": 1,
    }
    meta = shapes.run_instances_request(
        LaunchSpec("ami-1", "t3.micro", "tok", metadata_options=MetadataOptions(http_tokens="required"))
    )
    assert meta["MetadataOptions"] == {"HttpTokens": "required"}


def test_settings_are_built_from_the_parameters_and_never_show_a_secret() -> None:
    params = parse_parameters(
        [
            ("region", "eu-west-1"),
            ("access_key", "AKIAEXAMPLE"),
            ("secret_key", "s3cr3t-value"),
            ("session_token", "t0ken-value"),
            ("endpoint_url", "http://127.0.0.1:1"),
            ("concurrent_threads", "12"),
        ]
    )
    made = aws_settings(params)
    assert made.secret_key is not None and made.secret_key.reveal() == "s3cr3t-value"
    assert made.session_token is not None and made.session_token.reveal() == "t0ken-value"
    assert (made.region, made.endpoint_url, made.block_threads) == ("eu-west-1", "http://127.0.0.1:1", 12)
    for shown in (repr(made), str(made), f"{made.secret_key}", f"{made}"):
        assert "s3cr3t" not in shown and "t0ken" not in shown
    assert aws_settings(params, "us-east-1").region == "us-east-1"
    assert made.in_region("us-east-1").region == "us-east-1" and made.in_region(None) is made
