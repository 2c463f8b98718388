"""bacula_ec2.guest on real filesystems made here in user space (devkit/guestdisks.py): a
GPT disk (EFI vfat + ext4), an MBR disk (XFS), a bare NTFS; listed and extracted, compared
with the source trees; then the same disk as a Full + Incremental chain of block images."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from bacula_ec2.guest import (
    FileSource,
    GuestDamaged,
    GuestError,
    StreamSource,
    extract,
    list_path,
    ls_line,
    open_disk,
    parse_patterns,
    select,
)
from bacula_ec2.jobs.chainview import ChainDamaged, ChainView
from devkit import guestdisks as gd

pytestmark = pytest.mark.skipif(bool(gd.missing_tools()), reason=f"missing tools: {gd.missing_tools()}")
ROOT = os.geteuid() == 0


@dataclass
class Disks:
    base: Path
    tree: Path
    tree2: Path
    efi: Path
    gpt: gd.Disk
    gpt2: gd.Disk
    xfs: gd.Disk
    ntfs: gd.Disk
    btrfs: gd.Disk
    ntfs_files: dict[str, bytes]
    odd: Path  # MBR: p1 swap, p2 extended holding p5: no filesystem
    prealloc: Path  # a bare ext4 whose /prealloc is one unwritten extent over 0xAA bytes
    xfs_unwritten: Path  # a bare XFS whose /aa.bin's extent (0xAA bytes) is flagged unwritten
    inline: Path  # a bare ext4 with inline_data: files in the inode, and beyond 60 bytes in an xattr
    inline_src: Path


@pytest.fixture(scope="module")
def disks(tmp_path_factory: pytest.TempPathFactory) -> Disks:
    base = tmp_path_factory.mktemp("guestdisks")
    tree, tree2, efi = base / "tree", base / "tree2", base / "efi"
    gd.make_tree(tree, 1, owners=ROOT)
    gd.make_tree(tree2, 2, owners=ROOT)
    gd.make_efi_tree(efi)
    ntfs_files = {"hello.txt": b"hello ntfs\n", "big.bin": gd._pattern(1, 3 * gd.MIB)}
    odd = base / "odd.img"
    with open(odd, "wb") as fh:
        fh.truncate(8 * gd.MIB)
    table = b"label: dos\nstart=2048, size=4096\nstart=6144, type=5\nstart=8192\n"
    subprocess.run(["sfdisk", "-q", str(odd)], input=table, check=True, capture_output=True)
    swap = base / "swap.img"
    with open(swap, "wb") as fh:
        fh.truncate(2 * gd.MIB)
    subprocess.run(["mkswap", str(swap)], check=True, capture_output=True)
    with open(odd, "r+b") as fh:
        fh.seek(gd.MIB)
        fh.write(swap.read_bytes())
        fh.seek(4 * gd.MIB)  # the logical partition p5 in the extended p2: no filesystem
        fh.write(gd._pattern(9, gd.MIB))
    prealloc = base / "prealloc.img"
    prealloc.write_bytes(b"\xaa" * (8 * gd.MIB))
    src = base / "presrc"
    src.mkdir()
    (src / "a").write_bytes(b"hi\n")
    subprocess.run(["mkfs.ext4", "-q", "-F", "-E", "nodiscard", "-d", str(src), str(prealloc)], check=True)
    for cmd in ("write /dev/null prealloc", "fallocate /prealloc 0 39", "sif /prealloc size 40960"):
        subprocess.run(["debugfs", "-w", "-R", cmd, str(prealloc)], check=True, capture_output=True)
    xsrc = base / "aa.bin"
    xsrc.write_bytes(b"\xaa" * 65536)
    xproto = base / "xu.proto"
    xproto.write_text(f"/dev/null\n0 0\nd--755 0 0\n aa.bin ---644 0 0 {xsrc}\n$\n")
    xu = base / "xu.img"
    with open(xu, "wb") as fh:
        fh.truncate(64 * gd.MIB)
    env = {**os.environ, "TEST_DIR": "/tmp", "TEST_DEV": "/dev/null", "QA_CHECK_FS": "1"}
    subprocess.run(["mkfs.xfs", "-q", "-f", "-p", str(xproto), str(xu)], check=True, env=env)
    ls = subprocess.run(["xfs_db", "-r", "-c", "inode 128", "-c", "p u3.sfdir3.list[0].inumber.i4", str(xu)],
                        check=True, capture_output=True, text=True).stdout  # fmt: skip
    inum = ls.split("=")[1].strip()
    subprocess.run(["xfs_db", "-x", "-c", f"inode {inum}", "-c", "write u3.bmx[0].extentflag 1", str(xu)],
                   check=True, capture_output=True)  # fmt: skip
    inline_src = base / "inline-src"
    inline_src.mkdir()
    for name, data in {"small": b"s" * 40, "eighty": bytes(range(80)), "big": gd._pattern(5, 5000)}.items():
        (inline_src / name).write_bytes(data)
    inline = base / "inline.img"
    with open(inline, "wb") as fh:
        fh.truncate(8 * gd.MIB)
    subprocess.run(
        ["mkfs.ext4", "-q", "-F", "-O", "inline_data", "-d", str(inline_src), str(inline)], check=True
    )
    return Disks(
        base, tree, tree2, efi,
        gd.gpt_disk(base / "gpt.img", tree, efi), gd.gpt_disk(base / "gpt2.img", tree2, efi),
        gd.mbr_xfs_disk(base / "xfs.img", tree), gd.ntfs_disk(base / "ntfs.img", ntfs_files),
        gd.btrfs_disk(base / "btrfs.img", tree), ntfs_files,
        odd, prealloc, xu, inline, inline_src,
    )  # fmt: skip


def source_entries(tree: Path, skip_spaces: bool = False) -> dict[str, os.stat_result]:
    out = {}
    for top, dirs, names in os.walk(tree):
        for name in dirs + names:
            path = Path(top) / name
            rel = "/" + str(path.relative_to(tree))
            if skip_spaces and any(" " in c for c in rel.split("/")):
                continue
            out[rel] = path.lstat()
    return out


def compare_extracted(src: Path, out: Path, *, times: bool, skip_spaces: bool = False) -> None:
    """Every regular file, directory and link of `src` is in `out` with its content, mode,
    owner (as root), mtime (if `times`); links as links; FIFOs are not restored."""
    for rel, st in source_entries(src, skip_spaces).items():
        got = out / rel.lstrip("/")
        if stat.S_ISFIFO(st.st_mode):
            assert not os.path.lexists(got), rel
            continue
        gst = got.lstat()
        assert stat.S_IFMT(gst.st_mode) == stat.S_IFMT(st.st_mode), rel
        if stat.S_ISLNK(st.st_mode):
            assert os.readlink(got) == os.readlink(src / rel.lstrip("/")), rel
        else:
            assert stat.S_IMODE(gst.st_mode) == stat.S_IMODE(st.st_mode), rel
        if stat.S_ISREG(st.st_mode):
            assert got.read_bytes() == (src / rel.lstrip("/")).read_bytes(), rel
        if ROOT:
            assert (gst.st_uid, gst.st_gid) == (st.st_uid, st.st_gid), rel
        if times:
            assert gst.st_mtime_ns == st.st_mtime_ns, rel


def test_partitions_and_filesystems_are_found(disks: Disks) -> None:
    gpt = open_disk(FileSource(str(disks.gpt.path)))
    assert gpt.scheme == "gpt"
    assert [(p.name, p.fstype) for p in gpt.partitions] == [("p1", "vfat"), ("p2", "ext4")]
    assert [(p.offset, p.size) for p in gpt.partitions] == list(disks.gpt.partitions.values())  # sfdisk's
    mbr = open_disk(FileSource(str(disks.xfs.path)))
    assert (mbr.scheme, [(p.name, p.fstype) for p in mbr.partitions]) == ("mbr", [("p1", "xfs")])
    with open(disks.ntfs.path, "rb") as fh:  # any seekable binary file is a source
        bare = open_disk(StreamSource(fh))
    assert (bare.scheme, [(p.name, p.fstype) for p in bare.partitions]) == ("none", [("disk", "ntfs")])
    odd = open_disk(FileSource(str(disks.odd)))
    assert [(p.name, p.fstype) for p in odd.partitions] == [("p1", "swap"), ("p5", None)]  # Linux's names


def test_ext4_listing_matches_the_source_tree(disks: Disks) -> None:
    fs = open_disk(FileSource(str(disks.gpt.path))).open_fs("p2")
    want = source_entries(disks.tree)
    got = {e.path: e for e, _n in fs.walk("/") if e.path != "/" and not e.path.startswith("/lost+found")}
    assert set(got) == set(want)
    for path, st in want.items():
        e = got[path]
        assert (e.mode, e.uid, e.gid, e.mtime_ns) == (
            stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_mtime_ns
        ), path  # fmt: skip
        if stat.S_ISREG(st.st_mode):
            assert (e.kind, e.size) == ("file", st.st_size), path
        elif stat.S_ISLNK(st.st_mode):
            assert (e.kind, e.target) == ("symlink", os.readlink(disks.tree / path.lstrip("/"))), path
    nginx = [e.name for e in fs.listdir("/etc/nginx")]
    assert nginx == sorted(os.listdir(disks.tree / "etc/nginx"))
    assert fs.stat("/srv/donn\u00e9es/caf\u00e9 \u00fc \u65e5\u672c.txt").size == len(
        "\u00e9t\u00e9\n".encode()
    )


def test_ls_files_lists_a_directory_on_the_filesystems_that_have_it(disks: Disks) -> None:
    disk = open_disk(FileSource(str(disks.gpt.path)))
    (etc,) = list_path(disk, "/etc/nginx")
    assert (etc.partition, etc.fstype, etc.path) == ("p2", "ext4", "/etc/nginx")
    assert [e.name for e in etc.entries] == sorted(os.listdir(disks.tree / "etc/nginx"))
    line = ls_line(next(e for e in etc.entries if e.name == "nginx.conf"))
    assert line.startswith("-rw-r--r--     0     0         ") and line.endswith(
        " 2023-11-14 22:13:21 nginx.conf"
    )
    (link,) = list_path(disk, "p2:/home/app/hostname-link")
    assert ls_line(link.entries[0]).endswith("hostname-link -> /etc/hostname")
    (efi,) = list_path(disk, "/EFI/BOOT")
    assert (efi.partition, [e.name for e in efi.entries]) == ("p1", ["BOOTX64.EFI", "grub.cfg"])
    (bin_,) = list_path(disk, "/bin")  # a link to a directory: what it points to
    assert [e.name for e in bin_.entries] == ["tool", "tool-hardlink"]
    with pytest.raises(GuestError, match=r"/nope: p1 \(vfat\) has no /nope; p2 \(ext4\) has no /nope"):
        list_path(disk, "/nope")
    with pytest.raises(GuestError, match="p2:/nope does not exist"):
        list_path(disk, "p2:/nope")
    with pytest.raises(GuestError, match="without wildcards"):
        list_path(disk, "/etc/*")


def test_ext4_extract_everything_equals_the_source_tree(disks: Disks, tmp_path: Path) -> None:
    disk = open_disk(FileSource(str(disks.gpt.path)))
    report = extract(select(disk, parse_patterns("p2:/**")), str(tmp_path))
    compare_extracted(disks.tree, tmp_path / "p2", times=True)
    assert report.owners_kept is ROOT
    assert report.skipped == ["p2:/home/app/fifo (fifo) is not restored"]
    assert report.hardlinks_copied == 1 and report.symlinks == 3
    sparse = tmp_path / "p2/var/lib/sparse.img"
    assert sparse.stat().st_size == gd.SPARSE_SIZE
    assert sparse.stat().st_blocks * 512 < 2 * gd.MIB  # the holes stay holes
    assert report.data_bytes < 3 * gd.MIB and report.partitions == {"p2": "ext4"}


def test_globs_select_files_and_directories_on_the_partition_that_has_them(
    disks: Disks, tmp_path: Path
) -> None:
    disk = open_disk(FileSource(str(disks.gpt.path)))
    sel = select(disk, parse_patterns("/etc/nginx/**,/home/app/.env,/EFI/BOOT/*.EFI"))
    assert sel.problems == []
    report = extract(sel, str(tmp_path))
    got = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if not p.is_dir())
    assert got == [
        "p1/EFI/BOOT/BOOTX64.EFI",
        "p2/etc/nginx/nginx.conf",
        "p2/etc/nginx/sites-available/default.conf",
        "p2/etc/nginx/sites-enabled/default.conf",
        "p2/home/app/.env",
    ]
    assert (tmp_path / "p1/EFI/BOOT/BOOTX64.EFI").read_bytes() == (
        disks.efi / "EFI/BOOT/BOOTX64.EFI"
    ).read_bytes()
    assert (tmp_path / "p2/home/app/.env").read_bytes() == (disks.tree / "home/app/.env").read_bytes()
    # the directories on the way carry the guest's mode, owner and time
    app = (tmp_path / "p2/home/app").stat()
    assert (
        stat.S_IMODE(app.st_mode) == 0o750 and app.st_mtime_ns == (disks.tree / "home/app").stat().st_mtime_ns
    )
    if ROOT:
        assert app.st_uid == 1000
    assert report.partitions == {"p1": "vfat", "p2": "ext4"}


def test_a_path_through_a_guest_link_resolves_inside_the_guest(disks: Disks, tmp_path: Path) -> None:
    disk = open_disk(FileSource(str(disks.gpt.path)))
    sel = select(disk, parse_patterns("/bin/*,/home/app/hostname-link"))
    assert sorted(m.entry.path for m in sel.matches) == [
        "/home/app/hostname-link",  # the link itself, not what it points to
        "/usr/bin/tool",
        "/usr/bin/tool-hardlink",
    ]
    fs = disk.open_fs("p2")
    assert fs.stat("/bin/../bin/tool").path == "/usr/bin/tool"  # `..` of where the link led, as Linux
    with pytest.raises(GuestError, match="p2:/usr/etc does not exist"):
        fs.stat("/bin/../etc/hostname")
    extract(sel, str(tmp_path))
    assert (tmp_path / "p2/usr/bin/tool").read_bytes() == (disks.tree / "usr/bin/tool").read_bytes()
    assert os.readlink(tmp_path / "p2/home/app/hostname-link") == "/etc/hostname"


def test_xfs_extract_equals_the_source_tree(disks: Disks, tmp_path: Path) -> None:
    disk = open_disk(FileSource(str(disks.xfs.path)))
    fs = disk.open_fs("p1")
    assert fs.fstype == "xfs"
    extract(select(disk, parse_patterns("/**")), str(tmp_path))
    # a protofile cannot name entries with spaces, nor set times (mkfs.xfs stamps them)
    compare_extracted(disks.tree, tmp_path / "p1", times=False, skip_spaces=True)
    conf = fs.stat("/etc/nginx/nginx.conf")
    assert (tmp_path / "p1/etc/nginx/nginx.conf").stat().st_mtime_ns == conf.mtime_ns


def test_btrfs_extract_equals_the_source_tree(disks: Disks, tmp_path: Path) -> None:
    disk = open_disk(FileSource(str(disks.btrfs.path)))
    assert [(p.name, p.fstype) for p in disk.partitions] == [("disk", "btrfs")]
    report = extract(select(disk, parse_patterns("/**")), str(tmp_path))
    compare_extracted(disks.tree, tmp_path / "disk", times=True)
    assert report.skipped == ["disk:/home/app/fifo (fifo) is not restored"]


def test_ntfs_and_vfat_files_are_read(disks: Disks, tmp_path: Path) -> None:
    disk = open_disk(FileSource(str(disks.ntfs.path)))
    listed = {e.name: e for e in disk.open_fs("disk").listdir("/")}
    assert {n: e.size for n, e in listed.items()} == {n: len(d) for n, d in disks.ntfs_files.items()}
    extract(select(disk, parse_patterns("/*")), str(tmp_path))
    for name, data in disks.ntfs_files.items():
        assert (tmp_path / "disk" / name).read_bytes() == data
    fat = open_disk(FileSource(str(disks.gpt.path))).open_fs("p1")
    assert fat.fstype == "vfat"
    boot = fat.listdir("/efi/boot")
    assert [e.name for e in boot] == ["BOOTX64.EFI", "grub.cfg"]
    src = (disks.efi / "EFI/BOOT/BOOTX64.EFI").stat()
    assert boot[0].size == src.st_size
    assert (
        boot[0].mtime_ns is not None and abs(boot[0].mtime_ns - src.st_mtime_ns) <= 2_000_000_000
    )  # FAT: 2 s


def test_an_unwritten_extent_reads_as_zeros_not_as_the_old_bytes(disks: Disks, tmp_path: Path) -> None:
    disk = open_disk(FileSource(str(disks.prealloc)))
    assert [(p.name, p.fstype) for p in disk.partitions] == [("disk", "ext4")]
    report = extract(select(disk, parse_patterns("/prealloc")), str(tmp_path))
    got = tmp_path / "disk/prealloc"
    assert got.read_bytes() == bytes(40960)
    assert (report.bytes, report.data_bytes) == (40960, 0) and got.stat().st_blocks == 0


def test_ext4_inline_data_reads_whole_past_the_inode(disks: Disks, tmp_path: Path) -> None:
    disk = open_disk(FileSource(str(disks.inline)))
    _path, node = disk.open_fs("disk").lookup("/eighty")
    assert len(node.open().read()) == 60  # dissect's own reader stops at the inode
    extract(select(disk, parse_patterns("/*")), str(tmp_path))
    for name in ("small", "eighty", "big"):
        assert (tmp_path / "disk" / name).read_bytes() == (disks.inline_src / name).read_bytes(), name


def test_an_unwritten_xfs_extent_reads_as_zeros(disks: Disks, tmp_path: Path) -> None:
    disk = open_disk(FileSource(str(disks.xfs_unwritten)))
    fs = disk.open_fs("disk")
    _path, node = fs.lookup("/aa.bin")
    assert node.dataruns and all(block is not None for block, _n in node.dataruns)  # dissect's own map
    report = extract(select(disk, parse_patterns("/aa.bin")), str(tmp_path))
    assert (tmp_path / "disk/aa.bin").read_bytes() == bytes(65536)
    assert report.data_bytes == 0


def test_what_cannot_be_restored_is_named(disks: Disks, tmp_path: Path) -> None:
    disk = open_disk(FileSource(str(disks.gpt.path)))
    with pytest.raises(
        GuestError, match=r"/nothing/\*\* matches nothing on partitions p1 \(vfat\), p2 \(ext4\)"
    ):
        extract(select(disk, parse_patterns("/nothing/**")), str(tmp_path))
    with pytest.raises(GuestError, match=r"p7:/etc: the disk has no partition p7 \(it has: p1 \(vfat"):
        extract(select(disk, parse_patterns("p7:/etc")), str(tmp_path))
    sel = select(disk, parse_patterns("/etc/hostname,/nope"))
    assert sel.problems == ["/nope matches nothing on partitions p1 (vfat), p2 (ext4)"]
    assert extract(sel, str(tmp_path)).files == 1  # a partial selection restores what it has
    odd = open_disk(FileSource(str(disks.odd)))
    with pytest.raises(GuestError, match="partition p1 holds swap: cannot read files from it"):
        extract(select(odd, parse_patterns("p1:/etc")), str(tmp_path))
    with pytest.raises(GuestError, match="partition p5 holds no filesystem this reader recognises"):
        extract(select(odd, parse_patterns("p5:/etc")), str(tmp_path))
    with pytest.raises(GuestError, match="the disk holds no filesystem this reader can read"):
        extract(select(odd, parse_patterns("/etc")), str(tmp_path))


def test_a_damaged_filesystem_fails_naming_partition_and_path(disks: Disks, tmp_path: Path) -> None:
    broken = tmp_path / "broken.img"
    shutil.copyfile(disks.gpt.path, broken)
    fs = open_disk(FileSource(str(disks.gpt.path))).open_fs("p2")
    offset = disks.gpt.partitions["p2"][0]
    with open(broken, "r+b") as fh:  # the block group descriptors: inode tables anywhere
        gdt = offset + max(2048, fs.fs.block_size)
        fh.seek(gdt)
        fh.write(b"\x5a" * 1024)
    disk = open_disk(FileSource(str(broken)))
    with pytest.raises(
        GuestError, match=r"cannot read p2:/ on the ext4 filesystem of partition p2: .*damaged"
    ) as info:
        bfs = disk.open_fs("p2")
        bfs.listdir("/etc")
    assert info.value.__cause__ is not None
    # Not a "not there" to warn about and restore the rest: selecting from it fails the volume.
    assert isinstance(info.value, GuestDamaged)
    for pattern in ("p2:/etc/**", "/etc/**"):
        with pytest.raises(GuestDamaged, match="p2"):
            select(disk, parse_patterns(pattern))


def test_extraction_never_writes_through_a_link_in_the_target(disks: Disks, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "dest"
    (dest / "p2").mkdir(parents=True)
    os.symlink(outside, dest / "p2/etc")
    disk = open_disk(FileSource(str(disks.gpt.path)))
    with pytest.raises(GuestError, match="symbolic link"):
        extract(select(disk, parse_patterns("p2:/etc/hostname")), str(dest))
    assert list(outside.iterdir()) == []


def test_through_a_chain_of_block_images_each_point_in_time(disks: Disks, tmp_path: Path) -> None:
    bs = 65536
    size = disks.gpt.size
    full = tmp_path / "full.bimg"
    incr = tmp_path / "incr.bimg"
    spec = gd.PartSpec("vol-0guest", size, "snap-1", "2026-12-01T10:00:00Z", block_size=bs)
    gd.write_part(full, spec, gd.image_blocks(disks.gpt.path, bs))
    spec2 = gd.PartSpec(
        "vol-0guest", size, "snap-2", "2026-12-02T10:00:00Z", level="I", base_snapshot_id="snap-1",
        base_created="2026-12-01T10:00:00Z", job_id=2, chain_position=1, block_size=bs,
    )  # fmt: skip
    gd.write_part(incr, spec2, gd.changed_blocks(disks.gpt.path, disks.gpt2.path, bs))
    for parts, tree in (([full], disks.tree), ([full, incr], disks.tree2)):
        out = tmp_path / f"out{len(parts)}"
        with ChainView([str(p) for p in parts]) as view:
            disk = open_disk(view)
            report = extract(select(disk, parse_patterns("p2:/etc/**")), str(out))
            assert view.bytes_read < size // 4  # only the blocks it needs
        compare_extracted(tree / "etc", out / "p2/etc", times=True)
        assert report.problems == []
    assert (tmp_path / "out2/p2/etc/nginx/conf.d/new.conf").exists()
    assert not (tmp_path / "out2/p2/etc/ssh/sshd_config").exists()
    # a damaged block under a file: the restore fails naming the part, never wrong bytes
    data = full.read_bytes()
    needle = gd._pattern(7, gd.MIB)[gd.MIB // 2 : gd.MIB // 2 + 4096]  # a block of file data alone
    at = data.find(needle)
    assert at > 0
    with open(full, "r+b") as fh:
        fh.seek(at + 10)
        fh.write(b"\xff")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "kept").write_bytes(b"mine")
    with ChainView([str(full)], ["backups/1/full.bimg"]) as view:
        disk = open_disk(view)
        sel = select(disk, parse_patterns("p2:/etc/**,p2:/home/app/data/one-mib.bin"))
        assert len(sel.matches) > 10  # /etc is restored first, then the damaged file
        with pytest.raises(ChainDamaged, match=r"backups/1/full.bimg is damaged: block .* SHA-256"):
            extract(sel, str(bad))
    assert [p.name for p in bad.iterdir()] == ["kept"]  # everything it wrote is gone
    # A file that was there before (an earlier restore into the same place) is never removed
    # by the rollback: it stays, replaced by the guest's version.
    again = tmp_path / "again"
    (again / "p2/etc").mkdir(parents=True)
    (again / "p2/etc/hostname").write_bytes(b"from an earlier restore\n")
    with ChainView([str(full)], ["backups/1/full.bimg"]) as view:
        sel = select(open_disk(view), parse_patterns("p2:/etc/**,p2:/home/app/data/one-mib.bin"))
        with pytest.raises(ChainDamaged):
            extract(sel, str(again))
    assert sorted(str(p.relative_to(again)) for p in again.rglob("*")) == ["p2", "p2/etc", "p2/etc/hostname"]
    assert (again / "p2/etc/hostname").read_bytes() == (tree / "etc/hostname").read_bytes()


def test_a_deep_tree_keeps_few_directories_open_and_leaks_none(
    disks: Disks, tmp_path: Path, monkeypatch
) -> None:
    import bacula_ec2.guest.extraction as ex

    most = 0
    original = ex._Writer.directory

    def counting(self, key, guest):  # type: ignore[no-untyped-def]
        nonlocal most
        got = original(self, key, guest)
        most = max(most, len(self.dirs))
        return got

    monkeypatch.setattr(ex._Writer, "directory", counting)
    before = len(os.listdir("/proc/self/fd"))
    disk = open_disk(FileSource(str(disks.gpt.path)))
    extract(select(disk, parse_patterns("p2:/**")), str(tmp_path))
    assert most <= 1 + 1 + 5  # the target, p2, and the deepest path of the tree (etc/nginx/...)
    assert len(os.listdir("/proc/self/fd")) <= before + 1  # the disk image's descriptor
