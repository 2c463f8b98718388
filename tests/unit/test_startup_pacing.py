"""The list pacers' shared schedule (issue 15): the backend keeps it in the FD's working
directory (`AwsSettings.pace_dir`, one file per region); its file is open while the job
runs and closed when the job is done (no descriptor left behind); a directory it cannot
use only warns."""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

import pytest

from bacula_ec2.aws.client import Aws, list_schedule
from bacula_ec2.jobs.context import JobContext, aws_settings
from bacula_ec2.jobs.runner import BackupRun, open_backup
from bacula_ec2.params import parse_parameters
from devkit.driver import backend
from devkit.jobkit import Recorder, RecordingSink, image_blocks
from devkit.simulator.fixtures import ACCESS_KEY, RunningSimulator
from protocol import Mode

BLOCK = 524288
SECRET = "pace-secret"
PACE_FILE = "bacula-ec2-list-us-east-1.pace"


def open_fds() -> dict[int, str]:
    """This process's descriptors and what they point at."""
    out = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            out[int(name)] = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            continue  # the directory listing's own descriptor, closed meanwhile
    return out


def seeded(sim: RunningSimulator, name: str) -> str:
    inst = sim.client.create_instance(name, volumes=[{"size_gib": 1, "device": "/dev/sda1"}])
    sim.client.write_volume(inst["volume_ids"][0], 0, os.urandom(4 * BLOCK))
    return str(inst["volume_ids"][0])


def pairs(sim: RunningSimulator, name: str) -> list[tuple[str, str]]:
    return [
        ("region", "us-east-1"),
        ("access_key", ACCESS_KEY),
        ("secret_key", SECRET),
        ("endpoint_url", sim.endpoint),
        ("concurrent_threads", "4"),
        ("instances", name),
    ]


def test_a_job_closes_its_shared_list_schedule_and_leaks_no_descriptor(
    sim: RunningSimulator, tmp_path: Path
) -> None:
    vid = seeded(sim, "pace-1")
    ctx = JobContext(
        parse_parameters(pairs(sim, "pace-1")), "pace.2026-12-01_10.00.00_01", 1, "F", Recorder(), ""
    )
    pace = str(tmp_path / PACE_FILE)
    before = open_fds()
    run = BackupRun(ctx, lambda c: open_backup(c, pace_dir=str(tmp_path)))
    sink = RecordingSink()
    run.backup(sink)
    run.retire(lambda reason: reason)
    assert pace in open_fds().values()  # the job's list pacer keeps the schedule there
    run.close()
    after = open_fds()
    assert pace not in after.values()
    assert {fd: what for fd, what in after.items() if fd not in before} == {}
    run.close()  # idempotent
    (image,) = sink.ending(".bimg")
    header, _blocks = image_blocks(sink.data(image))
    assert header.volume_id == vid


def test_a_closed_client_still_works_with_its_own_pacer(sim: RunningSimulator, tmp_path: Path) -> None:
    seeded(sim, "pace-2")
    settings = aws_settings(parse_parameters(pairs(sim, "pace-2")))
    aws = Aws(dataclasses.replace(settings, pace_dir=str(tmp_path)))
    assert aws.list_pacer.shared is not None
    aws.close()
    assert aws.list_pacer.shared is None
    assert [i.name for i in aws.describe_instances(names=["pace-2"])] == ["pace-2"]
    aws.close()


@pytest.mark.parametrize("kind", ["read-only", "not a directory"])
def test_a_pace_directory_that_cannot_be_used_only_warns(
    kind: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    if kind == "read-only":
        where = tmp_path / "ro"
        where.mkdir()
        where.chmod(0o500)
        if os.access(where, os.W_OK):
            pytest.skip("root writes into a read-only directory")
    else:
        where = tmp_path / "file"
        where.write_text("")
    with caplog.at_level(logging.WARNING, logger="bacula-ec2.aws"):
        assert list_schedule(str(where), "us-east-1") is None
    assert f"list pacing is not shared with other backends: {where}/{PACE_FILE}" in caplog.text


def test_the_backend_keeps_the_schedule_in_the_fd_working_directory(
    sim: RunningSimulator, tmp_path: Path
) -> None:
    seeded(sim, "pace-3")
    line = [f"{k}={v}" for k, v in pairs(sim, "pace-3")]
    with backend(Mode.BACKUP, line, tmp_path) as be:
        items = be.peer.read_items(data_phase=True)
        be.peer.end()
        be.peer.terminate()
        assert be.stderr() == b""
    assert any(it.name.endswith(".bimg") for it in items)
    assert (tmp_path / PACE_FILE).is_file()


def test_the_clients_come_from_botocore_and_say_who_calls(sim: RunningSimulator) -> None:
    """No boto3 Session around the botocore one: the User-Agent is botocore's with the
    product and release appended (AWS CloudTrail shows it)."""
    from bacula_ec2 import __version__

    seeded(sim, "pace-4")
    aws = Aws(aws_settings(parse_parameters(pairs(sim, "pace-4"))))
    agents: list[str] = []

    def seen(request: object, **_kw: object) -> None:
        value = request.headers["User-Agent"]  # type: ignore[attr-defined]
        agents.append(value.decode() if isinstance(value, bytes) else str(value))

    aws.ec2.meta.events.register("before-send.ec2.DescribeInstances", seen)
    try:
        assert [i.name for i in aws.describe_instances(names=["pace-4"])] == ["pace-4"]
    finally:
        aws.close()
    (agent,) = agents
    assert agent.startswith("Botocore/") and f"bacula-ec2/{__version__}" in agent, agent
    assert "Boto3/" not in agent
