"""Select guest files by pattern and extract them into a directory as
`<dest>/<partition>/<path>`, written only inside `dest` and never through a link
(`jobs.safefs`): regular files streamed in chunks under a temporary name and renamed into
place, holes kept as holes, symbolic links as links, mode, owner (as root) and times kept;
hard links become copies; devices, FIFOs and sockets are skipped with a note.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..jobs import safefs
from .disk import GuestDamaged, GuestDisk, GuestError, Partition, SourceFailure, source_failure
from .fs import SUPPORTED, Entry, GuestFS, NotFound, open_fs, resolve_link
from .paths import Pattern

CHUNK = 1 << 20


@dataclass
class Match:
    fs: GuestFS
    entry: Entry
    node: Any


@dataclass
class Selection:
    """What the patterns selected, per partition in walk order (parents first), and what
    could not be selected (a pattern that matched nothing, a partition that does not
    exist or cannot be read)."""

    matches: list[Match] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    filesystems: dict[str, str] = field(default_factory=dict)  # partition -> type, of those read

    def partitions(self) -> list[str]:
        return sorted({m.fs.partition.name for m in self.matches})


def _open(p: Partition, cache: dict[str, GuestFS | GuestError]) -> GuestFS:
    if p.name not in cache:
        try:
            cache[p.name] = open_fs(p)
        except GuestError as exc:
            cache[p.name] = exc
    got = cache[p.name]
    if isinstance(got, GuestError):
        raise got
    return got


def select(disk: GuestDisk, patterns: list[Pattern]) -> Selection:
    """Resolve each pattern; a pattern without partition searches every readable
    filesystem. Problems are collected, not raised (the caller decides: nothing selected
    at all is an error, a partial selection a warning). A damaged backup (SourceFailure)
    is raised: nothing read from it can be trusted; so is a damaged filesystem
    (GuestDamaged): what it holds there would be missing from the restore."""
    sel = Selection()
    cache: dict[str, GuestFS | GuestError] = {}
    seen: set[tuple[str, str]] = set()
    for pat in patterns:
        targets: list[GuestFS] = []
        try:
            if pat.partition is not None:
                targets = [_open(disk.partition(pat.partition), cache)]
            else:
                readable = [p for p in disk.partitions if p.fstype in SUPPORTED]
                if not readable:
                    have = ", ".join(p.describe() for p in disk.partitions) or "no partitions"
                    raise GuestError(f"the disk holds no filesystem this reader can read ({have})")
                for p in readable:
                    try:
                        targets.append(_open(p, cache))
                    except GuestDamaged:
                        raise
                    except GuestError as exc:
                        if f"{exc}" not in sel.problems:
                            sel.problems.append(f"{exc}")
        except GuestDamaged:
            raise
        except GuestError as exc:
            sel.problems.append(f"{pat.text}: {exc}")
            continue
        found, failed = 0, False
        for fs in targets:
            sel.filesystems[fs.partition.name] = fs.fstype
            try:
                found += _select_in(fs, pat, sel, seen)
            except GuestDamaged:
                raise
            except GuestError as exc:
                sel.problems.append(f"{pat.text}: {exc}")
                failed = True
        if not found and not failed and targets:
            where = (
                f"partition {pat.partition}"
                if pat.partition
                else "partitions " + ", ".join(f"{fs.partition.name} ({fs.fstype})" for fs in targets)
            )
            sel.problems.append(f"{pat.text} matches nothing on {where}")
    return sel


def _select_in(fs: GuestFS, pat: Pattern, sel: Selection, seen: set[tuple[str, str]]) -> int:
    try:
        start, node = fs.lookup(pat.prefix)
    except NotFound:
        return 0  # the fixed part of the path does not exist on this filesystem
    ent = fs.entry(node, start)
    if ent.kind == "symlink" and pat.prefix != pat.path:  # /bin/** on a merged-/usr guest
        start, node = fs.lookup(resolve_link(start, ent.target or ""))
    base = "" if pat.prefix == "/" else pat.prefix
    found = 0
    inside: str | None = None  # a matched directory: everything below it is selected
    for e, n in fs.walk(start):
        if inside is not None and e.path.startswith(inside.rstrip("/") + "/"):
            hit = True
        else:
            inside = None
            rel = e.path[len(start) :] if start != "/" else e.path
            hit = pat.matches((base + rel) or "/")
            if hit and e.kind == "dir":
                inside = e.path
        if not hit:
            continue
        found += 1
        key = (fs.partition.name, e.path)
        if key not in seen:
            seen.add(key)
            sel.matches.append(Match(fs, e, n))
    return found


# ---------------------------------------------------------------------- extraction


@dataclass
class ExtractReport:
    files: int = 0
    directories: int = 0
    symlinks: int = 0
    hardlinks_copied: int = 0  # hard links restored as copies
    bytes: int = 0  # sizes of the restored files
    data_bytes: int = 0  # bytes of file data written (holes and zero runs not counted)
    skipped: list[str] = field(default_factory=list)  # devices, FIFOs, sockets
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # from the selection
    partitions: dict[str, str] = field(default_factory=dict)  # partition -> filesystem, of those read
    owners_kept: bool = True

    def summary(self) -> str:
        fs = ", ".join(f"{k} ({v})" for k, v in sorted(self.partitions.items())) or "none"
        return (
            f"{self.files} files ({self.bytes} bytes), {self.directories} directories, "
            f"{self.symlinks} symbolic links restored from {fs}"
            + (f"; {len(self.skipped)} special files skipped" if self.skipped else "")
            + (f"; {self.hardlinks_copied} hard links restored as copies" if self.hardlinks_copied else "")
        )


Key = tuple[str, ...]  # a directory below the target, by its components


class _Writer:
    """Everything written below the target, through safefs. Directories stay open only
    along the current path (the walk is depth first), so a tree of any size needs as many
    descriptors as it is deep; a directory's guest metadata is applied when it is closed
    (after its children, which change its mtime). On failure, `rollback` removes every
    file, link and directory this extraction created."""

    def __init__(self, dest: str | safefs.Dir, report: ExtractReport, chunk: int) -> None:
        self.root = (
            safefs.Dir(os.dup(dest.fd), dest.path)
            if isinstance(dest, safefs.Dir)
            else safefs.open_target(dest)
        )
        self.report = report
        self.chunk = chunk
        self.dirs: dict[Key, safefs.Dir] = {(): self.root}
        self.meta: dict[Key, Entry] = {}
        self.as_root = os.geteuid() == 0
        self.links: dict[tuple[str, int], Key] = {}
        self.created_dirs: list[Key] = []
        self.installed: list[Key] = []  # files and links (directory key + name)

    def _close_dir(self, key: Key) -> None:
        d = self.dirs.pop(key)
        try:
            ent = self.meta.get(key)
            if ent is not None:
                self._apply(d.fd, None, ent)
        finally:
            d.close()

    def _leave(self, key: Key) -> None:
        """Close every open directory that is not on the way to `key`, deepest first."""
        for open_key in sorted(self.dirs, key=len, reverse=True):
            if open_key and open_key != key[: len(open_key)]:
                self._close_dir(open_key)

    def close(self) -> None:
        self._leave(())
        self.root.close()

    def rollback(self) -> None:
        for key in sorted(self.dirs, key=len, reverse=True):
            if key:
                self.dirs.pop(key).close()
        for item in reversed(self.installed):
            parent = self._reopen(item[:-1])
            if parent is not None:
                parent.unlink(item[-1])
                parent.close()
        for key in sorted(self.created_dirs, key=len, reverse=True):
            parent = self._reopen(key[:-1])
            if parent is not None:
                with contextlib.suppress(OSError):
                    os.rmdir(key[-1], dir_fd=parent.fd)
                parent.close()
        self.root.close()

    def _reopen(self, key: Key) -> safefs.Dir | None:
        here = safefs.Dir(os.dup(self.root.fd), self.root.path)
        for name in key:
            try:
                nxt = here.subdir(name, create=False)
            except (OSError, safefs.UnsafePath):
                nxt = None
            here.close()
            if nxt is None:
                return None
            here = nxt
        return here

    def directory(self, key: Key, guest: Callable[[int], Entry | None]) -> safefs.Dir:
        """Open or create every directory of `key` below the target; `guest(i)` is the
        guest's entry of the i-th component (None for the partition's own levels)."""
        self._leave(key)
        for i in range(1, len(key) + 1):
            sub = key[:i]
            if sub in self.dirs:
                continue
            parent = self.dirs[sub[:-1]]
            existed = parent.lstat(sub[-1]) is not None
            d = parent.subdir(sub[-1])
            assert d is not None
            if not existed:
                self.created_dirs.append(sub)
            self.dirs[sub] = d
            if sub not in self.meta:
                ent = guest(i)
                if ent is not None:
                    self.meta[sub] = ent
        return self.dirs[key]

    def _apply(self, fd: int | None, at: tuple[safefs.Dir, str] | None, e: Entry) -> None:
        """Owner, mode and times of a written entry (fd) or of a link (dir, name)."""
        if e.uid is not None and e.gid is not None and self.as_root:
            if fd is not None:
                os.fchown(fd, e.uid, e.gid)
            elif at is not None:
                os.chown(at[1], e.uid, e.gid, dir_fd=at[0].fd, follow_symlinks=False)
        if e.mode is not None and fd is not None:
            os.fchmod(fd, e.mode)  # after the owner: chown clears setuid/setgid
        if e.mtime_ns is not None:
            times = (e.atime_ns if e.atime_ns else e.mtime_ns, e.mtime_ns)
            if fd is not None:
                os.utime(fd, ns=times)
            elif at is not None:
                os.utime(at[1], ns=times, dir_fd=at[0].fd, follow_symlinks=False)

    def file(self, m: Match, key: Key, parent: safefs.Dir, name: str) -> None:
        e = m.entry
        fh, ranges = m.fs.data(m.node, e)
        fd, tmp = parent.create_temp(name)
        try:
            written = 0
            for off, length in ranges:
                pos = 0
                fh.seek(off)
                while pos < length:
                    want = min(self.chunk, length - pos)
                    data = self._read(m, fh, want, off + pos)
                    if data.count(0) != len(data):  # an all-zero chunk stays a hole
                        _pwrite_all(fd, data, off + pos)
                        written += len(data)
                    pos += want
            os.ftruncate(fd, e.size)
            self._apply(fd, None, e)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            parent.unlink(tmp)
            raise
        os.close(fd)
        existed = parent.lstat(name) is not None
        try:
            parent.replace(tmp, parent, name)
        except BaseException:
            parent.unlink(tmp)
            raise
        if not existed:  # a rollback removes what this restore created, never what was there
            self.installed.append((*key, name))
        self.report.files += 1
        self.report.bytes += e.size
        self.report.data_bytes += written

    @staticmethod
    def _read(m: Match, fh: Any, want: int, at: int) -> bytes:
        e = m.entry
        try:
            data = bytes(fh.read(want))
        except SourceFailure:
            raise
        except Exception as exc:
            failure = source_failure(m.fs.partition.source)
            if failure is not None:
                raise failure from exc
            raise GuestError(
                f"cannot read {m.fs.where(e.path)} at byte {at}: {type(exc).__name__}: {exc}"
            ) from exc
        if len(data) != want:
            raise GuestError(
                f"{m.fs.where(e.path)} ends after {at + len(data)} bytes, its size is {e.size} "
                "(damaged filesystem structure?)"
            )
        return data

    def symlink(self, e: Entry, key: Key, parent: safefs.Dir, name: str) -> None:
        tmp = safefs.check_name(f".{name}.{secrets.token_hex(6)}.tmp")
        os.symlink(e.target or "", tmp, dir_fd=parent.fd)
        existed = parent.lstat(name) is not None
        try:
            self._apply(None, (parent, tmp), e)
            parent.replace(tmp, parent, name)
        except BaseException:
            parent.unlink(tmp)
            raise
        if not existed:
            self.installed.append((*key, name))
        self.report.symlinks += 1


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


def extract(
    sel: Selection, dest: str | safefs.Dir, chunk: int = CHUNK, cancel: threading.Event | None = None
) -> ExtractReport:
    """Write the selection under `dest` (created if missing; or a directory already opened
    through safefs, which stays the caller's) as `<dest>/<partition>/<path>`.

    GuestError if the selection is empty (naming every problem); otherwise the selection's
    problems are in the report. Exact or nothing: if any entry cannot be read or written
    (a damaged block of the backup, a damaged filesystem, a link in the target), every
    file, link and directory this call created is removed and the error raised. (An
    existing file it replaced stays replaced by the guest's version.) Once `cancel` is set
    it stops before the next entry the same way."""
    report = ExtractReport(problems=list(sel.problems), partitions=dict(sel.filesystems))
    if not sel.matches:
        raise GuestError("; ".join(sel.problems) or "nothing selected")
    w = _Writer(dest, report, chunk)
    if not w.as_root:
        report.owners_kept = False
        report.notes.append(
            "not running as root: files are owned by the restoring user, not by their guest owners"
        )
    try:
        for m in sel.matches:
            if cancel is not None and cancel.is_set():
                raise GuestError(
                    f"cancelled while restoring {m.fs.where(m.entry.path)}: what was written is removed"
                )
            _one(w, m)
        w.close()
    except BaseException:
        w.rollback()
        raise
    return report


def _one(w: _Writer, m: Match) -> None:
    e = m.entry
    part = m.fs.partition.name.split("/")  # vg/lv: two levels
    comps = [c for c in e.path.split("/") if c]
    key: Key = (*part, *comps) if e.kind == "dir" else (*part, *comps[:-1])

    def guest(i: int) -> Entry | None:
        depth = i - len(part)
        if depth < 0:
            return None
        path = "/" + "/".join(comps[:depth])
        if e.kind == "dir" and path == e.path:
            return e
        try:
            return m.fs.stat(path)
        except GuestError:
            return None

    try:
        parent = w.directory(key, guest)
        if e.kind == "dir":
            w.report.directories += 1
            return
        name = safefs.check_name(comps[-1])
        if e.kind == "file":
            if e.nlink > 1 and e.inode is not None:
                first = w.links.setdefault((m.fs.partition.name, e.inode), (*key, name))
                if first != (*key, name):
                    w.report.hardlinks_copied += 1
            w.file(m, key, parent, name)
        elif e.kind == "symlink":
            w.symlink(e, key, parent, name)
        else:
            w.report.skipped.append(f"{m.fs.where(e.path)} ({e.kind}) is not restored")
    except safefs.UnsafePath as exc:
        raise GuestError(f"cannot restore {m.fs.where(e.path)}: {exc}") from exc
