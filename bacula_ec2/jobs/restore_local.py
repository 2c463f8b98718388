"""Local restore: block images become sparse raw disk images, JSON files stay JSON.

The backend writes every file itself (CORELOCALRESTORE=false), so that a `.bimg` stream is
turned into `vol-Y-<dev>-<N>G.img` on the fly: one pass, memory bounded by one block.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from .. import naming
from ..formats.blockimage import Block, FormatError, ImageHeader, RecordDecoder, RecordKind
from .context import JobContext, JobError


class RestoreRefused(JobError):
    """This file cannot be restored; the job must end in error, naming why."""


@dataclass
class RestoredImage:
    path: str
    header: ImageHeader
    data_blocks: int = 0
    zero_blocks: int = 0


class _Target:
    """The file being restored: plain copy, or block image decoded into a raw image."""

    def __init__(self, path: str, catalog: naming.CatalogPath) -> None:
        self.path = path
        self.catalog = catalog
        self.fd = -1
        self.decoder: RecordDecoder | None = None
        self.image: RestoredImage | None = None

    def open(self) -> None:
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
        if self.catalog.kind == "bimg":
            self.decoder = RecordDecoder()

    def write(self, chunk: memoryview) -> None:
        if self.decoder is None:
            os.write(self.fd, chunk)
            return
        for item in self.decoder.feed(chunk):
            if isinstance(item, ImageHeader):
                self._start_image(item)
            else:
                self._apply(item)

    def _start_image(self, header: ImageHeader) -> None:
        cat = self.catalog
        if header.volume_id != cat.volume_id:
            raise FormatError(
                f"{self.path}: image holds volume {header.volume_id}, its name says {cat.volume_id}"
            )
        if header.level != "F":
            raise RestoreRefused(
                f"{cat.relative} is a level {header.level} image: restoring Incremental/Differential "
                "parts needs a newer bacula-ec2"
            )
        os.ftruncate(self.fd, header.volume_size)
        self.image = RestoredImage(self.path, header)

    def _apply(self, block: Block) -> None:
        assert self.image is not None
        rec = block.record
        if rec.kind is RecordKind.DATA:
            os.pwrite(self.fd, block.data, rec.offset)
            self.image.data_blocks += 1
        else:  # a fresh sparse file already reads as zeros there
            self.image.zero_blocks += 1

    def close(self) -> RestoredImage | None:
        try:
            if self.decoder is not None:
                self.decoder.close()
                os.fsync(self.fd)
        finally:
            os.close(self.fd)
            self.fd = -1
        return self.image


@dataclass
class LocalRestore:
    """Receives restored files from Bacula (or bec2) and writes them under `base_dir`."""

    ctx: JobContext
    base_dir: str
    where: str | None
    replace: str = "a"
    images: list[RestoredImage] = field(default_factory=list)
    files: int = 0
    _current: _Target | None = None

    def local_path(self, fname: str) -> tuple[str, naming.CatalogPath]:
        path = naming.strip_where(fname, self.where)
        catalog = naming.parse_catalog_path(path)
        rel = catalog.relative
        if catalog.kind == "bimg":
            rel = f"{catalog.instance_id}/{catalog.image_name}"
        return os.path.join(self.base_dir, naming.NAMESPACE, rel), catalog

    def start(self, fname: str) -> bool:
        """Prepare one file; False means skip it (Replace=never and it exists)."""
        try:
            target, catalog = self.local_path(fname)
        except ValueError as exc:
            raise RestoreRefused(str(exc)) from None
        if self._current is not None:  # the previous file had no data phase
            self.end()
        if catalog.kind == "dir":
            os.makedirs(target, exist_ok=True)
            return True
        if self.replace == "n" and os.path.exists(target):
            self.ctx.reporter.warning(f"{target} exists and Replace=never: not restored")
            return False
        self._current = _Target(target, catalog)
        self._current.open()
        return True

    def data(self, chunk: memoryview) -> None:
        if self._current is None:
            raise RestoreRefused("restore data arrived without a file")
        self._current.write(chunk)

    def end(self) -> None:
        current, self._current = self._current, None
        if current is None:
            return
        image = current.close()
        self.files += 1
        if image is not None:
            self.images.append(image)
            h = image.header
            self.ctx.reporter.info(
                f"restored volume {h.volume_id} ({h.volume_size >> 30} GiB, snapshot {h.snapshot_id}) "
                f"to {image.path}: {image.data_blocks} data blocks, {image.zero_blocks} empty"
            )

    def abandon(self) -> None:
        """A file failed half-way: remove what it wrote so nothing misleading stays."""
        current, self._current = self._current, None
        if current is None:
            return
        try:
            if current.fd >= 0:
                os.close(current.fd)
        finally:
            if os.path.exists(current.path):
                os.unlink(current.path)

    def finish(self) -> None:
        """End of restore: a block image that never completed is an error, not a disk."""
        if self._current is not None:
            path = self._current.path
            try:
                self.end()
            except (FormatError, OSError) as exc:
                self.abandon()
                raise RestoreRefused(f"{path} is incomplete ({exc}); the partial file was removed") from None
