"""File attributes as carried by `STAT:`, `TSTAMP:` and `LSTAT:` lines (§4.4, §6.3)."""

from __future__ import annotations

import stat as _stat
from dataclasses import dataclass

from .errors import ProtocolError

#: §4.4.1: regular, empty regular, directory, symlink, hard link.
FILE_TYPES = frozenset("FEDSL")
#: File-type bits added to a mode that has none (§4.4.1: include S_IFMT bits).
TYPE_BITS = {
    "F": _stat.S_IFREG,
    "E": _stat.S_IFREG,
    "D": _stat.S_IFDIR,
    "S": _stat.S_IFLNK,
    "L": _stat.S_IFREG,
}
_BLANKS = " \t\r\n\v\f"


def check_name(name: str, what: str = "name") -> None:
    """§1.7: the FD strips trailing whitespace and stops at NUL, so both are refused."""
    if not name:
        raise ValueError(f"empty {what}")
    if "\x00" in name:
        raise ValueError(f"{what} {name!r} contains NUL (§1.7)")
    if name[-1] in _BLANKS:
        raise ValueError(f"{what} {name!r} ends in whitespace, which the FD strips (§1.7)")


@dataclass(frozen=True, slots=True)
class FileAttrs:
    """Attributes of one backup item (§4.3, §4.4).

    `mode` may omit the file-type bits; they are added from `type` (§4.4.1, §10.27).
    `link` becomes `LSTAT:` (required for `S`, recommended for `L`); `linkfi` is the 7th
    STAT field, required for `L` only.
    """

    name: str
    type: str = "F"
    size: int = 0
    mode: int = 0o640
    uid: int = 0
    gid: int = 0
    nlink: int = 1
    atime: int = 0
    mtime: int = 0
    ctime: int = 0
    link: str | None = None
    linkfi: int = 0

    def validate(self) -> None:
        """Raise ValueError for anything the FD would reject or silently mangle."""
        check_name(self.name)
        if self.type not in FILE_TYPES:
            raise ValueError(f"{self.name}: invalid file type {self.type!r} (§4.4.1)")
        if self.type == "D" and not self.name.endswith("/"):
            raise ValueError(f"directory name {self.name!r} must end in '/' (§4.3)")
        if self.type == "S" and self.link is None:
            raise ValueError(f"{self.name}: symlink needs link (LSTAT:) (§4.4.1)")
        if self.type == "L" and self.linkfi <= 0:
            raise ValueError(f"{self.name}: hard link needs linkfi > 0 (§4.4.1)")
        if self.link is not None:
            check_name(self.link, "link target")
        if self.size < 0:
            raise ValueError(f"{self.name}: negative size {self.size}")

    @property
    def full_mode(self) -> int:
        """`mode` with the file-type bits for `type` added if it had none."""
        if _stat.S_IFMT(self.mode):
            return self.mode
        return self.mode | TYPE_BITS.get(self.type, 0)

    def stat_line(self) -> str:
        """`STAT:<t> <size> <uid> <gid> <mode-octal> <nlink>[ <linkfi>]` (§4.4.1).

        Mode as `%06o`, which matches the transcripts (`100644`, `040755`, §4.11).
        """
        line = f"STAT:{self.type} {self.size} {self.uid} {self.gid} {self.full_mode:06o} {self.nlink}"
        if self.type == "L":
            line += f" {self.linkfi}"
        return line

    def tstamp_line(self) -> str:
        """`TSTAMP:<atime> <mtime> <ctime>` (§4.4.3): order matters."""
        return f"TSTAMP:{int(self.atime)} {int(self.mtime)} {int(self.ctime)}"


@dataclass(frozen=True, slots=True)
class RestoreFile:
    """One file announced by the FD in a restore (§6.3).

    `name` already contains `Where`/`RegexWhere` (§10.21); `link` is the LSTAT value
    (symlinks only).
    """

    name: str
    type: str
    size: int
    uid: int
    gid: int
    mode: int
    nlink: int
    linkfi: int
    atime: int
    mtime: int
    ctime: int
    link: str | None = None


def parse_stat(value: str) -> tuple[str, int, int, int, int, int, int]:
    """Parse the text after `STAT:` like the FD's `sscanf("%c %ld %d %d %o %d %d")`.

    Returns (type, size, uid, gid, mode, nlink, linkfi); linkfi is 0 when absent. At least
    6 fields are required (§4.4.1); restore STAT always has 7 (§6.3).
    """
    fields = value.split(" ")
    if len(fields) < 6 or len(fields[0]) != 1:
        raise ProtocolError(f"malformed STAT {value!r}: need '<t> <size> <uid> <gid> <mode> <nlink>'")
    try:
        size, uid, gid = int(fields[1]), int(fields[2]), int(fields[3])
        mode = int(fields[4], 8)
        nlink = int(fields[5])
        linkfi = int(fields[6]) if len(fields) > 6 else 0
    except ValueError as exc:
        raise ProtocolError(f"malformed STAT {value!r}: {exc}") from exc
    return fields[0], size, uid, gid, mode, nlink, linkfi


def parse_tstamp(value: str) -> tuple[int, int, int]:
    """Parse the text after `TSTAMP:`: exactly three decimal times (§4.4.3)."""
    fields = value.split(" ")
    if len(fields) != 3:
        raise ProtocolError(f"malformed TSTAMP {value!r}: need '<atime> <mtime> <ctime>'")
    try:
        return int(fields[0]), int(fields[1]), int(fields[2])
    except ValueError as exc:
        raise ProtocolError(f"malformed TSTAMP {value!r}: not integers") from exc
