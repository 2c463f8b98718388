"""The job log words what a job backs up right: standalone volumes are not an instance."""

from __future__ import annotations

import re

from bacula_ec2.jobs.backup import BackupJob
from bacula_ec2.jobs.context import JobContext
from bacula_ec2.params import parse_parameters
from devkit.fake_aws import FakeAws
from devkit.jobkit import Recorder, RecordingSink


def _run(pairs: list[tuple[str, str]], aws: FakeAws) -> list[str]:
    rec = Recorder()
    ctx = JobContext(parse_parameters([("concurrent_threads", "2"), *pairs]), "wording.1", 1, "F", rec, "")
    BackupJob(ctx, aws).run(RecordingSink())
    return rec.texts()


def _summary(texts: list[str]) -> str:
    found = [t for t in texts if t.startswith("backed up ") and " blocks, " in t]
    assert len(found) == 1, texts
    return found[0]


def test_a_volumes_only_job_counts_volumes_not_instances() -> None:
    aws = FakeAws()
    vols = [aws.add_volume(1), aws.add_volume(1)]
    for v in vols:
        aws.write(v, 1, 3)
    texts = _run([("volumes", ",".join(vols))], aws)
    assert _summary(texts).startswith("backed up 0 instance(s) and 2 standalone volume(s): "), texts
    assert not any("instance standalone" in t for t in texts), texts
    listed = [t for t in texts if t.startswith("standalone volumes: ")]
    assert len(listed) == 1 and all(v in listed[0] for v in vols), texts


def test_instances_and_volumes_are_counted_apart() -> None:
    aws = FakeAws()
    aws.add_instance("web-1")
    extra = aws.add_volume(1)
    texts = _run([("instances", "web-1"), ("volumes", extra)], aws)
    assert re.match(r"backed up 1 instance\(s\) and 1 standalone volume\(s\): ", _summary(texts)), texts
    alone = FakeAws()
    alone.add_instance("web-1")
    only = _run([("instances", "web-1")], alone)
    assert re.match(r"backed up 1 instance\(s\): ", _summary(only)), only
