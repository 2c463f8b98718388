"""The backend process as the FD sees it: real pipes, strict FD peer, simulator as AWS."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from devkit.driver import backend
from devkit.fdpeer import BackendError, BackupItem
from devkit.helpers import sha256_file
from protocol import Mode

from .common import BLOCK, SECRET, params


def make_instance(sim) -> dict:  # type: ignore[no-untyped-def]
    inst = sim.client.create_instance(
        "web-1",
        volumes=[{"size_gib": 1, "device": "/dev/sda1"}, {"size_gib": 2, "device": "/dev/xvdf"}],
        user_data="#!/bin/sh\necho hi\n",
    )
    v1, v2 = inst["volume_ids"]
    rnd = os.urandom(3 * BLOCK + 1000)
    sim.client.write_volume(v1, 0, rnd)  # blocks 0-3, last one partly
    sim.client.write_volume(v1, 10 * BLOCK, bytes(BLOCK))  # a written all-zero block
    sim.client.write_volume(v1, 700 * BLOCK + 77, b"scattered")
    sim.client.write_volume(v2, (1 << 30) + 5, b"x" * 100000)
    return inst


def backup_items(sim, tmp_path: Path, *extra: str) -> tuple[list[BackupItem], list[tuple[str, str]]]:  # type: ignore[no-untyped-def]
    with backend(Mode.BACKUP, params(sim.endpoint, *extra), tmp_path) as be:
        items = be.peer.read_items(data_phase=True)
        be.peer.end()
        be.peer.terminate()
        messages = list(be.peer.messages)
        assert be.stderr() == b"", "the backend must never write to fd 2"
        assert be.process.wait() == 0
    return items, messages


def restore(items: list[BackupItem], tmp_path: Path, where: Path) -> list[tuple[str, str]]:
    with backend(Mode.RESTORE, ["region=us-east-1"], tmp_path, where=str(where)) as be:
        for it in items:
            name = str(where) + it.name
            stat = f"{it.type} {it.size} 0 0 {it.mode:06o} 1 0"
            reply = be.peer.restore_file(name, stat, it.times)
            assert reply == "OK", (it.name, reply, be.peer.messages)
            if it.data:
                data = bytes(it.data)
                records = [data[i : i + 65536] for i in range(0, len(data), 65536)]
                assert be.peer.send_data(records) == "OK", be.peer.messages
        be.peer.finish()
        be.peer.end()
        be.peer.terminate()
        assert be.stderr() == b""
        return list(be.peer.messages)


def test_full_backup_then_local_restore_gives_snapshot_bytes(sim, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    inst = make_instance(sim)
    iid = inst["instance_id"]
    v1, v2 = inst["volume_ids"]
    want = {v1: sim.client.volume_sha256(v1), v2: sim.client.volume_sha256(v2)}
    items, messages = backup_items(sim, tmp_path)
    names = [it.name for it in items]
    assert names == [
        f"/@amazon-ec2/{iid}/{iid}.json",
        f"/@amazon-ec2/{iid}/{v1}-sda1-1G.json",
        f"/@amazon-ec2/{iid}/{v1}-sda1-1G.bimg",
        f"/@amazon-ec2/{iid}/{v1}.bmp",
        f"/@amazon-ec2/{iid}/{v1}.abmp",
        f"/@amazon-ec2/{iid}/{v2}-xvdf-2G.json",
        f"/@amazon-ec2/{iid}/{v2}-xvdf-2G.bimg",
        f"/@amazon-ec2/{iid}/{v2}.bmp",
        f"/@amazon-ec2/{iid}/{v2}.abmp",
        f"/@amazon-ec2/{iid}/",
    ]
    bimg = next(it for it in items if it.name.endswith("sda1-1G.bimg"))
    assert bimg.size == 1 << 30  # listings show the volume size
    assert bimg.data is not None and len(bimg.data) < 6 * BLOCK  # sparse: zero blocks not stored
    # Kept snapshots: one per volume, now usable as bases.
    snaps = sim.client.snapshots()
    assert sorted(s["volume_id"] for s in snaps) == sorted([v1, v2])
    assert all(s["tags"]["bacula-ec2:state"] == "base" for s in snaps)
    assert any("backed up 1 instance" in text for _st, text in messages)

    # Writes after the backup must not show up in the restore.
    sim.client.write_volume(v1, 0, b"changed after the backup")
    where = tmp_path / "restore"
    rmsgs = restore(items, tmp_path, where)
    assert not [m for m in rmsgs if m[0] in ("E", "Q", "A")], rmsgs
    for vid, dev, gib in ((v1, "sda1", 1), (v2, "xvdf", 2)):
        image = where / "@amazon-ec2" / iid / f"{vid}-{dev}-{gib}G.img"
        assert image.stat().st_size == gib << 30
        assert image.stat().st_blocks * 512 < 8 << 20, "the raw image must be sparse"
        digest = hashlib.sha256()
        with image.open("rb") as fh:
            while chunk := fh.read(1 << 22):
                digest.update(chunk)
        assert digest.hexdigest() == want[vid]
    assert (where / "@amazon-ec2" / iid / f"{iid}.json").exists()


def test_secret_never_leaves_the_process(sim, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    make_instance(sim)
    items, messages = backup_items(sim, tmp_path)
    for it in items:
        if it.name.endswith(".json"):
            assert SECRET.encode() not in bytes(it.data or b"")
    assert not [m for m in messages if SECRET in m[1]]
    log = (tmp_path / "bacula-ec2.log").read_text()
    assert "secret_key" in log and SECRET not in log


def test_bad_parameter_fails_the_job_naming_it(sim, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with backend(Mode.BACKUP, params(sim.endpoint, "concurrent_threads=many"), tmp_path) as be:
        with pytest.raises(BackendError) as err:
            be.peer.read_items(data_phase=True)
        be.peer.close()
        assert err.value.status == "A"
        assert "concurrent_threads" in err.value.text
        assert be.process.wait(timeout=30) == 0
        assert be.stderr() == b""


def test_unknown_instance_fails_and_leaves_no_snapshot(sim, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """With abort_on_error=1 (by default: a Q, and web-1 is backed up; tests/e2e/test_partial_failure.py)."""
    make_instance(sim)
    line = "instances=web-1,i-0123456789abcdef0 abort_on_error=1"
    with backend(Mode.BACKUP, params(sim.endpoint, *line.split()), tmp_path) as be:
        with pytest.raises(BackendError) as err:
            be.peer.read_items(data_phase=True)
        be.peer.close()
        assert err.value.status == "A" and "i-0123456789abcdef0" in err.value.text
    assert sim.client.snapshots() == []


def test_job_without_end_deletes_its_snapshots(sim, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    make_instance(sim)
    with backend(Mode.BACKUP, params(sim.endpoint, "instances=web-1"), tmp_path) as be:
        be.peer.read_items(data_phase=True)
        assert len(sim.client.snapshots()) == 2
        be.peer.close()  # the FD gives up: EOF instead of END (failed or cancelled job)
        assert be.process.wait(timeout=30) == 0
    assert sim.client.snapshots() == []


def test_estimate_lists_files_and_creates_nothing(sim, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    inst = make_instance(sim)
    with backend(Mode.ESTIMATE, params(sim.endpoint, "instances=web-1"), tmp_path) as be:
        items = be.peer.read_items(data_phase=False)
        be.peer.end()
        be.peer.terminate()
    assert len(items) == 10
    assert any(it.name.endswith("-sda1-1G.bimg") and it.size == 1 << 30 for it in items)
    assert inst["instance_id"] in items[0].name
    assert sim.client.snapshots() == []


def test_corrupt_block_image_fails_the_restore_and_leaves_no_image(sim, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    inst = make_instance(sim)
    items, _ = backup_items(sim, tmp_path)
    bimg = next(it for it in items if it.name.endswith("-sda1-1G.bimg"))
    assert bimg.data is not None
    bimg.data[len(bimg.data) // 2] ^= 0xFF  # one flipped bit inside a data block
    where = tmp_path / "restore"
    with backend(Mode.RESTORE, ["region=us-east-1"], tmp_path, where=str(where)) as be:
        assert be.peer.restore_file(str(where) + bimg.name, f"F {bimg.size} 0 0 100640 1 0") == "OK"
        data = bytes(bimg.data)
        assert be.peer.send_data([data[i : i + 65536] for i in range(0, len(data), 65536)]) == "E"
        assert any(st == "E" and "SHA-256" in text for st, text in be.peer.messages), be.peer.messages
        with pytest.raises(BackendError, match="SHA-256"):  # reported again at FINISH: a Fatal
            be.peer.finish()
        be.peer.close()
    image = where / "@amazon-ec2" / inst["instance_id"] / f"{inst['volume_ids'][0]}-sda1-1G.img"
    assert not image.exists(), "a corrupt image must not be left behind"


def test_listing_browses_regions_instances_volumes(sim, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    inst = make_instance(sim)
    iid, (v1, v2) = inst["instance_id"], inst["volume_ids"]

    def ls(path: str) -> list[BackupItem]:
        base = [p for p in params(sim.endpoint) if not p.startswith("instances=")]
        with backend(Mode.LISTING, [*base, f"listing={path}"], tmp_path, level=None) as be:
            items = be.peer.read_items(data_phase=False)
            be.peer.end()
            be.peer.terminate()
        return items

    assert "us-east-1/" in [it.name for it in ls("/")]
    assert [it.name for it in ls("/us-east-1")] == [f"{iid}/"]
    vols = ls(f"/us-east-1/{iid}")
    assert [(it.name, it.size) for it in vols] == [(f"{v1}-sda1-1G", 1 << 30), (f"{v2}-xvdf-2G", 2 << 30)]
    assert sim.client.snapshots() == []


def test_query_instances_volumes_snapshots(sim, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    inst = make_instance(sim)
    backup_items(sim, tmp_path)

    def query(what: str) -> list[tuple[str, str | bytes]]:
        with backend(Mode.QUERY, [*params(sim.endpoint), f"query={what}"], tmp_path, level=None) as be:
            rows = be.peer.read_query()
            be.peer.terminate()
        return rows

    rows = [r[1] for r in query("instances")]
    assert any(inst["instance_id"] in str(r) and "name=web-1" in str(r) for r in rows), rows
    rows = [str(r[1]) for r in query("snapshots")]
    assert len(rows) == 2 and all("state=base" in r and "level=F" in r for r in rows), rows
    rows = [str(r[1]) for r in query("volumes")]
    assert any(inst["volume_ids"][1] in r and "size_gib=2" in r for r in rows), rows
    rows = [str(r[1]) for r in query("nonsense")]
    assert rows and rows[0].startswith("error=unknown query 'nonsense'"), rows


def test_role_arn_assumes_the_role_for_every_call(sim, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    make_instance(sim)
    role = "arn:aws:iam::123456789012:role/bacula-backup"
    items, _messages = backup_items(
        sim, tmp_path, "instances=web-1", f"role_arn={role}", "external_id=ext-42"
    )
    assert any(it.name.endswith(".bimg") for it in items)
    sessions = sim.client.sts_sessions()
    assert sessions and sessions[0]["role_arn"] == role and sessions[0]["external_id"] == "ext-42", sessions


def test_standalone_volumes_are_backed_up_and_restored(sim, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    inst = make_instance(sim)
    lone = sim.client.create_volume(1)  # detached, selected by id
    sim.client.write_volume(lone, 3 * BLOCK + 9, os.urandom(BLOCK))
    want = sim.client.volume_sha256(lone)
    attached = inst["volume_ids"][1]  # also named, but backed up once, with its instance
    items, _ = backup_items(sim, tmp_path, "instances=web-1", f"volumes={lone},{attached}")
    names = [it.name for it in items]
    assert f"/@amazon-ec2/volumes/{lone}-detached-1G.bimg" in names
    assert f"/@amazon-ec2/volumes/{lone}.bmp" in names and "/@amazon-ec2/volumes/" in names
    assert sum(n.endswith(".bimg") and attached in n for n in names) == 1
    assert not any(n.endswith("/volumes.json") for n in names)
    assert {s["volume_id"] for s in sim.client.snapshots()} == {*inst["volume_ids"], lone}
    where = tmp_path / "restore"
    lone_items = [it for it in items if "/volumes/" in it.name]
    messages = restore(lone_items, tmp_path, where)
    assert not [m for m in messages if m[0] in ("E", "Q", "A")], messages
    image = where / "@amazon-ec2" / "volumes" / f"{lone}-detached-1G.img"
    assert sha256_file(image) == want


def test_unknown_standalone_volume_is_named(sim, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with backend(Mode.BACKUP, params(sim.endpoint, "volumes=vol-0123456789abcdef0"), tmp_path) as be:
        with pytest.raises(BackendError) as err:
            be.peer.read_items(data_phase=True)
        be.peer.close()
    assert err.value.status == "A" and "volume vol-0123456789abcdef0: not found" in err.value.text
