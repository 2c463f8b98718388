"""A restore through the backend process is exact or it fails (issue 9): real pipes, the
strict FD peer, chains backed up from the simulator.

The FD's view of the outcome (metaplugin-protocol.md §6.7): any E or Q before FINISH, or
an A, makes the job "Restore Error"; only then is END skipped. So "fails" below means: an
A that names the damaged file, and nothing of the volume left on disk.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest.mock import patch

import boto3
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bacula_ec2.formats.blockimage import PREFIX_SIZE, RecordDecoder
from devkit import driver
from devkit.fdpeer import BackendError, BackupItem
from devkit.helpers import sha256_file
from protocol import Mode

from .common import BLOCK, FakeBacula, Job

GIB = 1 << 30


@dataclass(frozen=True)
class File:
    """One file as the FD hands it to the backend in a restore."""

    name: str  # catalog path
    type: str
    mode: int
    data: bytes
    mtime: int = 0


@dataclass
class Recorded:
    instance_id: str
    vid: str  # the volume restored
    other: str  # a second volume: another chain
    jobs: list[Job]
    want: dict[int, str]  # job index -> SHA-256 of the volume at that backup


def files_of(jobs: Sequence[Job], volume: str | None = None) -> list[File]:
    """Bacula's restore of `jobs`: the newest version of each path (optionally only the
    files of one volume, plus the instance's directory and JSON)."""
    newest: dict[str, BackupItem] = {}
    for job in jobs:
        for it in job.items:
            newest[it.name] = it
    out = []
    for it in newest.values():
        if volume is not None and "/vol-" in it.name and volume not in it.name:
            continue
        out.append(File(it.name, it.type or "F", it.mode, bytes(it.data or b""), it.times[1]))
    return out


@pytest.fixture(scope="module")
def recorded(simulator: Any, tmp_path_factory: pytest.TempPathFactory) -> Recorded:
    """F, I, D, I, I, I of two small volumes, once per module. With keep_full_snapshot=yes
    the Differential retires its own snapshot, so the Incremental after it compares with
    the Incremental before it, which is not in the restore of the latest state."""
    sim = simulator
    sim.client.reset()
    tmp = tmp_path_factory.mktemp("recorded")
    inst = sim.client.create_instance(
        "web-1", volumes=[{"size_gib": 1, "device": "/dev/sda1"}, {"size_gib": 1, "device": "/dev/xvdf"}]
    )
    vid, other = inst["volume_ids"]
    w = sim.client.write_volume
    w(vid, 0, os.urandom(2 * BLOCK + 100))
    w(other, 5 * BLOCK, os.urandom(BLOCK))
    bacula = FakeBacula(sim, tmp, ("instances=web-1", "keep_full_snapshot=yes"))
    want = {}
    rng = random.Random(3)
    for k, level in enumerate("FIDIII"):
        if k:
            w(
                vid,
                rng.randrange(200) * BLOCK + rng.randrange(BLOCK - 100),
                os.urandom(rng.randrange(50, 5000)),
            )
            w(vid, rng.randrange(200) * BLOCK, bytes(BLOCK) if k % 2 else os.urandom(BLOCK))
            w(other, rng.randrange(200) * BLOCK, os.urandom(100))
        bacula.backup(level)
        want[k] = sim.client.volume_sha256(vid)
    rec = Recorded(inst["instance_id"], vid, other, bacula.jobs, want)
    # The Incremental after the Differential is based on the Differential's own snapshot
    # (kept for it), so Bacula's selection F + D + I + I + I is one chain of bases.
    bases = {k: header(bimg(rec, k)).base_snapshot_id for k in range(6)}
    snaps = {k: header(bimg(rec, k)).snapshot_id for k in range(6)}
    assert bases[3] == snaps[2] and bases[2] == snaps[0], (bases, snaps)
    return rec


def bimg(rec: Recorded, k: int, volume: str | None = None) -> File:
    vol = volume or rec.vid
    return next(f for f in files_of([rec.jobs[k]], vol) if f.name.endswith(".bimg"))


def header(f: File) -> Any:
    dec = RecordDecoder()
    for item in dec.feed(f.data[:4096]):
        return item
    raise AssertionError("no header")


# The Bacula selections: the latest state of 1-, 2- and 5-part chains.
PICKS = {1: [0], 2: [0, 1], 5: [0, 2, 3, 4, 5]}
POINT = {1: 0, 2: 1, 5: 5}


@contextmanager
def restore_backend(working_dir: Path, where: str, replace: str = "a", jobid: int = 60) -> Iterator[Any]:
    """driver.backend for a restore, with the Replace= letter of our choice."""
    original = driver.job_lines

    def lines(*args: Any, **kw: Any) -> list[str]:
        return [f"Replace={replace}" if line == "Replace=a" else line for line in original(*args, **kw)]

    with (
        patch.object(driver, "job_lines", lines),
        driver.backend(Mode.RESTORE, ["region=us-east-1"], working_dir, where=where, jobid=jobid) as be,
    ):
        yield be


@dataclass
class Result:
    status: str  # "T" (Restore OK) or "E" (Restore Error), as the FD would decide
    messages: list[tuple[str, str]]
    replies: list[str]

    def fatal(self) -> str:
        return " | ".join(t for s, t in self.messages if s == "A")


def play(working_dir: Path, where: Path | str, files: Sequence[File], replace: str = "a") -> Result:
    """The FD's side of a restore (§6): FNAME per file, DATA when it has bytes, FINISH;
    END only if nothing failed."""
    replies = []
    with restore_backend(working_dir, str(where), replace) as be:
        peer = be.peer
        aborted = False
        try:
            for f in files:
                reply = peer.restore_file(
                    f"{where}{f.name}",
                    f"{f.type} {len(f.data)} 0 0 {f.mode:06o} 1 0",
                    (f.mtime, f.mtime, f.mtime),
                )
                replies.append(reply)
                if reply == "OK" and f.data:
                    replies.append(
                        peer.send_data([f.data[i : i + 65536] for i in range(0, len(f.data), 65536)])
                    )
            peer.finish()
        except BackendError as exc:
            assert exc.status == "A", exc
            aborted = True
        failed = aborted or any(s in "EQ" for s, _t in peer.messages)
        if failed:
            peer.close()  # §6.7: after an Error the FD skips END and T
        else:
            peer.end()
            peer.terminate()
        assert be.stderr() == b"", "nothing may reach fd 2"
        messages = list(peer.messages)
    assert be.process.wait() == 0
    return Result("E" if failed else "T", messages, replies)


def leftovers(where: Path, vid: str) -> list[str]:
    """Files of the volume (images, temporaries, its JSON and maps) left under `where`."""
    return [
        str(p.relative_to(where))
        for p in where.rglob("*")
        if (p.is_file() or p.is_symlink()) and (vid in p.name or p.name.startswith(".") or p.suffix == ".img")
    ]


def image(rec: Recorded, where: Path) -> Path:
    return where / "@amazon-ec2" / rec.instance_id / f"{rec.vid}-sda1-1G.img"


# ---------------------------------------------------------------------------- healthy


@pytest.mark.parametrize("n", [1, 2, 5])
def test_healthy_chain_restores_exactly_in_any_order(recorded: Recorded, tmp_path: Path, n: int) -> None:
    rec = recorded
    files = files_of([rec.jobs[k] for k in PICKS[n]], rec.vid)
    orders = [files, files[::-1]]
    if n == 5:
        rng = random.Random(5)
        orders = [rng.sample(files, len(files)) for _ in range(3)]
    for i, order in enumerate(orders[: 1 if n == 1 else None]):
        where = tmp_path / f"r{i}"
        result = play(tmp_path, where, order)
        assert result.status == "T", result.messages
        assert sha256_file(image(rec, where)) == rec.want[POINT[n]]
        assert not [p for p in leftovers(where, rec.vid) if p.rsplit("/", 1)[-1].startswith(".")]


# ---------------------------------------------------------------------------- damaged


KINDS = ("header-truncated", "data-truncated", "empty", "other-volume", "twice", "sibling")


def damage(rec: Recorded, files: list[File], kind: str, rng: random.Random) -> tuple[list[File], str]:
    parts = [i for i, f in enumerate(files) if f.name.endswith(".bimg")]
    i = rng.choice(parts)
    f = files[i]
    hlen = PREFIX_SIZE + int.from_bytes(f.data[8:12], "big")
    if kind == "header-truncated":
        files[i] = File(f.name, f.type, f.mode, f.data[: rng.randrange(1, hlen + 1)])
    elif kind == "data-truncated":
        files[i] = File(f.name, f.type, f.mode, f.data[: rng.randrange(hlen + 1, len(f.data))])
    elif kind == "empty":
        files[i] = File(f.name, f.type, f.mode, b"")
    elif kind == "other-volume":
        k = rng.randrange(6)
        files[i] = File(f.name, f.type, f.mode, bimg(rec, k, rec.other).data)
    elif kind == "twice":
        files.insert(rng.randrange(len(files) + 1), f)
    else:  # another part of the chain under this part's name (an Incremental's file replaced)
        others = [files[j] for j in parts if j != i] or [bimg(rec, 1)]
        files[i] = File(f.name, f.type, f.mode, rng.choice(others).data)
    return files, f.name


@pytest.mark.parametrize("n", [1, 2, 5])
@pytest.mark.parametrize("kind", KINDS)
def test_damaged_part_fails_naming_it_and_leaves_no_image(
    recorded: Recorded, tmp_path: Path, n: int, kind: str
) -> None:
    rec = recorded
    rng = random.Random(f"{n}{kind}")
    files, culprit = damage(rec, files_of([rec.jobs[k] for k in PICKS[n]], rec.vid), kind, rng)
    orders = [files, files[::-1]] if n == 2 else [rng.sample(files, len(files))]
    for i, order in enumerate(orders):
        where = tmp_path / f"r{i}"
        result = play(tmp_path, where, order)
        assert result.status == "E", result.messages
        assert culprit in result.fatal() and rec.vid in result.fatal(), result.messages
        assert not leftovers(where, rec.vid), leftovers(where, rec.vid)


def test_truncated_incremental_full_first_and_incremental_first(recorded: Recorded, tmp_path: Path) -> None:
    """The two orders of the issue: no mixed image, no older image, a Restore Error."""
    rec = recorded
    full, inc = bimg(rec, 0), bimg(rec, 1)
    cut = File(inc.name, inc.type, inc.mode, inc.data[: len(inc.data) // 2])
    for i, order in enumerate([[full, cut], [cut, full]]):
        where = tmp_path / f"r{i}"
        result = play(tmp_path, where, order)
        assert result.status == "E" and inc.name in result.fatal(), result.messages
        errors = [t for s, t in result.messages if s == "E"]
        assert errors and "truncated" in errors[0], result.messages  # the FD's Error, before FINISH
        assert not leftovers(where, rec.vid)


# ---------------------------------------------------------------------------- links

VICTIM = b"victim bytes that must survive\n"


@pytest.mark.parametrize(
    ("level", "link"),
    [
        ("target", "symlink"),
        ("@amazon-ec2", "symlink"),
        ("instance", "symlink"),
        ("instance.json", "symlink"),
        ("instance.json", "hardlink"),
        ("image", "symlink"),
        ("image", "hardlink"),
        ("volume.json", "symlink"),
        ("volume.json", "hardlink"),
    ],
)
def test_links_planted_in_where_are_never_followed(
    recorded: Recorded, tmp_path: Path, level: str, link: str
) -> None:
    rec = recorded
    outside = tmp_path / "outside"
    vdir = outside / "dir"
    vdir.mkdir(parents=True)
    victim = outside / "victim"
    victim.write_bytes(VICTIM)
    where = tmp_path / "where"
    ns = where / "@amazon-ec2"
    folder = ns / rec.instance_id
    planted = {
        "target": where,
        "@amazon-ec2": ns,
        "instance": folder,
        "instance.json": folder / f"{rec.instance_id}.json",
        "image": folder / f"{rec.vid}-sda1-1G.img",
        "volume.json": folder / f"{rec.vid}-sda1-1G.json",
    }[level]
    planted.parent.mkdir(parents=True, exist_ok=True)
    if link == "hardlink":
        os.link(victim, planted)
    else:
        planted.symlink_to(vdir if level in ("target", "@amazon-ec2", "instance") else victim)
    result = play(tmp_path, where, files_of([rec.jobs[0], rec.jobs[1]], rec.vid))
    assert victim.read_bytes() == VICTIM and list(vdir.iterdir()) == []
    if level in ("target", "@amazon-ec2", "instance"):
        assert result.status == "E" and f"{planted} is a symbolic link" in result.fatal(), result.messages
        assert planted.is_symlink()
        return
    assert result.status == "T", result.messages
    assert planted.is_file() and not planted.is_symlink()
    assert planted.stat().st_ino != victim.stat().st_ino
    if level == "image":
        assert sha256_file(image(rec, where)) == rec.want[1]


# ---------------------------------------------------------------------------- Replace=


def test_replace_never_keeps_and_always_replaces(recorded: Recorded, tmp_path: Path) -> None:
    rec = recorded
    where = tmp_path / "where"
    folder = where / "@amazon-ec2" / rec.instance_id
    folder.mkdir(parents=True)
    img, doc = image(rec, where), folder / f"{rec.instance_id}.json"
    img.write_bytes(b"an image restored before")
    doc.write_bytes(b"{}")
    files = files_of([rec.jobs[0], rec.jobs[1]], rec.vid)
    result = play(tmp_path, where, files, replace="n")
    assert result.status == "T", result.messages
    assert img.read_bytes() == b"an image restored before" and doc.read_bytes() == b"{}"
    warnings = [t for s, t in result.messages if s == "W"]
    assert any("Replace=never" in t and rec.vid in t for t in warnings), result.messages
    assert "SKIP" in result.replies
    assert sorted(p.name for p in folder.iterdir()) == sorted([img.name, doc.name])
    result = play(tmp_path, where, files, replace="a")
    assert result.status == "T", result.messages
    assert sha256_file(img) == rec.want[1] and doc.read_bytes() != b"{}"


# ---------------------------------------------------------------------------- newest part (AWS)


def ec2(sim: Any) -> Any:
    return boto3.client("ec2", **sim.boto3_kwargs("us-east-1"))


def move(sim: Any, volume: str, instance: str, device: str) -> None:
    c = ec2(sim)
    c.detach_volume(VolumeId=volume)
    c.get_waiter("volume_available").wait(VolumeIds=[volume], WaiterConfig={"Delay": 0.2, "MaxAttempts": 100})
    c.attach_volume(VolumeId=volume, InstanceId=instance, Device=device)
    c.get_waiter("volume_in_use").wait(VolumeIds=[volume], WaiterConfig={"Delay": 0.2, "MaxAttempts": 100})


def restore_into_aws(
    sim: Any, tmp_path: Path, files: Sequence[File], *options: str, jobid: int = 70
) -> Result:
    from .common import params

    with driver.backend(
        Mode.RESTORE, params(sim.endpoint, "instances=web-1", *options), tmp_path, where="/", jobid=jobid
    ) as be:
        peer = be.peer
        try:
            for f in files:
                reply = peer.restore_file(f.name, f"{f.type} {len(f.data)} 0 0 {f.mode:06o} 1 0")
                assert reply == "OK", peer.messages
                if f.data:
                    assert (
                        peer.send_data([f.data[i : i + 65536] for i in range(0, len(f.data), 65536)]) == "OK"
                    )
            peer.finish()
            peer.end()
            peer.terminate()
            status = "T"
        except BackendError as exc:
            assert exc.status == "A", exc
            peer.close()
            status = "E"
        assert be.stderr() == b""
        messages = list(peer.messages)
    return Result(status, messages, [])


def tags(resource: dict[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in resource.get("Tags", [])}


def test_restore_into_aws_takes_device_tags_and_size_from_the_newest_part(sim: Any, tmp_path: Path) -> None:
    """The data volume is re-attached at another device and re-tagged between the Full and
    the Incremental: whatever the order, the restore carries the Incremental's tags and
    device, and raises no warning that a device was not in the backup."""
    inst = sim.client.create_instance(
        "web-1",
        volumes=[
            {"size_gib": 1, "device": "/dev/sda1"},
            {"size_gib": 1, "device": "/dev/xvdf", "tags": {"role": "db", "old": "yes"}},
        ],
    )
    iid, (root, data) = inst["instance_id"], inst["volume_ids"]
    sim.client.write_volume(root, 0, os.urandom(BLOCK))
    sim.client.write_volume(data, 3 * BLOCK, os.urandom(BLOCK))
    bacula = FakeBacula(sim, tmp_path, ("instances=web-1",))
    full = bacula.backup("F")
    move(sim, data, iid, "/dev/xvdg")
    c = ec2(sim)
    c.create_tags(Resources=[data], Tags=[{"Key": "role", "Value": "cache"}])
    c.delete_tags(Resources=[data], Tags=[{"Key": "old"}])
    sim.client.write_volume(data, 9 * BLOCK, b"after the move")
    inc = bacula.backup("I")
    want = sim.client.volume_sha256(data)
    files = files_of([full, inc])
    assert any(f"{data}-xvdf-1G" in f.name for f in files) and any(f"{data}-xvdg-1G" in f.name for f in files)
    for seed in (1, 2):
        order = random.Random(seed).sample(files, len(files))
        before = {v["VolumeId"] for v in c.describe_volumes()["Volumes"]}
        result = restore_into_aws(sim, tmp_path, order, jobid=70 + seed)
        assert result.status == "T", result.messages
        made = [v for v in c.describe_volumes()["Volumes"] if v["VolumeId"] not in before]
        (new,) = [v for v in made if tags(v).get("bacula-ec2:restored-from") == data]
        assert tags(new)["role"] == "cache" and "old" not in tags(new), tags(new)
        assert sim.client.volume_sha256(new["VolumeId"]) == want
    # As a new instance: the data volume is at its newest device.
    order = random.Random(3).sample(files, len(files))
    result = restore_into_aws(sim, tmp_path, order, "restore_as=instance", jobid=80)
    assert result.status == "T", result.messages
    assert not [t for s, t in result.messages if s == "W" and "not in the backup" in t], result.messages
    new_ids = [
        i["InstanceId"]
        for r in c.describe_instances()["Reservations"]
        for i in r["Instances"]
        if i["InstanceId"] != iid and i["State"]["Name"] != "terminated"
    ]
    (new_iid,) = new_ids
    desc = c.describe_instances(InstanceIds=[new_iid])["Reservations"][0]["Instances"][0]
    devices = {m["DeviceName"]: m["Ebs"]["VolumeId"] for m in desc["BlockDeviceMappings"]}
    assert set(devices) == {"/dev/sda1", "/dev/xvdg"}, devices
    assert sim.client.volume_sha256(devices["/dev/xvdg"]) == want
    # And locally: one image, under the newest name, beside the newest JSON only.
    where = tmp_path / "local"
    local = play(tmp_path, where, random.Random(4).sample(files, len(files)))
    assert local.status == "T", local.messages
    folder = where / "@amazon-ec2" / iid
    names = sorted(p.name for p in folder.iterdir() if data in p.name)
    assert names == [f"{data}-xvdg-1G.img", f"{data}-xvdg-1G.json", f"{data}.abmp", f"{data}.bmp"], names
    assert sha256_file(folder / f"{data}-xvdg-1G.img") == want


def test_a_moved_volume_lands_under_its_newest_instance(sim: Any, tmp_path: Path) -> None:
    one = sim.client.create_instance(
        "web-1", volumes=[{"size_gib": 1, "device": "/dev/sda1"}, {"size_gib": 1, "device": "/dev/xvdf"}]
    )
    two = sim.client.create_instance("web-2", volumes=[{"size_gib": 1, "device": "/dev/sda1"}])
    i1, i2 = one["instance_id"], two["instance_id"]
    moved, root2 = one["volume_ids"][1], two["volume_ids"][0]
    sim.client.write_volume(moved, 0, os.urandom(2 * BLOCK))
    sim.client.write_volume(root2, 0, os.urandom(BLOCK))
    bacula = FakeBacula(sim, tmp_path, ("instances=web-1,web-2",))
    full = bacula.backup("F")
    move(sim, moved, i2, "/dev/xvdh")
    sim.client.write_volume(moved, 7 * BLOCK, b"written on web-2")
    inc = bacula.backup("I")
    want = {v: sim.client.volume_sha256(v) for v in (moved, root2)}
    everything = files_of([full, inc])
    assert any(f.name.startswith(f"/@amazon-ec2/{i1}/{moved}") for f in everything)
    # Locally: the moved volume's image under web-2 only.
    where = tmp_path / "local"
    result = play(tmp_path, where, random.Random(1).sample(everything, len(everything)))
    assert result.status == "T", result.messages
    assert not list((where / "@amazon-ec2" / i1).glob(f"{moved}*"))
    assert sha256_file(where / "@amazon-ec2" / i2 / f"{moved}-xvdh-1G.img") == want[moved]
    # Into AWS as a new instance: web-2's files plus the moved volume's older part (under
    # web-1's folder) make one instance, web-2's, with the volume at its newest device.
    selection = [
        f for f in everything if f"/{i2}/" in f.name or (moved in f.name and f.name.endswith(".bimg"))
    ]
    c = ec2(sim)
    result = restore_into_aws(
        sim, tmp_path, random.Random(2).sample(selection, len(selection)), "restore_as=instance", jobid=90
    )
    assert result.status == "T", result.messages
    new = [
        i
        for r in c.describe_instances()["Reservations"]
        for i in r["Instances"]
        if i["InstanceId"] not in (i1, i2) and i["State"]["Name"] != "terminated"
    ]
    assert len(new) == 1 and tags(new[0])["bacula-ec2:restored-from"] == i2, new
    devices = {m["DeviceName"]: m["Ebs"]["VolumeId"] for m in new[0]["BlockDeviceMappings"]}
    assert set(devices) == {"/dev/sda1", "/dev/xvdh"}, devices
    assert sim.client.volume_sha256(devices["/dev/xvdh"]) == want[moved]
    assert sim.client.volume_sha256(devices["/dev/sda1"]) == want[root2]


def test_sparse_sha256_is_the_plain_digest(tmp_path: Path) -> None:
    from devkit.helpers import sha256_file as plain

    p = tmp_path / "sparse"
    with p.open("wb") as fh:
        fh.truncate(9 << 20)
        fh.seek(5 << 20)
        fh.write(os.urandom(100000))
    assert sha256_file(p) == plain(p)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.sampled_from([2, 5]), kind=st.sampled_from((*KINDS, None)), data=st.data())
def test_any_order_any_damage_through_the_pipes(
    recorded: Recorded, tmp_path: Path, n: int, kind: str | None, data: st.DataObject
) -> None:
    """Hypothesis over the backend process: exact, or a Restore Error naming the file and
    nothing of the volume left."""
    rec = recorded
    seed = data.draw(st.integers(0, 2**31), label="seed")
    files = files_of([rec.jobs[k] for k in PICKS[n]], rec.vid)
    culprit = None
    if kind is not None:
        files, culprit = damage(rec, files, kind, random.Random(seed))
    files = data.draw(st.permutations(files), label="order")
    where = tmp_path / f"h{seed}-{n}-{kind}"
    result = play(tmp_path, where, files)
    if culprit is None:
        assert result.status == "T", result.messages
        assert sha256_file(image(rec, where)) == rec.want[POINT[n]]
    else:
        assert result.status == "E" and culprit in result.fatal(), result.messages
        assert not leftovers(where, rec.vid), leftovers(where, rec.vid)
