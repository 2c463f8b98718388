"""Packet framing (§1.2-§1.8): 8-byte headers, exact reads, batched vectored writes.

Reads are buffered (one `read` may bring in many small packets) but always exact-length at
the packet level. Writes go through a single lock so packets from several threads never
interleave (§1.5: messages may be sent at any time), and a block of packets is written with
as few `writev` calls as possible, without copying payloads.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Sequence
from typing import NamedTuple, Protocol

from .errors import EndOfStream, FramingError, TruncatedPacket
from .text import decode_text, scrub_secrets

BytesLike = bytes | bytearray | memoryview

HEADER_LEN = 8
#: §1.3 PTCOMM_MAX_PACKET_SIZE.
MAX_PAYLOAD = 999_999
#: §1.4: transparent job-message statuses.
MESSAGE_STATUSES = frozenset("IWQSNRPOV")
#: Every status letter the protocol knows (§1.4); anything else is a framing error.
KNOWN_STATUSES = frozenset("CDFTEA") | MESSAGE_STATUSES
#: §1.2: F and T never carry a payload, whatever the digits say.
EMPTY_STATUSES = frozenset("FT")
#: §1.6: zero-length C and D act as a premature end-of-block at the FD.
NONEMPTY_STATUSES = frozenset("CD")
#: Buffers per writev call; well below Linux IOV_MAX (1024).
_IOV_BATCH = 512
_READ_BUFFER = 1 << 20  # > HEADER_LEN + MAX_PAYLOAD, so any packet fits


class Packet(NamedTuple):
    """One received packet. `status` is a one-character str such as "C"."""

    status: str
    payload: bytes

    @property
    def text(self) -> str:
        """Payload decoded per §1.7 (surrogateescape, one trailing `\\n` stripped)."""
        return decode_text(self.payload)

    def describe(self) -> str:
        """Short human form for error messages, e.g. `C 'xyz'` or `F` (secrets masked)."""
        if self.status in EMPTY_STATUSES:
            return self.status
        shown = self.payload[:60]
        more = "..." if len(self.payload) > 60 else ""
        if self.status == "D":
            return f"D ({len(self.payload)} bytes)"
        return f"{self.status} {scrub_secrets(decode_text(shown))!r}{more}"


def encode_header(status: str, length: int) -> bytes:
    """Render `%c%06d\\n` (§1.2). Raises ValueError for what the FD could not parse."""
    if len(status) != 1 or status not in KNOWN_STATUSES:
        raise ValueError(f"unknown packet status {status!r}")
    if not 0 <= length <= MAX_PAYLOAD:
        raise ValueError(f"payload length {length} outside 0..{MAX_PAYLOAD} (§1.3)")
    return b"%c%06d\n" % (ord(status), length)


def parse_header(header: bytes, *, strict: bool = False) -> tuple[str, int]:
    """Parse an 8-byte header into (status, payload length).

    §1.2: F and T have no payload whatever the digits say; with `strict` (the FD-peer's
    checks) non-zero digits there are an error, otherwise they are ignored.
    """
    if len(header) != HEADER_LEN:
        raise FramingError(f"short header {header!r}: expected {HEADER_LEN} bytes")
    status = chr(header[0])
    if status not in KNOWN_STATUSES:
        raise FramingError(f"unknown status byte {header[0:1]!r} in header {header!r}")
    digits = header[1:7]
    if not digits.isdigit():
        raise FramingError(f"bad length {digits!r} in header {header!r}: need exactly 6 decimal digits")
    if header[7] != 0x0A:
        raise FramingError(
            f"header {header!r} does not end in '\\n': the length must be exactly 6 digits "
            f"(max {MAX_PAYLOAD})"
        )
    length = int(digits)
    if status in EMPTY_STATUSES:
        if strict and length:
            raise FramingError(f"{status} packet with non-zero length {length} (§1.2)")
        return status, 0
    return status, length


# --------------------------------------------------------------------------- raw channels


class RawReader(Protocol):
    """Something that fills a buffer like `os.readv`: returns bytes read, 0 at EOF."""

    def readinto(self, buf: memoryview) -> int: ...


class RawWriter(Protocol):
    """Something that writes like `os.writev`: may write only a prefix, returns the count."""

    def writev(self, buffers: Sequence[BytesLike]) -> int: ...


class FdReader:
    """Reads from a file descriptor (stdin of the backend)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def readinto(self, buf: memoryview) -> int:
        while True:
            try:
                return os.readv(self.fd, [buf])
            except InterruptedError:  # pragma: no cover - PEP 475 retries already
                continue


class FdWriter:
    """Writes to a file descriptor (stdout of the backend)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def writev(self, buffers: Sequence[BytesLike]) -> int:
        return os.writev(self.fd, buffers)


class MemoryReader:
    """In-memory input for tests; `max_read` simulates short reads from a pipe."""

    def __init__(self, data: BytesLike, *, max_read: int | None = None) -> None:
        self._data = memoryview(data).cast("B")
        self._pos = 0
        self._max_read = max_read

    def readinto(self, buf: memoryview) -> int:
        n = min(len(buf), len(self._data) - self._pos)
        if self._max_read is not None:
            n = min(n, self._max_read)
        buf[:n] = self._data[self._pos : self._pos + n]
        self._pos += n
        return n


class MemoryWriter:
    """In-memory output for tests; `max_write` simulates partial writes."""

    def __init__(self, *, max_write: int | None = None) -> None:
        self.buffer = bytearray()
        self.calls = 0
        self._max_write = max_write

    def writev(self, buffers: Sequence[BytesLike]) -> int:
        self.calls += 1
        budget = self._max_write if self._max_write is not None else -1
        written = 0
        for b in buffers:
            mv = memoryview(b).cast("B")
            if budget >= 0:
                mv = mv[: budget - written]
            self.buffer += mv
            written += len(mv)
            if budget >= 0 and written >= budget:
                break
        return written

    def getvalue(self) -> bytes:
        return bytes(self.buffer)


# --------------------------------------------------------------------------- packet reader


class PacketReader:
    """Exact packet reads over a `RawReader`, with one internal buffer.

    Views returned by `read_payload_view` point into that buffer and are only valid until
    the next read: that is what lets the FD peer hash gigabytes without copying.
    """

    def __init__(self, raw: RawReader, *, strict: bool = False) -> None:
        self._raw = raw
        self._strict = strict
        self._buf = bytearray(_READ_BUFFER)
        self._view = memoryview(self._buf)
        self._start = 0
        self._end = 0

    def _fill(self, n: int, what: str) -> None:
        """Make at least `n` bytes available, or raise on EOF."""
        if self._end - self._start >= n:
            return
        if self._start + n > len(self._buf):
            avail = self._end - self._start
            self._view[:avail] = self._view[self._start : self._end]
            self._start, self._end = 0, avail
        while self._end - self._start < n:
            got = self._raw.readinto(self._view[self._end :])
            if got == 0:
                have = self._end - self._start
                if what == "header" and have == 0:
                    raise EndOfStream("EOF from the peer")
                raise TruncatedPacket(
                    f"EOF inside {what}: got {have} of {n} bytes "
                    f"{bytes(self._view[self._start : self._end][:40])!r}"
                )
            self._end += got

    def read_header(self) -> tuple[str, int]:
        """Read one header. EOF before its first byte raises `EndOfStream`."""
        self._fill(HEADER_LEN, "header")
        header = bytes(self._view[self._start : self._start + HEADER_LEN])
        self._start += HEADER_LEN
        return parse_header(header, strict=self._strict)

    def read_payload_view(self, n: int) -> memoryview:
        """Read `n` payload bytes as a view that is valid until the next read."""
        self._fill(n, f"payload ({n} bytes announced)")
        view = self._view[self._start : self._start + n]
        self._start += n
        return view

    def read_payload(self, n: int) -> bytes:
        """Read `n` payload bytes as an independent bytes object."""
        return bytes(self.read_payload_view(n)) if n else b""

    def read_packet(self) -> Packet:
        """Read a whole packet (F/T: no payload is ever read, §1.2)."""
        status, n = self.read_header()
        return Packet(status, self.read_payload(n))


# --------------------------------------------------------------------------- packet writer


class PacketBatch:
    """Packets collected for one vectored write; payloads are referenced, not copied."""

    __slots__ = ("buffers",)

    def __init__(self) -> None:
        self.buffers: list[memoryview] = []

    def __len__(self) -> int:
        return len(self.buffers)

    def add(self, status: str, payload: BytesLike = b"") -> PacketBatch:
        """Append one packet. Enforces §1.2 (F/T empty) and §1.6 (C/D never empty)."""
        mv = memoryview(payload).cast("B")
        n = len(mv)
        if status in EMPTY_STATUSES and n:
            raise ValueError(f"{status} packets never carry a payload (§1.2)")
        if status in NONEMPTY_STATUSES and not n:
            raise ValueError(f"zero-length {status} packet would end the FD's block (§1.6)")
        self.buffers.append(memoryview(encode_header(status, n)))
        if n:
            self.buffers.append(mv)
        return self

    def add_parts(self, status: str, parts: Sequence[memoryview]) -> PacketBatch:
        """Append ONE packet whose payload is the concatenation of `parts` (not copied)."""
        n = sum(len(p) for p in parts)
        if status not in NONEMPTY_STATUSES or not n or n > MAX_PAYLOAD:
            raise ValueError(f"a {status} packet of {n} bytes cannot be built from parts (§1.2, §1.3, §1.6)")
        self.buffers.append(memoryview(encode_header(status, n)))
        self.buffers.extend(p for p in parts if len(p))
        return self

    def add_data(self, data: BytesLike, status: str = "D") -> int:
        """Append `data` as packets of at most MAX_PAYLOAD bytes (§1.3); empty adds nothing.

        Returns the number of payload bytes added.
        """
        mv = memoryview(data).cast("B")
        total = len(mv)
        for off in range(0, total, MAX_PAYLOAD):
            self.add(status, mv[off : off + MAX_PAYLOAD])
        return total


class PacketWriter:
    """Serialised writer: every call writes whole packets under one lock."""

    def __init__(self, raw: RawWriter) -> None:
        self._raw = raw
        self.lock = threading.Lock()

    def send(self, status: str, payload: BytesLike = b"") -> None:
        self.send_batch(PacketBatch().add(status, payload))

    def send_batch(self, batch: PacketBatch) -> None:
        """Write the batch atomically with respect to other threads."""
        if not batch.buffers:
            return
        with self.lock:
            self._write_all(list(batch.buffers))

    def _write_all(self, bufs: list[memoryview]) -> None:
        i, count = 0, len(bufs)
        while i < count:
            try:
                n = self._raw.writev(bufs[i : i + _IOV_BATCH])
            except InterruptedError:  # pragma: no cover - PEP 475 retries already
                continue
            except BrokenPipeError as exc:
                raise EndOfStream("the peer closed the pipe (EPIPE)") from exc
            if n <= 0:
                raise OSError("writev wrote nothing")
            while n and i < count:  # drop what was written, keep the unwritten tail
                size = len(bufs[i])
                if n >= size:
                    n -= size
                    i += 1
                else:
                    bufs[i] = bufs[i][n:]
                    n = 0


# --------------------------------------------------------------------------- connection


class Connection:
    """One side of a metaplugin channel: a packet reader and a locked packet writer."""

    def __init__(self, reader: RawReader, writer: RawWriter, *, strict: bool = False) -> None:
        self.reader = PacketReader(reader, strict=strict)
        self.writer = PacketWriter(writer)
        self.raw_reader = reader
        self.raw_writer = writer

    @classmethod
    def from_fds(cls, read_fd: int = 0, write_fd: int = 1, *, strict: bool = False) -> Connection:
        """Backend use: `Connection.from_fds(0, 1)` (§1.1). Binary, unbuffered, exact."""
        return cls(FdReader(read_fd), FdWriter(write_fd), strict=strict)

    @classmethod
    def in_memory(
        cls,
        data: BytesLike = b"",
        *,
        max_read: int | None = None,
        max_write: int | None = None,
        strict: bool = False,
    ) -> Connection:
        """Test use: read from `data`, write into a `MemoryWriter` (see `output`)."""
        return cls(
            MemoryReader(data, max_read=max_read),
            MemoryWriter(max_write=max_write),
            strict=strict,
        )

    @property
    def output(self) -> bytes:
        """Bytes written so far, for connections made by `in_memory`."""
        if not isinstance(self.raw_writer, MemoryWriter):
            raise TypeError("output is only available for in-memory connections")
        return self.raw_writer.getvalue()

    # Convenience pass-throughs used by the session and the FD peer.
    def read_packet(self) -> Packet:
        return self.reader.read_packet()

    def send(self, status: str, payload: BytesLike = b"") -> None:
        self.writer.send(status, payload)

    def send_batch(self, batch: PacketBatch) -> None:
        self.writer.send_batch(batch)

    def send_packets(self, packets: Iterable[tuple[str, BytesLike]]) -> None:
        batch = PacketBatch()
        for status, payload in packets:
            batch.add(status, payload)
        self.writer.send_batch(batch)
