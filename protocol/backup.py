"""Backup, estimate and listing producer (§4, §5.1, §5.2).

Each file is FNAME/STAT/TSTAMP/[LSTAT]/[METADATA]/F followed, in BACKUP only, by a data
phase: `DATA D... F`, or a lone `F` when there is no data (§4.2, §10.13). The attribute
block, `DATA` and the first data packet go out in one `writev`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING

from .attrs import FileAttrs, check_name
from .errors import EndOfStream, SessionAborted, UnexpectedPacket
from .framing import MAX_PAYLOAD, BytesLike, PacketBatch
from .text import encode_command

if TYPE_CHECKING:
    from .session import BackendSession

_DATA = b"DATA\n"
Data = BytesLike | Iterable[BytesLike] | None
Metadata = Sequence[tuple[str, BytesLike]]


def _add_blob(batch: PacketBatch, keyword: bytes, blob: BytesLike) -> None:
    """`<keyword> D F` with exactly one D (§4.4.6, §4.6); D000000 is allowed here (§1.6)."""
    mv = memoryview(blob).cast("B")
    if len(mv) > 999_999:
        raise ValueError(f"{keyword!r} blob of {len(mv)} bytes exceeds one packet (§4.6)")
    batch.add("C", keyword)
    if len(mv):
        batch.add("D", mv)
    else:
        batch.buffers.append(memoryview(b"D000000\n"))
    batch.add("F")


def _add_cut(batch: PacketBatch, views: Sequence[memoryview], size: int) -> None:
    """The concatenation of `views` as D packets of `size` bytes (the last one shorter)."""
    packet: list[memoryview] = []
    room = size
    for mv in views:
        while len(mv):
            piece, mv = mv[:room], mv[room:]
            packet.append(piece)
            room -= len(piece)
            if not room:
                batch.add_parts("D", packet)
                packet, room = [], size
    if packet:
        batch.add_parts("D", packet)


class FileWriter:
    """Streams one file's data: `write()` many times, then `close()` (§4.5).

    Use as a context manager: an exception inside the block ends the file with `Q` + `F`
    (§4.10: the file is stored truncated and the job continues) and propagates.
    """

    def __init__(self, stream: ItemStream, attrs: FileAttrs, pending: PacketBatch) -> None:
        self._stream = stream
        self.attrs = attrs
        self._pending: PacketBatch | None = pending
        self.bytes_written = 0
        self.closed = False

    def _batch(self) -> PacketBatch:
        batch, self._pending = self._pending, None
        if batch is None:
            return PacketBatch()
        return batch.add("C", _DATA)  # first data: the attribute block is still pending

    def write(self, *parts: BytesLike, packet_size: int = MAX_PAYLOAD) -> int:
        """Send the parts, in order, as D packets of at most 999999 bytes; nothing if empty.

        Several parts that fit one packet together become one D packet (one Bacula record)
        written with a single writev, without joining them in memory. With `packet_size`
        (1..999999) the parts' concatenation is cut into D packets of exactly that many
        bytes (the last one shorter), packets spanning parts where they meet; all of them
        still leave in one batch, without copying.
        """
        if self.closed:
            raise ValueError(f"{self.attrs.name}: write after close")
        if not 0 < packet_size <= MAX_PAYLOAD:
            raise ValueError(f"packet size {packet_size} outside 1..{MAX_PAYLOAD} (§1.3)")
        views = [mv for mv in (memoryview(p).cast("B") for p in parts) if len(mv)]
        total = sum(len(mv) for mv in views)
        if not total:
            return 0
        batch = self._batch()
        if packet_size < MAX_PAYLOAD:
            _add_cut(batch, views, packet_size)
        elif len(views) > 1 and total <= MAX_PAYLOAD:
            batch.add_parts("D", views)
        else:
            for mv in views:
                batch.add_data(mv)
        self._stream.session.send_batch(batch)
        self.bytes_written += total
        return total

    def close(self, *, acl: BytesLike | None = None, xattr: BytesLike | None = None) -> None:
        """End the data phase with F (a lone F if nothing was written), then ACL/XATTR."""
        if self.closed:
            return
        self.closed = True
        batch = self._pending if self._pending is not None else PacketBatch()
        self._pending = None
        batch.add("F")
        if acl is not None:
            _add_blob(batch, b"ACL\n", acl)
        if xattr is not None:
            _add_blob(batch, b"XATTR\n", xattr)
        self._stream.session.send_batch(batch)
        self._stream._writer_closed(self)

    def fail(self, reason: str) -> None:
        """§4.10: report `Q <reason>` and end the data with F; the job continues."""
        if self.closed:
            return
        self._stream.session.error(reason)
        self.close()

    def __enter__(self) -> FileWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            self.close()
        elif isinstance(exc, Exception) and not isinstance(exc, EndOfStream | SessionAborted):
            self.fail(f"{self.attrs.name}: {exc}")


class ItemStream:
    """Producer of the backup / estimate / listing item stream; ends with `finish()`."""

    def __init__(self, session: BackendSession, *, data_phase: bool) -> None:
        self.session = session
        self.has_data_phase = data_phase
        self.files_sent = 0
        self.finished = False
        self._open: FileWriter | None = None

    def _check_ready(self) -> None:
        if self.finished:
            raise RuntimeError("item stream already finished")
        if self._open is not None:
            raise RuntimeError(f"file {self._open.attrs.name!r} is still open")

    def _writer_closed(self, writer: FileWriter) -> None:
        if self._open is writer:
            self._open = None

    @staticmethod
    def _attr_block(attrs: FileAttrs, metadata: Metadata) -> PacketBatch:
        """FNAME, STAT, TSTAMP, [LSTAT], [METADATA_* D F]..., F (§4.3, §4.4)."""
        attrs.validate()
        batch = PacketBatch()
        batch.add("C", encode_command("FNAME:" + attrs.name))
        batch.add("C", encode_command(attrs.stat_line()))
        batch.add("C", encode_command(attrs.tstamp_line()))
        if attrs.link is not None:
            batch.add("C", encode_command("LSTAT:" + attrs.link))
        for kind, blob in metadata:
            if not kind.startswith("METADATA_"):
                raise ValueError(f"metadata keyword {kind!r} must start with METADATA_ (§4.4.6)")
            _add_blob(batch, encode_command(kind), blob)
        return batch.add("F")

    def open_file(self, attrs: FileAttrs, *, metadata: Metadata = ()) -> FileWriter:
        """Send the attribute block lazily and return a streaming writer (BACKUP only)."""
        self._check_ready()
        if not self.has_data_phase:
            raise RuntimeError("no data phase in this mode (§5.1): use file() without data")
        writer = FileWriter(self, attrs, self._attr_block(attrs, metadata))
        self._open = writer
        self.files_sent += 1
        return writer

    def file(
        self,
        attrs: FileAttrs,
        data: Data = None,
        *,
        metadata: Metadata = (),
        acl: BytesLike | None = None,
        xattr: BytesLike | None = None,
    ) -> None:
        """Send one item. `data` is bytes-like, an iterable of chunks, or None.

        Without a data phase (ESTIMATE/LISTING) `data`, `acl` and `xattr` are ignored and an
        iterable is not consumed, so one producer can serve every mode.
        """
        self._check_ready()
        if not self.has_data_phase:
            self.session.send_batch(self._attr_block(attrs, metadata))
            self.files_sent += 1
            return
        writer = self.open_file(attrs, metadata=metadata)
        with writer:
            if isinstance(data, bytes | bytearray | memoryview):
                writer.write(data)
            elif data is not None:
                for chunk in data:
                    writer.write(chunk)
            writer.close(acl=acl, xattr=xattr)

    def directory(
        self,
        name: str,
        *,
        mtime: int = 0,
        atime: int | None = None,
        ctime: int | None = None,
        mode: int = 0o755,
        uid: int = 0,
        gid: int = 0,
    ) -> None:
        """A `STAT:D` item; the trailing `/` is added if missing (§4.3, §10.27)."""
        if not name.endswith("/"):
            name += "/"
        attrs = FileAttrs(
            name=name,
            type="D",
            mode=mode,
            uid=uid,
            gid=gid,
            atime=mtime if atime is None else atime,
            mtime=mtime,
            ctime=mtime if ctime is None else ctime,
        )
        self.file(attrs)

    def restore_object(self, name: str, data: BytesLike) -> None:
        """§4.7.1: RESTOREOBJ:<name>, RESTOREOBJ_LEN:<n>, D..., F (no data phase)."""
        self._check_ready()
        check_name(name, "restore object name")
        mv = memoryview(data).cast("B")
        batch = PacketBatch()
        batch.add("C", encode_command("RESTOREOBJ:" + name))
        batch.add("C", encode_command(f"RESTOREOBJ_LEN:{len(mv)}"))
        batch.add_data(mv)
        self.session.send_batch(batch.add("F"))

    def file_index(self) -> int:
        """§4.8.1: ask the FD for the FileIndex of the most recently started item."""
        self._check_ready()
        self.session.send_batch(PacketBatch().add("C", b"FileIndex\n"))
        text = self.session.read_command("C '<FileIndex>' reply")
        try:
            return int(text)
        except ValueError:  # from None: the message has the reply, all int()'s error said
            raise UnexpectedPacket(f"FileIndex reply {text!r} is not a number") from None

    def finish(self) -> None:
        """The final F: no more items (§4.9)."""
        self._check_ready()
        self.session.send_eod()
        self.finished = True

    def fail(self, reason: str) -> None:
        """§4.10 idiom "nothing to back up, with an error": `E <reason>` then `F`.

        The FD ends this plugin command with warnings; the F is eaten as END's answer.
        """
        self._check_ready()
        self.session.error_packet(reason)
        self.session.send_eod()
        self.finished = True
