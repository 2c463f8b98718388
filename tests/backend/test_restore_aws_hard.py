"""Restore into AWS against the simulator's hard mode (docs/SIMULATOR.md, "Hard mode"):
EC2's eventual consistency on everything the restore creates, both readings of
StartSnapshot's Timeout, a KMS key the role may not use, and AWS's limits checked before
the first block goes up. Through the backend process, as Bacula drives it."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from .common import BLOCK, FakeBacula, Job
from .restore_aws_kit import ec2, errors, new_volumes, restore_aws, tags, world

KEY = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"


def small_chain(
    sim: Any, tmp_path: Path, *, data_blocks: int = 6, volume_tags: int = 0
) -> tuple[list[Job], str, str]:
    """web-1 with one 1 GiB volume: a Full, then an Incremental (backed up in the easy mode).
    Returns the jobs, the volume id and its sha256 at the Incremental."""
    inst = sim.client.create_instance(
        "web-1",
        volumes=[
            {
                "size_gib": 1,
                "device": "/dev/sda1",
                "volume_type": "gp3",
                "tags": {f"t{i}": "v" for i in range(volume_tags)},
            }
        ],
    )
    (vid,) = inst["volume_ids"]
    sim.client.write_volume(vid, 0, os.urandom(data_blocks * BLOCK))
    bacula = FakeBacula(sim, tmp_path, ("instances=web-1",))
    jobs = [bacula.backup("F")]
    sim.client.write_volume(vid, 3 * BLOCK + 11, b"incremental")
    jobs.append(bacula.backup("I"))
    return jobs, vid, sim.client.volume_sha256(vid)


def fatal(messages: list[tuple[str, str]]) -> str:
    found = [t for s, t in messages if s == "A"]
    assert found, messages
    return found[0]


def settle(sim: Any, seconds: float) -> None:
    """Let the eventual-consistency window pass, so a listing shows what really exists."""
    time.sleep(seconds)


# ---------------------------------------------------------------- the whole hard profile


def test_chain_restores_under_aws_hard_as_instance(sim, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """aws_hard (TLS with the simulator's CA via ca_bundle=, clock 30 s off, new ids
    invisible for up to 3 s and deleted ones listed, EC2 request buckets, KMS rules, latency):
    the chain becomes a new instance (image, instance, volume), byte for byte, and the
    temporary image and snapshot are gone. (As volumes: below, and tests/e2e/test_hard_mode.py.)"""
    jobs, vid, want = small_chain(sim, tmp_path)
    sim.client.set_options(aws_hard=True)
    endpoint = sim.api_endpoint()
    before = world(sim)
    messages = restore_aws(
        sim,
        tmp_path,
        jobs,
        f"endpoint_url={endpoint}",
        f"ca_bundle={sim.ca_path}",
        "restore_as=instance",
        seed=5,
        endpoint=endpoint,
    )
    assert not errors(messages), messages
    assert any("StartSnapshot Timeout" in t for _s, t in messages), messages
    settle(sim, 3.5)
    after = world(sim)
    (new_id,) = after["instances"] - before["instances"]
    inst = ec2(sim).describe_instances(InstanceIds=[new_id])["Reservations"][0]["Instances"][0]
    (mapping,) = inst["BlockDeviceMappings"]
    assert sim.client.volume_sha256(mapping["Ebs"]["VolumeId"]) == want
    assert tags(inst)["bacula-ec2:restored-from"] != vid  # the instance's, not the volume's
    assert after["images"] == before["images"] and after["snapshots"] == before["snapshots"]


def test_new_volume_and_instance_that_ec2_does_not_list_yet(sim, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Eventual consistency alone (no TLS, no latency): the new volume, the new instance and
    the temporary image answer NotFound for up to 2 s after their create; the restore waits
    for them instead of failing, and the temporary snapshot and image are confirmed gone."""
    jobs, _vid, want = small_chain(sim, tmp_path)
    sim.client.set_options(ec2_not_found_window=2.0)
    before = world(sim)
    messages = restore_aws(sim, tmp_path, jobs, seed=4)
    assert not errors(messages), messages
    (new,) = new_volumes(sim, before["volumes"]).values()
    assert sim.client.volume_sha256(new["VolumeId"]) == want
    messages = restore_aws(sim, tmp_path, jobs, "restore_as=instance", "restore_start=no", seed=6, jobid=51)
    assert not errors(messages), messages
    assert sim.client.stats()["not_found_window"], "the window was hit"
    settle(sim, 2.5)
    after = world(sim)
    (new_id,) = after["instances"] - before["instances"]
    inst = ec2(sim).describe_instances(InstanceIds=[new_id])["Reservations"][0]["Instances"][0]
    assert inst["State"]["Name"] == "stopped"
    assert sim.client.volume_sha256(inst["BlockDeviceMappings"][0]["Ebs"]["VolumeId"]) == want
    assert after["images"] == before["images"] and after["snapshots"] == before["snapshots"]


def test_failed_instance_restore_removes_the_image_ec2_does_not_list_yet(sim, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """RunInstances fails right after RegisterImage: the new image is still invisible
    (InvalidAMIID.NotFound), which must not count as "already gone"; the roll-back waits
    for it, deregisters it and confirms it is no longer listed."""
    jobs, _vid, _want = small_chain(sim, tmp_path)
    sim.client.set_options(ec2_not_found_window=2.0)
    before = world(sim)
    messages = restore_aws(sim, tmp_path, jobs, "restore_as=instance", "restore_subnet=subnet-0000dead")
    assert "RunInstances" in fatal(messages)
    assert sim.client.stats()["not_found_window"].get("DeregisterImage"), "the image was not visible yet"
    settle(sim, 2.5)  # anything left is visible by now
    assert world(sim) == before


# ---------------------------------------------------------------- StartSnapshot Timeout


@pytest.mark.parametrize("mode", ["absolute", "inactivity"])
def test_upload_outlives_a_snapshot_timeout_of_either_kind(sim, tmp_path: Path, mode: str) -> None:  # type: ignore[no-untyped-def]
    """A "minute" of the simulator is 15 ms, so the old fixed Timeout of 60 minutes is 0.9 s,
    and PutSnapshotBlock takes 100 ms with 2 in flight: 24 blocks take about 1.2 s. The
    Timeout sized for 12 MiB at restore_min_kib_per_s=1 (338 minutes, 5 s) holds whether AWS
    counts it from StartSnapshot or from the last put."""
    jobs, _vid, want = small_chain(sim, tmp_path, data_blocks=24)
    sim.client.set_options(
        timeout_minute=0.015,
        start_snapshot_timeout=mode,
        latency_ms=100.0,
        latency_operations=["PutSnapshotBlock"],
    )
    before = world(sim)
    messages = restore_aws(
        sim, tmp_path, jobs, "concurrent_threads=2", "restore_min_kib_per_s=1", "restore_as=snapshot"
    )
    assert not errors(messages), messages
    assert any("StartSnapshot Timeout 338 min" in t for _s, t in messages), messages
    (snap,) = [s for s in sim.client.snapshots() if s["id"] not in before["snapshots"]]
    assert snap["state"] == "completed"
    assert sim.client.snapshot_sha256(snap["id"]) == want


# ---------------------------------------------------------------- KMS


def test_denied_kms_key_fails_naming_the_key_and_leaves_nothing(sim, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    jobs, _vid, _want = small_chain(sim, tmp_path)
    sim.client.set_options(kms=True, kms_denied_keys=[KEY])
    before = world(sim)
    messages = restore_aws(sim, tmp_path, jobs, f"restore_kms_key={KEY}")
    text = fatal(messages)
    assert f"KMS key {KEY} may not be used" in text and "AccessDenied" in text, text
    assert not any("data block(s) into the new snapshot" in t for _s, t in messages), messages
    assert world(sim) == before
    # A key of another region is refused before anything is written, naming both regions.
    other = KEY.replace("us-east-1", "eu-west-1")
    text = fatal(restore_aws(sim, tmp_path, jobs, f"restore_kms_key={other}", jobid=51))
    assert "is a key of eu-west-1; the restore goes to us-east-1" in text, text
    assert world(sim) == before


# ---------------------------------------------------------------- limits before the first block


def test_zone_and_tag_limits_fail_before_the_first_block(sim, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A zone the region does not have, or a new volume that would carry more than 50 tags
    (the original's 47 + restore_tags + ours), fail before StartSnapshot, naming the valid
    zones / the count."""
    jobs, _vid, _want = small_chain(sim, tmp_path, volume_tags=47)
    sim.client.reset_stats()
    before = world(sim)
    messages = restore_aws(sim, tmp_path, jobs, "restore_availability_zone=us-east-1z")
    text = fatal(messages)
    assert "restore_availability_zone us-east-1z is not an available zone of us-east-1" in text, text
    assert "us-east-1a, us-east-1b, us-east-1c" in text, text
    assert not any("data block(s)" in t for _s, t in messages), messages

    messages = restore_aws(sim, tmp_path, jobs, "restore_tags=team=ops,ticket=42", jobid=51)
    text = fatal(messages)
    assert "the volume from" in text and "would carry 51 tags" in text, text
    assert not any("data block(s)" in t for _s, t in messages), messages
    requests = sim.client.stats()["requests"]
    assert requests.get("DescribeAvailabilityZones", 0) >= 2, requests
    assert requests.get("StartSnapshot", 0) == 0 and requests.get("PutSnapshotBlock", 0) == 0, requests
    assert world(sim) == before
