"""Selection (product.md §3 "Selection", jobs/selection.py) against the in-memory AWS: by id,
by Name tag, by tags, by regex, exclusions, the boot volume, standalone volumes, and nothing
selected is an error. The snapshots a backup then takes follow the selection."""

from __future__ import annotations

import pytest

from bacula_ec2.jobs.backup import BackupJob
from bacula_ec2.jobs.context import JobContext, JobError
from bacula_ec2.jobs.selection import select_instances
from bacula_ec2.params import parse_parameters
from devkit.fake_aws import FakeAws
from devkit.jobkit import Recorder, RecordingSink


def fleet() -> tuple[FakeAws, dict[str, str]]:
    aws = FakeAws()
    ids = {}
    disks = [("/dev/xvda", 1), ("/dev/sdf", 1), ("/dev/sdg", 1)]
    for name, tags in [
        ("web-1", {"env": "prod", "tier": "web"}),
        ("web-2", {"env": "test", "tier": "web"}),
        ("db-1", {"env": "prod", "tier": "db"}),
    ]:
        ids[name] = aws.add_instance(name, devices=disks, tags=tags).instance_id
    ids["unnamed"] = aws.add_instance(None, tags={"env": "prod"}).instance_id
    gone = aws.add_instance("web-1", tags={"env": "prod"}, state="terminated")  # a terminated namesake
    ids["gone"] = gone.instance_id
    return aws, ids


def chosen(aws: FakeAws, *pairs: tuple[str, str]) -> dict[str, list[str]]:
    """instance id -> the device short names of its selected volumes, sorted."""
    targets = select_instances(aws, parse_parameters(list(pairs)))
    return {t.instance_id: sorted(v.device.rsplit("/", 1)[-1] for v in t.volumes) for t in targets}


ALL = ["sdf", "sdg", "xvda"]


def test_by_id_and_by_name_tag() -> None:
    aws, ids = fleet()
    assert chosen(aws, ("instances", ids["web-2"])) == {ids["web-2"]: ALL}
    assert chosen(aws, ("instances", "web-1")) == {ids["web-1"]: ALL}  # not the terminated namesake
    assert chosen(aws, ("instances", f"db-1,{ids['web-2']}")) == {ids["db-1"]: ALL, ids["web-2"]: ALL}


def test_an_unknown_id_or_name_is_an_error_naming_it() -> None:
    aws, ids = fleet()
    with pytest.raises(JobError, match=r"instance i-00000000000000bad: not found in region eu-west-1"):
        chosen(aws, ("instances", f"{ids['web-1']},i-00000000000000bad"))
    with pytest.raises(JobError, match=r"no instance named 'web-9'"):
        chosen(aws, ("instances", "web-1,web-9"))


def test_by_tags_all_must_match() -> None:
    aws, ids = fleet()
    got = chosen(aws, ("instance_tags", "env=prod,tier=web"))
    assert got == {ids["web-1"]: ALL}  # the terminated one has no tier tag; db-1 the wrong one
    assert set(chosen(aws, ("instance_tags", "env=prod"))) == {ids["web-1"], ids["db-1"], ids["unnamed"]}


def test_by_regex_alone_or_narrowing_other_criteria() -> None:
    aws, ids = fleet()
    assert set(chosen(aws, ("instance_regex", "^web-"))) == {ids["web-1"], ids["web-2"]}
    assert set(chosen(aws, ("instance_regex", "^web-"), ("instance_tags", "env=prod"))) == {ids["web-1"]}
    assert set(chosen(aws, ("instance_regex", "-1$"), ("instances", "web-1,web-2"))) == {ids["web-1"]}


def test_exclusions_of_instances_and_volumes() -> None:
    aws, ids = fleet()
    got = chosen(aws, ("instance_tags", "tier=web"), ("exclude_instances", f"web-2,{ids['db-1']}"))
    assert got == {ids["web-1"]: ALL}
    assert chosen(aws, ("instance_tags", "env=prod"), ("exclude_instances", ids["web-1"])).keys() == {
        ids["db-1"],
        ids["unnamed"],
    }
    sdg = aws.volume_of(ids["web-1"], "/dev/sdg")
    got = chosen(aws, ("instances", "web-1"), ("exclude_volumes", f"/dev/sdf,{sdg}"))
    assert got == {ids["web-1"]: ["xvda"]}
    assert chosen(aws, ("instances", "web-1"), ("exclude_boot_volume", "yes")) == {
        ids["web-1"]: ["sdf", "sdg"]
    }


def test_every_instance_excluded_or_gone_is_an_error() -> None:
    aws, ids = fleet()
    with pytest.raises(JobError, match="matched no instance"):
        chosen(aws, ("instances", "web-1"), ("exclude_instances", "web-1"))
    aws.set_state(ids["web-2"], "shutting-down")
    with pytest.raises(JobError, match="matched no instance"):
        chosen(aws, ("instances", ids["web-2"]))
    with pytest.raises(JobError, match="nothing selected"):
        chosen(aws)


def test_standalone_volumes() -> None:
    aws, ids = fleet()
    loose = aws.add_volume()
    attached = aws.volume_of(ids["db-1"], "/dev/sdf")
    targets = select_instances(aws, parse_parameters([("volumes", f"{loose},{attached},{loose}")]))
    [t] = targets
    assert t.standalone and [v.volume_id for v in t.volumes] == [loose, attached]
    assert [v.device for v in t.volumes] == ["detached", "/dev/sdf"]
    # A volume already backed up with its instance in this job is not read twice.
    targets = select_instances(
        aws, parse_parameters([("instances", "db-1"), ("volumes", f"{loose},{attached}")])
    )
    assert [[v.volume_id for v in t.volumes] for t in targets][-1] == [loose]
    with pytest.raises(JobError, match="volume vol-00000000000000bad: not found"):
        select_instances(aws, parse_parameters([("volumes", f"{loose},vol-00000000000000bad")]))
    with pytest.raises(JobError, match="takes volume ids"):
        select_instances(aws, parse_parameters([("volumes", "data-disk")]))


def test_the_snapshots_follow_the_selection() -> None:
    """CreateSnapshots excludes the boot volume with ExcludeBootVolume (AWS refuses it in
    ExcludeDataVolumeIds) and excluded data volumes by id; standalone volumes are snapshotted
    one by one."""
    aws, ids = fleet()
    loose = aws.add_volume()
    params = parse_parameters(
        [
            ("instances", "web-1"),
            ("exclude_boot_volume", "yes"),
            ("exclude_volumes", "sdg"),
            ("volumes", loose),
            ("concurrent_threads", "2"),
        ]
    )
    ctx = JobContext(params, "backup-web.2026-11-26_16.00.00_3", 3, "F", Recorder(), "")
    job = BackupJob(ctx, aws)
    job.run(RecordingSink())
    job.commit()
    taken = {aws.tags_of(s)["bacula-ec2:volume"] for s in job.ledger.created}
    assert taken == {aws.volume_of(ids["web-1"], "/dev/sdf"), loose}
    assert aws.count("CreateSnapshots") == 1 and aws.count("CreateSnapshot") == 1
    assert any(
        "excluded" in t and aws.volume_of(ids["web-1"], "/dev/xvda") in t for t in ctx.reporter.texts()
    )  # type: ignore[attr-defined]


def test_the_fake_refuses_what_create_snapshots_refuses() -> None:
    aws, ids = fleet()
    root = aws.volume_of(ids["web-1"], "/dev/xvda")
    with pytest.raises(Exception, match=r"InvalidParameterValue.*ExcludeBootVolume"):
        aws.create_snapshots(ids["web-1"], [root], False, {}, "x")
    with pytest.raises(Exception, match=r"InvalidInstanceID.NotFound"):
        aws.create_snapshots(ids["gone"], [], False, {}, "x")
    with pytest.raises(Exception, match="TagLimitExceeded"):
        aws.create_snapshots(ids["web-1"], [], False, {f"k{i}": "v" for i in range(51)}, "x")
    with pytest.raises(Exception, match=r"InvalidSnapshot.NotFound"):
        aws.tag(["snap-00000000000000bad"], {"a": "b"})
    with pytest.raises(Exception, match=r"InvalidVolume.NotFound"):
        aws.describe_volumes([root, "vol-00000000000000bad"])
