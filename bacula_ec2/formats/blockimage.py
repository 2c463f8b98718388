"""The `.bimg` / `.bmp` / `.abmp` format, version 1 (see docs/FORMAT.md).

One codec serves all three files: a fixed prefix, a JSON header that makes the file
self-describing, then fixed-size 48-byte block records, then an end record whose digest
covers every record header. Written in one pass, read in one pass, no seeking.
"""

from __future__ import annotations

import enum
import hashlib
import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

BLOCK_SIZE = 524288
FORMAT_VERSION = 1
MAGIC = b"BEC2"
MAX_HEADER_JSON = 1 << 20

_PREFIX = struct.Struct(">4scBHI")  # magic, kind, version, reserved, json length
_RECORD = struct.Struct(">QIcBH32s")  # offset, length, kind, flags, reserved, sha256
PREFIX_SIZE = _PREFIX.size
RECORD_SIZE = _RECORD.size

ZERO_BLOCK = bytes(BLOCK_SIZE)
ZERO_BLOCK_SHA256 = hashlib.sha256(ZERO_BLOCK).digest()


class FormatError(ValueError):
    """A block image or map is corrupt, truncated or not ours."""


class FileKind(enum.Enum):
    IMAGE = b"I"  # .bimg: records with data
    MAP = b"M"  # .bmp: headers of every allocated block
    EMPTY_MAP = b"A"  # .abmp: headers of the empty blocks


class RecordKind(enum.Enum):
    DATA = b"D"  # the block holds data; in an IMAGE file `length` bytes of it follow
    ZERO = b"Z"  # the range is all zeros; nothing follows
    END = b"E"  # last record: offset = number of block records, sha256 = digest of all before it


@dataclass(frozen=True, slots=True)
class BlockRecord:
    offset: int
    length: int
    kind: RecordKind
    sha256: bytes

    def pack(self) -> bytes:
        return _RECORD.pack(self.offset, self.length, self.kind.value, 0, 0, self.sha256)

    @classmethod
    def unpack(cls, raw: bytes | memoryview) -> BlockRecord:
        offset, length, kind, flags, reserved, digest = _RECORD.unpack(raw)
        if flags or reserved:
            raise FormatError(f"record at volume offset {offset} has reserved bits set (corrupt?)")
        try:
            rkind = RecordKind(kind)
        except ValueError:  # from None: the message has the kind, all the ValueError said
            raise FormatError(f"unknown record kind {kind!r} at volume offset {offset}") from None
        return cls(offset, length, rkind, digest)


@dataclass(frozen=True)
class ImageHeader:
    """Self-describing metadata written at the start of every file."""

    kind: FileKind
    volume_id: str
    volume_size: int  # bytes
    snapshot_id: str
    level: str  # F, I or D
    created: str  # ISO 8601 UTC
    base_snapshot_id: str | None = None
    base_created: str | None = None  # ISO 8601 UTC start time of the base snapshot
    block_size: int = BLOCK_SIZE
    instance_id: str | None = None
    device: str | None = None
    region: str | None = None
    job_name: str | None = None
    job_id: int | None = None
    chain_position: int = 0  # 0 for a Full, then one more than the part it was compared with

    def to_json(self) -> dict[str, Any]:
        return {
            "format": "bacula-ec2 block image",
            "format_version": FORMAT_VERSION,
            "kind": self.kind.name.lower(),
            "volume_id": self.volume_id,
            "volume_size": self.volume_size,
            "block_size": self.block_size,
            "snapshot_id": self.snapshot_id,
            "base_snapshot_id": self.base_snapshot_id,
            "base_created": self.base_created,
            "level": self.level,
            "chain_position": self.chain_position,
            "created": self.created,
            "instance_id": self.instance_id,
            "device": self.device,
            "region": self.region,
            "job_name": self.job_name,
            "job_id": self.job_id,
        }

    def encode(self) -> bytes:
        body = json.dumps(self.to_json(), sort_keys=True, separators=(",", ":")).encode()
        return _PREFIX.pack(MAGIC, self.kind.value, FORMAT_VERSION, 0, len(body)) + body

    @classmethod
    def from_json(cls, kind: FileKind, doc: dict[str, Any]) -> ImageHeader:
        try:
            return cls(
                kind=kind,
                volume_id=str(doc["volume_id"]),
                volume_size=int(doc["volume_size"]),
                snapshot_id=str(doc["snapshot_id"]),
                level=str(doc["level"]),
                created=str(doc["created"]),
                base_snapshot_id=doc.get("base_snapshot_id"),
                base_created=doc.get("base_created"),
                block_size=int(doc.get("block_size", BLOCK_SIZE)),
                instance_id=doc.get("instance_id"),
                device=doc.get("device"),
                region=doc.get("region"),
                job_name=doc.get("job_name"),
                job_id=doc.get("job_id"),
                chain_position=int(doc.get("chain_position", 0)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise FormatError(f"block image header is incomplete or invalid: {exc}") from exc


def block_sha256(data: bytes | memoryview) -> bytes:
    return hashlib.sha256(data).digest()


class RecordEncoder:
    """Produces the bytes of one file in order; keeps the running header digest."""

    def __init__(self, header: ImageHeader) -> None:
        self.header = header
        self._digest = hashlib.sha256()
        self.count = 0
        self._ended = False

    def start(self) -> bytes:
        raw = self.header.encode()
        self._digest.update(raw)
        return raw

    def record(self, rec: BlockRecord) -> bytes:
        if self._ended:
            raise ValueError("record after end")
        if rec.kind is RecordKind.END:
            raise ValueError("use end() for the end record")
        if rec.kind is RecordKind.DATA and self.header.kind is FileKind.EMPTY_MAP:
            raise ValueError("an empty-block map holds only zero records")
        if rec.offset % self.header.block_size or rec.offset + rec.length > self.header.volume_size:
            raise ValueError(f"record at offset {rec.offset} is misaligned or past the volume end")
        raw = rec.pack()
        self._digest.update(raw)
        self.count += 1
        return raw

    def end(self) -> bytes:
        self._ended = True
        return BlockRecord(self.count, 0, RecordKind.END, self._digest.digest()).pack()


@dataclass(frozen=True, slots=True)
class Block:
    """One block record read back; `data` is empty for ZERO records."""

    record: BlockRecord
    data: bytes


class RecordDecoder:
    """Push parser: feed any chunking of a file, get header, blocks and a verified end.

    Memory is bounded by one block: data is collected until its record is complete.
    """

    def __init__(self, expect: FileKind | None = None, verify_data: bool = True) -> None:
        self._expect = expect
        self._verify = verify_data
        self._buf = bytearray()
        self._need: int = PREFIX_SIZE
        self._state = "prefix"
        self._pending: BlockRecord | None = None
        self._digest = hashlib.sha256()
        self.count = 0
        self.header: ImageHeader | None = None
        self.finished = False

    def feed(self, chunk: bytes | memoryview) -> Iterator[ImageHeader | Block]:
        view = memoryview(chunk)
        pos = 0
        while pos < len(view):
            if self.finished:
                raise FormatError("data after the end record")
            take = min(self._need - len(self._buf), len(view) - pos)
            self._buf += view[pos : pos + take]
            pos += take
            if len(self._buf) < self._need:
                break
            item = self._advance()
            if item is not None:
                yield item

    def close(self) -> None:
        """Call at end of input: a file without its end record is truncated."""
        if not self.finished:
            raise FormatError(
                f"file is truncated: ended after {self.count} block records without an end record"
            )

    def _advance(self) -> ImageHeader | Block | None:
        buf = bytes(self._buf)
        self._buf.clear()
        if self._state in ("prefix", "json"):
            self._digest.update(buf)
        if self._state == "prefix":
            magic, kind, version, _res, jlen = _PREFIX.unpack(buf)
            if magic != MAGIC:
                raise FormatError("not a bacula-ec2 block file (bad magic)")
            if version != FORMAT_VERSION:
                raise FormatError(f"unsupported format version {version} (this reader knows 1)")
            try:
                self._kind = FileKind(kind)
            except ValueError:  # from None: the message has the kind, all the ValueError said
                raise FormatError(f"unknown file kind {kind!r}") from None
            if self._expect is not None and self._kind is not self._expect:
                raise FormatError(f"expected a {self._expect.name} file, found {self._kind.name}")
            if jlen <= 0 or jlen > MAX_HEADER_JSON:
                raise FormatError(f"header length {jlen} is out of range")
            self._state, self._need = "json", jlen
            return None
        if self._state == "json":
            try:
                doc = json.loads(buf)
            except ValueError as exc:
                raise FormatError(f"header is not valid JSON: {exc}") from exc
            if not isinstance(doc, dict):
                raise FormatError("header is not a JSON object")
            self.header = ImageHeader.from_json(self._kind, doc)
            self._state, self._need = "record", RECORD_SIZE
            return self.header
        if self._state == "record":
            rec = BlockRecord.unpack(buf)
            if rec.kind is RecordKind.END:
                if rec.length or rec.offset != self.count or rec.sha256 != self._digest.digest():
                    raise FormatError(
                        f"end record does not match the {self.count} block records read "
                        "(header or records corrupted, or records missing)"
                    )
                self.finished = True
                return None
            self._check_record(rec)
            self._digest.update(buf)
            self.count += 1
            if rec.kind is RecordKind.DATA and self.header and self.header.kind is FileKind.IMAGE:
                self._pending = rec
                self._state, self._need = "data", rec.length
                return None
            return Block(rec, b"")
        # data
        pending = self._pending
        assert pending is not None
        if self._verify and block_sha256(buf) != pending.sha256:
            raise FormatError(f"block at volume offset {pending.offset} fails its SHA-256 check")
        self._pending = None
        self._state, self._need = "record", RECORD_SIZE
        return Block(pending, buf)

    def _check_record(self, rec: BlockRecord) -> None:
        header = self.header
        assert header is not None
        if rec.kind is RecordKind.DATA and header.kind is FileKind.EMPTY_MAP:
            raise FormatError("data record in an empty-block map")
        if rec.length <= 0 or rec.length > header.block_size:
            raise FormatError(f"record at offset {rec.offset} has invalid length {rec.length}")
        if rec.offset % header.block_size or rec.offset + rec.length > header.volume_size:
            raise FormatError(f"record at offset {rec.offset} lies outside the volume")
