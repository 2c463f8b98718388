"""Restore consumer: a dispatcher on the FD's command keyword (§6, §10.22).

Handler failures never desynchronise the stream. How each is reported follows what the
FD expects at that point:

* `start_file` raises: reply `E <reason>` (`RestoreRefused.reason` verbatim). §6.3: E means
  "createFile failed"; the file is not restored and the restore goes on.
* `file_data` raises: the file's remaining D packets are read and dropped; at its F the
  reply is `E <reason>` (§6.3.1: logged, stream intact). Same if `end_file_data` raises.
* `metadata` raises: `Q <reason>` and reply `SKIP` (§6.4: any reply other than OK/SKIP
  aborts the whole restore).
* `acl` / `xattr` / `restore_object` raise: `Q <reason>` and reply `OK` (§6.5: the reply
  must be OK; §6.2: a non-OK object reply makes the core restore files locally).

Every such failure is an Error for the job, so the restore ends "*** Restore Error ***"
(§6.7); it is also appended to `session.restore_failures` and logged. A handler that
raises owns its cleanup: after `file_data` raises, `end_file_data` is not called.
"""

from __future__ import annotations

import enum
import logging
from typing import TYPE_CHECKING, NoReturn, Protocol

from .attrs import RestoreFile, parse_stat, parse_tstamp
from .errors import (
    EndOfStream,
    ProtocolError,
    RestoreRefused,
    SessionAborted,
    UnexpectedPacket,
)
from .framing import Packet, PacketBatch
from .text import encode_message

if TYPE_CHECKING:
    from .session import BackendSession

log = logging.getLogger("protocol.restore")


class Reply(enum.Enum):
    """Answer to an FNAME block (§6.3) or to metadata (§6.4, OK/SKIP only)."""

    OK = "OK"
    SKIP = "SKIP"
    CORE = "CORE"


class RestoreHandler(Protocol):
    """What `BackendSession.run_restore` calls. Names are surrogateescape-decoded str."""

    def restore_object(self, name: str, data: bytes) -> None: ...

    def start_file(self, f: RestoreFile) -> Reply: ...

    def file_data(self, chunk: memoryview) -> None:
        """`chunk` is only valid during the call (it points into the read buffer)."""
        ...

    def end_file_data(self) -> None: ...

    def metadata(self, kind: str, blob: bytes) -> Reply: ...

    def acl(self, data: bytes) -> None: ...

    def xattr(self, data: bytes) -> None: ...

    def finish(self) -> None:
        """FINISH arrived: complete the restore; raising fails the job (see `_finish`)."""
        ...


class BaseRestoreHandler:
    """Accept-everything defaults; subclass and override what you need."""

    def restore_object(self, name: str, data: bytes) -> None:
        pass

    def start_file(self, f: RestoreFile) -> Reply:
        return Reply.OK

    def file_data(self, chunk: memoryview) -> None:
        pass

    def end_file_data(self) -> None:
        pass

    def metadata(self, kind: str, blob: bytes) -> Reply:
        return Reply.OK

    def acl(self, data: bytes) -> None:
        pass

    def xattr(self, data: bytes) -> None:
        pass

    def finish(self) -> None:
        pass


def _reason(exc: BaseException, name: str) -> str:
    if isinstance(exc, RestoreRefused):
        return exc.reason
    return f"{name}: {type(exc).__name__}: {exc}"


class RestoreLoop:
    """One run of the restore dispatcher, from after RestoreStart up to FINISH."""

    def __init__(self, session: BackendSession, handler: RestoreHandler) -> None:
        self.session = session
        self.handler = handler
        self.current: RestoreFile | None = None
        self.accepted = False  # the FD was told OK for `current` and nothing failed since

    # -------------------------------------------------------------- helpers

    def _reply(self, text: bytes) -> None:
        self.session.send_batch(PacketBatch().add("C", text))

    def _failed(self, exc: BaseException, name: str) -> str:
        """Record a handler failure; re-raise what must not be swallowed."""
        if isinstance(exc, EndOfStream | SessionAborted) or not isinstance(exc, Exception):
            raise exc
        if not isinstance(exc, RestoreRefused):
            log.error("restore handler failed for %s", name, exc_info=exc)
        self.session.restore_failures.append((name, exc))
        return _reason(exc, name)

    def _read_blob(self, what: str) -> bytearray:
        """D packets up to F, concatenated (ACL/XATTR/METADATA have one, objects many)."""
        reader = self.session.conn.reader
        blob = bytearray()
        while True:
            status, n = reader.read_header()
            if status == "F":
                return blob
            if status != "D":
                self._unexpected(status, n, f"D or F in {what}")
            blob += reader.read_payload_view(n)

    def _unexpected(self, status: str, n: int, expected: str) -> NoReturn:
        if status == "T":
            self.session.drain()
            raise EndOfStream("T received from the FD")
        got = Packet(status, self.session.conn.reader.read_payload(n)).describe()
        raise UnexpectedPacket(f"restore: expected {expected}, got {got}")

    # -------------------------------------------------------------- dispatcher

    def run(self) -> None:
        """§6.1: FNAME:, DATA, METADATA_*, ACL, XATTR, RESTOREOBJ:, FINISH."""
        while True:
            text = self.session.read_command("a restore command")
            if text.startswith("FNAME:"):
                self._file(text[len("FNAME:") :])
            elif text == "DATA":
                self._data()
            elif text.startswith("METADATA_"):
                self._metadata(text)
            elif text in ("ACL", "XATTR"):
                self._xacl(text)
            elif text.startswith("RESTOREOBJ:"):
                self._object(text[len("RESTOREOBJ:") :])
            elif text == "FINISH":
                self._finish()
                return
            else:
                raise UnexpectedPacket(f"restore: unknown command {text!r}")

    def _finish(self) -> None:
        """§6.7: the FD decides a restore's status *before* FINISH, so a failure found in
        the handler's `finish` (say, an incomplete set of parts) can only fail the job as a
        Fatal `A`, sent instead of the F that would answer FINISH."""
        try:
            self.handler.finish()
        except Exception as exc:
            reason = self._failed(exc, "FINISH")
            self.session.abort(reason)
            return
        self.session.send_eod()

    def _file(self, name: str) -> None:
        """§6.3: STAT (7 fields), TSTAMP, [LSTAT], F → OK | SKIP | CORE | E."""
        stat: tuple[str, int, int, int, int, int, int] | None = None
        times = (0, 0, 0)
        link: str | None = None
        for line in self.session.read_lines_until_eod(f"FNAME block of {name!r}"):
            if line.startswith("STAT:"):
                stat = parse_stat(line[len("STAT:") :])
            elif line.startswith("TSTAMP:"):
                times = parse_tstamp(line[len("TSTAMP:") :])
            elif line.startswith("LSTAT:"):
                link = line[len("LSTAT:") :]
            else:
                raise UnexpectedPacket(f"restore: unexpected line {line!r} in FNAME block")
        if stat is None:
            raise ProtocolError(f"restore: FNAME block of {name!r} has no STAT")
        ftype, size, uid, gid, mode, nlink, linkfi = stat
        f = RestoreFile(name, ftype, size, uid, gid, mode, nlink, linkfi, *times, link=link)
        self.current, self.accepted = f, False
        try:
            reply = Reply(self.handler.start_file(f))
        except BaseException as exc:
            reason = self._failed(exc, name)
            self.session.send_batch(PacketBatch().add("E", encode_message(reason)))
            return
        self.accepted = reply is Reply.OK
        self._reply(reply.value.encode() + b"\n")

    def _data(self) -> None:
        """§6.3.1: D per record, F at close → OK (or E if the handler failed)."""
        f = self.current
        if f is None:
            raise UnexpectedPacket("restore: DATA before any FNAME")
        reader = self.session.conn.reader
        sink = self.accepted
        error: str | None = None
        while True:
            status, n = reader.read_header()
            if status == "F":
                break
            if status != "D":
                self._unexpected(status, n, f"D or F in data of {f.name!r}")
            view = reader.read_payload_view(n)
            if sink:
                try:
                    self.handler.file_data(view)
                except BaseException as exc:
                    error, sink = self._failed(exc, f.name), False
        if sink:
            try:
                self.handler.end_file_data()
            except BaseException as exc:
                error = self._failed(exc, f.name)
        if error is not None:
            self.accepted = False
            self.session.send_batch(PacketBatch().add("E", encode_message(error)))
        else:
            self._reply(b"OK\n")

    def _metadata(self, kind: str) -> None:
        """§6.4: `METADATA_*` (no newline), one D, F → OK | SKIP."""
        blob = bytes(self._read_blob(kind))
        f = self.current
        if f is None or not self.accepted:
            self._reply(b"SKIP\n")
            return
        try:
            reply = Reply(self.handler.metadata(kind, blob))
            if reply is Reply.CORE:
                raise ValueError("metadata() may only return OK or SKIP (§6.4)")
        except BaseException as exc:
            self.session.error(self._failed(exc, f.name))
            reply = Reply.SKIP
        if reply is Reply.SKIP:
            self.accepted = False
        self._reply(reply.value.encode() + b"\n")

    def _xacl(self, kind: str) -> None:
        """§6.5: ACL/XATTR may come at any time, even for a refused symlink → OK."""
        data = bytes(self._read_blob(kind))
        if self.current is not None and self.accepted:
            try:
                if kind == "ACL":
                    self.handler.acl(data)
                else:
                    self.handler.xattr(data)
            except BaseException as exc:
                self.session.error(self._failed(exc, self.current.name))
        self._reply(b"OK\n")

    def _object(self, name: str) -> None:
        """§6.2: RESTOREOBJ_LEN:<n>, D... (split at 999999), F → always OK."""
        text = self.session.read_command("C 'RESTOREOBJ_LEN:<n>'")
        if not text.startswith("RESTOREOBJ_LEN:"):
            raise UnexpectedPacket(f"restore: expected RESTOREOBJ_LEN: after RESTOREOBJ, got {text!r}")
        data = bytes(self._read_blob(f"restore object {name!r}"))
        try:
            self.handler.restore_object(name, data)
        except BaseException as exc:
            self.session.error(self._failed(exc, name))
        self._reply(b"OK\n")
