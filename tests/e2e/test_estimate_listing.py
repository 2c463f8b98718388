"""estimate, `.ls` and `.query` through a real Bacula 15.0.3 (one stack, one simulated world
for the whole module), and the bconsole transcripts of docs/LISTING.md against what that
stack prints, line by line, so the document cannot drift from the product.

The world: web-1 (one 1 GiB volume holding 20 MiB) and two instances both named db-1. The
tests run in file order: an estimate before any snapshot, a Full and the estimate after it
(also through bec2), writes and the Incremental estimate without and with a newer snapshot,
then the listings, the queries and the document's transcripts (of that final state).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest

from devkit.harness import BaculaStack
from devkit.helpers import wait_until
from devkit.simulator.fixtures import ACCESS_KEY

from .common import BLOCK, SECRET, plugin_line

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "LISTING.md"
#: The plugin string the document's commands carry; the tests aim it at the simulator.
DOC_PLUGIN = "ec2: region=us-east-1 profile=backup credentials_file=/etc/bacula/aws-credentials"
DATA = 20 << 20
LATER = 3 << 20
GIB = 1 << 30


@dataclass
class World:
    sim: Any
    stack: BaculaStack
    web: str
    vol: str
    db: list[str]
    line: str  # the plugin string without a selection, for .ls and .query
    #: `.ls`/`.query` answers already seen (the world they describe does not change after
    #: the seeding, but for snapshots): the document's transcripts reuse them.
    seen: dict[str, str] = field(default_factory=dict)

    def ec2(self) -> Any:
        return boto3.client("ec2", **self.sim.boto3_kwargs("us-east-1"))

    def bconsole(self, command: str) -> str:
        """A command as the document writes it, aimed at this stack and the simulator."""
        for doc, real in ((DOC_PLUGIN, self.line), ("client=web-fd", f"client={self.stack.client}"),
                          ("job=backup-web", "job=ec2-backup")):  # fmt: skip
            command = command.replace(doc, real)
        stable = command.startswith((".ls", ".query")) and "parameter=snapshots" not in command
        if stable and command in self.seen:
            return self.seen[command]
        out = str(self.stack.bconsole(command))
        if stable:
            self.seen[command] = out
        return out

    def ls(self, path: str) -> str:
        return self.bconsole(f'.ls client=web-fd plugin="{DOC_PLUGIN}" path={path}')

    def query(self, parameter: str) -> str:
        return self.bconsole(f'.query client=web-fd plugin="{DOC_PLUGIN}" parameter={parameter}')


@pytest.fixture(scope="module")
def world(bacula_build, simulator, tmp_path_factory) -> Iterator[World]:  # type: ignore[no-untyped-def]
    simulator.client.reset()
    client = simulator.client
    web = client.create_instance("web-1", volumes=[{"size_gib": 1, "device": "/dev/sda1"}])
    vol = web["volume_ids"][0]
    client.write_volume(vol, 0, os.urandom(DATA))  # 40 blocks
    db = [client.create_instance("db-1", volumes=[{"size_gib": 1, "device": "/dev/sda1"}]) for _ in range(2)]
    stack = BaculaStack(
        tmp_path_factory.mktemp("estimate-listing"),
        [plugin_line(simulator.endpoint, "instances=web-1")],
        prefix=bacula_build.prefix,
        plugin_so=bacula_build.plugin_so,
    ).start()
    try:
        yield World(
            simulator,
            stack,
            web["instance_id"],
            vol,
            sorted(d["instance_id"] for d in db),
            plugin_line(simulator.endpoint),
        )
    finally:
        stack.stop()
        client.reset()


def bimg_size(out: str, vol: str) -> int:
    match = re.search(rf"^\S+\s+\d+\s+\S+\s+\S+\s+(\d+) .*/{vol}-sda1-1G(?:\.[ID]\d+)?\.bimg$", out, re.M)
    assert match, out
    return int(match.group(1))


def total_bytes(out: str) -> int:
    match = re.search(r"^2000 OK estimate files=\d+ bytes=([\d,]+)$", out, re.M)
    assert match, out
    return int(match.group(1).replace(",", ""))


def test_1_before_any_snapshot_the_estimate_says_it_is_the_provisioned_size(world: World) -> None:
    out = world.stack.estimate(listing=True)
    assert bimg_size(out, world.vol) == GIB
    assert f"ec2: {world.vol}: no completed snapshot, provisioned size 1 GiB" in out, out
    assert world.sim.client.snapshots() == []


def test_2_after_a_full_the_estimate_is_the_allocated_data(world: World) -> None:
    jobid = world.stack.run_job(level="Full", timeout=120)
    log = world.stack.job_log(jobid)
    assert "Backup OK" in log, log
    (snap,) = world.sim.client.snapshots()
    for listing in (True, False):
        out = world.stack.estimate(listing=listing)
        assert re.search(
            rf"^ec2: {world.vol}: 20 MiB allocated in {snap['id']} "
            r"\(\S+Z; 40 blocks of the volume's 1 GiB\)$",
            out,
            re.M,
        ), out
        assert abs(total_bytes(out) - DATA) < BLOCK, out  # the JSON files and maps are a few KiB
        if listing:
            assert bimg_size(out, world.vol) == DATA
    assert len(world.sim.client.snapshots()) == 1, "an estimate creates no snapshot"
    # bec2 shows the same figures.
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-m", "bacula_ec2.cli", "--operation=estimate", "--region=us-east-1",
         f"--access_key={ACCESS_KEY}", f"--secret_key={SECRET}", f"--endpoint_url={world.sim.endpoint}",
         "--instances=web-1"],
        capture_output=True, text=True, env=env, timeout=60, check=False, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.search(rf"^ +{DATA}  /@amazon-ec2/{world.web}/{world.vol}-sda1-1G\.bimg$", proc.stdout, re.M), (
        proc.stdout
    )
    assert f"{world.vol}: 20 MiB allocated in {snap['id']} (" in proc.stdout
    assert SECRET not in proc.stdout + proc.stderr


def test_3_an_incremental_estimate_shows_the_data_changed_since_the_base(world: World) -> None:
    world.sim.client.write_volume(world.vol, 100 * BLOCK, os.urandom(LATER))  # 6 new blocks
    out = world.stack.estimate(listing=True, level="Incremental")
    (base,) = world.sim.client.snapshots()
    assert bimg_size(out, world.vol) == 0
    assert f"ec2: {world.vol}: Incremental since {base['id']} (" in out, out
    assert "no completed snapshot is newer than it" in out and "counted as 0 bytes" in out, out
    # A newer snapshot (AWS Backup's, a lifecycle policy's): the changes up to it are known.
    newer = world.ec2().create_snapshot(VolumeId=world.vol, Description="nightly (AWS Backup)")["SnapshotId"]
    wait_until(
        lambda: all(s["state"] == "completed" for s in world.sim.client.snapshots()), 30,
        lambda: str(world.sim.client.snapshots()),
    )  # fmt: skip
    out = world.stack.estimate(listing=True, level="Incremental")
    assert bimg_size(out, world.vol) == LATER, out
    assert re.search(
        rf"^ec2: {world.vol}: Incremental: 3 MiB changed since {base['id']} \(\S+Z\) "
        rf"up to {newer} \(\S+Z; 6 blocks\)$",
        out,
        re.M,
    ), out
    assert abs(total_bytes(out) - LATER) < BLOCK, out
    assert len(world.sim.client.snapshots()) == 2, "an estimate creates no snapshot"


def test_4_ls_shows_names_and_takes_a_name_or_an_id(world: World) -> None:
    out = world.ls("/us-east-1")
    assert re.search(rf"^drwxr-x--- .*  {world.web}/ -> web-1$", out, re.M), out
    for iid in world.db:
        assert re.search(rf"^drwxr-x--- .*  {iid}/ -> db-1$", out, re.M), out
    by_name, by_id = world.ls("/us-east-1/web-1"), world.ls(f"/us-east-1/{world.web}")
    line = rf"^-rw-r----- .* 1073741824 \S+ \S+  {world.vol}-sda1-1G$"
    assert re.search(line, by_name, re.M) and re.search(line, by_id, re.M), by_name + by_id
    out = world.ls("/us-east-1/db-1")
    assert (
        f"the Name 'db-1' is ambiguous in region us-east-1: instances {world.db[0]}, {world.db[1]}" in out
    ), out
    assert "2000 OK estimate files=0 bytes=0" in out


def test_5_query_help_lists_every_parameter_with_one_line(world: World) -> None:
    for parameter in ("help", ""):
        out = world.query(parameter)
        lines = [
            ln for ln in out.splitlines() if re.match(r"^(help|regions|instances|volumes|snapshots)=", ln)
        ]
        assert [ln.split("=", 1)[0] for ln in lines] == [
            "help",
            "regions",
            "instances",
            "volumes",
            "snapshots",
        ], out
    out = world.query("nonsense")
    assert "error=unknown query 'nonsense'" in out and "parameter=help" in out, out


# ---------------------------------------------------------------- the document's transcripts

#: What bconsole prints around every command, not part of a transcript.
_CHATTER = re.compile(
    r"^(Connecting to |1000 OK|Enter a period|Using Catalog|You have messages|quit$|\.ls |\.query |estimate )"
)
_NORMAL = [
    (re.compile(r"\bi-[0-9a-f]{17}\b"), "i-ID"),
    (re.compile(r"\bvol-[0-9a-f]{17}\b"), "vol-ID"),
    (re.compile(r"\bsnap-[0-9a-f]{17}\b"), "snap-ID"),
    (re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"), "TIME"),
    (re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|\+00:00)"), "TIME"),
    (re.compile(r"\bjob=ec2-backup\b"), "job=backup-web"),  # the stack's Job is the document's
]


def normal(line: str) -> str:
    for rx, repl in _NORMAL:
        line = rx.sub(repl, line)
    return line.rstrip()


def transcripts() -> list[tuple[int, str, list[str]]]:
    """(line, command, documented output lines) of every `*<command>` in the document's
    bconsole transcripts (the blocks whose marker names this test)."""
    out: list[tuple[int, str, list[str]]] = []
    lines = DOC.read_text().splitlines()
    inside = mine = False
    for n, line in enumerate(lines, 1):
        if line.startswith("```"):
            inside = not inside
            if inside:
                mark = next((ln for ln in reversed(lines[: n - 1]) if ln.strip()), "")
                mine = "doc-test:" in mark and "test_estimate_listing.py" in mark
            continue
        if not (inside and mine):
            continue
        if line.startswith("*"):
            out.append((n, line[1:].strip(), []))
        elif out and line.strip():
            out[-1][2].append(line)
    return out


def test_6_the_documents_transcripts_are_what_bconsole_prints(world: World) -> None:
    found = transcripts()
    commands = [c for _n, c, _o in found]
    assert any(c.startswith(".ls") for c in commands) and any(c.startswith(".query") for c in commands)
    assert any(c.startswith("estimate") for c in commands), commands
    for n, command, documented in found:
        assert DOC_PLUGIN in command or command.startswith("estimate"), f"LISTING.md:{n}: {command}"
        real = [ln for ln in world.bconsole(command).splitlines() if ln.strip() and not _CHATTER.match(ln)]
        assert sorted(map(normal, real)) == sorted(map(normal, documented)), (
            f"docs/LISTING.md:{n}: `{command}` prints\n" + "\n".join(real)
        )
