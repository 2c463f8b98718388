"""bec2 restores from a damaged folder or into a booby-trapped target: exact, or exit 1
naming what is wrong, with no image left and nothing written outside the target.

One folder (Full, Incremental, Incremental) and, for the "another chain" case, a second
folder with its own Full of the same volume are built once per module; every test works
on a copy.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bacula_ec2.cli import main
from devkit.helpers import sha256_file
from devkit.simulator.fixtures import ACCESS_KEY

from .bec2_common import BLOCK, SECRET


@dataclass
class Built:
    root: Path  # the folder: backups F (job 1), I (job 2), I (job 3)
    other: Path  # another folder, one Full of the same volume
    iid: str
    vid: str
    latest: str  # SHA-256 of the volume at job 3
    dirs: list[str]  # backup directory names, job order

    def image(self, job: int, folder: Path | None = None) -> Path:
        base = (folder or self.root) / "backups"
        name = self.dirs[job - 1] if folder is None else next(iter(os.listdir(base)))
        marker = "" if job == 1 or folder is not None else f".I{job}"
        return base / name / "@amazon-ec2" / self.iid / f"{self.vid}-sda1-1G{marker}.bimg"


@pytest.fixture(scope="module")
def built(simulator: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Built]:
    simulator.client.reset()
    simulator.client.set_options(snapshot_delay=0.02)
    inst = simulator.client.create_instance("dmg", volumes=[{"size_gib": 1, "device": "/dev/sda1"}])
    iid, vid = inst["instance_id"], inst["volume_ids"][0]
    base = tmp_path_factory.mktemp("built")
    root, other = base / "folder", base / "other"
    aws = [
        "--region=us-east-1",
        f"--access_key={ACCESS_KEY}",
        f"--secret_key={SECRET}",
        f"--endpoint_url={simulator.endpoint}",
        "--instances=dmg",
        "--quiet",
    ]
    for n, level in enumerate("FII"):
        simulator.client.write_volume(vid, (3 + n) * BLOCK, os.urandom(2 * BLOCK))
        assert main(["--operation=backup", f"--level={level}", f"--output={root}", *aws]) == 0
    latest = simulator.client.volume_sha256(vid)
    assert main(["--operation=backup", f"--output={other}", *aws]) == 0
    dirs = sorted(os.listdir(root / "backups"), key=lambda d: int(d.rsplit("-", 1)[1]))
    yield Built(root, other, iid, vid, latest, dirs)
    simulator.client.reset()


@pytest.fixture
def folder(built: Built, tmp_path: Path) -> Built:
    copy = tmp_path / "folder"
    shutil.copytree(built.root, copy, symlinks=True)
    return Built(copy, built.other, built.iid, built.vid, built.latest, built.dirs)


def restore(capsys: Any, source: Path, target: Path, code: int) -> str:
    rc = main(["--operation=restore", f"--output={source}", f"--local_path={target}"])
    _out, err = capsys.readouterr()
    assert rc == code, err
    return err


def files_under(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*")) if path.exists() else []


def truncate_to(n: int | float) -> Callable[[Built], Path]:
    """Cut the first Incremental's image: to n bytes, to a fraction, or n bytes from its end."""

    def damage(b: Built) -> Path:
        p = b.image(2)
        size = p.stat().st_size
        keep = int(size * n) if isinstance(n, float) else n if n >= 0 else size + n
        with p.open("r+b") as fh:
            fh.truncate(keep)
        return p

    return damage


def flip_data_byte(b: Built) -> Path:
    """Same size, header intact: only the bytes say it changed."""
    p = b.image(3)
    with p.open("r+b") as fh:
        fh.seek(p.stat().st_size - 48 - BLOCK // 2)
        byte = fh.read(1)
        fh.seek(-1, os.SEEK_CUR)
        fh.write(bytes([byte[0] ^ 0x55]))
    return p


def replaced_by_other_backup(b: Built) -> Path:
    shutil.copyfile(b.image(2), b.image(3))
    return b.image(3)


def replaced_by_other_chain(b: Built) -> Path:
    shutil.copyfile(b.image(1, folder=b.other), b.image(1))
    return b.image(1)


def duplicated_into_other_backup(b: Built) -> Path:
    copy = b.image(3).parent / b.image(2).name
    shutil.copyfile(b.image(2), copy)
    return copy


def flip_json_byte(b: Built) -> Path:
    p = b.root / "backups" / b.dirs[2] / "@amazon-ec2" / b.iid / f"{b.iid}.json"
    text = p.read_text().replace('"instance_id"', '"instance_iX"', 1)
    p.write_text(text)
    return p


DAMAGES: dict[str, Callable[[Built], Path]] = {
    "emptied": truncate_to(0),
    "truncated-in-header": truncate_to(100),
    "truncated-after-header": truncate_to(0.5),
    "last-byte-missing": truncate_to(-1),
    "data-byte-flipped": flip_data_byte,
    "replaced-by-another-backup": replaced_by_other_backup,
    "replaced-by-another-chain": replaced_by_other_chain,
    "duplicated-into-another-backup": duplicated_into_other_backup,
    "json-altered": flip_json_byte,
}


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_damaged_part_fails_naming_the_file(folder: Built, tmp_path: Path, capsys: Any, damage: str) -> None:
    path = DAMAGES[damage](folder)
    target = tmp_path / "restored"
    err = restore(capsys, folder.root, target, code=1)
    assert str(path.relative_to(folder.root)) in err, err
    assert not any(n.endswith(".img") or ".tmp" in n or "part" in n for n in files_under(target)), (
        files_under(target)
    )


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(job=st.integers(1, 3), at=st.floats(0, 1, exclude_max=True), mask=st.integers(0, 255))
def test_any_cut_or_flipped_byte_of_any_part_fails(
    folder: Built, capsys: Any, job: int, at: float, mask: int
) -> None:
    """Truncation anywhere (mask 0) or one altered byte anywhere, in any part of the chain."""
    path = folder.image(job)
    pristine = path.read_bytes()
    k = int(len(pristine) * at)
    damaged = pristine[:k] if mask == 0 else pristine[:k] + bytes([pristine[k] ^ mask]) + pristine[k + 1 :]
    try:
        path.write_bytes(damaged)
        with tempfile.TemporaryDirectory() as tmp:
            target = Path(tmp) / "restored"
            err = restore(capsys, folder.root, target, code=1)
            assert str(path.relative_to(folder.root)) in err, err
            assert not any(n.endswith(".img") for n in files_under(target)), files_under(target)
    finally:
        path.write_bytes(pristine)


def test_healthy_copy_restores_exactly(folder: Built, tmp_path: Path, capsys: Any) -> None:
    """The control for the damage tests: the undamaged copy restores."""
    target = tmp_path / "restored"
    restore(capsys, folder.root, target, code=0)
    assert sha256_file(target / "@amazon-ec2" / folder.iid / f"{folder.vid}-sda1-1G.img") == folder.latest


def test_damaged_manifest_is_refused(folder: Built, tmp_path: Path, capsys: Any) -> None:
    manifest = folder.root / "backups" / folder.dirs[1] / "bec2-backup.json"
    doc = json.loads(manifest.read_text())
    doc["folder_id"] = "0" * 16
    manifest.write_text(json.dumps(doc))
    err = restore(capsys, folder.root, tmp_path / "r", code=1)
    assert f"backups/{folder.dirs[1]} is damaged" in err and "another folder" in err
    manifest.write_text("{not json")
    err = restore(capsys, folder.root, tmp_path / "r", code=1)
    assert f"backups/{folder.dirs[1]} is damaged" in err
    assert files_under(tmp_path / "r") == []


# ------------------------------------------------------------------ links in the target


def plant(kind: str, target: Path, b: Built, victim_dir: Path, victim: Path) -> None:
    ns = target / "@amazon-ec2"
    inst = ns / b.iid
    at = {
        "local_path": target,
        "namespace": ns,
        "instance": inst,
        "instance-json": inst / f"{b.iid}.json",
        "volume-json": inst / f"{b.vid}-sda1-1G.json",
        "image": inst / f"{b.vid}-sda1-1G.img",
    }
    kind, _, link = kind.partition(":")
    spot = at[kind]
    spot.parent.mkdir(parents=True, exist_ok=True)
    if link == "symlink":
        os.symlink(victim_dir if kind in ("local_path", "namespace", "instance") else victim, spot)
    else:
        os.link(victim, spot)


LINKS = [
    "local_path:symlink",
    "namespace:symlink",
    "instance:symlink",
    "instance-json:symlink",
    "volume-json:symlink",
    "image:symlink",
    "instance-json:hardlink",
    "volume-json:hardlink",
    "image:hardlink",
]


@pytest.mark.parametrize("where", LINKS)
def test_links_in_the_target_are_not_followed(folder: Built, tmp_path: Path, capsys: Any, where: str) -> None:
    victim_dir = tmp_path / "victim-dir"
    victim_dir.mkdir()
    victim = victim_dir / "precious"
    victim.write_bytes(b"do not touch\n" * 1000)
    before = (files_under(victim_dir), sha256_file(victim), victim.stat().st_mtime_ns)
    target = tmp_path / "restored"
    plant(where, target, folder, victim_dir, victim)
    rc = main(["--operation=restore", f"--output={folder.root}", f"--local_path={target}"])
    err = capsys.readouterr().err
    assert (files_under(victim_dir), sha256_file(victim), victim.stat().st_mtime_ns) == before, err
    assert rc in (0, 1), err
    image = target / "@amazon-ec2" / folder.iid / f"{folder.vid}-sda1-1G.img"
    if rc == 0:
        assert os.path.realpath(image).startswith(os.path.realpath(target) + "/")
        assert not image.is_symlink() and image.stat().st_nlink == 1
        assert sha256_file(image) == folder.latest
    else:
        assert "link" in err, err
