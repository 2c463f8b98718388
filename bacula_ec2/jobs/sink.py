"""Where a backup's files go: Bacula (through the protocol) or a local folder (bec2)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

FILE_MODE = 0o100640
DIR_MODE = 0o040750


@dataclass(frozen=True)
class FileInfo:
    path: str  # catalog path, /@amazon-ec2/...
    size: int  # size shown in listings (for a .bimg: the volume size)
    mtime: int


class FileWriter(Protocol):
    def write(self, *parts: bytes | bytearray | memoryview) -> None: ...
    def close(self) -> None: ...


class BackupSink(Protocol):
    def file(self, info: FileInfo, data: bytes) -> None: ...
    def open_file(self, info: FileInfo) -> FileWriter: ...
    def directory(self, path: str, mtime: int) -> None: ...
