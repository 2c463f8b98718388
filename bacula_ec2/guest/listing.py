"""`ls-files`: a directory of the guest, on the partition named or on every filesystem
that has it, as lines like `ls -l` prints them."""

from __future__ import annotations

import contextlib
import datetime as dt
import stat
from dataclasses import dataclass

from .disk import GuestDisk, GuestError
from .fs import SUPPORTED, Entry, NotFound, open_fs
from .paths import parse_pattern

_TYPE = {"file": "-", "dir": "d", "symlink": "l", "fifo": "p", "chardev": "c", "blockdev": "b", "socket": "s"}


@dataclass(frozen=True)
class Listed:
    partition: str
    fstype: str
    path: str  # the directory listed (canonical)
    entries: list[Entry]


def list_path(disk: GuestDisk, text: str) -> list[Listed]:
    """List `[partition:]/path` (a directory: its entries; anything else: itself). Without
    a partition, every readable filesystem that has the path is listed; GuestError if
    none has it (naming the filesystems searched and those that cannot be read)."""
    pat = parse_pattern(text)
    if pat.path != pat.prefix:
        raise GuestError(f"'{text}': ls-files lists one path, without wildcards")
    parts = (
        [disk.partition(pat.partition)]
        if pat.partition
        else [p for p in disk.partitions if p.fstype in SUPPORTED]
    )
    if not parts:
        have = ", ".join(p.describe() for p in disk.partitions) or "no partitions"
        raise GuestError(f"the disk holds no filesystem this reader can read ({have})")
    out: list[Listed] = []
    problems: list[str] = []
    for p in parts:
        try:
            fs = open_fs(p)
            try:
                ent = fs.stat(pat.path)
            except NotFound:
                if pat.partition:
                    raise
                problems.append(f"{p.name} ({fs.fstype}) has no {pat.path}")
                continue
            entries = [ent]
            if ent.kind == "dir":
                entries = fs.listdir(ent.path)
            elif ent.kind == "symlink":  # to a directory: its entries (as ls does with a /)
                with contextlib.suppress(NotFound):
                    entries = fs.listdir(ent.path)
            out.append(Listed(p.name, fs.fstype, ent.path, entries))
        except GuestError as exc:
            if pat.partition:
                raise
            problems.append(str(exc))
    if not out:
        raise GuestError(f"{text}: " + "; ".join(problems))
    return out


def ls_line(e: Entry) -> str:
    """`drwxr-x--- 1000 1000     4096 2026-12-01 10:00:00 name -> target`."""
    mode = stat.filemode(e.mode | stat.S_IFREG)[1:] if e.mode is not None else "?????????"
    when = (
        dt.datetime.fromtimestamp(e.mtime_ns / 1e9, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
        if e.mtime_ns is not None
        else "-" * 19
    )
    owner = f"{e.uid if e.uid is not None else '-':>5} {e.gid if e.gid is not None else '-':>5}"
    link = f" -> {e.target}" if e.kind == "symlink" else ""
    return f"{_TYPE.get(e.kind, '?')}{mode} {owner} {e.size:>12} {when} {e.name}{link}"
