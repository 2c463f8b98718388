"""jobs.restore_local.FilesRestore (restore_as=files) fed as the backend feeds it: a real
ext4 image encoded as a Full's `.bimg`; the files land under
<where>/@amazon-ec2/<instance>/<volume>/<partition>/, the staging directory is gone on every
path (success, damaged chain, nothing matched, abandon), a damaged chain restores nothing;
the parameters and the restore-target policy refuse what does not fit."""

from __future__ import annotations

import io
import os
import subprocess
from pathlib import Path

import pytest

from bacula_ec2 import naming
from bacula_ec2.jobs.context import JobContext, JobError
from bacula_ec2.jobs.restore_local import STAGING_PREFIX, FilesRestore, RestoreFailed
from bacula_ec2.jobs.runner import open_restore, restore_target
from bacula_ec2.params import ParameterError, parse_parameters
from devkit import guestdisks as gd
from devkit.jobkit import Recorder

pytestmark = pytest.mark.skipif(bool(gd.missing_tools()), reason=f"missing tools: {gd.missing_tools()}")
BS = 65536
IID, VID = "i-0files", "vol-0files"


@pytest.fixture(scope="module")
def part(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, bytes, Path]:
    """(catalog name, .bimg bytes, source tree) of a Full of a bare 8 MiB ext4."""
    base = tmp_path_factory.mktemp("files")
    tree = base / "tree"
    (tree / "etc/app").mkdir(parents=True)
    (tree / "etc/app/app.conf").write_bytes(b"key=value\n" * 50)
    (tree / "etc/hostname").write_bytes(b"files\n")
    os.symlink("app/app.conf", tree / "etc/link")
    img = base / "disk.img"
    with open(img, "wb") as fh:
        fh.truncate(8 * gd.MIB)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-d", str(tree), str(img)], check=True, capture_output=True)
    spec = gd.PartSpec(VID, 8 * gd.MIB, "snap-0f", "2026-12-01T10:00:00Z", block_size=BS, instance_id=IID)
    out = io.BytesIO()
    gd.encode_part(spec, gd.image_blocks(img, BS), out.write)
    return naming.volume_image(IID, VID, gd.DEVICE, 1, "F", 1), out.getvalue(), tree


def restore(where: Path, files: str, **extra: str) -> tuple[FilesRestore, Recorder]:
    rec = Recorder()
    params = parse_parameters([("restore_as", "files"), ("restore_files", files), *extra.items()])
    ctx = JobContext(params, "restore.2026-12-01_11.00.00_09", 9, "F", rec, "")
    r = open_restore(ctx, restore_target(params, where=str(where)), str(where))
    assert isinstance(r, FilesRestore)
    return r, rec


def feed(r: FilesRestore, name: str, data: bytes) -> None:
    assert r.start(f"{r.where}{name}")  # the FD's name: where= + the catalog path
    for i in range(0, len(data), 100_000):
        r.data(memoryview(data[i : i + 100_000]))
    r.end()


def staged(where: Path) -> list[str]:
    return [str(p) for p in where.rglob("*") if p.name.startswith(STAGING_PREFIX) or p.suffix == ".img"]


def test_files_land_under_instance_volume_partition(tmp_path: Path, part: tuple[str, bytes, Path]) -> None:
    name, data, tree = part
    where = tmp_path / "where"
    r, rec = restore(where, "/etc/app/**,/etc/link")
    try:
        feed(r, name, data)
        r.finish()
    finally:
        r.close()
    out = where / "@amazon-ec2" / IID / VID / "disk"
    assert (out / "etc/app/app.conf").read_bytes() == (tree / "etc/app/app.conf").read_bytes()
    assert os.readlink(out / "etc/link") == "app/app.conf"
    assert not (out / "etc/hostname").exists()
    assert staged(where) == []
    assert sorted(p.name for p in where.iterdir()) == ["@amazon-ec2"]
    assert (
        "restore finished: 1 file(s) (500 bytes), 1 directories, 1 symbolic links" in r.summary()
    )  # /etc/app
    assert any("partitions: disk (ext4" in t for t in rec.texts("I")), rec.lines


def test_staging_in_restore_workdir(tmp_path: Path, part: tuple[str, bytes, Path]) -> None:
    name, data, _tree = part
    where, work = tmp_path / "where", tmp_path / "work"
    r, _rec = restore(where, "/etc/hostname", restore_workdir=str(work))
    try:
        assert r.start(f"{where}{name}")
        r.data(memoryview(data[: len(data) // 2]))
        assert len(staged(work)) >= 1 and staged(where) == []  # assembling in restore_workdir=
        r.data(memoryview(data[len(data) // 2 :]))
        r.end()
        r.finish()
    finally:
        r.close()
    assert (where / "@amazon-ec2" / IID / VID / "disk/etc/hostname").read_bytes() == b"files\n"
    assert list(work.iterdir()) == []


def test_a_damaged_chain_restores_nothing(tmp_path: Path, part: tuple[str, bytes, Path]) -> None:
    name, data, tree = part
    bad = bytearray(data)
    at = bytes(data).find((tree / "etc/app/app.conf").read_bytes()[:200])
    assert at > 0
    bad[at + 3] ^= 0x01
    where = tmp_path / "where"
    r, _rec = restore(where, "/etc/**")
    try:
        with pytest.raises(RestoreFailed, match=rf"volume {VID} is not restored: .*SHA-256"):
            feed(r, name, bytes(bad))
        with pytest.raises(RestoreFailed, match=rf"volume {VID} is not restored"):
            r.finish()
    finally:
        r.close()
    assert not (where / "@amazon-ec2" / IID).exists()
    assert staged(where) == []


def test_nothing_matched_is_a_failure_and_abandon_cleans_up(
    tmp_path: Path, part: tuple[str, bytes, Path]
) -> None:
    name, data, _tree = part
    where = tmp_path / "where"
    r, _rec = restore(where, "/nope/**,p3:/etc")
    try:
        feed(r, name, data)
        with pytest.raises(RestoreFailed, match=r"nothing was restored: .*/nope/\*\* matches nothing"):
            r.finish()
    finally:
        r.close()
    assert staged(where) == [] and not (where / "@amazon-ec2" / IID / VID).exists()
    r, _rec = restore(where, "/etc/**")
    assert r.start(f"{where}{name}")
    r.data(memoryview(data[:300_000]))
    assert staged(where)
    r.close()  # a cancel or EOF in the middle: the backend closes the restore
    assert staged(where) == []


def test_parameters_and_target_refuse_what_does_not_fit(tmp_path: Path) -> None:
    with pytest.raises(ParameterError, match="restore_as=files needs restore_files="):
        parse_parameters([("restore_as", "files")])
    with pytest.raises(ParameterError, match="set restore_as=files"):
        parse_parameters([("restore_files", "/etc/**")])
    with pytest.raises(ParameterError, match="does not go with restore_to=aws"):
        parse_parameters([("restore_as", "files"), ("restore_files", "/etc"), ("restore_to", "aws")])
    params = parse_parameters([("restore_as", "files"), ("restore_files", "/etc/**,p2:/home/**")])
    assert params.restore_files == ["/etc/**", "p2:/home/**"]
    ctx = JobContext(params, "restore.2026-12-01_11.00.00_09", 9, "F", Recorder(), str(tmp_path))
    with pytest.raises(JobError, match="give where=/some/dir"):
        open_restore(ctx, restore_target(params, where="/", working_dir=str(tmp_path)), "/")
    bad = parse_parameters([("restore_as", "files"), ("restore_files", "relative/path")])
    ctx = JobContext(bad, "restore.2026-12-01_11.00.00_09", 9, "F", Recorder(), "")
    with pytest.raises(RestoreFailed, match="restore_files=relative/path"):
        open_restore(ctx, restore_target(bad, where=str(tmp_path)), str(tmp_path))


def test_a_cancel_during_extraction_leaves_nothing(tmp_path: Path, part: tuple[str, bytes, Path]) -> None:
    name, data, _tree = part
    where = tmp_path / "where"
    r, _rec = restore(where, "/etc/**")
    try:
        feed(r, name, data)
        r.ctx.cancel.set()  # the job is cancelled once the stream is in, before the files are out
        with pytest.raises(RestoreFailed, match="cancelled"):
            r.finish()
    finally:
        r.close()
    assert staged(where) == []
    assert not (where / "@amazon-ec2" / IID / VID / "disk").exists()


def test_extract_stops_at_a_cancel_and_removes_what_it_wrote(
    tmp_path: Path, part: tuple[str, bytes, Path]
) -> None:
    import threading

    from bacula_ec2.guest import FileSource, GuestError, extract, open_disk, parse_patterns, select

    name, data, _tree = part
    where = tmp_path / "img"
    r, _rec = restore(where, "/etc/**")
    feed(r, name, data)
    image = r.assemble()[0][0].path  # the staged image, before FilesRestore extracts it
    sel = select(open_disk(FileSource(image)), parse_patterns("/etc/**"))
    calls = {"n": 0}

    class Stop(threading.Event):
        def is_set(self) -> bool:  # set after the first two entries were written
            calls["n"] += 1
            return calls["n"] > 2

    out = tmp_path / "out"
    with pytest.raises(GuestError, match="cancelled while restoring"):
        extract(sel, str(out), cancel=Stop())
    assert calls["n"] == 3
    assert not (out / "disk").exists()
    r.close()
    assert staged(where) == []
