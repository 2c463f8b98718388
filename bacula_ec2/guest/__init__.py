"""The guest's files, read in user space from a disk image (docs/RESTORE.md, "Restore single
files"): partitions (GPT, MBR, LVM2), filesystems (ext2/3/4, XFS, NTFS, FAT/vfat, btrfs),
listing, globs and extraction into a directory.

Knows nothing of AWS or Bacula: a disk is anything with `size` and `read(offset, length)`
(`jobs.chainview.ChainView`, or `FileSource` over a raw image). The parsers are the
`dissect.*` libraries; this package adds naming, type detection, the exact-or-fail reading
of file data (holes and unwritten extents from the extent map) and safe extraction.
"""

from __future__ import annotations

from .disk import (
    FileSource,
    GuestDamaged,
    GuestDisk,
    GuestError,
    Partition,
    Source,
    SourceFailure,
    StreamSource,
    open_disk,
)
from .extraction import ExtractReport, Selection, extract, select
from .fs import Entry, GuestFS, NotFound
from .listing import Listed, list_path, ls_line
from .paths import Pattern, parse_patterns

__all__ = [
    "Entry",
    "ExtractReport",
    "FileSource",
    "GuestDamaged",
    "GuestDisk",
    "GuestError",
    "GuestFS",
    "Listed",
    "NotFound",
    "Partition",
    "Pattern",
    "Selection",
    "Source",
    "SourceFailure",
    "StreamSource",
    "extract",
    "list_path",
    "ls_line",
    "open_disk",
    "parse_patterns",
    "select",
]
