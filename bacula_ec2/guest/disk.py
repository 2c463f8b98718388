"""A guest disk: its partitions (GPT, MBR, LVM2 logical volumes, or one filesystem on the
whole disk) and the filesystem type of each, read from a random-access source."""

from __future__ import annotations

import io
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Protocol, cast

from dissect.volume.disk import Disk  # type: ignore[import-untyped]
from dissect.volume.lvm import LVM2  # type: ignore[import-untyped]

WHOLE_DISK = "disk"  # the name of a filesystem written on the disk without a partition table


class GuestError(Exception):
    """The guest's disk, partition, filesystem or path cannot be read as asked; the message
    names the partition and path and says what was found."""


class GuestDamaged(GuestError):
    """The guest's filesystem structure cannot be read where it should be (a damaged
    filesystem): unlike a path or partition that is not there, this fails the volume, since
    what it holds there cannot be restored."""


class SourceFailure(Exception):
    """Raised by a Source that cannot return exact bytes (a damaged backup). The guest
    reader never turns it into a GuestError; where a parser swallowed it (dissect tries one
    partition scheme after another), the source's `failure` attribute is raised instead."""


def source_failure(source: object) -> SourceFailure | None:
    failure = getattr(source, "failure", None)
    return failure if isinstance(failure, SourceFailure) else None


class Source(Protocol):
    """What a disk is read from: a size and random reads (exact: `length` bytes, or less
    only at the end)."""

    @property
    def size(self) -> int: ...

    def read(self, offset: int, length: int) -> bytes: ...


class FileSource:
    """A raw disk image file as a Source (counts the bytes read)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        self._size = os.fstat(self._fd).st_size
        self.bytes_read = 0

    @property
    def size(self) -> int:
        return self._size

    def read(self, offset: int, length: int) -> bytes:
        data = os.pread(self._fd, max(0, min(length, self._size - offset)), offset)
        self.bytes_read += len(data)
        return data

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class StreamSource:
    """A seekable binary file (an open image, a BytesIO) as a Source."""

    def __init__(self, fh: BinaryIO) -> None:
        self.fh = fh
        self._size = fh.seek(0, io.SEEK_END)

    @property
    def size(self) -> int:
        return self._size

    def read(self, offset: int, length: int) -> bytes:
        self.fh.seek(offset)
        return self.fh.read(max(0, min(length, self._size - offset)))


class SourceStream(io.RawIOBase):
    """A Source as the seekable binary file dissect's parsers read."""

    def __init__(self, source: Source, offset: int = 0, size: int | None = None) -> None:
        super().__init__()
        self.source = source
        self.base = offset
        self.size = source.size - offset if size is None else size
        self.pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            self.pos = offset
        elif whence == io.SEEK_CUR:
            self.pos += offset
        elif whence == io.SEEK_END:
            self.pos = self.size + offset
        else:
            raise ValueError(f"invalid whence {whence}")
        if self.pos < 0:
            raise ValueError("negative seek position")
        return self.pos

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        want = max(0, min(len(view), self.size - self.pos))
        if not want:
            return 0
        data = self.source.read(self.base + self.pos, want)
        view[: len(data)] = data
        self.pos += len(data)
        return len(data)

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            size = max(0, self.size - self.pos)
        want = max(0, min(size, self.size - self.pos))
        if not want:
            return b""
        data = self.source.read(self.base + self.pos, want)
        self.pos += len(data)
        return data


def stream(source: Source, offset: int = 0, size: int | None = None) -> BinaryIO:
    """A binary file over part of a Source (dissect's parsers read files)."""
    return cast(BinaryIO, SourceStream(source, offset, size))


# ---------------------------------------------------------------------- type detection

_MAGICS: list[tuple[str, int, bytes]] = [
    ("xfs", 0, b"XFSB"),
    ("ntfs", 3, b"NTFS    "),
    ("btrfs", 0x10040, b"_BHRfS_M"),
    ("luks", 0, b"LUKS\xba\xbe"),
    ("swap", 4086, b"SWAPSPACE2"),
    ("swap", 4086, b"SWAP-SPACE"),
]


def detect(head: bytes) -> str | None:
    """The filesystem (or container) type from the first 68 KiB of a partition: ext2,
    ext3, ext4, xfs, ntfs, vfat, btrfs, lvm2, luks, swap; None if nothing is recognised."""
    if len(head) >= 1024 + 100 and head[1024 + 56 : 1024 + 58] == b"\x53\xef":
        compat, incompat = struct.unpack_from("<II", head, 1024 + 92)
        if incompat & 0x40 or incompat & 0x80 or incompat & 0x200:  # extents, 64bit, flex_bg
            return "ext4"
        return "ext3" if compat & 0x4 else "ext2"
    for name, off, magic in _MAGICS:
        if head[off : off + len(magic)] == magic:
            return name
    if head[510:512] == b"\x55\xaa" and (head[54:59] in (b"FAT12", b"FAT16") or head[82:87] == b"FAT32"):
        return "vfat"
    for sector in range(4):
        at = sector * 512
        if head[at : at + 8] == b"LABELONE" and head[at + 24 : at + 32] == b"LVM2 001":
            return "lvm2"
    return None


HEAD = 0x10040 + 64


@dataclass
class Partition:
    """One place a filesystem may live: `p1`, `p2` (partition table order), `vg/lv` (an
    LVM2 logical volume) or `disk` (no partition table)."""

    name: str
    offset: int  # on the disk (for an LV: None of meaning; 0)
    size: int
    fstype: str | None  # what detect() found
    kind: str = ""  # the partition table's type name, for listings
    label: str | None = None
    source: Source | None = field(default=None, repr=False)
    note: str | None = None  # why its content cannot be listed
    opener: Callable[[], BinaryIO] | None = field(default=None, repr=False)

    def open(self) -> BinaryIO:
        assert self.opener is not None
        return self.opener()

    def describe(self) -> str:
        what = self.fstype or "no filesystem recognised"
        if self.note:
            what += f": {self.note}"
        kind = f", {self.kind}" if self.kind else ""
        return f"{self.name} ({what}, {self.size} bytes{kind})"


def _head(fh: BinaryIO) -> bytes:
    fh.seek(0)
    return fh.read(HEAD)


@dataclass
class GuestDisk:
    source: Source
    scheme: str  # gpt, mbr, none
    partitions: list[Partition]

    def partition(self, name: str) -> Partition:
        for p in self.partitions:
            if p.name == name:
                return p
        have = ", ".join(p.describe() for p in self.partitions) or "none"
        raise GuestError(f"the disk has no partition {name} (it has: {have})")

    def filesystems(self) -> list[Partition]:
        from .fs import SUPPORTED

        return [p for p in self.partitions if p.fstype in SUPPORTED]

    def open_fs(self, name: str) -> Any:
        from .fs import open_fs

        return open_fs(self.partition(name))


def open_disk(source: Source) -> GuestDisk:
    """Find the partitions of a disk and the filesystem type of each. A disk that holds a
    filesystem at offset 0 is one partition named `disk`; LVM2 physical volumes are opened
    and their logical volumes listed as `vg/lv` (an LVM2 volume group spread over several
    disks cannot be read from one: the partition says so in its `note`)."""
    try:
        return _open_disk(source)
    except SourceFailure:
        raise
    except GuestError as exc:
        failure = source_failure(source)
        if failure is not None:
            raise failure from exc
        raise


def _open_disk(source: Source) -> GuestDisk:
    whole = stream(source)
    head = _head(whole)
    if head.strip(b"\0") == b"":
        raise GuestError(
            "the disk is empty: its first sectors are all zeros (no partition table, no filesystem)"
        )
    found = detect(head)
    if found is not None and found != "lvm2":
        disk = Partition(WHOLE_DISK, 0, source.size, found, source=source, opener=lambda: stream(source))
        return GuestDisk(source, "none", [disk])
    parts: list[Partition] = []
    scheme = "none"
    if found == "lvm2":
        pv = Partition(WHOLE_DISK, 0, source.size, found, source=source, opener=lambda: stream(source))
        parts += [pv, *_lvm(pv)]
    else:
        try:
            whole.seek(0)
            table = Disk(whole)
        except Exception as exc:
            raise GuestError(
                f"the disk has no partition table dissect.volume reads (GPT, MBR) and no filesystem: {exc}"
            ) from exc
        scheme = type(table.scheme).__name__.lower()
        # MBR: primaries by their slot (p1-p4), logical partitions p5, p6, ... in chain
        # order, as Linux names them (dissect numbers logical partitions on from the slots)
        primaries = list(table.scheme.mbr.part) if scheme == "mbr" else []
        logical = 4
        seen: set[int] = set()
        for p in table.partitions:
            number = int(p.number)
            if primaries and not any(p.raw is slot for slot in primaries):
                logical += 1
                number = logical
            if p.size <= 0 or getattr(p, "type", None) in (0x05, 0x0F, 0x85):  # extended containers
                continue
            offset, size = int(p.offset), int(p.size)
            raw: Any = getattr(p, "raw", None)
            if scheme == "gpt" and hasattr(raw, "last_lba"):  # last_lba is inclusive (dissect: -1 sector)
                size = (int(raw.last_lba) - int(raw.first_lba) + 1) * table.sector_size
            if offset in seen:  # a hybrid MBR's entry for a GPT partition: listed once
                continue
            seen.add(offset)

            def opener(offset: int = offset, size: int = size) -> BinaryIO:
                return stream(source, offset, size)

            part = Partition(
                f"p{number}", offset, size, detect(_head(opener())), str(getattr(p, "type_name", "") or ""),
                getattr(p, "name", None), source=source, opener=opener,
            )  # fmt: skip
            parts.append(part)
            if part.fstype == "lvm2":
                parts += _lvm(part)
    return GuestDisk(source, scheme, parts)


def _lvm(pv: Partition) -> list[Partition]:
    """The logical volumes of an LVM2 physical volume (on this disk)."""
    try:
        lvm = LVM2(pv.open())
        out = []
        for lv in lvm.vg.lv:
            if not lv.is_visible:
                continue

            def lv_opener(lv: Any = lv) -> BinaryIO:
                return lv.open()  # type: ignore[no-any-return]

            fh = lv_opener()
            fh.seek(0, io.SEEK_END)
            size = fh.tell()
            name = f"{lvm.vg.name}/{lv.name}"
            out.append(
                Partition(
                    name,
                    0,
                    size,
                    detect(_head(fh)),
                    "LVM2 logical volume",
                    source=pv.source,
                    opener=lv_opener,
                )
            )
        return out
    except SourceFailure:
        raise
    except Exception as exc:
        pv.note = f"an LVM2 physical volume whose logical volumes cannot be read: {type(exc).__name__}: {exc}"
        return []
