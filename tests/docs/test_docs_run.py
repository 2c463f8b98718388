"""Docs that run: every runnable block of README.md and docs/*.md, as a user types it.

bec2 blocks run as subprocesses against the simulator, the blocks of one document in order
in one folder; bconsole blocks run through one real Bacula stack, against the backups of
the documents' FileSet snippets (pasted into the Director's configuration as they are).
The markers and the extractor are devkit/doctest_md.py; the convention is docs/TESTING.md.

What a user substitutes is the table of ``World.table``: paths, ids, a time, the client's
name. Nothing else of a block is changed.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import hashlib
import json
import math
import os
import re
import shlex
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest

from bacula_ec2.params import restore_option_items
from devkit import doctest_md as md
from devkit.harness.bacula import STORAGE_NAME
from devkit.simulator.fixtures import ACCESS_KEY, SECRET_KEY

BLOCK = 524288
BEC2 = Path(sys.executable).parent / "bec2"
KMS_KEY = "arn:aws:kms:eu-west-1:111122223333:key/0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
ALL = md.all_blocks()


def _docs_with(kind: str) -> list[Path]:
    return sorted({b.path for b in ALL if b.kind == kind})


@dataclass
class World:
    """The simulator seeded with what the documents name, and the substitution table."""

    sim: Any
    folder: Path
    ids: dict[str, str] = field(default_factory=dict)
    regions: dict[str, str] = field(default_factory=dict)  # volume id -> region
    devices: dict[str, dict[str, str]] = field(default_factory=dict)  # instance -> device -> volume
    hashes: dict[str, str] = field(default_factory=dict)  # seeded volume -> SHA-256
    written: dict[str, list[tuple[int, bytes]]] = field(default_factory=dict)  # volume -> writes
    before: float | None = None  # a time after the first backup, before the next ones

    def seed(self) -> None:
        """Instances named as in the documents; web-1 has a data volume at sdf (RESTORE.md
        excludes it by device); one to attach to in each region an example restores into."""
        c = self.sim.client
        for name, region, devices in (
            ("my-instance", "us-east-1", {"/dev/sda1": 4}),
            ("web-1", "eu-west-1", {"/dev/sda1": 4, "/dev/sdf": 1}),
            ("web-2", "eu-west-1", {"/dev/sda1": 1}),
            ("attach-target", "eu-west-1", {"/dev/sda1": 0}),
            ("attach-target", "us-west-2", {"/dev/sda1": 0}),
        ):
            spec = [{"size_gib": 1, "device": dev} for dev in devices]
            inst = c.create_instance(name, spec, region=region)
            key = f"{name}@{region}" if name == "attach-target" else name
            self.ids[key] = inst["instance_id"]
            self.devices[inst["instance_id"]] = dict(zip(devices, inst["volume_ids"], strict=True))
            for vid, (dev, blocks) in zip(inst["volume_ids"], devices.items(), strict=True):
                self.ids[f"{key}:{dev.rsplit('/', 1)[1]}"] = vid
                self.regions[vid] = region
                for i in range(blocks):
                    data = os.urandom(BLOCK)
                    c.write_volume(vid, (3 * i + 1) * BLOCK + 17, data, region=region)
                    self.written.setdefault(vid, []).append(((3 * i + 1) * BLOCK + 17, data))
        ec2 = boto3.client("ec2", **self.sim.boto3_kwargs("eu-west-1"))
        (web,) = ec2.describe_instances(InstanceIds=[self.ids["web-1"]])["Reservations"][0]["Instances"]
        self.ids["subnet"] = web["SubnetId"]  # the simulator has no DescribeSubnets
        home = self.folder / "home"
        (home / ".aws").mkdir(parents=True)
        creds = f"aws_access_key_id = {ACCESS_KEY}\naws_secret_access_key = {SECRET_KEY}\n"
        (home / ".aws" / "config").write_text("[default]\n\n[profile backup]\n")
        (home / ".aws" / "credentials").write_text(f"[default]\n{creds}\n[backup]\n{creds}")

    def env(self) -> dict[str, str]:
        """A host whose default and `backup` profiles are the simulator's credentials."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        aws = self.folder / "home" / ".aws"
        env.update(
            AWS_CONFIG_FILE=str(aws / "config"),
            AWS_SHARED_CREDENTIALS_FILE=str(aws / "credentials"),
            AWS_ENDPOINT_URL=self.sim.endpoint,
            HOME=str(self.folder / "home"),
        )
        return env

    def mark_backup(self) -> None:
        """After the first backup: a time it is older than, and every later backup newer."""
        if self.before is None:
            self.before = math.ceil(time.time()) + 1.0
            time.sleep(max(0.0, self.before - time.time()) + 0.05)

    def table(self, command: str = "") -> dict[str, str]:
        """What a user substitutes in the documents' commands (placeholders -> this world).
        `i-0def...` is an instance in the region ``command`` restores into."""
        d = self.folder
        target = re.search(r"restore_region=([\w-]+)|--region=([\w-]+)", command)
        region = next((g for g in target.groups() if g), "eu-west-1") if target else "eu-west-1"
        table = {
            "/backups": str(d / "backups"),
            "/restores": str(d / "restores"),
            "/srv/restores": str(d / "srv-restores"),
            "i-0123456789abcdef0": self.ids["web-2"],  # README's FileSet: a second instance by id
            "i-0abc": self.ids["web-1"],
            "vol-0123": self.ids["web-1:sda1"],
            "vol-0123...": self.ids["web-1:sda1"],
            "subnet-0abc": self.ids["subnet"],
            "arn:aws:kms:eu-west-1:111122223333:key/...": KMS_KEY,
            "client=fd": "client=ec2test-fd",
            "client=ec2-fd": "client=ec2test-fd",
        }
        if f"attach-target@{region}" in self.ids:
            table["i-0def..."] = self.ids[f"attach-target@{region}"]
        if self.before is not None:
            utc = dt.datetime.fromtimestamp(self.before, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            local = dt.datetime.fromtimestamp(self.before).strftime("%Y-%m-%d %H:%M:%S")
            table |= {
                "[--before=2026-11-26T16:00:00Z]": f"--before={utc}",
                "2026-11-26T16:00:00Z": utc,
                "2026-11-20T12:00:00Z": utc,
                "2026-11-20 12:00:00": local,
            }
        return table

    def sha(self, volume_id: str) -> str:
        """SHA-256 of a seeded volume (they do not change during a run: hashed once)."""
        if volume_id not in self.hashes:
            self.hashes[volume_id] = self.sim.client.volume_sha256(volume_id, region=self.regions[volume_id])
        return self.hashes[volume_id]

    def check_images(self, where: Path, what: str) -> None:
        """Every restored image is its volume, byte for byte (no volume changes during a run):
        its size, the bytes seeded into it, and zeros everywhere else (read where the sparse
        image has data; its holes read as zeros)."""
        images = sorted(where.glob("@amazon-ec2/*/vol-*.img"))
        assert images, f"{what}: no image under {where}"
        for image in images:
            vid = "-".join(image.name.split("-")[:2])
            writes = self.written.get(vid, [])
            with image.open("rb") as f:
                size = os.fstat(f.fileno()).st_size
                assert size == 1 << 30, f"{what}: {image} is {size} bytes"
                for offset, data in writes:
                    f.seek(offset)
                    assert f.read(len(data)) == data, f"{what}: {image} differs from {vid} at {offset}"
                pos = 0
                while pos < size:
                    try:
                        start = os.lseek(f.fileno(), pos, os.SEEK_DATA)
                    except OSError:
                        break  # only a hole left
                    end = os.lseek(f.fileno(), start, os.SEEK_HOLE)
                    f.seek(start)
                    want = bytearray(end - start)
                    for offset, data in writes:
                        lo, hi = max(offset, start), min(offset + len(data), end)
                        if lo < hi:
                            want[lo - start : hi - start] = data[lo - offset : hi - offset]
                    assert f.read(end - start) == want, (
                        f"{what}: {image} differs from {vid} in [{start}, {end})"
                    )
                    pos = end


def check_created(world: World, text: str, options: dict[str, str], what: str) -> int:
    """Every volume, instance or snapshot a restore says it created (`volume vol-N in <zone>
    (from vol-S)`, `instance i-N (<type>, <zone>, <state>; volumes /dev/x=vol-N) from i-S`,
    `snapshot snap-N (from vol-S)`) holds its source's bytes and has what the restore
    options the command set ask for (zone, region, volume type, instance type, state,
    attachment); returns how many."""
    c, count = world.sim.client, 0
    zone_wanted, region_wanted = options.get("restore_availability_zone"), options.get("restore_region")

    def placed(zone: str, thing: str) -> None:
        assert zone_wanted in (None, zone), f"{what}: {thing} in {zone}, not {zone_wanted}"
        assert region_wanted in (None, zone[:-1]), f"{what}: {thing} in {zone}, not in {region_wanted}"

    def volume_ok(vol: str, zone: str, want: str, thing: str, alone: bool = True) -> None:
        placed(zone, thing)
        assert c.volume_sha256(vol, region=zone[:-1]) == want, f"{what}: {thing} differs from its source"
        ec2 = boto3.client("ec2", **world.sim.boto3_kwargs(zone[:-1]))
        (desc,) = ec2.describe_volumes(VolumeIds=[vol])["Volumes"]
        got = {
            "restore_volume_type": desc["VolumeType"],
            "restore_iops": str(desc.get("Iops")),
            "restore_kms_key": desc.get("KmsKeyId") if desc["Encrypted"] else None,
        }
        if alone:  # restore_name names the new volume, or the new instance (not its volumes)
            got["restore_name"] = {t["Key"]: t["Value"] for t in desc.get("Tags", [])}.get("Name")
        for key, value in got.items():
            assert options.get(key) in (None, value), f"{what}: {thing} has {key} {value}, not {options[key]}"

    volume_line = r"\bvolume (vol-\w+) in (\S+) \(from (vol-\w+)\)(, attached to (i-\w+))?"
    for new, zone, src, _attached, target in sorted(set(re.findall(volume_line, text))):
        volume_ok(new, zone, world.sha(src), f"volume {new}")
        assert options.get("restore_attach_instance") in (None, target), f"{what}: {new} not attached"
        count += 1
    instance_line = r"\binstance (i-\w+) \(([\w.]+), (\S+), (\w+); volumes ([^)]*)\) from (i-\w+)"
    for new, itype, zone, state, vols, src in sorted(set(re.findall(instance_line, text))):
        assert options.get("restore_instance_type") in (None, itype), f"{what}: instance {new} is {itype}"
        want_state = "stopped" if options.get("restore_start") in ("no", "0", "false") else "running"
        assert state == want_state, f"{what}: instance {new} is {state}"
        made = dict(v.split("=") for v in vols.split(", "))
        assert made.keys() == world.devices[src].keys(), f"{what}: instance {new}: {vols}"
        for dev, vol in made.items():
            volume_ok(vol, zone, world.sha(world.devices[src][dev]), f"instance {new} {dev}", alone=False)
        ec2 = boto3.client("ec2", **world.sim.boto3_kwargs(zone[:-1]))
        (inst,) = ec2.describe_instances(InstanceIds=[new])["Reservations"][0]["Instances"]
        name = {t["Key"]: t["Value"] for t in inst.get("Tags", [])}.get("Name")
        assert options.get("restore_name") in (None, name), f"{what}: instance {new} is named {name}"
        count += 1
    for new, src in sorted(set(re.findall(r"\bsnapshot (snap-\w+) \(from (vol-\w+)\)", text))):
        got = {
            c.snapshot_sha256(new, region=r)
            for r in set(world.regions.values())
            if any(x["id"] == new for x in c.snapshots(region=r))
        }
        assert got == {world.sha(src)}, f"{what}: snapshot {new}"
        count += 1
    return count


_EBS = {
    "ListSnapshotBlocks",
    "ListChangedBlocks",
    "GetSnapshotBlock",
    "StartSnapshot",
    "PutSnapshotBlock",
    "CompleteSnapshot",
}


def check_iam(sim: Any, into_aws: bool, what: str) -> None:
    """Every AWS call the simulator saw is granted by docs/IAM.md: its backup policy, plus
    its restore policy when something was restored into AWS."""
    policies = [json.loads(b.text) for b in ALL if b.where.startswith("docs/IAM.md") and b.kind == "json"]
    granted = [
        action
        for policy in policies[: 2 if into_aws else 1]
        for statement in policy["Statement"]
        if statement["Effect"] == "Allow"
        for action in (
            statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        )
    ]
    called = sim.client.stats()["requests"]
    assert called, what
    for operation in called:
        action = (
            f"{'ebs' if operation in _EBS else 'sts' if operation == 'AssumeRole' else 'ec2'}:{operation}"
        )
        assert any(fnmatch.fnmatchcase(action, g) for g in granted), (
            f"{what}: docs/IAM.md does not grant {action}"
        )


def check_format(path: Path) -> int:
    """Read a block file exactly as docs/FORMAT.md describes it (an independent reader):
    prefix, JSON header with the documented keys, 48-byte records in ascending offset
    order, data after D records in a .bimg, the end record's count and digest; returns
    the number of records."""
    raw = path.read_bytes()
    magic, kind, version, reserved, size = struct.unpack(">4scBHI", raw[:12])
    assert (magic, version, reserved) == (b"BEC2", 1, 0), path
    assert kind == {".bimg": b"I", ".bmp": b"M", ".abmp": b"A"}[path.suffix], path
    header = json.loads(raw[12 : 12 + size])
    assert set(header) == _format_keys(), f"{path}: header keys differ from docs/FORMAT.md"
    assert header["format"] == "bacula-ec2 block image" and header["block_size"] == BLOCK, path
    pos, digest, count, last = 12 + size, hashlib.sha256(raw[: 12 + size]), 0, -1
    while True:
        record = raw[pos : pos + 48]
        assert len(record) == 48, f"{path}: truncated"
        offset, length, rkind, flags, spare, sha = struct.unpack(">QIcBH32s", record)
        pos += 48
        if rkind == b"E":
            assert (offset, length, sha) == (count, 0, digest.digest()), f"{path}: end record"
            assert pos == len(raw), f"{path}: bytes after the end record"
            return count
        digest.update(record)
        count += 1
        assert offset % BLOCK == 0 and offset > last and length == BLOCK and not flags and not spare, path
        assert rkind in (b"D", b"Z") and (kind != b"A" or rkind == b"Z"), path
        if kind == b"I" and rkind == b"D":
            assert hashlib.sha256(raw[pos : pos + length]).digest() == sha, f"{path}: block at {offset}"
            pos += length
        last = offset


def _format_keys() -> set[str]:
    text = (md.REPO / "docs" / "FORMAT.md").read_text()
    table = text.split("| key | meaning |", 1)[1].split("\n\n", 1)[0]
    return {k for line in table.splitlines()[2:] for k in re.findall(r"`([a-z_]+)`", line.split("|")[1])}


def _bec2(world: World, command: str, where: str, code: int = 0) -> subprocess.CompletedProcess[str]:
    argv = shlex.split(command)
    assert argv[0] == "bec2", f"{where}: not a bec2 command: {command}"
    proc = subprocess.run(
        [str(BEC2), *argv[1:]],
        env=world.env(),
        cwd=world.folder,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert proc.returncode == code, (
        f"{where}: `{command}` exited {proc.returncode}, the doc says {code}\n{proc.stdout}\n{proc.stderr}"
    )
    return proc


def _option(command: str, name: str) -> str | None:
    for word in shlex.split(command):
        if word.startswith(f"--{name}="):
            return word.split("=", 1)[1]
    return None


@pytest.mark.parametrize("doc", _docs_with("bec2"), ids=lambda p: p.name)
def test_bec2_blocks(sim: Any, tmp_path: Path, doc: Path) -> None:
    world = World(sim, tmp_path)
    world.seed()
    blocks = [b for b in ALL if b.path == doc and b.kind == "bec2"]
    first = md.shell_commands(blocks[0])[0]
    if "--operation=backup" not in first:
        # The document starts from a backup it does not show how to make: a Full of
        # web-1, as the README's bec2 section makes it.
        setup = (
            "bec2 --operation=backup --region=eu-west-1 --profile=backup --instances=web-1 --output=/backups"
        )
        _bec2(world, md.substitute(setup, world.table()), f"{doc.name} setup")
        world.mark_backup()
    ran = 0
    for block in blocks:
        for raw in md.shell_commands(block):
            needs_time = "2026-" in raw and world.before is None
            assert not needs_time, f"{block.where}: `{raw}` names a time before any backup was made"
            command = md.substitute(raw, world.table(raw))
            proc = _bec2(world, command, block.where, block.exit)
            ran += 1
            if block.exit:
                continue
            if "--operation=backup" in command:
                world.mark_backup()
            local = _option(command, "local_path")
            if "--operation=restore" in command and local and _option(command, "restore_to") != "aws":
                world.check_images(Path(local), f"{block.where}: `{raw}`")
            if _option(command, "restore_to") == "aws":
                options = {
                    w[2:].split("=", 1)[0]: w.split("=", 1)[1] for w in shlex.split(command) if "=" in w
                }
                assert check_created(world, proc.stdout, options, f"{block.where}: `{raw}`"), proc.stdout
            if "--operation=list" in command:
                assert re.search(r"^\s+1\s.*complete", proc.stdout, re.M), f"{block.where}:\n{proc.stdout}"
    assert ran
    # What the backups wrote reads as docs/FORMAT.md says.
    files = [
        f
        for ext in ("bimg", "bmp", "abmp")
        for f in (tmp_path / "backups").glob(f"backups/*/@amazon-ec2/*/*.{ext}")
    ]
    assert {f.suffix for f in files} == {".bimg", ".bmp", ".abmp"}, files
    assert sum(check_format(f) for f in files)
    into_aws = any("--restore_to=aws" in c for b in blocks for c in md.shell_commands(b))
    check_iam(sim, into_aws, f"{doc.name}'s bec2 commands")


# ---------------------------------------------------------------- bconsole, real Bacula

_JOB = """
Job {{
  Name = "{name}"
  Type = Backup
  Level = Full
  Client = ec2test-fd
  FileSet = "{fileset}"
  Storage = {storage}
  Pool = File
  Messages = Standard
}}
"""


def _fileset_name(text: str) -> str:
    match = re.search(r'^\s*Name\s*=\s*"?([^"\n]+)"?', text, re.M)
    assert match, text
    return match.group(1).strip()


def _console_check(
    stack: Any, world: World, command: str, out: str, where: str, options: dict[str, str] | None = None
) -> None:
    verb = command.split()[0]
    options = options or {}
    for key, value in options.items():  # bconsole took each Plugin Option as written
        assert re.search(rf"^{key}:\s+{re.escape(value)}\s", out, re.M), (
            f"{where}: {key} = {value} not taken:\n{out}"
        )
    if verb in ("restore", "run"):
        match = re.search(r"Job queued\. JobId=(\d+)", out)
        assert match, f"{where}: `{command}` queued no job:\n{out}"
        jobid = int(match.group(1))
        status = stack.wait_job(jobid, timeout=180)
        log = stack.job_log(jobid)
        assert status == "T", f"{where}: `{command}` ended {status}:\n{log}"
        target = re.search(r"\bwhere=(\S+)", command)
        if verb == "restore" and target and target.group(1) != "/":
            world.check_images(Path(target.group(1)), f"{where}: `{command}`")
        if verb == "restore" and target and target.group(1) == "/":
            assert check_created(world, log, options, f"{where}: `{command}`"), (
                f"{where}: nothing created:\n{log}"
            )
    elif verb == "estimate":
        assert re.search(r"files=\d+ bytes=[\d,]+", out), f"{where}: `{command}`:\n{out}"
    else:
        assert not re.search(r"(?i)\berror\b|not found|failed", out), f"{where}: `{command}`:\n{out}"
        answer = out.split(command, 1)[-1]
        if verb == ".ls":  # a listing names what is there: an instance, a volume or a region
            names = [*world.ids.values(), *world.regions.values()]
            assert any(name in answer for name in names), f"{where}: `{command}` lists nothing:\n{out}"
        if verb == ".query":
            assert len([ln for ln in answer.splitlines() if "=" in ln]) >= 2, f"{where}: `{command}`:\n{out}"


@pytest.mark.skipif(not _docs_with("bconsole"), reason="no bconsole block in the docs")
def test_bconsole_blocks(sim: Any, bacula_stack: Callable[..., Any], tmp_path: Path) -> None:
    world = World(sim, tmp_path)
    world.seed()
    stack = bacula_stack(
        [],
        fileset_files=[str(tmp_path / "home")],
        fd_env={k: v for k, v in world.env().items() if k.startswith("AWS_")},
    )
    table = world.table()
    # Every FileSet snippet goes into the Director's configuration as written (one per
    # name); the first of each document is backed up for real.
    conf = stack.etc / "bacula-dir.conf"
    jobs: list[tuple[str, str]] = []
    names: set[str] = set()
    for block in [b for b in ALL if b.kind == "fileset" and "FileSet" in b.text]:
        text = md.substitute(block.text, table)
        name = _fileset_name(text)
        if name in names:
            continue
        names.add(name)
        job = f"doc-{len(jobs) + 1}"
        with conf.open("a") as f:
            f.write("\n" + text + "\n" + _JOB.format(name=job, fileset=name, storage=STORAGE_NAME))
        jobs.append((job, block.where))
    assert jobs, "no FileSet snippet to back up"
    out = stack.bconsole("reload")
    assert "rror" not in out, out
    full: list[str] = []
    for job, where in jobs:
        out = stack.bconsole(f"run job={job} level=Full yes")
        _console_check(stack, world, f"run job={job}", out, where)
        full += re.findall(r"Job queued\. JobId=(\d+)", out)
    world.mark_backup()
    full_job = {"jobid=42": f"jobid={full[0]}"}  # RESTORE.md: "one job only"
    options = [name for name, *_ in restore_option_items()]
    # The blocks, then the complete commands written inline in the text.
    commands = [(b.where, c) for b in ALL if b.kind == "bconsole" for c in md.console_commands(b, options)]
    commands += [
        (i.where, md.ConsoleCommand(i.text)) for p in md.documents() for i in md.inline_commands(p)[0]
    ]
    seen: set[tuple[str, tuple[str, ...]]] = set()
    for where, cmd in commands:
        table = world.table(cmd.text) | full_job
        line = md.substitute(cmd.line, table)
        dialog = tuple(md.substitute(step, table) for step in cmd.dialog)
        if (line, dialog) in seen:  # the same command in two documents runs once
            continue
        seen.add((line, dialog))
        out = stack.bconsole(line, *dialog, timeout=120)
        _console_check(stack, world, line, out, where, {k: md.substitute(v, table) for k, v in cmd.options})
    check_iam(sim, True, "the documents' bconsole commands")
