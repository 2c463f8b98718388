"""Local restore: block images become sparse raw disk images, JSON files stay JSON.

The parts of a volume's chain (a Full, a Differential, Incrementals) may arrive in any
order (Bacula orders a restore by storage volume, not by job). Each part is applied to the
raw image as it streams in, one pass, memory bounded by one block: a block is written only
if no newer part has written it already. At the end, the chain is checked: it must start
with a Full (or a part that read every block) and every later part must build on what came
before it; otherwise the image is removed and the restore fails, naming the missing part.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import datetime as dt
import itertools
import os
from collections.abc import Iterator
from dataclasses import dataclass, field

from .. import naming
from ..formats.blockimage import (
    ZERO_BLOCK,
    Block,
    FormatError,
    ImageHeader,
    RecordDecoder,
    RecordKind,
)
from .context import JobContext, JobError

_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02
_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)


class RestoreRefused(JobError):
    """This file or this restore cannot be completed; the message says why."""


def _time(iso: str | None) -> dt.datetime:
    if not iso:
        return dt.datetime.min.replace(tzinfo=dt.UTC)
    return dt.datetime.fromisoformat(iso.replace("Z", "+00:00"))


def _zero_range(fd: int, offset: int, length: int) -> None:
    """Make a range read as zeros, keeping the file sparse where the filesystem can."""
    mode = _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE
    if _libc.fallocate(fd, mode, ctypes.c_long(offset), ctypes.c_long(length)) != 0:
        os.pwrite(fd, ZERO_BLOCK[:length], offset)


@dataclass
class Part:
    header: ImageHeader
    name: str  # catalog path, for messages
    data_blocks: int = 0
    zero_blocks: int = 0
    skipped: int = 0

    @property
    def created(self) -> dt.datetime:
        return _time(self.header.created)

    @property
    def starts_chain(self) -> bool:
        return self.header.base_snapshot_id is None

    def describe(self) -> str:
        h = self.header
        kind = {"F": "Full", "I": "Incremental", "D": "Differential"}.get(h.level, h.level)
        job = f" job {h.job_id}" if h.job_id is not None else ""
        return f"{kind}{job} (snapshot {h.snapshot_id} of {h.created})"


@dataclass
class VolumeImage:
    """One raw image being assembled from the parts of a volume's chain."""

    path: str
    volume_id: str
    fd: int
    size: int = 0
    parts: list[Part] = field(default_factory=list)
    newest_start: dt.datetime | None = None  # newest chain-start part applied
    first: Part | None = None  # the first part applied: it lands on a sparse (zero) file
    owner: dict[int, dt.datetime] = field(default_factory=dict)  # block -> part that wrote it
    block_size: int = 0
    # One bit per block: set when the image holds data there (a restore into AWS uploads only
    # these blocks; 4 MiB of bits cover 16 TiB, never a scan of the zeros).
    data_map: bytearray = field(default_factory=bytearray)

    def resize(self, size: int, block_size: int) -> None:
        if size > self.size:
            os.ftruncate(self.fd, size)
            self.size = size
        self.block_size = block_size
        bits = -(-size // block_size)
        if len(self.data_map) * 8 < bits:
            self.data_map.extend(bytes((bits + 7) // 8 - len(self.data_map)))

    def _mark(self, index: int, data: bool) -> None:
        if data:
            self.data_map[index >> 3] |= 1 << (index & 7)
        else:
            self.data_map[index >> 3] &= ~(1 << (index & 7)) & 0xFF

    def data_blocks(self) -> Iterator[int]:
        """Indexes of the blocks that hold data in the assembled image, ascending."""
        for byte_index, byte in enumerate(self.data_map):
            if byte:
                for bit in range(8):
                    if byte & (1 << bit):
                        yield byte_index * 8 + bit

    def count_data_blocks(self) -> int:
        return sum(bin(b).count("1") for b in self.data_map if b)

    def accept(self, part: Part) -> bool:
        """Decide for a part's blocks: False if it is older than a chain start applied."""
        if self.newest_start is not None and part.created <= self.newest_start and part.starts_chain:
            return False
        if part.starts_chain:
            self.newest_start = part.created
        if self.first is None:
            self.first = part
        return True

    def apply(self, part: Part, block: Block) -> None:
        rec = block.record
        index = rec.offset // part.header.block_size
        floor = self.newest_start if not part.starts_chain else None
        newer = self.owner.get(index)
        if (newer is not None and newer >= part.created) or (floor is not None and floor >= part.created):
            part.skipped += 1
            return
        if not part.starts_chain:
            self.owner[index] = part.created
        if rec.kind is RecordKind.DATA:
            os.pwrite(self.fd, block.data, rec.offset)
            part.data_blocks += 1
            self._mark(index, True)
        else:
            if part is not self.first:
                _zero_range(self.fd, rec.offset, rec.length)
            part.zero_blocks += 1
            self._mark(index, False)

    def check_chain(self) -> list[Part]:
        """The parts in chain order, or RestoreRefused naming what is missing."""
        parts = sorted(self.parts, key=lambda p: p.created)
        starts = [i for i, p in enumerate(parts) if p.starts_chain]
        if not starts:
            first = parts[0]
            raise RestoreRefused(
                f"volume {self.volume_id}: the restore holds {first.describe()} but not the Full backup "
                f"it builds on (snapshot {first.header.base_snapshot_id}): select the Full and the "
                "later backups too"
            )
        chain = parts[starts[-1] :]
        for prev, part in itertools.pairwise(chain):
            if _time(part.header.base_created) > prev.created:
                raise RestoreRefused(
                    f"volume {self.volume_id}: a backup is missing between {prev.describe()} and "
                    f"{part.describe()}, which builds on snapshot {part.header.base_snapshot_id} of "
                    f"{part.header.base_created}: select every backup of the chain"
                )
        return chain


class _Target:
    """The file being restored: a plain copy, or a block image applied to a raw image."""

    def __init__(self, restore: LocalRestore, path: str, catalog: naming.CatalogPath) -> None:
        self.restore = restore
        self.path = path
        self.catalog = catalog
        self.fd = -1
        self.decoder: RecordDecoder | None = None
        self.part: Part | None = None
        self.image: VolumeImage | None = None
        self.accepted = True

    def open(self) -> None:
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        if self.catalog.kind == "bimg":
            self.decoder = RecordDecoder()
        else:
            self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)

    def write(self, chunk: memoryview) -> None:
        if self.decoder is None:
            while chunk:
                chunk = chunk[os.write(self.fd, chunk) :]
            return
        for item in self.decoder.feed(chunk):
            if isinstance(item, ImageHeader):
                self._start_part(item)
            elif self.accepted:
                assert self.image is not None and self.part is not None
                self.image.apply(self.part, item)

    def _start_part(self, header: ImageHeader) -> None:
        cat = self.catalog
        if header.volume_id != cat.volume_id:
            raise FormatError(
                f"{cat.relative} holds volume {header.volume_id}, its name says {cat.volume_id}"
            )
        self.part = Part(header, cat.relative)
        self.image = self.restore.image_for(self.path, header.volume_id)
        self.image.resize(header.volume_size, header.block_size)
        self.accepted = self.image.accept(self.part)
        if not self.accepted:
            self.restore.ctx.reporter.warning(
                f"{cat.relative}: a newer Full of volume {header.volume_id} is already restored; "
                "ignoring this one"
            )

    def close(self) -> None:
        if self.decoder is not None:
            self.decoder.close()
            if self.part is None or self.image is None:
                raise FormatError(f"{self.catalog.relative} is empty")
            if self.accepted:
                self.image.parts.append(self.part)
            return
        try:
            os.fsync(self.fd)
        finally:
            os.close(self.fd)
            self.fd = -1


@dataclass
class LocalRestore:
    """Receives restored files from Bacula (or bec2) and writes them under `base_dir`."""

    ctx: JobContext
    base_dir: str
    where: str | None
    replace: str = "a"
    images: dict[str, VolumeImage] = field(default_factory=dict)
    files: int = 0
    restored: list[str] = field(default_factory=list)  # paths of the finished raw images
    _current: _Target | None = None

    def local_path(self, fname: str) -> tuple[str, naming.CatalogPath]:
        path = naming.strip_where(fname, self.where)
        catalog = naming.parse_catalog_path(path)
        rel = catalog.relative
        if catalog.kind == "bimg":
            rel = f"{catalog.instance_id}/{catalog.image_name}"
        return os.path.join(self.base_dir, naming.NAMESPACE, rel), catalog

    def image_for(self, path: str, volume_id: str) -> VolumeImage:
        image = self.images.get(volume_id)
        if image is None:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o640)
            image = VolumeImage(path, volume_id, fd)
            self.images[volume_id] = image
        return image

    def start(self, fname: str) -> bool:
        """Prepare one file; False means skip it (Replace=never and it exists)."""
        if self._current is not None:  # the previous file had no data phase
            self.end()
        try:
            target, catalog = self.local_path(fname)
        except ValueError as exc:
            raise RestoreRefused(str(exc)) from None
        if catalog.kind == "dir":
            os.makedirs(target, exist_ok=True)
            return True
        ours = catalog.kind == "bimg" and catalog.volume_id in self.images
        if self.replace == "n" and os.path.exists(target) and not ours:
            self.ctx.reporter.warning(f"{target} exists and Replace=never: not restored")
            return False
        self._current = _Target(self, target, catalog)
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
        current.close()
        self.files += 1

    def abandon(self) -> None:
        """A file failed half-way: remove what it wrote so nothing misleading stays."""
        current, self._current = self._current, None
        if current is None:
            return
        if current.fd >= 0:
            os.close(current.fd)
        if current.image is not None:
            self._drop(current.image)
        elif os.path.exists(current.path):
            os.unlink(current.path)

    def _drop(self, image: VolumeImage) -> None:
        self.images.pop(image.volume_id, None)
        os.close(image.fd)
        if os.path.exists(image.path):
            os.unlink(image.path)

    def assemble(self) -> list[tuple[VolumeImage, list[Part]]]:
        """End of the stream: check every volume's chain; a gap is an error, never a disk.

        Returns each assembled image (closed, its `data_map` filled) with its chain, oldest
        part first. On a gap, the incomplete images are removed and RestoreRefused names
        what is missing (the complete ones stay, closed, for the caller to remove).
        """
        if self._current is not None:
            path = self._current.path
            try:
                self.end()
            except (FormatError, OSError) as exc:
                self.abandon()
                raise RestoreRefused(f"{path} is incomplete ({exc}); the partial file was removed") from None
        problems = []
        done: list[tuple[VolumeImage, list[Part]]] = []
        for image in list(self.images.values()):
            try:
                chain = image.check_chain()
            except RestoreRefused as exc:
                problems.append(str(exc))
                self._drop(image)
                continue
            os.fsync(image.fd)
            os.close(image.fd)
            self.restored.append(image.path)
            done.append((image, chain))
        self.images.clear()
        if problems:
            raise RestoreRefused("; ".join(problems) + " (the incomplete image was removed)")
        return done

    def finish(self) -> None:
        """End of restore to local images: assemble, and say what each image holds."""
        for image, chain in self.assemble():
            parts = " + ".join(p.describe().split(" (")[0] for p in chain)
            data = sum(p.data_blocks for p in chain)
            self.ctx.reporter.info(
                f"restored volume {image.volume_id} ({image.size >> 30} GiB) to {image.path} "
                f"from {parts}: {data} data blocks written"
            )

    def summary(self) -> str:
        images = len(self.restored)
        return f"restore finished: {self.files} file(s), {images} disk image(s) under {self.base_dir}"
