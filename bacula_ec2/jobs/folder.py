"""A local folder laid out like the Bacula catalog (`<dir>/@amazon-ec2/...`), for bec2."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator

from .. import naming
from ..formats.blockimage import FileKind, ImageHeader, RecordDecoder
from .sink import FileInfo


class _FolderWriter:
    """Writes to `<name>.part` and renames on close: a failed run leaves no half file."""

    def __init__(self, path: str, mtime: int) -> None:
        self.path = path
        self.mtime = mtime
        self.tmp = path + ".part"
        os.makedirs(os.path.dirname(path), exist_ok=True)
        self.fd = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)

    def write(self, *parts: bytes | bytearray | memoryview) -> None:
        for part in parts:
            view = memoryview(part)
            while view:
                view = view[os.write(self.fd, view) :]

    def close(self) -> None:
        os.fsync(self.fd)
        os.close(self.fd)
        os.utime(self.tmp, (self.mtime, self.mtime))
        os.replace(self.tmp, self.path)

    def discard(self) -> None:
        os.close(self.fd)
        os.unlink(self.tmp)


class FolderSink:
    """BackupSink writing into a folder; `<root>/@amazon-ec2/<instance>/<file>`."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.open: _FolderWriter | None = None

    def local(self, catalog_path: str) -> str:
        return os.path.join(self.root, catalog_path.lstrip("/"))

    def file(self, info: FileInfo, data: bytes) -> None:
        w = self.open_file(info)
        w.write(data)
        w.close()

    def open_file(self, info: FileInfo) -> _FolderWriter:
        self.open = _FolderWriter(self.local(info.path), info.mtime)
        return self.open

    def directory(self, path: str, mtime: int) -> None:
        os.makedirs(self.local(path), exist_ok=True)

    def abandon(self) -> None:
        if self.open is not None and os.path.exists(self.open.tmp):
            self.open.discard()
        self.open = None


def stored_files(root: str) -> Iterator[tuple[str, str]]:
    """(catalog path, local path) of every backup file under `root`, in backup order.

    Order: per instance, its JSON, then per volume JSON, block images (Full first, then by
    job id), maps - the order a Bacula restore would deliver them in.
    """
    base = os.path.join(root, naming.NAMESPACE)
    if not os.path.isdir(base):
        return
    for instance in sorted(os.listdir(base)):
        folder = os.path.join(base, instance)
        if not os.path.isdir(folder):
            continue
        entries = []
        for name in os.listdir(folder):
            if name.endswith(".part"):
                continue
            path = f"{naming.ROOT}{instance}/{name}"
            try:
                cat = naming.parse_catalog_path(path)
            except ValueError:
                continue
            order = {"instance": 0, "volume-json": 1, "bimg": 2, "bmp": 3, "abmp": 4}[cat.kind]
            entries.append(((cat.volume_id or "", order, cat.job_id or 0, name), path))
        for _key, path in sorted(entries):
            yield path, os.path.join(root, path.lstrip("/"))


def read_header(local: str) -> ImageHeader | None:
    """The header of a stored block image, from its first bytes only."""
    decoder = RecordDecoder(expect=FileKind.IMAGE)
    with open(local, "rb") as fh:
        while decoder.header is None and (chunk := fh.read(65536)):
            for _ in decoder.feed(chunk):
                break
    return decoder.header


def stored_headers(root: str) -> list[ImageHeader]:
    """Headers of every block image in the folder."""
    found = (read_header(local) for path, local in stored_files(root) if path.endswith(".bimg"))
    return [h for h in found if h is not None]


def reference_backup(root: str, level: str) -> ImageHeader | None:
    """What Bacula would name as PrevJobName: the newest backup (I) or newest Full (D)."""
    headers = [h for h in stored_headers(root) if level == "I" or h.level == "F"]
    return max(headers, key=lambda h: h.created, default=None)


def select_chain(parts: list[tuple[str, ImageHeader]], before: str | None) -> list[str]:
    """Bacula's restore selection among one volume's parts (catalog paths returned):
    the newest Full, the newest Differential after it, then the later Incrementals;
    only parts whose snapshot is not newer than `before` (ISO time) count."""
    usable = sorted(
        ((p, h) for p, h in parts if before is None or parse_time(h.created) <= parse_time(before)),
        key=lambda x: parse_time(x[1].created),
    )
    fulls = [i for i, (_p, h) in enumerate(usable) if h.level == "F"]
    if not fulls:
        return [p for p, _h in usable]  # the restore will name what is missing
    rest = usable[fulls[-1] :]
    diffs = [i for i, (_p, h) in enumerate(rest) if h.level == "D"]
    start = diffs[-1] if diffs else 0
    picked = (
        [rest[0]] + ([rest[start]] if diffs else []) + [x for x in rest[start + 1 :] if x[1].level == "I"]
    )
    return [p for p, _h in picked]


def parse_time(iso: str) -> float:
    text = iso.strip().replace("Z", "+00:00")
    if "T" not in text and " " in text:
        text = text.replace(" ", "T", 1)
    value = dt.datetime.fromisoformat(text)
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.timestamp()
