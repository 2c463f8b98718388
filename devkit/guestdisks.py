"""Real guest disks made in user space (no mount, no loop device, no root needed except to
keep owners): the disks the file-level restore is tested on.

- `gpt_disk`: a GPT disk, p1 an EFI vfat partition (FAT16 at this size; mkfs.vfat --offset + mcopy), p2 an
  ext4 root populated from a directory tree (mkfs.ext4 -d -E offset=);
- `mbr_xfs_disk`: an MBR disk whose p1 is XFS as today's mkfs.xfs makes it (v5, bigtime,
  inobtcount, reflink), populated with a protofile (-p);
- `ntfs_disk`: a disk without a partition table holding one NTFS (mkntfs + ntfscp);
- `btrfs_disk`: a disk without a partition table holding one btrfs (mkfs.btrfs --rootdir,
  mixed block groups to stay small).

`make_tree` writes the source tree (nested directories, symlinks, a large sparse file,
non-ASCII names, permissions, owners, fixed times) that tests compare the extracted files
with. Tools: sfdisk (fdisk), dosfstools, mtools, e2fsprogs, xfsprogs, ntfs-3g, btrfs-progs
(packaging/install-deps.sh).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from bacula_ec2 import naming
from bacula_ec2.formats.blockimage import (
    BLOCK_SIZE,
    ZERO_BLOCK_SHA256,
    BlockRecord,
    FileKind,
    ImageHeader,
    RecordEncoder,
    RecordKind,
    block_sha256,
)
from bacula_ec2.jobs import folder as jfolder
from bacula_ec2.jobs.chain import job_resource
from bacula_ec2.jobs.sink import FileInfo

MIB = 1 << 20
DEVICE = "/dev/xvdf"
TOOLS = ("sfdisk", "mkfs.vfat", "mcopy", "mmd", "mkfs.ext4", "mkfs.xfs", "mkntfs", "ntfscp", "mkfs.btrfs")
MTIME = 1_700_000_000  # 2023-11-14T22:13:20Z: every file of the source trees
SPARSE_SIZE = 24 * MIB
SPARSE_DATA = ((0, b"head" * 1024), (20 * MIB, b"tail" * 2048))  # the only data of the sparse file


def missing_tools() -> list[str]:
    return [t for t in TOOLS if shutil.which(t) is None]


def _run(*cmd: str | Path, env: dict[str, str] | None = None) -> None:
    subprocess.run([str(c) for c in cmd], check=True, capture_output=True, env=env)


def _pattern(seed: int, size: int) -> bytes:
    """Deterministic bytes that compress badly (no zero runs)."""
    out = bytearray()
    x = seed * 2654435761 + 1
    while len(out) < size:
        x = (x * 6364136223846793005 + 1442695040888963407) & ((1 << 64) - 1)
        out += x.to_bytes(8, "little")
    return bytes(out[:size])


def make_tree(root: Path, version: int = 1, owners: bool = True) -> None:
    """The source tree of a guest's root filesystem; `version` 2 is the same tree after a
    day of changes (one file edited, one added, one removed)."""
    root.mkdir(parents=True, exist_ok=True)
    files: dict[str, tuple[bytes, int, int, int]] = {  # path: (content, mode, uid, gid)
        "etc/hostname": (b"web-1\n", 0o644, 0, 0),
        "etc/nginx/nginx.conf": (b"worker_processes %d;\n" % version + b"# nginx\n" * 200, 0o644, 0, 0),
        "etc/nginx/sites-enabled/default.conf": (b"server { listen 80; }\n", 0o640, 0, 33),
        "etc/ssh/sshd_config": (b"PermitRootLogin no\n", 0o600, 0, 0),
        "home/app/.env": (b"TOKEN=not-a-secret-just-a-test\n", 0o600, 1000, 1000),
        "home/app/data/one-mib.bin": (_pattern(7, MIB), 0o644, 1000, 1000),
        "home/app/data/empty": (b"", 0o644, 1000, 1000),
        "srv/donn\u00e9es/caf\u00e9 \u00fc \u65e5\u672c.txt": ("\u00e9t\u00e9\n".encode(), 0o664, 1000, 100),
        "usr/bin/tool": (b"#!/bin/sh\necho tool\n", 0o755, 0, 0),
        "srv/ids/high-uid": (b"owned above 65535\n", 0o640, 70000, 70001),
    }
    if version == 2:
        files["etc/nginx/conf.d/new.conf"] = (b"# added on day 2\n", 0o644, 0, 0)
        del files["etc/ssh/sshd_config"]
    for rel, (data, mode, uid, gid) in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        path.chmod(mode)
        if owners:
            os.chown(path, uid, gid)
    sparse = root / "var/lib/sparse.img"
    sparse.parent.mkdir(parents=True, exist_ok=True)
    with open(sparse, "wb") as fh:
        fh.truncate(SPARSE_SIZE)
        for off, data in SPARSE_DATA:
            fh.seek(off)
            fh.write(data)
    (root / "etc/nginx/sites-available").mkdir(exist_ok=True)
    os.symlink("../sites-enabled/default.conf", root / "etc/nginx/sites-available/default.conf")
    os.symlink("/etc/hostname", root / "home/app/hostname-link")
    os.symlink("usr/bin", root / "bin")  # a merged-/usr guest
    os.link(root / "usr/bin/tool", root / "usr/bin/tool-hardlink")
    os.mkfifo(root / "home/app/fifo")
    if owners:
        os.chown(root / "home/app", 1000, 1000)
    (root / "home/app").chmod(0o750)
    for top, dirs, names in os.walk(root, topdown=False):
        for name in [*names, *dirs]:
            os.utime(os.path.join(top, name), (MTIME, MTIME + version), follow_symlinks=False)
    os.utime(root, (MTIME, MTIME + version))


def make_efi_tree(root: Path) -> None:
    (root / "EFI/BOOT").mkdir(parents=True, exist_ok=True)
    (root / "EFI/BOOT/BOOTX64.EFI").write_bytes(_pattern(3, 300_000))
    (root / "EFI/BOOT/grub.cfg").write_bytes(b"set timeout=1\n")


@dataclass(frozen=True)
class Disk:
    path: Path
    size: int
    partitions: dict[str, tuple[int, int]]  # name -> (offset, size) in bytes


def _sparse_copy(src: Path, dst: Path, offset: int) -> None:
    """Write `src` into `dst` at `offset`, leaving its holes as holes."""
    with open(src, "rb") as fi, open(dst, "r+b") as fo:
        size = os.fstat(fi.fileno()).st_size
        pos = 0
        while pos < size:
            try:
                data_at = os.lseek(fi.fileno(), pos, os.SEEK_DATA)
            except OSError:
                break
            hole_at = os.lseek(fi.fileno(), data_at, os.SEEK_HOLE)
            fi.seek(data_at)
            left = hole_at - data_at
            fo.seek(offset + data_at)
            while left:
                chunk = fi.read(min(left, 4 * MIB))
                fo.write(chunk)
                left -= len(chunk)
            pos = hole_at


def gpt_disk(path: Path, tree: Path, efi_tree: Path, size_mib: int = 64) -> Disk:
    """GPT: p1 EFI vfat (8 MiB at 1 MiB), p2 ext4 (the rest) populated from `tree`."""
    with open(path, "wb") as fh:
        fh.truncate(size_mib * MIB)
    script = (
        "label: gpt\n"
        "start=2048, size=16384, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name=EFI\n"
        "start=18432, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=root\n"
    )
    subprocess.run(["sfdisk", "-q", str(path)], input=script.encode(), check=True, capture_output=True)
    p1 = (2048 * 512, 16384 * 512)
    p2_end = (size_mib * MIB // 512 - 34) // 2048 * 2048  # sfdisk leaves the backup GPT's room
    p2 = (18432 * 512, p2_end * 512 - 18432 * 512)
    out = subprocess.run(["sfdisk", "-d", str(path)], check=True, capture_output=True, text=True).stdout
    p2_sectors = int(out.split("size=")[2].split(",")[0])
    p2 = (p2[0], p2_sectors * 512)
    _run("mkfs.vfat", "-n", "EFI", "--offset", "2048", path, str(p1[1] // 1024))
    img = f"{path}@@{p1[0]}"
    for top, dirs, names in os.walk(efi_tree):
        rel = os.path.relpath(top, efi_tree)
        for d in dirs:
            _run("mmd", "-i", img, "::/" + os.path.normpath(os.path.join(rel, d)))
        for n in names:
            _run(
                "mcopy", "-m", "-i", img, os.path.join(top, n), "::/" + os.path.normpath(os.path.join(rel, n))
            )
    _run(
        "mkfs.ext4",
        "-q",
        "-F",
        "-d",
        tree,
        "-E",
        f"offset={p2[0]}",
        "-O",
        "metadata_csum,64bit,extent",
        "-L",
        "root",
        path,
        f"{p2[1] // 1024}k",
    )
    return Disk(path, size_mib * MIB, {"p1": p1, "p2": p2})


def _proto_lines(src: Path, indent: int) -> list[str]:
    out = []
    pad = " " * indent
    for entry in sorted(os.scandir(src), key=lambda e: e.name):
        if any(c.isspace() for c in entry.name):
            continue  # a protofile separates fields by white space
        st = entry.stat(follow_symlinks=False)
        suid = "u" if st.st_mode & 0o4000 else "-"
        sgid = "g" if st.st_mode & 0o2000 else "-"
        perm = f"{suid}{sgid}{st.st_mode & 0o777:03o}"
        if entry.is_symlink():
            out.append(f"{pad}{entry.name} l{perm} {st.st_uid} {st.st_gid} {os.readlink(entry.path)}")
        elif entry.is_dir():
            out.append(f"{pad}{entry.name} d{perm} {st.st_uid} {st.st_gid}")
            out += _proto_lines(Path(entry.path), indent + 1)
            out.append(f"{pad}$")
        elif entry.is_file():
            out.append(f"{pad}{entry.name} -{perm} {st.st_uid} {st.st_gid} {entry.path}")
        elif entry.name == "fifo":
            out.append(f"{pad}{entry.name} p{perm} {st.st_uid} {st.st_gid}")
    return out


def mbr_xfs_disk(path: Path, tree: Path, size_mib: int = 64) -> Disk:
    """MBR: p1 XFS (from 1 MiB to the end) populated from `tree` with a protofile. The
    protofile cannot carry names with spaces, so such entries are left out."""
    with open(path, "wb") as fh:
        fh.truncate(size_mib * MIB)
    subprocess.run(
        ["sfdisk", "-q", str(path)],
        input=b"label: dos\nstart=2048, type=83\n",
        check=True,
        capture_output=True,
    )
    p1 = (MIB, size_mib * MIB - MIB)
    st = tree.stat()
    lines = ["/dev/null", "0 0", f"d--{st.st_mode & 0o777:03o} {st.st_uid} {st.st_gid}"]
    lines += [*_proto_lines(tree, 1), "$"]
    proto = path.with_suffix(".proto")
    proto.write_text("\n".join(lines) + "\n")
    fs = path.with_suffix(".xfs")
    with open(fs, "wb") as fh:
        fh.truncate(p1[1])
    env = {**os.environ, "TEST_DIR": "/tmp", "TEST_DEV": "/dev/null", "QA_CHECK_FS": "1"}
    _run("mkfs.xfs", "-q", "-f", "-L", "data", "-p", proto, fs, env=env)
    _sparse_copy(fs, path, p1[0])
    fs.unlink()
    proto.unlink()
    return Disk(path, size_mib * MIB, {"p1": p1})


def ntfs_disk(path: Path, files: dict[str, bytes], size_mib: int = 16) -> Disk:
    """A disk without a partition table: one NTFS, files copied into its root with ntfscp
    (ntfscp creates no directories)."""
    with open(path, "wb") as fh:
        fh.truncate(size_mib * MIB)
    _run("mkntfs", "-F", "-Q", "-q", "-L", "win", path)
    stage = path.with_suffix(".src")
    stage.mkdir(exist_ok=True)
    for name, data in files.items():
        src = stage / "f"
        src.write_bytes(data)
        _run("ntfscp", path, src, "/" + name)
    shutil.rmtree(stage)
    return Disk(path, size_mib * MIB, {"disk": (0, size_mib * MIB)})


def btrfs_disk(path: Path, tree: Path, size_mib: int = 48) -> Disk:
    """A disk without a partition table: one btrfs populated from `tree`."""
    with open(path, "wb") as fh:
        fh.truncate(size_mib * MIB)
    _run("mkfs.btrfs", "-q", "-M", "-L", "data", "--rootdir", tree, path)
    return Disk(path, size_mib * MIB, {"disk": (0, size_mib * MIB)})


# ---------------------------------------------------------------------- disks as bec2 parts


def image_blocks(path: Path, block_size: int) -> Iterator[tuple[int, bytes]]:
    """(index, data) of every block of a raw image that holds a non-zero byte, ascending;
    holes are skipped without being read."""
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        pos = 0
        while pos < size:
            try:
                data_at = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError:
                break
            hole_at = os.lseek(fd, data_at, os.SEEK_HOLE)
            first = data_at // block_size
            for index in range(first, -(-hole_at // block_size)):
                block = os.pread(fd, block_size, index * block_size)
                if block.count(0) != len(block):
                    yield index, block
            pos = -(-hole_at // block_size) * block_size
    finally:
        os.close(fd)


def changed_blocks(old: Path, new: Path, block_size: int) -> Iterator[tuple[int, bytes | None]]:
    """(index, data, or None where the block became zeros) of the blocks that differ."""
    before = dict(image_blocks(old, block_size))
    for index, block in image_blocks(new, block_size):
        if before.pop(index, None) != block:
            yield index, block
    for index in sorted(before):
        yield index, None


@dataclass(frozen=True)
class PartSpec:
    """The header of one synthetic part (what a backup of the volume would have written)."""

    volume_id: str
    volume_size: int
    snapshot_id: str
    created: str
    level: str = "F"
    base_snapshot_id: str | None = None
    base_created: str | None = None
    job_id: int = 1
    job_name: str = "guest-test.2026-12-01_10.00.00_01"
    chain_position: int = 0
    block_size: int = BLOCK_SIZE
    instance_id: str = "i-0guest0000000001"


def encode_part(
    spec: PartSpec, blocks: Iterable[tuple[int, bytes | None]], write: Callable[[bytes], object]
) -> int:
    """Encode a `.bimg` with the product's codec: a data record per block with data, a zero
    record per None; `blocks` ascending. Returns the number of records."""
    header = ImageHeader(
        kind=FileKind.IMAGE, volume_id=spec.volume_id, volume_size=spec.volume_size,
        snapshot_id=spec.snapshot_id, level=spec.level, created=spec.created,
        base_snapshot_id=spec.base_snapshot_id, base_created=spec.base_created, block_size=spec.block_size,
        instance_id=spec.instance_id, device=DEVICE, job_name=spec.job_name, job_id=spec.job_id,
        chain_position=spec.chain_position,
    )  # fmt: skip
    enc = RecordEncoder(header)
    write(enc.start())
    for index, data in blocks:
        offset = index * spec.block_size
        length = min(spec.block_size, spec.volume_size - offset)
        if data is None:
            write(enc.record(BlockRecord(offset, length, RecordKind.ZERO, ZERO_BLOCK_SHA256)))
        else:
            data = data[:length].ljust(length, b"\0")
            write(enc.record(BlockRecord(offset, length, RecordKind.DATA, block_sha256(data))))
            write(data)
    write(enc.end())
    return enc.count


def write_part(path: Path, spec: PartSpec, blocks: Iterable[tuple[int, bytes | None]]) -> int:
    """A `.bimg` file (see encode_part)."""
    with open(path, "wb") as fh:
        return encode_part(spec, blocks, fh.write)


def folder_backup(
    root: Path, spec: PartSpec, blocks: Iterable[tuple[int, bytes | None]], started: float
) -> str:
    """One complete backup of one volume in a bec2 folder (created if needed), written
    through the folder's own writer and manifest as `bec2 --operation=backup` writes it;
    the part's job id is the one the folder gives. Returns the part's local path."""
    folder = jfolder.create_folder(str(root), started)
    bdir = jfolder.BackupDirectory(folder, spec.level, started, jfolder.scan(folder))
    spec = dataclasses.replace(spec, job_id=bdir.job_id)
    gib = -(-spec.volume_size // naming.GIB)
    path = naming.volume_image(spec.instance_id, spec.volume_id, DEVICE, gib, spec.level, bdir.job_id)
    w = bdir.open_file(FileInfo(path, spec.volume_size, int(started)))
    encode_part(spec, blocks, w.write)
    w.close()
    doc = jfolder.manifest(
        folder, bdir, job=job_resource(spec.job_name), job_name=spec.job_name, level=spec.level,
        requested_level=spec.level, finished=started + 1, reference=None, region="us-east-1", version="test",
    )  # fmt: skip
    bdir.write_manifest(doc)
    return bdir.local(path)
