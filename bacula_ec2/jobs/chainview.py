"""A volume's state at the end of a chain of block images, read in place: the blocks a
reader asks for, and only those, straight from the parts (`.bimg`) of a bec2 folder
(docs/RESTORE.md, "Restore single files").

Opening reads each part's prefix, JSON header and 48-byte record headers, never block
data, and builds an index: which part holds each block (the newest part of the chain that
has a record for it wins; a `Z` record, or no record at all, reads as zeros). The part's
end record is checked against the digest of everything before it, so an altered header,
a lost, added or altered record header or a truncated file is refused at open, exactly as a
full read refuses it. A block is read once (and kept in a small cache), checked against the
SHA-256 of its record, and only then returned: a mismatch raises ChainDamaged naming the
part and the block, never wrong bytes.

What an instant read cannot check, and what it does instead:
- the manifest's SHA-256 of a whole part needs every byte of it: the size of each part is
  checked against the manifest (`folder.check_plan`) and every block that is read is
  checked against its record (the record headers themselves are covered by the end digest);
- blocks that are never read are never verified: a damaged block elsewhere on the volume
  does not fail a file restore that does not need it (a full restore would fail).

The chain's order and identity are the local restore's rules (`restore_local.check_part`
and `restore_local.chain_order`, the ones `LocalRestore` runs); the folder's plan picks the
parts as Bacula would (`folder.plan_restore`).
"""

from __future__ import annotations

import bisect
import hashlib
import json
import os
import struct
from array import array
from collections import OrderedDict
from dataclasses import dataclass

from ..formats.blockimage import (
    FORMAT_VERSION,
    MAGIC,
    MAX_HEADER_JSON,
    PREFIX_SIZE,
    RECORD_SIZE,
    BlockRecord,
    FileKind,
    FormatError,
    ImageHeader,
    RecordKind,
)
from ..guest.disk import SourceFailure
from . import folder as folder_mod
from . import restore_local
from .errors import JobError

CACHE_BLOCKS = 32  # 16 MiB of verified blocks
_HEADERS_AHEAD = 64  # record headers read at once while they follow each other (zero records)


class ChainDamaged(JobError, SourceFailure):
    """A part of the chain cannot give exact bytes: the message names the part and block."""


@dataclass(frozen=True)
class _Loc:
    part: int  # index in ChainView.parts
    data_at: int  # file offset of the block data (-1: reads as zeros)
    length: int
    sha256: bytes


class _PartIndex:
    """One part's records, compact (about 50 bytes a record, whatever the volume size):
    block indexes ascending, where each block's data starts (-1: a zero record), its length
    and SHA-256."""

    def __init__(self) -> None:
        self.blocks = array("q")
        self.data_at = array("q")
        self.lengths = array("l")
        self.sha = bytearray()

    def add(self, index: int, data_at: int, length: int, sha256: bytes) -> None:
        self.blocks.append(index)
        self.data_at.append(data_at)
        self.lengths.append(length)
        self.sha += sha256

    def find(self, index: int) -> int:
        i = bisect.bisect_left(self.blocks, index)
        return i if i < len(self.blocks) and self.blocks[i] == index else -1


@dataclass
class ViewPart:
    path: str  # local file
    name: str  # for messages
    header: ImageHeader
    raw_header: bytes  # prefix and JSON, as the end digest covers them
    records: int = 0
    data_blocks: int = 0


class ChainView:
    """The Source (`size`, `read(offset, length)`) of a volume restored from `parts` (local
    paths of its `.bimg` files, any order; `names`: how messages call them)."""

    def __init__(
        self, parts: list[str], names: list[str] | None = None, cache_blocks: int = CACHE_BLOCKS
    ) -> None:
        if not parts:
            raise ChainDamaged("no block image given: nothing to read")
        self.bytes_read = 0  # bytes read from the part files (headers and block data)
        self.blocks_read = 0  # block data reads (each checked against its SHA-256)
        self.failure: ChainDamaged | None = None  # the first failure (parsers may swallow it)
        self._fds: list[int] = []
        self._cache: OrderedDict[int, bytes] = OrderedDict()
        self._cache_blocks = max(1, cache_blocks)
        opened: list[ViewPart] = []
        try:
            for i, path in enumerate(parts):
                name = names[i] if names else path
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
                self._fds.append(fd)
                header, raw = self._read_header(fd, name)
                opened.append(ViewPart(path, name, header, raw))
            self.parts = self._order(opened)
            keep = [self._fds[opened.index(p)] for p in self.parts]
            for fd in self._fds:
                if fd not in keep:  # a part older than the chain's start: not read
                    os.close(fd)
            self._fds = keep
            newest = self.parts[-1].header
            self.volume_id = newest.volume_id
            self.block_size = newest.block_size
            self._size = newest.volume_size
            self._index: list[_PartIndex] = []
            for n, part in enumerate(self.parts):
                self._scan(n, part)
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ Source
    @property
    def size(self) -> int:
        return self._size

    def read(self, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0:
            raise ValueError("negative offset or length")
        end = min(self._size, offset + length)
        out = bytearray()
        pos = offset
        bs = self.block_size
        while pos < end:
            index, within = divmod(pos, bs)
            block = self._block(index)
            take = min(end - pos, bs - within)
            out += block[within : within + take]
            pos += take
        return bytes(out)

    def close(self) -> None:
        for fd in self._fds:
            os.close(fd)
        self._fds = []

    def __enter__(self) -> ChainView:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ what is where
    def owner(self, index: int) -> ViewPart | None:
        """The part whose record rules block `index` (None: never written)."""
        loc = self._locate(index)
        return self.parts[loc.part] if loc is not None else None

    def data_blocks(self) -> list[int]:
        """Indexes of the blocks that hold data in the chain's result, ascending."""
        newest: dict[int, bool] = {}
        for idx in self._index:  # oldest first: a newer part's record replaces an older one's
            for i, at in zip(idx.blocks, idx.data_at, strict=True):
                newest[i] = at >= 0
        return sorted(i for i, data in newest.items() if data)

    def _locate(self, index: int) -> _Loc | None:
        """The record that rules block `index`: the newest part's that has one."""
        for n in range(len(self._index) - 1, -1, -1):
            idx = self._index[n]
            i = idx.find(index)
            if i >= 0:
                sha = bytes(idx.sha[32 * i : 32 * i + 32])
                return _Loc(n, idx.data_at[i], idx.lengths[i], sha)
        return None

    # ------------------------------------------------------------------ opening
    def _pread(self, fd: int, length: int, offset: int) -> bytes:
        data = os.pread(fd, length, offset)
        self.bytes_read += len(data)
        return data

    def _read_header(self, fd: int, name: str) -> tuple[ImageHeader, bytes]:
        prefix = self._pread(fd, PREFIX_SIZE, 0)
        try:
            if len(prefix) < PREFIX_SIZE:
                raise FormatError("it is truncated inside its header")
            magic, kind, version, _res, jlen = struct.unpack(">4scBHI", prefix)
            if magic != MAGIC:
                raise FormatError("not a bacula-ec2 block file (bad magic)")
            if version != FORMAT_VERSION:
                raise FormatError(f"unsupported format version {version} (this reader knows 1)")
            if kind != FileKind.IMAGE.value:
                raise FormatError(f"expected a block image, found kind {kind!r}")
            if jlen <= 0 or jlen > MAX_HEADER_JSON:
                raise FormatError(f"header length {jlen} is out of range")
            raw = self._pread(fd, jlen, PREFIX_SIZE)
            if len(raw) < jlen:
                raise FormatError("it is truncated inside its header")
            doc = json.loads(raw)
            if not isinstance(doc, dict):
                raise FormatError("header is not a JSON object")
            header = ImageHeader.from_json(FileKind.IMAGE, doc)
            if header.block_size <= 0:
                raise FormatError(f"its block size {header.block_size} is invalid")
            return header, prefix + raw
        except (FormatError, ValueError) as exc:
            raise ChainDamaged(f"{name} is damaged: {exc}") from exc

    @staticmethod
    def _order(parts: list[ViewPart]) -> list[ViewPart]:
        """The chain, oldest first, by the local restore's rules; the parts older than the
        last chain start are dropped (they are not part of the result)."""
        held: list[ViewPart] = []
        for p in parts:
            try:
                restore_local.check_part(parts[0].header.volume_id, held, p.header, p.name)
            except FormatError as exc:
                raise ChainDamaged(f"{p.name}: {exc}") from exc
            held.append(p)
        try:
            chain, _older = restore_local.chain_order(parts[0].header.volume_id, held)
        except restore_local.RestoreFailed as exc:
            raise ChainDamaged(str(exc)) from exc
        return chain

    def _scan(self, n: int, part: ViewPart) -> None:
        """Index one part's records (headers only) and check its end digest."""
        fd = self._fds[n]
        h = part.header
        idx = _PartIndex()
        self._index.append(idx)
        digest = hashlib.sha256()
        digest.update(part.raw_header)
        pos = len(part.raw_header)
        count = 0
        buf, buf_at = b"", pos
        last = -1
        after_zero = False
        while True:
            if pos + RECORD_SIZE > buf_at + len(buf):
                # after a data record one header (its block's data follows the next one);
                # in a run of zero records, several at once
                ahead = _HEADERS_AHEAD if after_zero else 1
                buf = self._pread(fd, RECORD_SIZE * ahead, pos)
                buf_at = pos
                if len(buf) < RECORD_SIZE:
                    raise ChainDamaged(
                        f"{part.name} is truncated: it ends after {count} block records without an end record"
                    )
            raw = buf[pos - buf_at : pos - buf_at + RECORD_SIZE]
            try:
                rec = BlockRecord.unpack(raw)
            except FormatError as exc:
                raise ChainDamaged(f"{part.name} is damaged: {exc}") from exc
            pos += RECORD_SIZE
            if rec.kind is RecordKind.END:
                if rec.length or rec.offset != count or rec.sha256 != digest.digest():
                    raise ChainDamaged(
                        f"{part.name} is damaged: its end record does not match the {count} block records "
                        "read (header or records corrupted, or records missing)"
                    )
                break
            if rec.length <= 0 or rec.length > h.block_size or rec.offset % h.block_size:
                raise ChainDamaged(f"{part.name} is damaged: record at offset {rec.offset} is invalid")
            if rec.offset + rec.length > h.volume_size or rec.offset <= last:
                raise ChainDamaged(
                    f"{part.name} is damaged: record at offset {rec.offset} lies outside the volume "
                    "or out of order"
                )
            last = rec.offset
            digest.update(raw)
            count += 1
            index = rec.offset // h.block_size
            if rec.kind is RecordKind.DATA:
                if index * h.block_size < self._size:
                    idx.add(index, pos, rec.length, rec.sha256)
                part.data_blocks += 1
                pos += rec.length
                buf, buf_at = b"", pos  # the data is not read: the next header is past it
                after_zero = False
            else:
                after_zero = True
                if index * h.block_size < self._size:
                    idx.add(index, -1, rec.length, rec.sha256)
        part.records = count
        end = os.fstat(fd).st_size
        if pos != end:
            raise ChainDamaged(
                f"{part.name} is damaged: {end - pos} bytes follow its end record"
                if end > pos
                else f"{part.name} is truncated: its records describe {pos} bytes, the file has {end}"
            )

    # ------------------------------------------------------------------ reading
    def _block(self, index: int) -> bytes:
        cached = self._cache.get(index)
        if cached is not None:
            self._cache.move_to_end(index)
            return cached
        bs = self.block_size
        span = min(bs, self._size - index * bs)
        loc = self._locate(index)
        if loc is None or loc.data_at < 0:
            return bytes(span)
        part = self.parts[loc.part]
        data = self._pread(self._fds[loc.part], loc.length, loc.data_at)
        self.blocks_read += 1
        if len(data) != loc.length:
            self._fail(
                f"{part.name} is truncated: block {index} (volume offset {index * bs}) ends after "
                f"{len(data)} of {loc.length} bytes"
            )
        if hashlib.sha256(data).digest() != loc.sha256:
            self._fail(
                f"{part.name} is damaged: block {index} (volume offset {index * bs}) fails its SHA-256 "
                "check; nothing is read from a damaged block"
            )
        if len(data) < span:
            data += bytes(span - len(data))
        self._cache[index] = data
        if len(self._cache) > self._cache_blocks:
            self._cache.popitem(last=False)
        return data

    def _fail(self, message: str) -> None:
        exc = ChainDamaged(message)
        if self.failure is None:
            self.failure = exc
        raise exc


def open_folder_chain(root: str, volume_id: str | None = None, before: float | None = None) -> ChainView:
    """The chain of one volume of a bec2 folder at `before` (epoch seconds; None: the newest
    backup), chosen and checked as `bec2 --operation=restore` chooses and checks it
    (`folder.plan_restore`, `folder.check_plan`). `volume_id` may be omitted when the
    backups hold one volume."""
    folder = folder_mod.open_folder(root)
    backups = folder_mod.scan(folder)
    plan = folder_mod.plan_restore(folder, backups, before)
    if volume_id is None:
        if len(plan.chains) != 1:
            raise folder_mod.FolderError(
                f"the backups in {root} hold {len(plan.chains)} volumes ({', '.join(sorted(plan.chains))}): "
                "name one (--volumes=vol-...)"
            )
        volume_id = next(iter(plan.chains))
    chain = plan.chains.get(volume_id)
    if chain is None:
        have = ", ".join(sorted(plan.chains)) or "none"
        raise folder_mod.FolderError(f"no backup in {root} holds volume {volume_id} (volumes: {have})")
    plan.items = [
        it for it in plan.items if any(it.file.path == v.image and it.backup is b for b, v in chain)
    ]
    plan.chains = {volume_id: chain}
    folder_mod.check_plan(folder, plan)
    paths = [b.local(v.image) for b, v in chain]
    return ChainView(paths, [folder.show(p) for p in paths])
