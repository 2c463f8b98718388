"""One filesystem of a guest disk, through dissect: lookup (inside the guest only; symbolic
links of intermediate components are resolved against the guest's root, never the host's),
listing, stat and file data with its holes.

File data is read exactly: ext4 and XFS files are read from their extent maps as this
module builds them (holes and unwritten/uninitialised extents read as zeros, as the kernel
reads them), so a sparse file's holes are known without reading them.
"""

from __future__ import annotations

import datetime as dt
import io
import posixpath
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

from dissect.util.stream import RunlistStream  # type: ignore[import-untyped]

from .disk import GuestDamaged, GuestError, Partition, SourceFailure, source_failure


class NotFound(GuestError):
    """A guest path does not exist (or a component on the way is not a directory)."""


SUPPORTED = ("ext2", "ext3", "ext4", "xfs", "ntfs", "vfat", "btrfs")
MAX_LINKS = 40  # symbolic links followed while resolving one path (as Linux)

KINDS = {
    stat.S_IFREG: "file",
    stat.S_IFDIR: "dir",
    stat.S_IFLNK: "symlink",
    stat.S_IFIFO: "fifo",
    stat.S_IFCHR: "chardev",
    stat.S_IFBLK: "blockdev",
    stat.S_IFSOCK: "socket",
}


@dataclass(frozen=True)
class Entry:
    """One directory entry as the guest's filesystem describes it. `mode` holds the
    permission bits (and setuid/setgid/sticky); None where the filesystem has none (FAT,
    NTFS); likewise `uid`/`gid`. Times in nanoseconds since the epoch."""

    path: str  # absolute inside the filesystem, "/" separated
    kind: str  # file, dir, symlink, fifo, chardev, blockdev, socket
    size: int
    mode: int | None
    uid: int | None
    gid: int | None
    mtime_ns: int | None
    atime_ns: int | None
    target: str | None = None  # a symbolic link's target
    inode: int | None = None  # for hard links
    nlink: int = 1

    @property
    def name(self) -> str:
        return posixpath.basename(self.path) or "/"


def _join(parent: str, name: str) -> str:
    return posixpath.join(parent, name) if parent != "/" else "/" + name


class GuestFS:
    """The common walk over one filesystem; subclasses adapt one dissect parser."""

    fstype = ""

    def __init__(self, partition: Partition, fh: BinaryIO) -> None:
        self.partition = partition
        self.fh = fh

    # -- what a subclass provides
    def _root(self) -> Any:
        raise NotImplementedError

    def _children(self, node: Any) -> dict[str, Any]:
        raise NotImplementedError

    def _entry(self, node: Any, path: str) -> Entry:
        raise NotImplementedError

    def _runs(self, node: Any, size: int) -> tuple[BinaryIO, list[tuple[int, int]]]:
        """(a stream of the file's bytes, its data ranges (offset, length)); bytes
        outside the ranges read as zeros."""
        return self._open(node), [(0, size)] if size else []

    def _open(self, node: Any) -> BinaryIO:
        raise NotImplementedError

    # -- the walk
    def where(self, path: str) -> str:
        return f"{self.partition.name}:{path}"

    def _extent_stream(
        self, fh: BinaryIO, node: Any, extents: list[tuple[int, int | None, int]], size: int, bs: int
    ) -> tuple[BinaryIO, list[tuple[int, int]]]:
        """A file's data from its extents (logical block, physical block or None for an
        unwritten one, count): holes and unwritten extents read as zeros, as the kernel
        reads them; (the stream, its data ranges)."""
        runs: list[tuple[int | None, int]] = []
        at = 0
        for logical, physical, count in sorted(extents, key=lambda e: e[0]):
            if logical < at:
                raise GuestDamaged(f"{self.where('inode ' + str(node.inum))}: overlapping extents")
            if logical > at:
                runs.append((None, logical - at))
            runs.append((physical, count))
            at = logical + count
        blocks = -(-size // bs)
        if at < blocks:
            runs.append((None, blocks - at))
        return RunlistStream(fh, runs, size, bs), _blocks_to_ranges(runs, bs, size)

    def _wrap(self, path: str, exc: Exception) -> Exception:
        failure = source_failure(self.partition.source)
        if failure is not None:  # the backup cannot give the bytes: that, not the filesystem
            return failure
        return GuestDamaged(
            f"cannot read {self.where(path)} on the {self.fstype} filesystem of partition "
            f"{self.partition.name}: {type(exc).__name__}: {exc} (damaged filesystem structure?)"
        )

    def children(self, node: Any, path: str) -> dict[str, Any]:
        try:
            kids = self._children(node)
        except (GuestError, SourceFailure):
            raise
        except Exception as exc:
            raise self._wrap(path, exc) from exc
        return {k: v for k, v in kids.items() if k not in (".", "..")}

    def entry(self, node: Any, path: str) -> Entry:
        try:
            return self._entry(node, path)
        except (GuestError, SourceFailure):
            raise
        except Exception as exc:
            raise self._wrap(path, exc) from exc

    def lookup(self, path: str) -> tuple[str, Any]:
        """(the canonical path, the node) of `path`; its last component is not followed if
        it is a symbolic link. GuestError if it does not exist."""
        if not path.startswith("/"):
            path = "/" + path
        todo = [c for c in path.split("/") if c]
        node, here, hops = self._root(), "/", 0
        stack: list[tuple[str, Any]] = []
        while todo:
            name = todo.pop(0)
            if name == ".":
                continue
            if name == "..":
                if stack:
                    here, node = stack.pop()
                continue
            ent = self.entry(node, here)
            if ent.kind != "dir":
                raise NotFound(f"{self.where(here)} is not a directory (looking up {path})")
            kids = self.children(node, here)
            child = kids.get(name)
            if child is None and self.fstype in ("vfat", "ntfs"):  # case-insensitive names
                child = next((v for k, v in kids.items() if k.upper() == name.upper()), None)
                name = next((k for k in kids if k.upper() == name.upper()), name)
            if child is None:
                raise NotFound(f"{self.where(_join(here, name))} does not exist (looking up {path})")
            cpath = _join(here, name)
            if todo:
                cent = self.entry(child, cpath)
                if cent.kind == "symlink":
                    hops += 1
                    if hops > MAX_LINKS or not cent.target:
                        raise GuestError(f"{self.where(cpath)}: too many levels of symbolic links")
                    target = cent.target
                    if target.startswith("/"):
                        node, here, stack = self._root(), "/", []
                    todo = [c for c in target.split("/") if c] + todo
                    continue
            stack.append((here, node))
            node, here = child, cpath
        return here, node

    def stat(self, path: str) -> Entry:
        canonical, node = self.lookup(path)
        return self.entry(node, canonical)

    def listdir(self, path: str) -> list[Entry]:
        """The entries of a directory, sorted by name (a symbolic link to a directory is
        followed here: `ls-files --path=/bin` on a merged-/usr guest lists /usr/bin)."""
        canonical, node = self.lookup(path)
        ent = self.entry(node, canonical)
        if ent.kind == "symlink":
            canonical, node = self.lookup(resolve_link(canonical, ent.target or ""))
            ent = self.entry(node, canonical)
        if ent.kind != "dir":
            raise NotFound(f"{self.where(canonical)} is not a directory")
        kids = self.children(node, canonical)
        return [self.entry(kids[k], _join(canonical, k)) for k in sorted(kids)]

    def walk(self, path: str = "/") -> Iterator[tuple[Entry, Any]]:
        """Every entry below `path` (itself first), depth first, sorted by name; symbolic
        links are not followed."""
        canonical, node = self.lookup(path)
        yield from self._walk(canonical, node)

    def _walk(self, path: str, node: Any) -> Iterator[tuple[Entry, Any]]:
        ent = self.entry(node, path)
        yield ent, node
        if ent.kind == "dir":
            kids = self.children(node, path)
            for k in sorted(kids):
                yield from self._walk(_join(path, k), kids[k])

    def data(self, node: Any, ent: Entry) -> tuple[BinaryIO, list[tuple[int, int]]]:
        """A regular file's stream and its data ranges (holes are everything else)."""
        try:
            fh, runs = self._runs(node, ent.size)
        except (GuestError, SourceFailure):
            raise
        except Exception as exc:
            raise self._wrap(ent.path, exc) from exc
        return fh, runs


def resolve_link(linkpath: str, target: str) -> str:
    """The guest path a symbolic link at `linkpath` with `target` points to."""
    return (
        target
        if target.startswith("/")
        else posixpath.normpath(posixpath.join(posixpath.dirname(linkpath), target))
    )


def _blocks_to_ranges(
    runs: list[tuple[int | None, int]], block_size: int, size: int
) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    pos = 0
    for block, count in runs:
        length = count * block_size
        if block is not None and pos < size:
            end = min(size, pos + length)
            if out and out[-1][0] + out[-1][1] == pos:
                out[-1] = (out[-1][0], end - out[-1][0])
            else:
                out.append((pos, end - pos))
        pos += length
    return out


_EXT4_EXTENTS_FL = 0x00080000
_EXT4_INLINE_DATA_FL = 0x10000000


class _ExtFS(GuestFS):
    def __init__(self, partition: Partition, fh: BinaryIO) -> None:
        super().__init__(partition, fh)
        from dissect.extfs import ExtFS  # type: ignore[import-untyped]

        self.fs = ExtFS(fh)
        self.fstype = partition.fstype or "ext4"

    def _root(self) -> Any:
        return self.fs.root

    def _children(self, node: Any) -> dict[str, Any]:
        return dict(node.listdir())

    def _entry(self, node: Any, path: str) -> Entry:
        ino = node.inode
        mode = int(ino.i_mode)
        kind = KINDS.get(stat.S_IFMT(mode), "other")
        uid = int(ino.i_uid) | (int(ino.i_uid_high) << 16)
        gid = int(ino.i_gid) | (int(ino.i_gid_high) << 16)
        return Entry(
            path,
            kind,
            int(node.size),
            stat.S_IMODE(mode),
            uid,
            gid,
            int(node.mtime_ns),
            int(node.atime_ns),
            str(node.link) if kind == "symlink" else None,
            int(node.inum),
            int(ino.i_links_count),
        )

    def _runs(self, node: Any, size: int) -> tuple[BinaryIO, list[tuple[int, int]]]:
        from dissect.extfs.extfs import _parse_extents  # type: ignore[import-untyped]

        ino = node.inode
        bs = int(self.fs.block_size)
        if ino.i_flags & _EXT4_INLINE_DATA_FL:
            # the first 60 bytes in i_block, the rest in the `system.data` extended attribute
            # (dissect's own open() stops at 60)
            data = bytes(ino.i_block)[: min(size, 60)]
            if size > 60:
                data += next((bytes(x.value) for x in node.xattr if x.name == "system.data"), b"")
            if len(data) < size:
                raise GuestError(
                    f"{self.where('inode ' + str(node.inum))}: inline data holds {len(data)} of {size} bytes"
                )
            return io.BytesIO(data[:size]), ([(0, size)] if size else [])
        if not ino.i_flags & _EXT4_EXTENTS_FL:
            return node.open(), ([(0, size)] if size else [])  # ext2/3 block maps
        extents = []
        for ext in _parse_extents(node, io.BytesIO(ino.i_block)):
            length = int(ext.ee_len)
            unwritten = length > 0x8000
            start = (int(ext.ee_start_hi) << 32) | int(ext.ee_start_lo)
            extents.append((int(ext.ee_block), None if unwritten else start, length - 0x8000 * unwritten))
        return self._extent_stream(self.fs.fh, node, extents, size, bs)


class _XFS(GuestFS):
    fstype = "xfs"

    def __init__(self, partition: Partition, fh: BinaryIO) -> None:
        super().__init__(partition, fh)
        from dissect.xfs import XFS  # type: ignore[import-untyped]

        self.fs = XFS(fh)

    def _root(self) -> Any:
        return self.fs.root

    def _children(self, node: Any) -> dict[str, Any]:
        return dict(node.listdir())

    def _entry(self, node: Any, path: str) -> Entry:
        ino = node.inode
        mode = int(ino.di_mode)
        kind = KINDS.get(stat.S_IFMT(mode), "other")
        return Entry(
            path,
            kind,
            int(node.size),
            stat.S_IMODE(mode),
            int(ino.di_uid),
            int(ino.di_gid),
            int(node.mtime_ns),
            int(node.atime_ns),
            str(node.link) if kind == "symlink" else None,
            int(node.inum),
            int(ino.di_nlink),
        )

    def _runs(self, node: Any, size: int) -> tuple[BinaryIO, list[tuple[int, int]]]:
        from dissect.xfs.c_xfs import c_xfs  # type: ignore[import-untyped]
        from dissect.xfs.xfs import fsb_to_bb  # type: ignore[import-untyped]

        fmt = node.inode.di_format
        if fmt not in (
            c_xfs.xfs_dinode_fmt.XFS_DINODE_FMT_EXTENTS,
            c_xfs.xfs_dinode_fmt.XFS_DINODE_FMT_BTREE,
        ):
            return node.open(), ([(0, size)] if size else [])
        bs = int(self.fs.block_size)
        extents = []
        for logical, block, count, unwritten in node._iter_blocks():
            agnum, blknum = fsb_to_bb(block, node.ag.sb.sb_agblklog)
            extents.append((logical, None if unwritten else agnum * self.fs.sb.sb_agblocks + blknum, count))
        return self._extent_stream(self.fs.fh, node, extents, size, bs)


class _NTFS(GuestFS):
    fstype = "ntfs"

    def __init__(self, partition: Partition, fh: BinaryIO) -> None:
        super().__init__(partition, fh)
        from dissect.ntfs import NTFS  # type: ignore[import-untyped]

        self.fs = NTFS(fh)

    def _root(self) -> Any:
        return self.fs.mft.root

    def _children(self, node: Any) -> dict[str, Any]:
        kids = dict(node.listdir(dereference=True, ignore_dos=True))
        if node.segment == 5:  # the root: leave out the metadata files ($MFT, $Bitmap, ...)
            kids = {k: v for k, v in kids.items() if not k.startswith("$")}
        return kids

    def _entry(self, node: Any, path: str) -> Entry:
        from dissect.ntfs.c_ntfs import ATTRIBUTE_TYPE_CODE  # type: ignore[import-untyped]

        if node.is_symlink() or node.is_mount_point():
            kind = "symlink"
        elif node.is_dir():
            kind = "dir"
        else:
            kind = "file"
        si = node.attributes[ATTRIBUTE_TYPE_CODE.STANDARD_INFORMATION]
        si = si[0] if isinstance(si, list) else si
        mtime = int(si.last_modification_time_ns)
        atime = int(si.last_access_time_ns)
        size = int(node.size()) if kind == "file" else 0
        target = None
        if kind == "symlink":
            target = str(node.reparse_point_substitute_name).replace("\\", "/")
        return Entry(path, kind, size, None, None, None, mtime, atime, target, int(node.segment), 1)

    def _open(self, node: Any) -> BinaryIO:
        return node.open()  # type: ignore[no-any-return]


class _FAT(GuestFS):
    fstype = "vfat"

    def __init__(self, partition: Partition, fh: BinaryIO) -> None:
        super().__init__(partition, fh)
        from dissect.fat import fat  # type: ignore[import-untyped]

        self.fs = fat.FATFS(fh)

    def _root(self) -> Any:
        return self.fs.root

    def _children(self, node: Any) -> dict[str, Any]:
        return {_fat_name(e): e for e in node.iterdir() if not e.is_volume_id()}

    def _entry(self, node: Any, path: str) -> Entry:
        is_dir = node is self.fs.root or node.is_directory()
        mtime = node.mtime if node is not self.fs.root else None
        atime = node.atime if node is not self.fs.root else None
        return Entry(
            path,
            "dir" if is_dir else "file",
            0 if is_dir else int(node.size),
            None,
            None,
            None,
            _dt_ns(mtime),
            _dt_ns(atime),
            None,
            None,
            1,
        )

    def _open(self, node: Any) -> BinaryIO:
        return node.open()  # type: ignore[no-any-return]


def _fat_name(e: Any) -> str:
    """The name as Linux and Windows show it: a short name alone is shown in the case its
    entry's NT flags say (0x08 lower-case base, 0x10 lower-case extension)."""
    name = str(e.name)
    if e.ldirents:
        return name
    flags = int(e.dirent.DIR_NTRes)
    base, dot, ext = name.partition(".")
    return (base.lower() if flags & 0x08 else base) + dot + (ext.lower() if flags & 0x10 else ext)


class _Btrfs(GuestFS):
    fstype = "btrfs"

    def __init__(self, partition: Partition, fh: BinaryIO) -> None:
        super().__init__(partition, fh)
        from dissect.btrfs import Btrfs  # type: ignore[import-untyped]

        self.fs = Btrfs(fh).default_subvolume

    def _root(self) -> Any:
        return self.fs.root

    def _children(self, node: Any) -> dict[str, Any]:
        return dict(node.listdir())

    def _entry(self, node: Any, path: str) -> Entry:
        ino = node.inode
        mode = int(ino.mode)
        kind = KINDS.get(stat.S_IFMT(mode), "other")
        return Entry(
            path,
            kind,
            int(node.size),
            stat.S_IMODE(mode),
            int(ino.uid),
            int(ino.gid),
            int(node.mtime_ns),
            int(node.atime_ns),
            str(node.link) if kind == "symlink" else None,
            int(node.inum),
            int(ino.nlink),
        )

    def _open(self, node: Any) -> BinaryIO:
        return node.open()  # type: ignore[no-any-return]


def _dt_ns(when: Any) -> int | None:
    """FAT keeps local time without a zone: read as UTC (what Linux mounts without tz=)."""
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return int(when.timestamp() * 1_000_000) * 1000


_ADAPTERS: dict[str, type[GuestFS]] = {
    "ext2": _ExtFS,
    "ext3": _ExtFS,
    "ext4": _ExtFS,
    "xfs": _XFS,
    "ntfs": _NTFS,
    "vfat": _FAT,
    "btrfs": _Btrfs,
}


def open_fs(partition: Partition) -> GuestFS:
    """The filesystem of a partition, or GuestError naming the partition and what it holds."""
    adapter = _ADAPTERS.get(partition.fstype or "")
    if adapter is None:
        found = partition.fstype or "no filesystem this reader recognises"
        raise GuestError(
            f"partition {partition.name} holds {found}: cannot read files from it "
            f"(supported: {', '.join(SUPPORTED)})"
        )
    try:
        return adapter(partition, partition.open())
    except (GuestError, SourceFailure):
        raise
    except Exception as exc:
        failure = source_failure(partition.source)
        if failure is not None:
            raise failure from exc
        raise GuestError(
            f"partition {partition.name} looks like {partition.fstype} but cannot be opened: "
            f"{type(exc).__name__}: {exc} (damaged or unsupported filesystem)"
        ) from exc
