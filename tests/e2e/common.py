"""What the real-Bacula end-to-end tests share (not a test module): the plugin's FileSet line
aimed at the simulator, and a point-in-time restore through bconsole."""

from __future__ import annotations

import re
from pathlib import Path

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
