"""End to end through real Bacula: restore_as=files (issue 14). One instance with a GPT disk
(EFI vfat + ext4 root), an MBR disk with XFS and a volume holding no filesystem, all made
in user space (devkit/guestdisks.py) and written to simulated EBS volumes; Full, the ext4
changed (the image rebuilt from the next day's tree, the changed blocks written),
Incremental; selected files restored at both points in time through bconsole's Plugin
Options (`mod`) and compared with the source trees (content, mode, owner, mtime). A
selection that matches nothing anywhere (a partition that does not exist, a volume with no
filesystem) ends in Restore Error naming each; one that matches on some volumes only is a
warning. The staging directory is gone after every job."""

from __future__ import annotations

import os
import re
import stat
import time
from pathlib import Path

import pytest

from bacula_ec2.params import restore_option_items
from devkit import doctest_md as md
from devkit import guestdisks as gd

from .common import BLOCK, end_time, plugin_line

pytestmark = pytest.mark.skipif(bool(gd.missing_tools()), reason=f"missing tools: {gd.missing_tools()}")
ROOT = os.geteuid() == 0


def write_disk(sim, vid: str, blocks) -> None:  # type: ignore[no-untyped-def]
    for index, data in blocks:
        sim.client.write_volume(vid, index * BLOCK, data if data is not None else bytes(BLOCK))


def restore_files(stack, when: str, where: Path, files: str) -> tuple[int, str, str]:  # type: ignore[no-untyped-def]
    """bconsole restore of the newest backups before `when` into `where`, with restore_as=files
    and restore_files= set in the Plugin Options dialog. Returns (jobid, status, log)."""
    names = [name for name, *_ in restore_option_items()]
    commands = [
        f'restore client={stack.client} fileset={stack.fileset} before="{when}" select current '
        f"all done where={where}",
        "mod",
        "13",
    ]
    for key, value in (("restore_as", "files"), ("restore_files", files)):
        commands += ["mod", str(names.index(key) + 1), value]
    commands += ["yes", "yes"]
    out = stack.bconsole(*commands)
    assert re.search(rf"^restore_files:\s+{re.escape(files)}(\s+\(.*\))?\s*$", out, re.M), out
    match = re.search(r"Job queued\. JobId=(\d+)", out)
    assert match, out
    jobid = int(match.group(1))
    status = stack.wait_job(jobid, timeout=180)
    return jobid, status, stack.job_log(jobid)


def same_entry(src: Path, got: Path, times: bool = True) -> None:
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


def no_staging(where: Path) -> None:
    left = [p for p in where.rglob("*") if p.name.startswith(".bacula-ec2-staging-") or p.suffix == ".img"]
    assert not left, left


def test_restore_files_through_bacula(sim, bacula_stack, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    tree1, tree2, efi = tmp_path / "tree1", tmp_path / "tree2", tmp_path / "efi"
    gd.make_tree(tree1, 1, owners=ROOT)
    gd.make_tree(tree2, 2, owners=ROOT)
    gd.make_efi_tree(efi)
    gpt1 = gd.gpt_disk(tmp_path / "gpt1.img", tree1, efi, size_mib=48)
    gpt2 = gd.gpt_disk(tmp_path / "gpt2.img", tree2, efi, size_mib=48)
    xfs = gd.mbr_xfs_disk(tmp_path / "xfs.img", tree1, size_mib=48)
    inst = sim.client.create_instance(
        "files-web",
        volumes=[
            {"size_gib": 1, "device": "/dev/xvda"},
            {"size_gib": 1, "device": "/dev/xvdb"},
            {"size_gib": 1, "device": "/dev/xvdc"},
        ],
    )
    iid = inst["instance_id"]
    vgpt, vxfs, vraw = inst["volume_ids"]
    write_disk(sim, vgpt, gd.image_blocks(gpt1.path, BLOCK))
    write_disk(sim, vxfs, gd.image_blocks(xfs.path, BLOCK))
    sim.client.write_volume(vraw, 0, gd._pattern(5, BLOCK))  # no partition table, no filesystem
    stack = bacula_stack([plugin_line(sim.endpoint, "instances=files-web")])
    full = stack.run_job(level="Full", timeout=180)
    assert "Backup OK" in stack.job_log(full)
    at_full = end_time(stack, full)
    time.sleep(1.1)  # Bacula's times have a one-second resolution
    write_disk(sim, vgpt, gd.changed_blocks(gpt1.path, gpt2.path, BLOCK))
    incr = stack.run_job(level="Incremental", timeout=180)
    assert "Backup OK" in stack.job_log(incr)

    # The Plugin Options of docs/RESTORE.md's "Restore single files" bconsole block (which the
    # docs suite skips: its world has no filesystems).
    (block,) = [
        b
        for b in md.blocks(md.REPO / "docs/RESTORE.md")
        if b.kind == "skip" and "tests/e2e/test_restore_files.py" in b.reason
    ]
    (command,) = md.console_commands(block, [name for name, *_ in restore_option_items()])
    options = dict(command.options)
    assert options.get("restore_as") == "files" and command.line.endswith("where=/srv/restores"), command
    files = options["restore_files"]
    for name, when, tree in (("then", at_full, tree1), ("now", "2099-01-01 00:00:00", tree2)):
        where = tmp_path / f"restore-{name}"
        _jobid, status, log = restore_files(stack, when, where, files)
        assert status == "T", log
        assert "Restore OK" in log and "Warning: ec2: not restored: volume" in log, log
        base = where / "@amazon-ec2" / iid
        root = base / vgpt / "p2"
        wanted = [p for p in (tree / "etc/nginx").rglob("*")] + [tree / "home/app/.env", tree / "etc/nginx"]
        for src in wanted:
            same_entry(src, root / src.relative_to(tree))
        got = {str(p.relative_to(root)) for p in root.rglob("*")}
        assert got == {str(p.relative_to(tree)) for p in wanted} | {"etc", "home", "home/app"}, got
        assert (base / vgpt / "p1/EFI/BOOT/grub.cfg").read_bytes() == (efi / "EFI/BOOT/grub.cfg").read_bytes()
        xroot = base / vxfs / "p1"
        for rel in ("etc/nginx/nginx.conf", "etc/nginx/sites-available/default.conf", "home/app/.env"):
            same_entry(tree1 / rel, xroot / rel, times=False)  # mkfs.xfs -p dates its files itself
        assert not (base / vraw).exists()
        assert sorted(p.name for p in base.iterdir()) == sorted([vgpt, vxfs]), list(base.iterdir())
        # the job log: partitions and filesystems found, what was not restored, the totals
        assert f"volume {vgpt}: gpt disk, partitions: p1 (vfat" in log and "p2 (ext4" in log, log
        assert re.search(rf"not restored: volume {vxfs}: p1:/EFI/BOOT/grub.cfg matches nothing", log), log
        assert re.search(rf"not restored: volume {vraw}: .*no filesystem", log), log
        assert re.search(r"restore finished: \d+ file\(s\) \(\d+ bytes\)", log), log
        no_staging(where)
    assert (tmp_path / "restore-now/@amazon-ec2" / iid / vgpt / "p2/etc/nginx/conf.d/new.conf").is_file()
    assert not (tmp_path / "restore-then/@amazon-ec2" / iid / vgpt / "p2/etc/nginx/conf.d").exists()

    # Nothing anywhere: a partition no disk has (and the volume without a filesystem).
    where = tmp_path / "restore-none"
    _jobid, status, log = restore_files(stack, "2099-01-01 00:00:00", where, "p9:/etc/hostname")
    assert status != "T" and "Restore Error" in log, log
    assert "nothing was restored" in log and "the disk has no partition p9" in log, log
    assert vgpt in log and vxfs in log and re.search(rf"{vraw}: .*no filesystem", log), log
    assert not (where / "@amazon-ec2").exists() or not any((where / "@amazon-ec2").rglob("*"))
    no_staging(where)


def test_ntfs_and_btrfs_files_through_bacula(sim, bacula_stack, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The two other filesystems the library reads (whole-disk NTFS and btrfs, made by their
    own tools) on the volumes of one instance: a Full, then restore_as=files of files on both."""
    ntfs_files = {"hello.txt": b"hello ntfs\n", "big.bin": gd._pattern(13, 3 * gd.MIB)}
    tree = tmp_path / "tree"
    gd.make_tree(tree, 1, owners=ROOT)
    ntfs = gd.ntfs_disk(tmp_path / "ntfs.img", ntfs_files)
    btrfs = gd.btrfs_disk(tmp_path / "btrfs.img", tree)
    inst = sim.client.create_instance(
        "files-win",
        volumes=[{"size_gib": 1, "device": "/dev/sda1"}, {"size_gib": 1, "device": "/dev/xvdb"}],
    )
    iid = inst["instance_id"]
    vntfs, vbtrfs = inst["volume_ids"]
    write_disk(sim, vntfs, gd.image_blocks(ntfs.path, BLOCK))
    write_disk(sim, vbtrfs, gd.image_blocks(btrfs.path, BLOCK))
    stack = bacula_stack([plugin_line(sim.endpoint, "instances=files-win")])
    full = stack.run_job(level="Full", timeout=180)
    assert "Backup OK" in stack.job_log(full)
    where = tmp_path / "restored"
    _jobid, status, log = restore_files(stack, "2099-01-01 00:00:00", where, "/*.txt,/big.bin,/etc/nginx/**")
    assert status == "T" and "Restore OK" in log, log
    base = where / "@amazon-ec2" / iid
    for name, data in ntfs_files.items():
        assert (base / vntfs / "disk" / name).read_bytes() == data
    broot = base / vbtrfs / "disk"
    for src in [tree / "etc/nginx", *(tree / "etc/nginx").rglob("*")]:
        same_entry(src, broot / src.relative_to(tree))
    assert f"volume {vntfs}" in log and "ntfs" in log and "btrfs" in log, log
    no_staging(where)
