"""bec2 --operation=ls-files and --operation=restore-files on real guest disks (a GPT disk with
an EFI vfat and an ext4 root, an MBR disk with XFS; devkit/guestdisks.py) backed up Full and
Incremental into a bec2 folder: listings and restored files at both points in time equal the
source trees (content, mode, owner as root, mtime), read in place from the chain's parts;
user mistakes exit 2 with a clear message, a damaged chain exits 1 and leaves nothing."""

from __future__ import annotations

import datetime as dt
import os
import stat
from dataclasses import dataclass
from pathlib import Path

import pytest

from bacula_ec2.cli import main
from bacula_ec2.formats.blockimage import BLOCK_SIZE
from devkit import guestdisks as gd

pytestmark = pytest.mark.skipif(bool(gd.missing_tools()), reason=f"missing tools: {gd.missing_tools()}")
ROOT = os.geteuid() == 0
IID = "i-0files00000000001"
GPT, XFS, RAW = "vol-0gpt000000000001", "vol-0xfs000000000001", "vol-0raw000000000001"
T0 = dt.datetime(2026, 11, 20, 10, 0, tzinfo=dt.UTC)


def iso(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class World:
    folder: Path
    tree1: Path
    tree2: Path
    efi: Path
    between: str  # a --before time between the Full and the Incremental


def full_spec(vid: str, size: int, snap: str, when: dt.datetime) -> gd.PartSpec:
    return gd.PartSpec(vid, size, snap, iso(when), instance_id=IID)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    base = tmp_path_factory.mktemp("bec2files")
    tree1, tree2, efi = base / "tree1", base / "tree2", base / "efi"
    gd.make_tree(tree1, 1, owners=ROOT)
    gd.make_tree(tree2, 2, owners=ROOT)
    gd.make_efi_tree(efi)
    d1 = gd.gpt_disk(base / "gpt1.img", tree1, efi)
    d2 = gd.gpt_disk(base / "gpt2.img", tree2, efi)
    xfs = gd.mbr_xfs_disk(base / "xfs.img", tree1)
    raw = base / "raw.img"
    raw.write_bytes(gd._pattern(99, 2 * gd.MIB))  # no partition table, no filesystem
    folder = base / "folder"
    t1 = T0 + dt.timedelta(days=1)
    full = full_spec(GPT, d1.size, "snap-0gptfull", T0)
    gd.folder_backup(folder, full, gd.image_blocks(d1.path, BLOCK_SIZE), started=T0.timestamp())
    gd.folder_backup(
        folder,
        full_spec(XFS, xfs.size, "snap-0xfsfull", T0),
        gd.image_blocks(xfs.path, BLOCK_SIZE),
        started=T0.timestamp() + 60,
    )
    gd.folder_backup(
        folder,
        full_spec(RAW, 2 * gd.MIB, "snap-0rawfull", T0),
        gd.image_blocks(raw, BLOCK_SIZE),
        started=T0.timestamp() + 120,
    )
    incr = gd.PartSpec(
        GPT,
        d1.size,
        "snap-1gptincr",
        iso(t1),
        level="I",
        base_snapshot_id=full.snapshot_id,
        base_created=full.created,
        chain_position=1,
        instance_id=IID,
    )
    gd.folder_backup(folder, incr, gd.changed_blocks(d1.path, d2.path, BLOCK_SIZE), started=t1.timestamp())
    return World(folder, tree1, tree2, efi, iso(T0 + dt.timedelta(hours=1)))


def bec2(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["--quiet", *args])
    out, err = capsys.readouterr()
    return code, out, err


def same_entry(src: Path, got: Path, times: bool = True) -> None:
    """`got` is `src` as the guest had it: type, content, link target, mode, mtime (`times`:
    mkfs.xfs -p gives its files the time of mkfs), owner (as root)."""
    s, g = src.lstat(), got.lstat()
    assert stat.S_IFMT(g.st_mode) == stat.S_IFMT(s.st_mode), got
    if stat.S_ISLNK(s.st_mode):
        assert os.readlink(got) == os.readlink(src), got
        return
    assert stat.S_IMODE(g.st_mode) == stat.S_IMODE(s.st_mode), got
    if times:
        assert g.st_mtime_ns == s.st_mtime_ns, got
    if stat.S_ISREG(s.st_mode):
        assert got.read_bytes() == src.read_bytes(), got
    if ROOT:
        assert (g.st_uid, g.st_gid) == (s.st_uid, s.st_gid), got


def restored_tree(out: Path) -> set[str]:
    return {str(p.relative_to(out)) for p in out.rglob("*")}


def test_ls_files_lists_etc_at_both_points_in_time(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = bec2(
        capsys, "--operation=ls-files", f"--output={world.folder}", f"--volumes={GPT}", "--path=/etc/nginx"
    )
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith(f"volume {GPT} ({IID}, xvdf)"), out
    assert "p2 (ext4) /etc/nginx:" in lines
    names = {line.split()[-1] for line in lines[2:] if not line.startswith("l")}
    assert names == {"nginx.conf", "sites-enabled", "sites-available", "conf.d"}, out
    conf = next(line for line in lines if line.endswith(" nginx.conf"))
    size = (world.tree2 / "etc/nginx/nginx.conf").stat().st_size
    assert conf.split()[0] == "-rw-r--r--" and conf.split()[3] == str(size), conf
    code, out, err = bec2(
        capsys,
        "--operation=ls-files",
        f"--output={world.folder}",
        f"--volumes={GPT}",
        "--path=/etc/nginx",
        f"--before={world.between}",
    )
    assert code == 0, err
    assert "conf.d" not in out and " nginx.conf" in out  # the Full's state: no conf.d yet


def test_ls_files_of_the_root_shows_partitions_and_links(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = bec2(
        capsys, "--operation=ls-files", f"--output={world.folder}", f"--volumes={GPT}", "--path=/"
    )
    assert code == 0, err
    assert "gpt disk, partitions: p1 (vfat" in out and "p2 (ext4" in out, out
    assert "p1 (vfat) /:" in out and "p2 (ext4) /:" in out
    assert any(line.startswith("l") and line.endswith("bin -> usr/bin") for line in out.splitlines()), out
    code, out, err = bec2(
        capsys, "--operation=ls-files", f"--output={world.folder}", f"--volumes={GPT}", "--path=p1:/EFI/BOOT"
    )
    assert code == 0, err
    assert {line.split()[-1] for line in out.splitlines()[2:]} == {"BOOTX64.EFI", "grub.cfg"}, out


def test_restore_files_at_both_points_in_time(
    world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = "/etc/nginx/**,/home/app/.env,/home/app/hostname-link,/srv/ids/high-uid"
    for when, tree in ((None, world.tree2), (world.between, world.tree1)):
        dest = tmp_path / ("now" if when is None else "then")
        args = ["--operation=restore-files", f"--output={world.folder}", f"--local_path={dest}",
                f"--volumes={GPT}", f"--files={files}"]  # fmt: skip
        code, out, err = bec2(capsys, *args, *([f"--before={when}"] if when else []))
        assert code == 0, err
        assert err == "", err  # every pattern matched something
        root = dest / "@amazon-ec2" / IID / GPT / "p2"
        want = {"etc", "home", "home/app", "srv", "srv/ids", "home/app/.env", "home/app/hostname-link",
                "srv/ids/high-uid"}  # fmt: skip
        want |= {str(p.relative_to(tree)) for p in (tree / "etc/nginx").rglob("*")} | {"etc/nginx"}
        assert restored_tree(root) == want
        for rel in want - {"etc", "home", "home/app", "srv", "srv/ids"}:
            same_entry(tree / rel, root / rel)
        assert restored_tree(dest) == {f"@amazon-ec2/{IID}/{GPT}/p2/{r}" for r in want} | {
            "@amazon-ec2",
            f"@amazon-ec2/{IID}",
            f"@amazon-ec2/{IID}/{GPT}",
            f"@amazon-ec2/{IID}/{GPT}/p2",
        }
        assert f"volume {GPT}" in out and "bytes (" in out and "blocks) of the chain's parts" in out, out
        read = int(out.split("; read ")[1].split()[0])
        assert 0 < read < 8 * gd.MIB, out  # far less than the 64 MiB disk or its parts
    assert (tmp_path / "now" / "@amazon-ec2" / IID / GPT / "p2/etc/nginx/conf.d/new.conf").exists()
    assert not (tmp_path / "then" / "@amazon-ec2" / IID / GPT / "p2/etc/nginx/conf.d").exists()


def test_restore_files_from_xfs_and_vfat(
    world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _out, err = bec2(
        capsys,
        "--operation=restore-files",
        f"--output={world.folder}",
        f"--local_path={tmp_path}",
        "--files=/home/app/**,p1:/EFI/BOOT/grub.cfg",
    )
    assert code == 0, err
    xroot = tmp_path / "@amazon-ec2" / IID / XFS / "p1"
    for rel in (
        "home/app/.env",
        "home/app/data/one-mib.bin",
        "home/app/data/empty",
        "home/app/hostname-link",
    ):
        same_entry(world.tree1 / rel, xroot / rel, times=False)
    assert (tmp_path / "@amazon-ec2" / IID / GPT / "p1/EFI/BOOT/grub.cfg").read_bytes() == (
        world.efi / "EFI/BOOT/grub.cfg"
    ).read_bytes()
    # the XFS disk has no p1 vfat file, the raw volume no filesystem: warnings, not failures
    assert f"not restored: volume {RAW}" in err and "no filesystem" in err, err
    assert f"not restored: volume {XFS}" in err and "p1:/EFI/BOOT/grub.cfg matches nothing" in err, err


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ("/etc/nope/**", "/etc/nope/** matches nothing on partitions p1 (vfat), p2 (ext4)"),
        ("p9:/etc/hostname", "the disk has no partition p9"),
    ],
)
def test_restore_files_of_nothing_exits_2(
    world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str], files: str, message: str
) -> None:
    code, _out, err = bec2(
        capsys,
        "--operation=restore-files",
        f"--output={world.folder}",
        f"--local_path={tmp_path / 'd'}",
        f"--volumes={GPT}",
        f"--files={files}",
    )
    assert code == 2, err
    assert "nothing to restore" in err and message in err, err
    assert not (tmp_path / "d" / "@amazon-ec2" / IID / GPT).exists()


def test_unsupported_filesystem_and_usage(
    world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _out, err = bec2(
        capsys, "--operation=ls-files", f"--output={world.folder}", f"--volumes={RAW}", "--path=/"
    )
    assert code == 2 and f"volume {RAW}" in err and "no filesystem" in err, err
    code, _out, err = bec2(capsys, "--operation=ls-files", f"--output={world.folder}")
    assert code == 2 and "ls-files needs --path=" in err, err
    code, _out, err = bec2(
        capsys, "--operation=restore-files", f"--output={world.folder}", f"--local_path={tmp_path}"
    )
    assert code == 2 and "restore-files needs --files=" in err, err
    code, _out, err = bec2(capsys, "--operation=ls-files", f"--output={world.folder}", "--path=/etc/*")
    assert code == 2 and "without wildcards" in err, err


def test_a_damaged_block_fails_and_leaves_nothing(
    world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """At the Full's point in time the 1 MiB file's data lives in the Full's blocks: one
    flipped byte there fails the restore (exit 1, the part and block named) and nothing of
    the volume stays; a file elsewhere on the volume still restores (its blocks are sound)."""
    import shutil

    folder = tmp_path / "folder"
    shutil.copytree(world.folder, folder)
    full = next(p for p in folder.rglob(f"{GPT}*.bimg") if "-F-" in str(p))
    # the file's first data block in the Full: where its content starts
    data = (world.tree1 / "home/app/data/one-mib.bin").read_bytes()[:4096]
    blob = full.read_bytes()
    at = blob.find(data)
    assert at > 0
    with open(full, "r+b") as fh:
        fh.seek(at + 100)
        fh.write(bytes([blob[at + 100] ^ 0xFF]))
    # the manifest still holds the part's old digest; the view checks sizes and each block read
    dest = tmp_path / "dest"
    code, _out, err = bec2(
        capsys,
        "--operation=restore-files",
        f"--output={folder}",
        f"--local_path={dest}",
        f"--volumes={GPT}",
        "--files=/home/app/**",
        f"--before={world.between}",
    )
    assert code == 1, err
    assert "fails its SHA-256 check" in err and GPT in err and "nothing of this volume is restored" in err, (
        err
    )
    assert not (dest / "@amazon-ec2" / IID / GPT / "p2").exists()
    code, _out, err = bec2(
        capsys,
        "--operation=restore-files",
        f"--output={folder}",
        f"--local_path={dest}",
        f"--volumes={GPT}",
        "--files=p1:/EFI/BOOT/grub.cfg",
        f"--before={world.between}",
    )
    assert code == 0, err
    assert (dest / "@amazon-ec2" / IID / GPT / "p1/EFI/BOOT/grub.cfg").exists()


def test_the_bec2_commands_of_docs_restore_md_run(world: World, tmp_path: Path) -> None:
    """docs/RESTORE.md's "Restore single files" bec2 block (skipped by the docs suite, whose
    world has no filesystems) runs here: each command exits 0 on these disks."""
    import shlex

    from devkit import doctest_md as md

    mine = [
        b
        for b in md.blocks(md.REPO / "docs/RESTORE.md")
        if b.kind == "skip" and "tests/test_bec2_files.py" in b.reason
    ]
    assert len(mine) == 1
    commands = md.shell_commands(mine[0])
    assert {c.split()[1] for c in commands} == {"--operation=ls-files", "--operation=restore-files"}
    table = {"/backups": str(world.folder), "/srv/restores": str(tmp_path / "restores"), "vol-0123": GPT}
    for command in commands:
        words = shlex.split(md.substitute(command, table))
        assert words[0] == "bec2"
        assert main(["--quiet", *words[1:]]) == 0, command
    assert (tmp_path / "restores/@amazon-ec2" / IID / GPT / "p2/home/app/.env").is_file()


def test_help_shows_both_operations_with_examples(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert "bec2 --operation=ls-files --output=/backups --path=/etc" in out
    assert "bec2 --operation=restore-files --output=/backups --local_path=/srv/restores" in out
    assert "--path [PART:]PATH" in out and "--files GLOBS" in out


def test_ls_files_of_every_volume(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    """Without --volumes every volume is listed; one without the path is a warning."""
    code, out, err = bec2(capsys, "--operation=ls-files", f"--output={world.folder}", "--path=/home/app")
    assert code == 0, err
    assert f"volume {GPT} (" in out and f"volume {XFS} (" in out and RAW not in out, out
    assert "p2 (ext4) /home/app:" in out and "p1 (xfs) /home/app:" in out, out
    assert f"volume {RAW}" in err and "no filesystem" in err, err


def test_ntfs_and_btrfs_through_bec2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The two other filesystems the library reads, each a whole-disk filesystem made by its
    own tools (mkntfs + ntfscp, mkfs.btrfs --rootdir): listed and restored from a folder."""
    ntfs_files = {"hello.txt": b"hello ntfs\n", "big.bin": gd._pattern(11, 3 * gd.MIB)}
    tree = tmp_path / "tree"
    gd.make_tree(tree, 1, owners=ROOT)
    ntfs = gd.ntfs_disk(tmp_path / "ntfs.img", ntfs_files)
    btrfs = gd.btrfs_disk(tmp_path / "btrfs.img", tree)
    folder = tmp_path / "folder"
    vntfs, vbtrfs = "vol-0ntfs00000000001", "vol-0btrfs0000000001"
    for k, (vid, disk) in enumerate(((vntfs, ntfs), (vbtrfs, btrfs))):
        spec = full_spec(vid, disk.size, f"snap-0fs{k}", T0)
        gd.folder_backup(
            folder, spec, gd.image_blocks(disk.path, BLOCK_SIZE), started=T0.timestamp() + 60 * k
        )
    code, out, err = bec2(
        capsys, "--operation=ls-files", f"--output={folder}", f"--volumes={vntfs}", "--path=/"
    )
    assert code == 0, err
    assert "hello.txt" in out and "big.bin" in out, out
    dest = tmp_path / "out"
    code, _out, err = bec2(
        capsys, "--operation=restore-files", f"--output={folder}", f"--local_path={dest}",
        "--files=/*.txt,/big.bin,/etc/nginx/**",
    )  # fmt: skip
    assert code == 0, err
    for name, data in ntfs_files.items():
        assert (dest / "@amazon-ec2" / IID / vntfs / "disk" / name).read_bytes() == data
    broot = dest / "@amazon-ec2" / IID / vbtrfs / "disk"
    for src in [tree / "etc/nginx", *(tree / "etc/nginx").rglob("*")]:
        same_entry(src, broot / src.relative_to(tree))
