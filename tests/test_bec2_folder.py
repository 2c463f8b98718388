"""The bec2 folder without AWS: marker, backup directories, manifests, the writer's refusals."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from bacula_ec2.formats.blockimage import FileKind, ImageHeader, RecordEncoder
from bacula_ec2.jobs.context import JobError
from bacula_ec2.jobs.folder import (
    COMPLETE,
    DAMAGED,
    INCOMPLETE,
    MARKER,
    BackupDirectory,
    FolderError,
    backup_lock,
    create_folder,
    manifest,
    open_folder,
    scan,
)
from bacula_ec2.jobs.sink import FileInfo

T0 = 1_800_000_000.0


def image(vid: str, sid: str) -> bytes:
    enc = RecordEncoder(ImageHeader(FileKind.IMAGE, vid, 1 << 30, sid, "F", "2027-01-15T08:00:00Z"))
    return enc.start() + enc.end()


def write_backup(root: Path, files: dict[str, bytes], now: float = T0) -> BackupDirectory:
    folder = create_folder(str(root), now)
    bdir = BackupDirectory(folder, "F", now, scan(folder))
    for path, data in files.items():
        bdir.file(FileInfo(path, len(data), int(now)), data)
    return bdir


def finish(bdir: BackupDirectory) -> None:
    doc = manifest(
        bdir.folder, bdir, job=bdir.folder.default_job, job_name=f"{bdir.folder.default_job}.x_1",
        level="F", requested_level="F", finished=bdir.started + 1, reference=None, region="r",
        version="t",
    )  # fmt: skip
    bdir.write_manifest(doc)


def test_marker_ids_job_ids_and_complete_backups(tmp_path: Path) -> None:
    a = write_backup(tmp_path / "a", {"/@amazon-ec2/i-1/vol-1-sda-1G.bimg": image("vol-1", "snap-1")})
    finish(a)
    b = write_backup(tmp_path / "a", {"/@amazon-ec2/i-1/vol-1-sda-1G.bimg": image("vol-1", "snap-2")})
    other = create_folder(str(tmp_path / "b"), T0)
    assert a.folder.folder_id == b.folder.folder_id != other.folder_id
    assert (a.job_id, b.job_id) == (1, 2) and a.name == "20270115T080000Z-F-1"
    found = scan(open_folder(str(tmp_path / "a")))
    assert [(x.job_id, x.status) for x in found] == [(1, COMPLETE), (2, INCOMPLETE)]
    vol = found[0].volumes[0]
    assert (vol.volume_id, vol.snapshot_id, vol.folder, vol.starts_chain) == ("vol-1", "snap-1", "i-1", True)
    doc = json.loads((tmp_path / "a" / MARKER).read_text())
    assert doc["kind"] == "bec2 folder" and doc["version"] == 1


def test_a_file_is_never_written_twice_nor_a_volume_kept_twice(tmp_path: Path) -> None:
    bdir = write_backup(tmp_path, {"/@amazon-ec2/i-1/i-1.json": b"{}"})
    with pytest.raises(JobError, match="written twice"):
        bdir.file(FileInfo("/@amazon-ec2/i-1/i-1.json", 2, 0), b"{}")
    with pytest.raises(JobError, match=r"outside|refusing"):
        bdir.file(FileInfo("/@amazon-ec2/../x.json", 2, 0), b"{}")
    twice = write_backup(
        tmp_path / "m",
        {
            "/@amazon-ec2/i-1/vol-1-sdf-1G.bimg": image("vol-1", "snap-1"),
            "/@amazon-ec2/i-2/vol-1-sdf-1G.bimg": image("vol-1", "snap-2"),
        },
    )
    with pytest.raises(JobError, match="vol-1 was backed up twice"):
        finish(twice)


def test_damaged_manifests_and_duplicate_job_ids(tmp_path: Path) -> None:
    a = write_backup(tmp_path, {"/@amazon-ec2/i-1/vol-1-sda-1G.bimg": image("vol-1", "snap-1")})
    finish(a)
    copy = Path(a.path).with_name(a.name.replace("-F-1", "-F-7"))
    shutil.copytree(a.path, copy)
    statuses = {b.name: (b.status, b.problem) for b in scan(a.folder)}
    twice = "job id 1 appears in more than one backup"
    assert all(s == DAMAGED and twice in (p or "") for s, p in statuses.values())
    manifest_path = copy / "bec2-backup.json"
    manifest_path.write_text(manifest_path.read_text()[:-40])
    statuses = {b.name: (b.status, b.problem) for b in scan(a.folder)}
    assert statuses[copy.name][0] == DAMAGED and "unreadable" in (statuses[copy.name][1] or "")
    assert statuses[a.name] == (COMPLETE, None)


def test_one_backup_at_a_time_and_markers_checked(tmp_path: Path) -> None:
    folder = create_folder(str(tmp_path), T0)
    with backup_lock(folder), pytest.raises(FolderError, match="another bec2 backup"), backup_lock(folder):
        pass
    with backup_lock(folder):
        pass  # released
    (tmp_path / MARKER).write_text(json.dumps({"kind": "bec2 folder", "version": 9, "folder_id": "0" * 16}))
    with pytest.raises(FolderError, match="newer bec2"):
        open_folder(str(tmp_path))
    with pytest.raises(FolderError, match="no bacula-ec2 backup"):
        open_folder(str(tmp_path / "nothing"))
