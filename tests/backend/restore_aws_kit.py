"""What the restore-into-AWS tests share (not a test module): a backed-up chain, the
restore played as Bacula plays it (newest version of each path, shuffled, where=/), and a
view of every resource of a region."""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3

from devkit.driver import backend
from devkit.fdpeer import BackendError
from protocol import Mode

from .common import BLOCK, FakeBacula, Job, params

REGION = "us-east-1"


@dataclass
class Chain:
    bacula: FakeBacula
    jobs: list[Job]
    instance_id: str
    volumes: dict[str, str]  # device -> volume id
    want: dict[str, str]  # volume id -> sha256 at the last backup


def ec2(sim: Any, region: str = REGION) -> Any:
    return boto3.client("ec2", **sim.boto3_kwargs(region))


def world(sim: Any, region: str = REGION) -> dict[str, set[str]]:
    """Every snapshot, volume, image and live instance of a region."""
    c = ec2(sim, region)
    instances = {
        i["InstanceId"]
        for r in c.describe_instances()["Reservations"]
        for i in r["Instances"]
        if i["State"]["Name"] != "terminated"
    }
    return {
        "snapshots": {s["id"] for s in sim.client.snapshots(region)},
        "volumes": {v["VolumeId"] for v in c.describe_volumes()["Volumes"]},
        "images": {i["ImageId"] for i in c.describe_images(Owners=["self"])["Images"]},
        "instances": instances,
    }


def make_chain(sim: Any, tmp_path: Path) -> Chain:
    """web-1 (root 1 GiB gp3 + data 2 GiB io1), backed up as Full, Incremental, Incremental."""
    inst = sim.client.create_instance(
        "web-1",
        volumes=[
            {"size_gib": 1, "device": "/dev/sda1", "volume_type": "gp3", "iops": 4000, "throughput": 250},
            {
                "size_gib": 2,
                "device": "/dev/xvdf",
                "volume_type": "io1",
                "iops": 1000,
                "tags": {"role": "db"},
            },
        ],
        tags={"env": "prod"},
        instance_type="t3.small",
        user_data="#!/bin/sh\necho restored\n",
    )
    root, data = inst["volume_ids"]
    w = sim.client.write_volume
    w(root, 0, os.urandom(4 * BLOCK + 100))
    w(root, 300 * BLOCK, os.urandom(BLOCK))
    w(data, (1 << 30) + 5, os.urandom(3 * BLOCK))
    bacula = FakeBacula(sim, tmp_path, ("instances=web-1",))
    jobs = [bacula.backup("F")]
    w(root, 2 * BLOCK + 9, b"first incremental")
    w(data, 700 * BLOCK, os.urandom(BLOCK))
    w(root, 300 * BLOCK, bytes(BLOCK))  # data -> zeros
    jobs.append(bacula.backup("I"))
    w(root, 0, bytes(BLOCK))  # data -> zeros
    w(data, 9 * BLOCK, b"second incremental")
    w(root, 1000 * BLOCK, os.urandom(1000))
    jobs.append(bacula.backup("I"))
    want = {v: sim.client.volume_sha256(v) for v in (root, data)}
    w(root, 0, b"written after the last backup")
    return Chain(bacula, jobs, inst["instance_id"], {"/dev/sda1": root, "/dev/xvdf": data}, want)


def restore_aws(
    sim: Any,
    tmp_path: Path,
    jobs: list[Job],
    *options: str,
    seed: int = 1,
    where: str = "/",
    jobid: int = 50,
    endpoint: str | None = None,
) -> list[tuple[str, str]]:
    """Play Bacula's restore of `jobs` (newest version of each path, shuffled) with where=/."""
    newest = {}
    for job in jobs:
        for it in job.items:
            newest[it.name] = it
    items = list(newest.values())
    random.Random(seed).shuffle(items)
    prefix = "" if where == "/" else where
    with backend(
        Mode.RESTORE,
        params(endpoint or sim.endpoint, "instances=web-1", *options),
        tmp_path,
        where=where,
        jobid=jobid,
    ) as be:
        try:
            for it in items:
                reply = be.peer.restore_file(prefix + it.name, f"{it.type} {it.size} 0 0 {it.mode:06o} 1 0")
                assert reply == "OK", be.peer.messages
                if it.data:
                    data = bytes(it.data)
                    assert (
                        be.peer.send_data([data[i : i + 65536] for i in range(0, len(data), 65536)]) == "OK"
                    )
            be.peer.finish()
            be.peer.end()
            be.peer.terminate()
        except BackendError as exc:
            be.peer.messages.append((exc.status, exc.text))
            be.peer.close()
        assert be.stderr() == b""
        messages = list(be.peer.messages)
    assert not list(tmp_path.glob("bacula-ec2-restore-*")), "the staging directory must be removed"
    return messages


def errors(messages: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [m for m in messages if m[0] in "EQA"]


def new_volumes(sim: Any, before: set[str], region: str = REGION) -> dict[str, dict[str, Any]]:
    c = ec2(sim, region)
    vols = c.describe_volumes()["Volumes"]
    return {v["VolumeId"]: v for v in vols if v["VolumeId"] not in before}


def tags(resource: dict[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in resource.get("Tags", [])}
