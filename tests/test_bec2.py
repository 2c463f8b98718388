"""bec2 alone: a folder that is a catalog of backups, point-in-time restores, exit codes.

bec2 runs in-process (`bacula_ec2.cli.main`) against the simulator, except for one
subprocess run that checks the installed entry point and its exit code.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from bacula_ec2.cli import main
from bacula_ec2.jobs import chain
from devkit.helpers import sha256_file
from devkit.simulator.fixtures import ACCESS_KEY

from .bec2_common import BLOCK, SECRET

ALL_BLOCKS = "every allocated block"


def sim_args(sim: Any) -> list[str]:
    return [
        "--region=us-east-1",
        f"--access_key={ACCESS_KEY}",
        f"--secret_key={SECRET}",
        f"--endpoint_url={sim.endpoint}",
    ]


def bec2(capsys: pytest.CaptureFixture[str], sim: Any, *args: str, code: int = 0) -> tuple[str, str]:
    """Run bec2 in-process; returns (stdout, stderr) after checking the exit code."""
    rc = main([*args, *(sim_args(sim) if sim is not None else [])])
    out, err = capsys.readouterr()
    assert rc == code, f"exit {rc}, wanted {code}:\n{err}"
    assert SECRET not in out + err
    return out, err


def backups_of(store: Path) -> list[Path]:
    """The backup directories, in job id order (the names sort by time to the second)."""
    return sorted((store / "backups").iterdir(), key=lambda p: int(p.name.rsplit("-", 1)[1]))


def manifest_of(backup: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((backup / "bec2-backup.json").read_text())
    return doc


@pytest.fixture
def fast_sim(sim: Any) -> Any:
    sim.client.set_options(snapshot_delay=0.02)
    return sim


def make_instance(sim: Any, name: str) -> tuple[str, str]:
    inst = sim.client.create_instance(name, volumes=[{"size_gib": 1, "device": "/dev/sda1"}])
    iid, vid = inst["instance_id"], inst["volume_ids"][0]
    sim.client.write_volume(vid, 0, os.urandom(4 * BLOCK))
    return iid, vid


def test_seven_points_in_one_folder_restore_exactly(fast_sim: Any, tmp_path: Path, capsys: Any) -> None:
    """F, I, I, F, I, D, I into one folder: --before at every point restores that point."""
    sim = fast_sim
    iid, vid = make_instance(sim, "cli-web")
    w = sim.client.write_volume
    store = tmp_path / "store"
    common = ["--instances=cli-web", "--keep_full_snapshot=yes", f"--output={store}", "--verbose"]
    steps = [
        ("F", []),
        ("I", [(2 * BLOCK, b"one")]),
        ("I", [(0, bytes(BLOCK)), (99 * BLOCK, b"n")]),
        ("F", [(5 * BLOCK, os.urandom(BLOCK))]),
        ("I", [(99 * BLOCK, bytes(BLOCK)), (7, b"z")]),
        ("D", [(500 * BLOCK, b"d"), (1 * BLOCK, bytes(BLOCK))]),
        ("I", [(2 * BLOCK + 100, b"last"), (1023 * BLOCK, b"end")]),
    ]
    points = []
    for n, (level, writes) in enumerate(steps):
        for offset, data in writes:
            w(vid, offset, data)
        _out, err = bec2(capsys, sim, "--operation=backup", f"--level={level}", *common)
        assert f"backup job {n + 1} " in err and "stored under" in err, err
        if level != "F":
            assert ALL_BLOCKS not in err, f"backup {n + 1} ({level}) found no base:\n{err}"
        points.append((dt.datetime.now(dt.UTC).isoformat(), sim.client.volume_sha256(vid)))
    dirs = backups_of(store)
    assert [manifest_of(d)["level"] for d in dirs] == [lvl for lvl, _w in steps]
    assert [manifest_of(d)["job_id"] for d in dirs] == list(range(1, 8))
    # nothing was overwritten: each backup's block image is in its own directory
    images = sorted(str(p.relative_to(store)) for p in store.rglob("*.bimg"))
    assert len(images) == 7 and len({Path(p).parts[1] for p in images}) == 7, images
    assert len(points) == len({h for _t, h in points}), "every step must change the volume"
    for n, (when, want) in enumerate(points):
        target = tmp_path / f"r{n}"
        bec2(
            capsys,
            None,
            "--operation=restore",
            f"--output={store}",
            f"--local_path={target}",
            f"--before={when}",
        )
        assert sha256_file(target / "@amazon-ec2" / iid / f"{vid}-sda1-1G.img") == want, f"point {n + 1}"
        doc = json.loads((target / "@amazon-ec2" / iid / f"{vid}-sda1-1G.json").read_text())
        assert doc["backup"]["job_id"] == n + 1, "the JSON comes from the newest selected backup"
    latest = tmp_path / "latest"
    bec2(capsys, None, "--operation=restore", f"--output={store}", f"--local_path={latest}")
    assert sha256_file(latest / "@amazon-ec2" / iid / f"{vid}-sda1-1G.img") == points[-1][1]


def test_two_folders_keep_their_own_bases(fast_sim: Any, tmp_path: Path, capsys: Any) -> None:
    sim = fast_sim
    iid, vid = make_instance(sim, "shared")
    folders = [tmp_path / "a", tmp_path / "b"]
    want: dict[Path, str] = {}
    for round_, level in enumerate(["F", "I", "I"]):
        for k, folder in enumerate(folders):
            sim.client.write_volume(vid, (10 + 3 * round_ + k) * BLOCK, os.urandom(1000))
            _o, err = bec2(
                capsys, sim, "--operation=backup", f"--level={level}", "--instances=shared",
                f"--output={folder}", "--verbose",
            )  # fmt: skip
            assert ALL_BLOCKS not in err, f"{folder.name} round {round_}:\n{err}"
            if level == "I":
                assert "changes since snapshot" in err
            want[folder] = sim.client.volume_sha256(vid)
    ids = [json.loads((f / "bec2-folder.json").read_text())["folder_id"] for f in folders]
    assert ids[0] != ids[1]
    for folder, folder_id in zip(folders, ids, strict=True):
        docs = [manifest_of(d) for d in backups_of(folder)]
        assert {d["job"] for d in docs} == {f"bec2-{folder_id}"}
        assert all(chain.job_resource(d["job_name"]) == f"bec2-{folder_id}" for d in docs)
    tags = [{t["Key"]: t["Value"] for t in s["tags"]} if isinstance(s["tags"], list) else s["tags"]
            for s in sim.client.snapshots()]  # fmt: skip
    assert sorted(t["bacula-ec2:job"] for t in tags) == sorted(f"bec2-{i}" for i in ids)
    for folder in folders:
        target = tmp_path / f"r-{folder.name}"
        bec2(capsys, None, "--operation=restore", f"--output={folder}", f"--local_path={target}")
        assert sha256_file(target / "@amazon-ec2" / iid / f"{vid}-sda1-1G.img") == want[folder]


def test_job_name_override_is_the_chain(fast_sim: Any, tmp_path: Path, capsys: Any) -> None:
    sim = fast_sim
    make_instance(sim, "named")
    store = tmp_path / "s"
    args = ["--operation=backup", "--instances=named", f"--output={store}", "--job_name=nightly-web"]
    bec2(capsys, sim, *args)
    _o, err = bec2(capsys, sim, *args, "--level=I", "--verbose")
    assert ALL_BLOCKS not in err
    docs = [manifest_of(d) for d in backups_of(store)]
    assert [d["job"] for d in docs] == ["nightly-web", "nightly-web"]
    assert [chain.job_resource(d["job_name"]) for d in docs] == ["nightly-web", "nightly-web"]
    # without the override the folder's own chain has no Full yet
    _o, err = bec2(capsys, sim, "--operation=backup", "--level=I", "--instances=named", f"--output={store}")
    assert "doing a Full backup" in err
    bec2(capsys, None, "--operation=backup", f"--output={store}", "--job_name=bad name", code=2)


def test_list_incomplete_and_no_image(fast_sim: Any, tmp_path: Path, capsys: Any) -> None:
    sim = fast_sim
    iid, vid = make_instance(sim, "lister")
    store = tmp_path / "s"
    empty = tmp_path / "empty"
    bec2(capsys, None, "--operation=list", f"--output={empty}", code=1)
    before_all = dt.datetime.now(dt.UTC).isoformat()
    time.sleep(0.01)
    common = ["--operation=backup", "--instances=lister", f"--output={store}"]
    bec2(capsys, sim, *common)
    first = sim.client.volume_sha256(vid)
    sim.client.write_volume(vid, 3 * BLOCK, b"second")
    bec2(capsys, sim, *common, "--level=I")
    second = backups_of(store)[1]
    # a backup directory without its manifest is incomplete: ignored by restores and the base choice
    (second / "bec2-backup.json").rename(tmp_path / "saved-manifest.json")
    out, _err = bec2(capsys, None, "--operation=list", f"--output={store}")
    lines = out.splitlines()
    assert lines[1].split() == [
        "JOBID",
        "STARTED",
        "(UTC)",
        "LEVEL",
        "STATUS",
        "SIZE",
        "VOLUMES",
        "JOB",
        "INSTANCES",
    ]
    rows = [line.split() for line in lines[2:] if line[:5].strip().isdigit()]
    assert [(r[0], r[3], r[4]) for r in rows] == [
        ("1", "Full", "complete"),
        ("2", "Incremental", "incomplete"),
    ]
    assert rows[0][-1] == iid and rows[0][7] == "1"
    assert f"directory backups/{second.name}" in out
    target = tmp_path / "r"
    bec2(capsys, None, "--operation=restore", f"--output={store}", f"--local_path={target}")
    assert sha256_file(target / "@amazon-ec2" / iid / f"{vid}-sda1-1G.img") == first
    _o, err = bec2(capsys, sim, *common, "--level=I", "--verbose")
    assert "against Full job 1" in err
    # --verbose lists the volumes with their snapshots
    out, _err = bec2(capsys, None, "--operation=list", f"--output={store}", "--verbose")
    assert f"{vid} ({iid}, sda1, 1 GiB): snapshot snap-" in out
    # no disk image: --before older than every backup
    nothing = tmp_path / "nothing"
    _o, err = bec2(
        capsys, None, "--operation=restore", f"--output={store}", f"--local_path={nothing}",
        f"--before={before_all}", code=1,
    )  # fmt: skip
    assert "no backup" in err and "started before" in err and "Full job 1" in err
    assert not nothing.exists()
    # a folder with only incomplete backups
    for d in backups_of(store):
        (d / "bec2-backup.json").unlink(missing_ok=True)
    _o, err = bec2(
        capsys, None, "--operation=restore", f"--output={store}", f"--local_path={nothing}", code=1
    )
    assert "no complete backup" in err
    assert not nothing.exists()


def test_configuration_only_backup_restores_no_image(fast_sim: Any, tmp_path: Path, capsys: Any) -> None:
    sim = fast_sim
    make_instance(sim, "cfg")
    store = tmp_path / "s"
    _o, err = bec2(
        capsys, sim, "--operation=backup", "--instances=cfg", "--exclude_boot_volume=yes", f"--output={store}"
    )
    assert "configuration only" in err
    out, _e = bec2(capsys, None, "--operation=list", f"--output={store}")
    assert "complete" in out
    target = tmp_path / "r"
    _o, err = bec2(capsys, None, "--operation=restore", f"--output={store}", f"--local_path={target}", code=1)
    assert "no disk image" in err
    assert not target.exists()


def test_failed_commit_and_interrupt_leave_no_backup(
    fast_sim: Any, tmp_path: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    sim = fast_sim
    make_instance(sim, "flaky")
    store = tmp_path / "s"
    common = ["--operation=backup", "--instances=flaky", f"--output={store}"]
    bec2(capsys, sim, *common)
    kept = {s["id"] for s in sim.client.snapshots()}
    from bacula_ec2.aws import AwsError
    from bacula_ec2.jobs.backup import BackupJob

    def refuse(self: BackupJob) -> None:
        raise AwsError("CreateTags", "RequestLimitExceeded", "throttled beyond the retry budget")

    def interrupt(self: BackupJob) -> None:
        raise KeyboardInterrupt

    for fault, message, code in ((refuse, "throttled", 1), (interrupt, "interrupted", 130)):
        monkeypatch.setattr(BackupJob, "commit", fault)
        _o, err = bec2(capsys, sim, *common, "--level=I", code=code)
        assert message in err
        assert len(backups_of(store)) == 1, "the failed backup's directory was removed"
        assert {s["id"] for s in sim.client.snapshots()} == kept, "its snapshots were rolled back"
    monkeypatch.undo()
    _o, err = bec2(capsys, sim, *common, "--level=I", "--verbose")
    assert ALL_BLOCKS not in err and "backup job 2 " in err


def test_legacy_folder_is_refused(tmp_path: Path, capsys: Any) -> None:
    old = tmp_path / "old"
    (old / "@amazon-ec2" / "i-0123").mkdir(parents=True)
    (old / "@amazon-ec2" / "i-0123" / "i-0123.json").write_text("{}")
    for op in (["--operation=list"], ["--operation=restore", f"--local_path={tmp_path / 'r'}"]):
        _o, err = bec2(capsys, None, *op, f"--output={old}", code=1)
        assert "bec2 0.1" in err
    _o, err = bec2(capsys, None, "--operation=backup", "--instances=x", f"--output={old}", code=1)
    assert "bec2 0.1" in err
    assert not (old / "bec2-folder.json").exists()


def test_exit_codes_and_help(sim: Any, tmp_path: Path, capsys: Any) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bacula_ec2.cli", "--help"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0
    for name in (
        "--region",
        "--instances",
        "--keep_full_snapshot",
        "--bitmap_headers",
        "--local_path",
        "list",
    ):
        assert name in proc.stdout
    proc = subprocess.run(
        [sys.executable, "-m", "bacula_ec2.cli", "--operation=restore", f"--output={tmp_path / 'none'}",
         f"--local_path={tmp_path}"], capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 1 and "no bacula-ec2 backup" in proc.stderr
    _o, err = bec2(capsys, sim, "--operation=backup", "--instances=x", "--concurrent_threads=lots", code=2)
    assert "concurrent_threads" in err
    _o, err = bec2(capsys, None, "--operation=restore", f"--output={tmp_path}", "--before=yesterday", code=2)
    assert "--before" in err
    # A selection that names nothing that exists: a configuration error (README's table).
    _o, err = bec2(
        capsys, sim, "--operation=backup", "--instances=i-0123456789abcdef0", f"--output={tmp_path}", code=2
    )
    assert "i-0123456789abcdef0" in err and "not found" in err
    assert sim.client.snapshots() == []
    assert list((tmp_path / "backups").iterdir()) == []
    _o, err = bec2(
        capsys, None, "--operation=restore", f"--output={tmp_path}", f"--local_path={tmp_path}/x", code=1
    )
    assert "no complete backup" in err
    inside = tmp_path / "backups" / "r"
    _o, err = bec2(
        capsys, None, "--operation=restore", f"--output={tmp_path}", f"--local_path={inside}", code=2
    )
    assert "inside the backups" in err
