"""What the real-Bacula end-to-end tests share (not a test module): the plugin's FileSet line
aimed at the simulator, and a point-in-time restore through bconsole."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import boto3

from bacula_ec2.params import restore_option_items
from devkit.simulator.fixtures import ACCESS_KEY

BLOCK = 524288
SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYE2ESECRET"


def plugin_line(endpoint: str, *extra: str) -> str:
    return " ".join(
        [
            "ec2:",
            "region=us-east-1",
            f"access_key={ACCESS_KEY}",
            f"secret_key={SECRET}",
            f"endpoint_url={endpoint}",
            "concurrent_threads=16",
            *extra,
        ]
    )


def restore_before(stack, when: str, where: Path) -> tuple[int, str]:  # type: ignore[no-untyped-def]
    out = stack.bconsole(
        f'restore client={stack.client} fileset={stack.fileset} before="{when}" '
        f"select current all done yes where={where}"
    )
    match = re.search(r"Job queued\. JobId=(\d+)", out)
    assert match, out
    rjobid = int(match.group(1))
    return rjobid, stack.wait_job(rjobid, timeout=180)


def end_time(stack, jobid: int) -> str:  # type: ignore[no-untyped-def]
    out = stack.bconsole(f"llist jobid={jobid}")
    match = re.search(r"^\s*realendtime:\s*(\S+ \S+)", out, re.I | re.M) or re.search(
        r"^\s*endtime:\s*(\S+ \S+)", out, re.I | re.M
    )
    assert match, out
    return match.group(1)


def restore_with_options(
    stack, selection: str, options: dict[str, str], timeout: float = 300
) -> tuple[int, str]:  # type: ignore[no-untyped-def]
    """`restore <selection> all done where=/`, then Plugin Options through the `mod` dialog."""
    names = [name for name, *_ in restore_option_items()]
    commands = [f"restore {selection} all done where=/", "mod", "13"]
    for key, value in options.items():
        commands += ["mod", str(names.index(key) + 1), value]
    commands += ["yes", "yes"]
    out = stack.bconsole(*commands)
    for key, value in options.items():
        # "name:  current value  (default)": bconsole prints the option's default after it.
        assert re.search(rf"^{key}:\s+{re.escape(value)}(\s+\(.*\))?\s*$", out, re.M), out
    match = re.search(r"Job queued\. JobId=(\d+)", out)
    assert match, out
    rjobid = int(match.group(1))
    return rjobid, stack.wait_job(rjobid, timeout=timeout)


def ec2(sim: Any, region: str = "us-east-1") -> Any:
    return boto3.client("ec2", **sim.boto3_kwargs(region))


def tags(resource: dict[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in resource.get("Tags", [])}


def live_instances(sim: Any, region: str = "us-east-1") -> dict[str, dict[str, Any]]:
    out = ec2(sim, region).describe_instances()["Reservations"]
    return {i["InstanceId"]: i for r in out for i in r["Instances"] if i["State"]["Name"] != "terminated"}
