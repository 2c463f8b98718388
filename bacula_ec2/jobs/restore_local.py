"""Local restore: block images become sparse raw disk images, JSON files stay JSON.

One rule, for the backend, for bec2 and for the staging of a restore into AWS: a volume
is restored exactly, or it is not restored at all (docs/RESTORE.md, "What a restore
promises").

* Every part (`.bimg`) is read completely and verified (header, every record, every
  block's SHA-256, the end digest) and checked against its catalog name and against the
  other parts of its volume (same volume, same chain, no snapshot twice). A part that
  fails any check fails its volume, with a message naming the file and the problem;
  later parts of that volume are read and dropped, and the failure is reported again at
  the end.
* The parts of a chain (a Full, a Differential, Incrementals) may arrive in any order
  (Bacula orders a restore by storage volume, not by job). Each is applied to the raw
  image as it streams in, one pass, memory bounded by one block: a block is written only
  if no newer part has written it already. At the end the chain is checked: it must start
  with a Full (or a part that read every block) and every later part must build on the
  snapshot of the part before it (`chain_order`).
* The image is assembled under a temporary name inside the target and renamed to its
  final name only once the chain check passed; on every failure path it is removed.
* The newest part of the chain describes the result: the image's name (device, size),
  the folder (instance) it lands in and the volume JSON and block maps kept beside it are
  those of the latest backup, whatever order the parts came in.
* Every file is written through `safefs` (no link in the target is ever followed), and
  an existing destination is treated as Bacula's Replace= says.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import datetime as dt
import itertools
import json
import logging
import os
import secrets
import shutil
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from .. import naming, timefmt
from ..formats.blockimage import (
    Block,
    FileKind,
    FormatError,
    ImageHeader,
    RecordDecoder,
    RecordKind,
)
from . import progress, safefs
from .chain import job_resource
from .context import JobContext, JobError

log = logging.getLogger("bacula-ec2.restore")
#: Bacula's Replace= letters (metaplugin-protocol.md §3.3, §6.6).
REPLACE_MODES = {"a": "always", "n": "never", "w": "ifnewer", "o": "ifolder"}
MAX_JSON = 16 << 20
_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02
_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)


class RestoreFailed(JobError):
    """This file or this restore cannot be completed; the message says why."""


_time = timefmt.parse_iso_or_min


def _epoch(when: dt.datetime) -> int:
    return timefmt.epoch(when, default=0)


def _zero_range(fd: int, offset: int, length: int) -> None:
    """Make a range read as zeros, keeping the file sparse where the filesystem can."""
    mode = _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE
    if _libc.fallocate(fd, mode, ctypes.c_long(offset), ctypes.c_long(length)) != 0:
        os.pwrite(fd, bytes(length), offset)


@dataclass
class Part:
    """One verified block image of a volume's chain."""

    header: ImageHeader
    name: str  # catalog path, for messages
    catalog: naming.CatalogPath | None = None
    data_blocks: int = 0
    zero_blocks: int = 0
    skipped: int = 0
    applied: bool = True  # False: older than a chain start in the restore, not used

    @property
    def created(self) -> dt.datetime:
        return _time(self.header.created)

    @property
    def starts_chain(self) -> bool:
        return self.header.base_snapshot_id is None

    def label(self) -> str:
        """`Incremental job 43`: what the part is, for lists of parts."""
        return part_label(self.header)

    def describe(self) -> str:
        return describe_part(self.header)


def part_label(h: ImageHeader) -> str:
    """`Incremental job 43`: what a part is, from its header."""
    job = f" job {h.job_id}" if h.job_id is not None else ""
    return f"{naming.LEVEL_NAMES.get(h.level, h.level)}{job}"


def describe_part(h: ImageHeader) -> str:
    """`Incremental job 43 (snapshot snap-... of 2026-...)`."""
    return f"{part_label(h)} (snapshot {h.snapshot_id} of {h.created})"


class ChainPart(Protocol):
    """What the chain checks need of a part: its header and its name for messages
    (`Part` here, `chainview.ViewPart`)."""

    @property
    def header(self) -> ImageHeader: ...

    @property
    def name(self) -> str: ...


P = TypeVar("P", bound=ChainPart)


@dataclass
class VolumeImage:
    """One raw image being assembled from the parts of a volume's chain.

    Invariant: a block whose bit in `data_map` is clear reads as zeros in the file (the
    file starts sparse; a zero record on a block with data punches a hole).
    """

    path: str  # the temporary file while assembling; the final file once installed
    volume_id: str
    fd: int
    tmp: str = ""  # temporary name in the namespace directory ("" once installed or removed)
    size: int = 0
    parts: list[Part] = field(default_factory=list)
    newest_start: dt.datetime | None = None  # newest chain-start part applied
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

    def _has(self, index: int) -> bool:
        return bool(self.data_map[index >> 3] & (1 << (index & 7)))

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
        """Whether a part's blocks are applied: not if an applied chain start is newer.

        A chain start newer than everything applied so far resets every block that no
        newer part wrote: what an older chain left there is not part of the result.
        """
        if self.newest_start is not None and part.created <= self.newest_start:
            return False
        if part.starts_chain:
            self._reset_older_than(part.created)
            self.newest_start = part.created
        return True

    def _reset_older_than(self, when: dt.datetime) -> None:
        for index in list(self.data_blocks()):
            owner = self.owner.get(index)
            if owner is None or owner < when:
                start = index * self.block_size
                _zero_range(self.fd, start, min(self.block_size, self.size - start))
                self._mark(index, False)
        self.owner = {k: v for k, v in self.owner.items() if v >= when}

    def apply(self, part: Part, block: Block) -> None:
        rec = block.record
        index = rec.offset // part.header.block_size
        newer = self.owner.get(index)
        if newer is not None and newer >= part.created:
            part.skipped += 1
            return
        if not part.starts_chain:
            self.owner[index] = part.created
        if rec.kind is RecordKind.DATA:
            os.pwrite(self.fd, block.data, rec.offset)
            part.data_blocks += 1
            self._mark(index, True)
        else:
            if self._has(index):
                _zero_range(self.fd, rec.offset, rec.length)
                self._mark(index, False)
            part.zero_blocks += 1

    def finalize(self, size: int, mtime: int) -> None:
        """The newest part's size, on disk; synced, dated, closed."""
        if size != self.size:
            os.ftruncate(self.fd, size)
            self.size = size
        bits = -(-size // self.block_size) if self.block_size else 0
        del self.data_map[(bits + 7) // 8 :]
        if bits % 8 and self.data_map:
            self.data_map[-1] &= (1 << (bits % 8)) - 1
        os.fsync(self.fd)
        if mtime > 0:
            os.utime(self.fd, (mtime, mtime))
        os.close(self.fd)
        self.fd = -1


@dataclass
class _Held:
    """A finished companion file (volume JSON, block map) waiting under a temporary name."""

    tmp: str
    catalog: naming.CatalogPath
    name: str  # catalog path
    mtime: int
    snapshot_id: str | None  # the backup it describes


@dataclass
class _Volume:
    """Everything the restore holds of one volume."""

    volume_id: str
    image: VolumeImage | None = None
    parts: list[Part] = field(default_factory=list)
    failure: str | None = None
    skipped: str | None = None
    held: list[_Held] = field(default_factory=list)
    received: int = 0  # bytes of its block images received (progress)
    seconds: float = 0.0  # time spent receiving them


@dataclass
class _Target:
    """The file being received: a block image, a plain copy, or a part being dropped."""

    name: str  # catalog path
    catalog: naming.CatalogPath
    kind: str  # "bimg", "file", "discard"
    mtime: int = 0
    fd: int = -1
    tmp: str = ""
    decoder: RecordDecoder | None = None
    text: bytearray | None = None  # JSON documents, kept to read what they describe
    part: Part | None = None
    accepted: bool = True
    received: int = 0
    tracker: progress.Tracker | None = None  # a block image's progress


def _vid(t: _Target) -> str:
    assert t.catalog.volume_id is not None
    return t.catalog.volume_id


def check_part(volume_id: str, parts: Sequence[ChainPart], header: ImageHeader, name: str) -> None:
    """Whether a part may join the parts of volume `volume_id` already held: same volume,
    same chain (Job resource and block size), no snapshot twice. FormatError says why not,
    worded about the part ("it ..."), naming the part it conflicts with.

    The one implementation of these checks: `LocalRestore` runs it as each part's header
    arrives, `chainview.ChainView` on the parts it opens."""
    if header.volume_id != volume_id:
        raise FormatError(
            f"it holds volume {header.volume_id}, the other parts volume {volume_id}: "
            "the parts of a chain must be of one volume"
        )
    identity = (job_resource(header.job_name or ""), header.block_size)
    if parts:
        first = parts[0]
        have = (job_resource(first.header.job_name or ""), first.header.block_size)
        if identity != have:
            raise FormatError(
                f"it belongs to the chain of job {identity[0] or '?'} (block size {identity[1]}), but "
                f"{first.name} to that of job {have[0] or '?'} (block size "
                f"{have[1]}): the parts of a volume must come from one chain"
            )
    for other in parts:
        if other.header.snapshot_id == header.snapshot_id:
            raise FormatError(
                f"it holds snapshot {header.snapshot_id}, which {other.name} holds too "
                "(a duplicated or substituted part)"
            )


def chain_order(volume_id: str, parts: Sequence[P]) -> tuple[list[P], list[P]]:
    """(the chain in order, the older parts not used) of one volume's parts (any order),
    or RestoreFailed naming the gap: it must start with a Full (or a part that read every
    block) and every later part must build on what came before it."""

    def starts(p: P) -> bool:
        return p.header.base_snapshot_id is None

    ordered = sorted(parts, key=lambda p: (_time(p.header.created), not starts(p)))
    begins = [i for i, p in enumerate(ordered) if starts(p)]
    if not begins:
        first = ordered[0].header
        raise RestoreFailed(
            f"volume {volume_id}: the restore holds {describe_part(first)} but not the Full backup "
            f"it builds on (snapshot {first.base_snapshot_id}): select the Full and the "
            "later backups too"
        )
    chain, older = ordered[begins[-1] :], ordered[: begins[-1]]
    # Each part holds the changes against exactly one snapshot, its base: it must follow the
    # part that holds that snapshot. Newest-wins merging is exact only then: changes against
    # an older snapshot are not a superset of the changes against a newer one (a block
    # changed after the older snapshot and changed back is in neither listing), so a part
    # in between, already applied, would leave its version of such a block.
    for prev, part in itertools.pairwise(chain):
        base = part.header.base_snapshot_id
        if base == prev.header.snapshot_id:
            continue
        if any(p.header.snapshot_id == base for p in chain):
            raise RestoreFailed(
                f"volume {volume_id}: {describe_part(part.header)} builds on snapshot {base}, not on "
                f"{describe_part(prev.header)}, which the restore also holds: the two are not one "
                "chain, leave that backup out of the restore"
            )
        raise RestoreFailed(
            f"volume {volume_id}: a backup is missing between {describe_part(prev.header)} and "
            f"{describe_part(part.header)}, which builds on snapshot {base} of "
            f"{part.header.base_created}: select every backup of the chain"
        )
    return chain, older


def _check_name(cat: naming.CatalogPath, h: ImageHeader) -> None:
    """The catalog name of a part says what it holds; a file under another's name fails."""
    says = f"its name says {naming.LEVEL_NAMES.get(cat.level, cat.level)}"
    if cat.job_id is not None:
        says += f" job {cat.job_id}"
    holds = f"{naming.LEVEL_NAMES.get(h.level, h.level)} job {h.job_id} of volume {h.volume_id}"
    if h.volume_id != cat.volume_id:
        raise FormatError(f"it holds a backup of volume {h.volume_id}, its name says {cat.volume_id}")
    if h.level != cat.level or (cat.job_id is not None and h.job_id != cat.job_id):
        raise FormatError(f"it holds the {holds} (snapshot {h.snapshot_id}), {says}")
    if h.device is not None and naming.device_short_name(h.device) != cat.device:
        raise FormatError(f"it holds device {h.device} of volume {h.volume_id}, its name says {cat.device}")
    if cat.size_gib is not None and -(-h.volume_size // naming.GIB) != cat.size_gib:
        raise FormatError(f"it holds a volume of {h.volume_size} bytes, its name says {cat.size_gib} GiB")
    if h.block_size <= 0:
        raise FormatError(f"its block size {h.block_size} is invalid")


@dataclass
class LocalRestore:
    """Receives restored files from Bacula (or bec2) and writes them under `base_dir`.

    Call `start(name)` per file, `data(chunk)` for its bytes, `end()` after them (a file
    without data may simply be followed by the next `start`), then `finish()` once; or
    `abandon()` to give up, which removes everything not yet installed. Every method that
    fails has already cleaned up what the failing file wrote.
    """

    ctx: JobContext
    base_dir: str
    where: str | None
    replace: str = "a"
    files: int = 0
    restored: list[str] = field(default_factory=list)  # paths of the finished raw images
    problems: list[str] = field(default_factory=list)  # failed files that are not block images
    volumes: dict[str, _Volume] = field(default_factory=dict)
    _current: _Target | None = None
    _root: safefs.Dir | None = None
    _ns: safefs.Dir | None = None
    _folders: dict[str, safefs.Dir] = field(default_factory=dict)
    _target_error: str | None = None
    #: What progress says is done to a volume's block images ("staged" for AWS).
    verb: str = "restored"

    def __post_init__(self) -> None:
        if self.replace not in REPLACE_MODES:
            raise RestoreFailed(
                f"Replace={self.replace} is not a Bacula replace option (a, n, w or o expected)"
            )

    # ------------------------------------------------------------------ target
    @property
    def images(self) -> dict[str, VolumeImage]:
        """The images being assembled (not yet installed), by volume id."""
        return {vid: v.image for vid, v in self.volumes.items() if v.image is not None}

    def open_target(self) -> safefs.Dir:
        """Open the target and its `@amazon-ec2` directory (once); refuse links there."""
        if self._target_error is not None:
            raise RestoreFailed(self._target_error)
        if self._ns is None:
            try:
                self._root = safefs.open_target(self.base_dir)
                self._ns = self._root.subdir(naming.NAMESPACE)
            except (OSError, JobError) as exc:
                self._target_error = f"cannot restore into {self.base_dir}: {exc}"
                raise RestoreFailed(self._target_error) from exc
        assert self._ns is not None
        return self._ns

    def _folder(self, instance_id: str) -> safefs.Dir:
        folder = self._folders.get(instance_id)
        if folder is None:
            folder = self.open_target().subdir(instance_id)
            assert folder is not None
            self._folders[instance_id] = folder
        return folder

    def _existing_folder(self, instance_id: str) -> safefs.Dir | None:
        """The folder if it exists (never created here); a link there is refused."""
        if instance_id in self._folders:
            return self._folders[instance_id]
        folder = self.open_target().subdir(instance_id, create=False)
        if folder is not None:
            self._folders[instance_id] = folder
        return folder

    def local_path(self, fname: str) -> tuple[str, naming.CatalogPath]:
        """Where a catalog file would land by its own name (for messages)."""
        path = naming.strip_where(fname, self.where)
        catalog = naming.parse_catalog_path(path)
        rel = catalog.relative
        if catalog.kind == "bimg":
            rel = f"{catalog.instance_id}/{catalog.image_name}"
        return os.path.join(self.base_dir, naming.NAMESPACE, rel), catalog

    def _volume(self, volume_id: str) -> _Volume:
        vol = self.volumes.get(volume_id)
        if vol is None:
            vol = self.volumes[volume_id] = _Volume(volume_id)
        return vol

    # ------------------------------------------------------------------ Replace=
    def _may_replace(self, folder: safefs.Dir, name: str, backup_mtime: int, what: str) -> bool:
        """Bacula's Replace= for an existing destination (warns when it is kept)."""
        st = folder.lstat(name)
        if st is None:
            return True
        path = folder.child(name)
        if stat.S_ISDIR(st.st_mode):
            raise safefs.UnsafePath(f"{path} is a directory: cannot restore {what} over it")
        mode = self.replace
        if mode == "a":
            return True
        existing = int(st.st_mtime)
        if mode == "w" and backup_mtime > existing:
            return True
        if mode == "o" and backup_mtime < existing:
            return True
        why = {
            "n": "it exists",
            "w": "it is not older than the backup",
            "o": "it is not newer than the backup",
        }[mode]
        self.ctx.reporter.warning(
            f"{path}: {why} and Replace={REPLACE_MODES[mode]}: {what} is not restored, the file is "
            "left as it is"
        )
        return False

    def _install(self, tmp: str, folder: safefs.Dir, name: str, backup_mtime: int, what: str) -> bool:
        """Give a finished temporary file its final name, as Replace= allows; the temporary
        name is gone afterwards either way. True if it was installed."""
        ns = self.open_target()
        try:
            if not self._may_replace(folder, name, backup_mtime, what):
                return False
            if self.replace == "n":
                if ns.link_new(tmp, folder, name):
                    return True
                self.ctx.reporter.warning(
                    f"{folder.child(name)}: it exists and Replace=never: {what} is not restored"
                )
                return False
            ns.replace(tmp, folder, name)
            return True
        finally:
            ns.unlink(tmp)

    # ------------------------------------------------------------------ stream
    def start(self, fname: str, mtime: int | None = None, size: int | None = None) -> bool:
        """Prepare one file; False means skip it (Replace= keeps what exists).

        `mtime` is the file's modification time in the backup (the FD's STAT), used by
        Replace=ifnewer/ifolder and given to the restored JSON and map files. `size` is
        the file's exact size if known (bec2's manifest; not the FD's STAT, which holds
        the provisioned size of a block image): progress then has a total.
        """
        self._settle(report=True)
        ns = self.open_target()
        try:
            path = naming.strip_where(fname, self.where)
            catalog = naming.parse_catalog_path(path)
        except ValueError as exc:
            raise RestoreFailed(str(exc)) from exc
        name = naming.ROOT + catalog.relative
        try:
            if catalog.kind == "dir":
                self._folder(catalog.instance_id)
                return True
            if catalog.kind == "bimg":
                return self._start_image(name, catalog, size)
            return self._start_file(ns, name, catalog, mtime or 0)
        except (OSError, JobError) as exc:
            raise RestoreFailed(self._failed(name, catalog, exc)) from exc

    def _start_image(self, name: str, catalog: naming.CatalogPath, size: int | None = None) -> bool:
        assert catalog.volume_id is not None
        vol = self._volume(catalog.volume_id)
        if vol.failure is not None:
            self._current = _Target(name, catalog, "discard")
            return True
        if vol.skipped is not None:
            return False
        folder = self._existing_folder(catalog.instance_id)
        if self.replace == "n" and folder is not None and folder.lstat(catalog.image_name) is not None:
            vol.skipped = f"{folder.child(catalog.image_name)} exists"
            self.ctx.reporter.warning(
                f"{vol.skipped} and Replace=never: volume {vol.volume_id} is not restored, the file "
                "is left as it is (its block images are skipped)"
            )
            self._drop_volume(vol)
            return False
        self._current = _Target(name, catalog, "bimg", decoder=RecordDecoder(expect=FileKind.IMAGE))
        part = naming.LEVEL_NAMES.get(catalog.level, catalog.level)
        if catalog.job_id is not None:
            part += f" job {catalog.job_id}"
        self._current.tracker = progress.Tracker(
            f"{vol.volume_id} ({part})", self.verb, size, progress.emitter(self.ctx.reporter)
        )
        return True

    def _start_file(self, ns: safefs.Dir, name: str, catalog: naming.CatalogPath, mtime: int) -> bool:
        vol = self.volumes.get(catalog.volume_id or "")
        if vol is not None and vol.skipped is not None:
            return False
        if vol is not None and vol.failure is not None:
            self._current = _Target(name, catalog, "discard")
            return True
        final = catalog.relative.rsplit("/", 1)[1]
        folder = self._existing_folder(catalog.instance_id)
        if folder is not None and not self._may_replace(folder, final, mtime, name):
            return False
        fd, tmp = ns.create_temp(final)
        target = _Target(name, catalog, "file", mtime=mtime, fd=fd, tmp=tmp)
        if catalog.kind == "bmp":
            target.decoder = RecordDecoder(expect=FileKind.MAP)
        elif catalog.kind == "abmp":
            target.decoder = RecordDecoder(expect=FileKind.EMPTY_MAP)
        else:
            target.text = bytearray()
        self._current = target
        return True

    def data(self, chunk: memoryview) -> None:
        """Bytes of the current file. On failure the file (for a block image: its volume)
        is cleaned up before RestoreFailed is raised; the rest of its data may be dropped."""
        t = self._current
        if t is None:
            raise RestoreFailed("restore data arrived without a file")
        try:
            self._write(t, chunk)
        except Exception as exc:
            self._current = None
            raise RestoreFailed(self._fail(t, exc)) from exc

    def _write(self, t: _Target, chunk: memoryview) -> None:
        t.received += len(chunk)
        if t.tracker is not None:
            t.tracker.add(len(chunk))
        if t.kind == "discard":
            return
        if t.kind == "file":
            safefs.write_all(t.fd, chunk)
            if t.text is not None:
                if len(t.text) + len(chunk) > MAX_JSON:
                    raise FormatError(
                        f"the file is larger than {MAX_JSON >> 20} MiB: not a bacula-ec2 document"
                    )
                t.text += chunk
        if t.decoder is None:
            return
        for item in t.decoder.feed(chunk):
            if isinstance(item, ImageHeader):
                if t.kind == "bimg":
                    self._start_part(t, item)
            elif t.kind == "bimg" and t.accepted:
                assert t.part is not None
                vol = self.volumes[_vid(t)]
                assert vol.image is not None
                vol.image.apply(t.part, item)

    def _start_part(self, t: _Target, header: ImageHeader) -> None:
        cat = t.catalog
        vol = self._volume(_vid(t))
        _check_name(cat, header)
        check_part(vol.volume_id, vol.parts, header, t.name)
        part = Part(header, t.name, cat)
        if vol.image is None:
            fd, tmp = self.open_target().create_temp(f"{vol.volume_id}.img")
            vol.image = VolumeImage(self.open_target().child(tmp), vol.volume_id, fd, tmp=tmp)
        vol.image.resize(header.volume_size, header.block_size)
        t.part = part
        t.accepted = part.applied = vol.image.accept(part)

    def end(self) -> None:
        """The current file is complete: verify it (a block image must be whole)."""
        t, self._current = self._current, None
        if t is None:
            return
        try:
            self._close(t)
        except Exception as exc:
            raise RestoreFailed(self._fail(t, exc)) from exc
        self.files += 1

    def _close(self, t: _Target) -> None:
        if t.kind == "discard":
            return
        if t.decoder is not None:
            if t.decoder.header is None:
                if t.received == 0:
                    raise FormatError("the file is empty (0 bytes)")
                raise FormatError(f"the file is truncated inside its header (after {t.received} bytes)")
            t.decoder.close()
        if t.kind == "bimg":
            assert t.part is not None
            vol = self._volume(_vid(t))
            vol.parts.append(t.part)
            if t.tracker is not None:
                done = t.tracker.stop()
                vol.received += done.done
                vol.seconds += done.elapsed
            return
        cat = t.catalog
        described = self._describes(t)
        os.fsync(t.fd)
        if t.mtime > 0:
            os.utime(t.fd, (t.mtime, t.mtime))
        os.close(t.fd)
        t.fd = -1
        if cat.kind == "instance":
            tmp, t.tmp = t.tmp, ""
            self._install(tmp, self._folder(cat.instance_id), f"{cat.instance_id}.json", t.mtime, t.name)
            return
        assert cat.volume_id is not None
        self._volume(cat.volume_id).held.append(_Held(t.tmp, cat, t.name, t.mtime, described))
        t.tmp = ""

    def _describes(self, t: _Target) -> str | None:
        """The snapshot a companion file belongs to; checks that it is what its name says."""
        cat = t.catalog
        if t.decoder is not None:
            header = t.decoder.header
            assert header is not None
            if header.volume_id != cat.volume_id:
                raise FormatError(
                    f"it holds a map of volume {header.volume_id}, its name says {cat.volume_id}"
                )
            return header.snapshot_id
        assert t.text is not None
        try:
            doc: Any = json.loads(bytes(t.text))
        except ValueError as exc:
            raise FormatError(f"the file is not valid JSON ({exc})") from exc
        if not isinstance(doc, dict):
            raise FormatError("the file is not a JSON object")
        key, want = (
            ("instance_id", cat.instance_id) if cat.kind == "instance" else ("volume_id", cat.volume_id)
        )
        if doc.get(key) not in (None, want):
            raise FormatError(f"it describes {doc.get(key)}, its name says {want}")
        sid = doc.get("snapshot_id")
        return str(sid) if sid else None

    def _fail(self, t: _Target, exc: BaseException) -> str:
        """Clean up after a failed file; a failed block image fails its volume."""
        self._discard(t)
        return self._failed(t.name, t.catalog, exc)

    def _failed(self, name: str, catalog: naming.CatalogPath, exc: BaseException) -> str:
        _log_io_error(f"restoring {name}", exc)
        reason = f"{name}: {exc}"
        if catalog.kind == "bimg" and catalog.volume_id is not None:
            vol = self._volume(catalog.volume_id)
            if vol.failure is None:
                vol.failure = reason
            self._drop_volume(vol)
            return f"volume {vol.volume_id} is not restored: {reason} (no image is left for it)"
        message = f"{name} is not restored: {exc}"
        self.problems.append(message)
        return message

    def _discard(self, t: _Target) -> None:
        if t.fd >= 0:
            os.close(t.fd)
            t.fd = -1
        if t.tmp:
            tmp, t.tmp = t.tmp, ""
            self.open_target().unlink(tmp)

    def _drop_volume(self, vol: _Volume) -> None:
        """Remove the volume's temporary image and held files."""
        image, vol.image = vol.image, None
        ns = self._ns
        if image is not None:
            if image.fd >= 0:
                os.close(image.fd)
                image.fd = -1
            if image.tmp and ns is not None:
                ns.unlink(image.tmp)
                image.tmp = ""
        for held in vol.held:
            if ns is not None:
                ns.unlink(held.tmp)
        vol.held.clear()

    def _settle(self, report: bool) -> None:
        """A file without a data phase ends when the next one starts (or at the end)."""
        if self._current is None:
            return
        try:
            self.end()
        except RestoreFailed as exc:
            if report:
                self.ctx.reporter.error(str(exc))

    def abandon(self) -> None:
        """Give up: remove every file not yet installed (the current one, the images being
        assembled, the held JSON and map copies). Installed files stay."""
        t, self._current = self._current, None
        if t is not None and self._ns is not None:
            self._discard(t)
        for vol in self.volumes.values():
            self._drop_volume(vol)

    def close(self) -> None:
        """`abandon()`, then close the target's directories (idempotent)."""
        self.abandon()
        for folder in self._folders.values():
            folder.close()
        self._folders.clear()
        for d in (self._ns, self._root):
            if d is not None:
                d.close()
        self._ns = self._root = None

    # ------------------------------------------------------------------ end of restore
    def assemble(self) -> list[tuple[VolumeImage, list[Part]]]:
        """End of the stream: check every volume's chain; install what is exact.

        Returns each installed image (closed, its `data_map` filled, `path` its final
        name) with its chain, oldest part first. Volumes that failed leave nothing; if any
        did (or another file failed), RestoreFailed names them all after the healthy
        volumes were installed.
        """
        self._settle(report=False)
        problems = [self._target_error] if self._target_error else []
        problems += self.problems
        done: list[tuple[VolumeImage, list[Part]]] = []
        for vol in self.volumes.values():
            if vol.failure is not None:
                problems.append(f"volume {vol.volume_id} is not restored: {vol.failure}")
                self._drop_volume(vol)
                continue
            if vol.skipped is not None:
                self._drop_volume(vol)
                continue
            try:
                if not vol.parts:
                    self._install_alone(vol)
                    continue
                chain, older = chain_order(vol.volume_id, vol.parts)
                if self._install_image(vol, chain, older):
                    assert vol.image is not None
                    done.append((vol.image, chain))
                    self.restored.append(vol.image.path)
                    self._install_companions(vol, chain[-1])
                    progress.emitter(self.ctx.reporter)(
                        progress.Progress.summary(vol.volume_id, self.verb, vol.received, vol.seconds)
                    )
            except (OSError, JobError) as exc:
                _log_io_error(f"installing the image of {vol.volume_id}", exc)
                problems.append(str(exc))
                self._drop_volume(vol)
        if problems:
            raise RestoreFailed("; ".join(problems) + " (a volume that is not restored leaves no image)")
        return done

    def _install_image(self, vol: _Volume, chain: list[Part], older: list[Part]) -> bool:
        image = vol.image
        assert image is not None
        newest = chain[-1]
        if older:
            self.ctx.reporter.warning(
                f"volume {vol.volume_id}: the restore holds the newer Full {chain[0].describe()}; "
                f"ignoring the older {', '.join(p.name for p in older)}"
            )
        cat = newest.catalog
        assert cat is not None
        mtime = _epoch(newest.created)
        image.finalize(newest.header.volume_size, mtime)
        folder = self._folder(cat.instance_id)
        tmp, image.tmp = image.tmp, ""
        if not self._install(tmp, folder, cat.image_name, mtime, f"volume {vol.volume_id}"):
            vol.image = None
            self._drop_volume(vol)
            return False
        image.path = folder.child(cat.image_name)
        image.parts = chain
        return True

    def _install_companions(self, vol: _Volume, newest: Part) -> None:
        """Keep the JSON and maps of the newest backup beside the image; drop the rest."""
        cat = newest.catalog
        assert cat is not None
        sid = newest.header.snapshot_id
        folder = self._folder(cat.instance_id)
        finals = {
            "volume-json": cat.image_name[: -len(".img")] + ".json",
            "bmp": f"{vol.volume_id}.bmp",
            "abmp": f"{vol.volume_id}.abmp",
        }
        held, vol.held = vol.held, []
        ns = self.open_target()
        for kind, final in finals.items():
            copies = [h for h in held if h.catalog.kind == kind]
            if not copies:
                continue
            keep = next((h for h in reversed(copies) if h.snapshot_id == sid), None)
            others = [h for h in copies if h is not keep]
            for h in others:
                ns.unlink(h.tmp)
            if keep is not None:
                self._install(keep.tmp, folder, final, keep.mtime, keep.name)
            if others:
                self.ctx.reporter.info(
                    f"volume {vol.volume_id}: {', '.join(h.name for h in others)} not restored: "
                    f"{'they describe' if len(others) > 1 else 'it describes'} an older backup than "
                    f"the image ({newest.describe()})"
                )
            if keep is None:
                self.ctx.reporter.warning(
                    f"volume {vol.volume_id}: the restore holds no {final.rsplit('.', 1)[1]} file of "
                    f"its newest backup (snapshot {sid})"
                )

    def _install_alone(self, vol: _Volume) -> None:
        """A volume's JSON or maps without any block image: each lands under its own name."""
        held, vol.held = vol.held, []
        for h in held:
            final = h.catalog.relative.rsplit("/", 1)[1]
            self._install(h.tmp, self._folder(h.catalog.instance_id), final, h.mtime, h.name)

    def finish(self) -> None:
        """End of restore to local images: assemble, and say what each image holds."""
        for image, chain in self.assemble():
            parts = " + ".join(p.label() for p in chain)
            data = sum(p.data_blocks for p in chain)
            self.ctx.reporter.info(
                f"restored volume {image.volume_id} ({image.size >> 30} GiB) to {image.path} "
                f"from {parts}: {data} data blocks written"
            )

    def summary(self) -> str:
        images = len(self.restored)
        return (
            f"restore finished: {self.files} file(s), {images} disk image(s) under {self.base_dir}; "
            "0 AWS retries (a local restore makes no AWS request)"
        )


def _log_io_error(what: str, exc: BaseException) -> None:
    """A failed write or read of the restore target: the job message says what failed, the
    backend log gets the traceback (where and how the system call failed)."""
    if isinstance(exc, OSError) or isinstance(exc.__cause__, OSError):
        log.error("%s failed: %s", what, exc, exc_info=exc)


STAGING_PREFIX = ".bacula-ec2-staging-"


@dataclass
class FilesRestore(LocalRestore):
    """restore_as=files (docs/RESTORE.md, "Restore single files"): the parts stream in and
    are assembled exactly as by `LocalRestore`, into sparse images in a private staging
    directory (`<stage_parent>/.bacula-ec2-staging-<random>`: restore_workdir=, else the
    where= directory itself, so the FD needs free space there for the chain's data blocks
    only); at the end the guest reader opens each image and extracts what `patterns`
    select under `<target_dir>/@amazon-ec2/<instance-id>/<volume-id>/<partition>/<path>`.
    The staging directory is removed on every path (`close()`).

    Exact or fail: a volume whose chain fails restores nothing, and then no volume is
    extracted at all; a pattern that matches nothing is a warning when something else was
    restored, a RestoreFailed when nothing at all could be."""

    target_dir: str = ""
    stage_parent: str = ""
    patterns: list[str] = field(default_factory=list)
    extracted: list[str] = field(default_factory=list)  # "volume: summary" of each volume extracted
    totals: dict[str, int] = field(default_factory=dict)
    staging_bytes: int = 0  # disk the staging images used (allocated blocks)
    _stage: str | None = None
    _selected: list[Any] = field(default_factory=list)  # the parsed patterns

    def __post_init__(self) -> None:
        super().__post_init__()
        from ..guest import GuestError, parse_patterns

        if not self.patterns:
            raise RestoreFailed("restore_as=files needs restore_files= (paths or globs inside the guest)")
        try:
            self._selected = parse_patterns(",".join(self.patterns))
        except GuestError as exc:
            raise RestoreFailed(f"restore_files={','.join(self.patterns)}: {exc}") from exc
        self.target_dir = self.target_dir or self.base_dir
        self.stage_parent = self.stage_parent or self.target_dir

    def open_target(self) -> safefs.Dir:
        """The staging directory (created once, private, in `stage_parent`), as the target
        of the image assembly."""
        if self._stage is None and self._target_error is None:
            try:
                parent = safefs.open_target(self.stage_parent)
                try:
                    name = STAGING_PREFIX + secrets.token_hex(6)
                    stage = parent.subdir(name)
                    assert stage is not None
                    self._stage = parent.child(name)
                    try:
                        os.fchmod(stage.fd, 0o700)  # whole disks of the guest: nobody else's
                    finally:
                        stage.close()
                finally:
                    parent.close()
            except (OSError, JobError) as exc:
                self._target_error = f"cannot stage the restore in {self.stage_parent}: {exc}"
                raise RestoreFailed(self._target_error) from exc
            self.base_dir = self._stage
        return super().open_target()

    def finish(self) -> None:
        """Assemble every volume (all exact, or nothing is extracted), then extract."""
        done = self.assemble()
        if not done:
            raise RestoreFailed(
                "the restore holds no disk image (.bimg) to read files from: select the backups "
                "of the volumes"
            )
        reporter = self.ctx.reporter
        problems: list[str] = []
        failures: list[str] = []
        out: safefs.Dir | None = None
        try:
            top = safefs.open_target(self.target_dir)
            try:
                out = top.subdir(naming.NAMESPACE)
            finally:
                top.close()
            assert out is not None
            for image, chain in done:
                if self.ctx.cancel.is_set():
                    raise RestoreFailed("restore cancelled: no more volumes are read")
                cat = chain[-1].catalog
                assert cat is not None
                self._one_volume(image, cat.instance_id, out, problems, failures)
        except OSError as exc:
            raise RestoreFailed(f"cannot restore into {self.target_dir}: {exc}") from exc
        finally:
            if out is not None:
                out.close()
            self._remove_stage()
        restored = ", ".join(self.extracted) or "nothing"
        problems = [" ".join(p.split()) for p in problems]
        failures = [" ".join(p.split()) for p in failures]
        if failures:
            raise RestoreFailed(
                "; ".join(failures)
                + f" (restored: {restored})"
                + (f"; also: {'; '.join(problems)}" if problems else "")
            )
        if not self.extracted:
            raise RestoreFailed("nothing was restored: " + "; ".join(problems))
        for problem in problems:
            reporter.warning(f"not restored: {' '.join(problem.split())}")  # one line each

    def _one_volume(
        self, image: VolumeImage, instance_id: str, out: safefs.Dir, problems: list[str], failures: list[str]
    ) -> None:
        from ..guest import FileSource, GuestError, extract, open_disk, select

        vid = image.volume_id
        reporter = self.ctx.reporter
        with contextlib.suppress(OSError):  # every image is staged before the first is read
            self.staging_bytes += os.stat(image.path).st_blocks * 512
        source = FileSource(image.path)
        try:
            try:
                disk = open_disk(source)
            except GuestError as exc:
                problems.append(f"volume {vid}: {exc}")
                return
            found = ", ".join(p.describe() for p in disk.partitions) or "no partitions"
            reporter.info(f"volume {vid}: {disk.scheme} disk, partitions: {found}")
            sel = select(disk, self._selected)
            if not sel.matches:
                problems.append(f"volume {vid}: " + "; ".join(sel.problems or ["nothing selected"]))
                return
            folder = out.subdir(instance_id)
            assert folder is not None
            try:
                dest = folder.subdir(vid)
                assert dest is not None
                try:
                    report = extract(sel, dest, cancel=self.ctx.cancel)
                finally:
                    dest.close()
            finally:
                folder.close()
        except (GuestError, JobError, OSError) as exc:
            failures.append(f"volume {vid}: {exc} (nothing of it is restored)")
            return
        finally:
            source.close()
            self._drop_image(image)
        problems += [f"volume {vid}: {p}" for p in report.problems]
        for text in (*report.notes, *report.skipped):
            reporter.info(f"volume {vid}: {text}")
        where = os.path.join(self.target_dir, naming.NAMESPACE, instance_id, vid)
        reporter.info(f"volume {vid}: {report.summary()} under {where}")
        self.extracted.append(f"{vid} ({report.files} files)")
        for key, value in (
            ("files", report.files),
            ("bytes", report.bytes),
            ("directories", report.directories),
            ("symlinks", report.symlinks),
        ):
            self.totals[key] = self.totals.get(key, 0) + value

    def _drop_image(self, image: VolumeImage) -> None:
        """A staged image is removed as soon as its files are out (the next volume needs the
        room)."""
        try:
            os.unlink(image.path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            self.ctx.reporter.warning(f"cannot remove the staging image {image.path}: {exc}")

    def _remove_stage(self) -> None:
        """Remove the staging directory and everything in it (idempotent)."""
        if self._stage is None:
            return
        # The assembly's temporary files and open directories first, while the staging
        # directory is still known (abandoning a current file opens the target again).
        super().close()
        stage, self._stage = self._stage, None
        try:
            shutil.rmtree(stage)
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.error("cannot remove %s", stage, exc_info=exc)
            self.ctx.reporter.warning(
                f"cannot remove the staging directory {stage}: {exc}; remove it by hand"
            )

    def close(self) -> None:
        super().close()
        self._remove_stage()

    def summary(self) -> str:
        t = self.totals
        return (
            f"restore finished: {t.get('files', 0)} file(s) ({t.get('bytes', 0)} bytes), "
            f"{t.get('directories', 0)} directories, {t.get('symlinks', 0)} symbolic links from "
            f"{len(self.extracted)} volume(s) under {os.path.join(self.target_dir, naming.NAMESPACE)}; "
            f"staging used {self.staging_bytes} bytes of disk and was removed; "
            "0 AWS retries (a local restore makes no AWS request)"
        )
