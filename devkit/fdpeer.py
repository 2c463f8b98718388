"""The File Daemon side of the protocol, for tests and benchmarks.

`FDPeer` drives a backend the way bacula-fd 15.0.3 does and is *strict*: whatever the real
FD would reject (or silently misread) raises `FDViolation`, so tests catch it. Payloads of
data packets are hashed or counted straight from the read buffer, without copies.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from protocol.attrs import parse_stat, parse_tstamp
from protocol.errors import ProtocolError
from protocol.framing import MESSAGE_STATUSES, BytesLike, Connection, Packet, PacketBatch
from protocol.jobinfo import Mode
from protocol.text import ENCODING

_BLANKS = " \t\r\n\v\f"


class FDViolation(ProtocolError):
    """The backend did something the real FD would reject (§10)."""


class BackendError(ProtocolError):
    """The backend sent `E` or `A` where the FD wanted another packet (§1.4)."""

    def __init__(self, status: str, text: str) -> None:
        super().__init__(f"backend sent {status}: {text}")
        self.status = status
        self.text = text


@dataclass
class BackupItem:
    """One item of a backup/estimate/listing stream as the FD understood it (§4.2)."""

    kind: str  # "file", "restoreobj" or "pluginobj"
    name: str
    lines: list[str] = field(default_factory=list)
    type: str | None = None
    size: int = 0
    uid: int = 0
    gid: int = 0
    mode: int = 0
    nlink: int = 0
    linkfi: int = 0
    times: tuple[int, int, int] = (0, 0, 0)
    link: str | None = None
    metadata: list[tuple[str, bytes]] = field(default_factory=list)
    has_data: bool = False  # DATA was sent
    data: bytearray | None = None  # kept only with keep_data
    data_len: int = 0
    data_packets: int = 0
    sha256: str | None = None  # only with hash_data
    acl: bytes | None = None
    xattr: bytes | None = None
    file_index: int = 0


class FDPeer:
    """Strict FD-side driver. `conn` reads the backend's stdout and writes its stdin."""

    def __init__(self, conn: Connection, *, keep_data: bool = True, hash_data: bool = False) -> None:
        self.conn = conn
        self.keep_data = keep_data
        self.hash_data = hash_data
        #: Every message packet (§1.5) and E/A received, as (status, stripped text).
        self.messages: list[tuple[str, str]] = []
        self.strip: list[int] = []
        self.includes: list[str] = []
        self.file_index = 0
        self._closed = False

    # ------------------------------------------------------------------ sending

    def send(self, status: str, payload: BytesLike = b"") -> None:
        self.conn.send(status, payload)

    def send_command(self, text: str | bytes, *, newline: bool = True) -> None:
        raw = text.encode(ENCODING, "surrogateescape") if isinstance(text, str) else text
        self.conn.send("C", raw + b"\n" if newline else raw)

    def close(self) -> None:
        """Close our write end so the backend sees EOF (§2.4)."""
        if self._closed:
            return
        self._closed = True
        fd = getattr(self.conn.raw_writer, "fd", None)
        if isinstance(fd, int):
            os.close(fd)

    # ------------------------------------------------------------------ receiving

    def _header(self) -> tuple[str, int]:
        """Next non-message header; messages are recorded (§1.5), E/A raise."""
        reader = self.conn.reader
        while True:
            status, n = reader.read_header()
            if status in MESSAGE_STATUSES or status in "EA":
                text = _fd_text(reader.read_payload(n))
                self.messages.append((status, text))
                if status in "EA":
                    raise BackendError(status, text)
                continue
            if status == "T":
                raise FDViolation("backend sent T (§1.4: only as a last resort after A)")
            return status, n

    def _packet(self) -> Packet:
        status, n = self._header()
        return Packet(status, self.conn.reader.read_payload(n))

    def expect_eod(self, where: str) -> None:
        pkt = self._packet()
        if pkt.status != "F":
            raise FDViolation(f"Protocol error. Expected packet: F got: {pkt.describe()} ({where})")

    def _command_text(self, pkt: Packet, where: str) -> str:
        if pkt.status != "C":
            raise FDViolation(f"Protocol error. Expected packet: C got: {pkt.describe()} ({where})")
        if not pkt.payload:
            raise FDViolation(f"zero-length C packet ({where}): the FD reads it as EOD (§1.6)")
        raw = pkt.payload
        if b"\x00" in raw:
            raise FDViolation(f"NUL in command {raw[:60]!r} ({where}): truncated by the FD (§1.7)")
        body = raw[:-1] if raw.endswith(b"\n") else raw
        if body != body.rstrip(_BLANKS.encode()):
            raise FDViolation(f"command {raw[:60]!r} ends in whitespace the FD strips (§1.7)")
        return _fd_text(raw)

    def expect_command(self, where: str) -> str:
        """A C packet, returned as the FD sees it (trailing whitespace stripped, §1.7)."""
        return self._command_text(self._packet(), where)

    def _single_blob(self, what: str) -> bytes:
        """§4.6, §4.4.6: exactly one D (D000000 allowed), then F."""
        status, n = self._header()
        if status != "D":
            raise FDViolation(f"{what}: expected exactly one D, got {status}")
        blob = self.conn.reader.read_payload(n)
        self.expect_eod(f"after the D of {what}")
        return blob

    # ------------------------------------------------------------------ setup (§3)

    def hello(self, name: str, api: str) -> None:
        self.send_command(f"Hello {name} {api}")
        text = self.expect_command("reply to Hello")
        if text != "Hello Bacula":
            raise FDViolation(f"Wrong backend response to Hello command, got: {text}")

    def _block(self, head: str, lines: Iterable[str]) -> None:
        batch = PacketBatch().add("C", head.encode() + b"\n")
        for line in lines:
            batch.add("C", line.encode(ENCODING, "surrogateescape") + b"\n")
        self.conn.send_batch(batch.add("F"))
        self.expect_eod(f"reply to {head}")

    def send_job(self, lines: Iterable[str]) -> None:
        """§3.3: `Job`, lines, F; the backend must answer F."""
        self._block("Job", lines)

    def send_params(self, lines: Iterable[str]) -> None:
        """§3.4: `Params`, lines, F; the backend must answer F."""
        self._block("Params", lines)

    def start(self, mode: Mode) -> None:
        """§3.5: send `<Mode>Start`; C lines may precede F except in restore."""
        self.send_command(mode.value)
        while True:
            pkt = self._packet()
            if pkt.status == "F":
                return
            text = self._command_text(pkt, f"reply to {mode.value}")
            if mode is Mode.RESTORE:
                raise FDViolation(f"RestoreStart answered with {text!r}: restore setup fails (§3.5)")
            if text.startswith("STRIP:"):
                self.strip.append(int(text[len("STRIP:") :]))

    def setup(self, name: str, api: str, job: Iterable[str], params: Iterable[str], mode: Mode) -> None:
        self.hello(name, api)
        self.send_job(job)
        self.send_params(params)
        self.start(mode)

    # ------------------------------------------------------------------ backup (§4, §5)

    def read_items(self, *, data_phase: bool, file_index_base: int = 0) -> list[BackupItem]:
        """Read a whole backup (data_phase=True) or estimate/listing stream up to its F."""
        self.file_index = file_index_base
        items: list[BackupItem] = []
        last_file: BackupItem | None = None  # ACL/XATTR attach to the file just done
        while True:
            pkt = self._packet()
            if pkt.status == "F":
                return items
            text = self._command_text(pkt, "next-item point")
            if text.startswith("FNAME:"):
                item = self._attr_block(text[len("FNAME:") :])
                items.append(item)
                last_file = item
                if data_phase:
                    self._data_phase(item)
            elif text.startswith("RESTOREOBJ:"):
                items.append(self._restore_object(text[len("RESTOREOBJ:") :]))
                last_file = None
            elif text.startswith("PLUGINOBJ:"):
                self.file_index += 1
                obj = BackupItem("pluginobj", text[len("PLUGINOBJ:") :], file_index=self.file_index)
                obj.lines = self._lines_until_eod("plugin object")
                items.append(obj)
                last_file = None
            elif text == "FileIndex":
                self.send_command(str(self.file_index))
            elif text.startswith("INCLUDE:"):
                self.includes.append(text[len("INCLUDE:") :])
            elif text.startswith("STRIP:"):
                self.strip.append(int(text[len("STRIP:") :]))
            elif text in ("ACL", "XATTR"):
                blob = self._single_blob(text)
                if last_file is not None and data_phase:
                    if text == "ACL":
                        last_file.acl = blob
                    else:
                        last_file.xattr = blob
            else:
                raise FDViolation(f"Protocol error, got unknown command: {text}")

    def _lines_until_eod(self, where: str) -> list[str]:
        lines: list[str] = []
        while True:
            pkt = self._packet()
            if pkt.status == "F":
                return lines
            lines.append(self._command_text(pkt, where))

    def _attr_block(self, name: str) -> BackupItem:
        """§4.4: STAT/TSTAMP/LSTAT/METADATA in any order, then F; checked like the FD."""
        if not name:
            raise FDViolation("empty FNAME")
        self.file_index += 1
        item = BackupItem("file", name, file_index=self.file_index)
        has_stat = False
        while True:
            pkt = self._packet()
            if pkt.status == "F":
                break
            line = self._command_text(pkt, f"attribute block of {name!r}")
            item.lines.append(line)
            if line.startswith("STAT:"):
                self._stat(item, line[len("STAT:") :])
                has_stat = has_stat or item.type != "S"
            elif line.startswith("TSTAMP:"):
                try:
                    item.times = parse_tstamp(line[len("TSTAMP:") :])
                except ProtocolError as exc:
                    raise FDViolation(f"Invalid File Attributes command: {line} ({exc})") from None
            elif line.startswith("LSTAT:"):
                item.link = line[len("LSTAT:") :]
            elif line.startswith("METADATA_"):
                item.metadata.append((line, self._single_blob(line)))
            else:
                raise FDViolation(f"Invalid File Attributes command: {line}")
        if not has_stat and item.link is None:
            raise FDViolation(f"Protocol error, not enough file attributes from backend ({name!r})")
        if item.type == "S" and item.link is None:
            raise FDViolation(f"symlink {name!r} without LSTAT (§4.4.1)")
        if item.type == "D" and not name.endswith("/"):
            raise FDViolation(f"directory {name!r} does not end in '/' (§4.3)")
        return item

    @staticmethod
    def _stat(item: BackupItem, value: str) -> None:
        """sscanf("%c %ld %d %d %o %d %d") semantics plus the type rules of §4.4.1."""
        if value.startswith("/"):
            item.type = "F"  # external stat (§4.4.2): attributes come from the FD host
            return
        if len(value) < 2 or value[1] != " ":
            raise FDViolation(f"Invalid File Attributes command: STAT:{value}")
        try:
            t, size, uid, gid, mode, nlink, linkfi = parse_stat(value)
        except ProtocolError as exc:
            raise FDViolation(f"Invalid File Attributes command: STAT:{value} ({exc})") from None
        if t not in "FEDSL":
            raise FDViolation(f"Invalid file type: {t} for {item.name}")
        if t == "L" and len(value.split(" ")) < 7:
            raise FDViolation(f"Invalid stat packet: hard link {item.name!r} needs a 7th field")
        item.type, item.size, item.uid, item.gid = t, size, uid, gid
        item.mode, item.nlink, item.linkfi = mode, nlink, linkfi

    def _data_phase(self, item: BackupItem) -> None:
        """§4.5: F, or DATA then D (1..999999 bytes each) then F."""
        pkt_status, n = self._header()
        if pkt_status == "F":
            return
        if pkt_status != "C":
            raise FDViolation(f"data phase of {item.name!r}: expected DATA or F, got {pkt_status}")
        text = self._command_text(Packet("C", self.conn.reader.read_payload(n)), "data phase")
        if text != "DATA":
            raise FDViolation(f"data phase of {item.name!r}: expected DATA or F, got {text!r}")
        item.has_data = True
        reader = self.conn.reader
        digest = hashlib.sha256() if self.hash_data else None
        data = bytearray() if self.keep_data else None
        while True:
            status, n = self._header()
            if status == "F":
                break
            if status != "D":
                raise FDViolation(f"Protocol error. Expected packet: D got: {status} ({item.name!r})")
            if n == 0:
                raise FDViolation(f"zero-length D in the data of {item.name!r} ends the file early (§1.6)")
            view = reader.read_payload_view(n)
            if digest is not None:
                digest.update(view)
            if data is not None:
                data += view
            item.data_len += n
            item.data_packets += 1
        item.data = data
        item.sha256 = digest.hexdigest() if digest is not None else None

    def _restore_object(self, name: str) -> BackupItem:
        """§4.7.1: RESTOREOBJ_LEN must be the very next C packet, then D..., F."""
        self.file_index += 1
        item = BackupItem("restoreobj", name, file_index=self.file_index)
        text = self.expect_command("restore object")
        if not text.startswith("RESTOREOBJ_LEN:"):
            raise FDViolation("Cannot read Restore Object length!")
        declared = int(text[len("RESTOREOBJ_LEN:") :])
        data = bytearray()
        while True:
            status, n = self._header()
            if status == "F":
                break
            if status != "D" or n == 0:
                raise FDViolation(f"restore object {name!r}: expected non-empty D or F, got {status}")
            data += self.conn.reader.read_payload_view(n)
        if len(data) != declared:
            raise FDViolation(f"Backend reported RO length:{declared} read:{len(data)}")
        item.data, item.data_len = data, len(data)
        return item

    # ------------------------------------------------------------------ query (§5.3)

    def read_query(self) -> list[tuple[str, str | bytes]]:
        """Answer packets up to F: ("C", text) or ("D", bytes up to NUL)."""
        out: list[tuple[str, str | bytes]] = []
        while True:
            pkt = self._packet()
            if pkt.status == "F":
                return out
            if pkt.status == "D":
                if not pkt.payload:
                    raise FDViolation("zero-length D in a query answer (§1.6)")
                out.append(("D", pkt.payload.split(b"\x00", 1)[0]))
            else:
                out.append(("C", self._command_text(pkt, "query answer")))

    # ------------------------------------------------------------------ restore (§6)

    def _reply(self, allowed: Iterable[str], where: str) -> str:
        """A C reply among `allowed`; an `E` reply is returned as "E" (text in messages)."""
        try:
            text = self.expect_command(where)
        except BackendError as exc:
            if exc.status == "E":
                return "E"
            raise
        if text not in allowed:
            raise FDViolation(f"{where}: wrong backend response {text!r}")
        return text

    def restore_object(self, name: str, data: bytes) -> str:
        """§6.2: the reply must be OK."""
        batch = PacketBatch().add("C", f"RESTOREOBJ:{name}\n".encode(ENCODING, "surrogateescape"))
        batch.add("C", f"RESTOREOBJ_LEN:{len(data)}\n".encode())
        batch.add_data(data)
        self.conn.send_batch(batch.add("F"))
        return self._reply(("OK",), f"reply to RESTOREOBJ:{name}")

    def restore_file(
        self,
        name: str,
        stat: str,
        times: tuple[int, int, int] = (0, 0, 0),
        link: str | None = None,
    ) -> str:
        """§6.3: FNAME, 7-field STAT (e.g. "F 12 0 0 100644 1 0"), TSTAMP, [LSTAT], F."""
        enc = ENCODING
        batch = PacketBatch().add("C", f"FNAME:{name}\n".encode(enc, "surrogateescape"))
        batch.add("C", f"STAT:{stat}\n".encode())
        batch.add("C", "TSTAMP:{} {} {}\n".format(*times).encode())
        if link is not None:
            batch.add("C", f"LSTAT:{link}\n".encode(enc, "surrogateescape"))
        self.conn.send_batch(batch.add("F"))
        return self._reply(("OK", "SKIP", "CORE"), f"reply to FNAME:{name}")

    def send_data(self, records: Iterable[BytesLike]) -> str:
        """§6.3.1: DATA, one D per record (never empty), F → OK expected."""
        batch = PacketBatch().add("C", b"DATA\n")
        for record in records:
            if not len(memoryview(record)):
                raise ValueError("the FD never sends an empty data record")
            batch.add("D", record)
        self.conn.send_batch(batch.add("F"))
        return self._reply(("OK",), "reply to file data")

    def send_metadata(self, kind: str, blob: bytes) -> str:
        """§6.4: keyword WITHOUT newline, one D, F → OK or SKIP."""
        batch = PacketBatch().add("C", kind.encode())
        batch.add("D", blob)
        self.conn.send_batch(batch.add("F"))
        return self._reply(("OK", "SKIP"), f"reply to {kind}")

    def send_xacl(self, kind: str, data: bytes) -> str:
        """§6.5: ACL or XATTR, one D, F → OK."""
        batch = PacketBatch().add("C", kind.encode() + b"\n")
        batch.add("D", data)
        self.conn.send_batch(batch.add("F"))
        return self._reply(("OK",), f"reply to {kind}")

    # ------------------------------------------------------------------ end (§3.6, §6.7)

    def finish(self) -> None:
        self.send_command("FINISH")
        self.expect_eod("reply to FINISH")

    def end(self) -> None:
        self.send_command("END")
        self.expect_eod("reply to END")

    def terminate(self) -> None:
        """Send T and close the pipe (§2.4)."""
        self.send("T")
        self.close()


def _fd_text(raw: bytes) -> str:
    """What the FD makes of a text payload: cut at NUL, trailing whitespace stripped."""
    return raw.split(b"\x00", 1)[0].rstrip(_BLANKS.encode()).decode(ENCODING, "surrogateescape")


class BackendThread:
    """Run `target(conn)` in a thread wired to an `FDPeer` through two real pipes.

    The backend's ends are closed when `target` returns, so the peer then sees EOF.
    Use as a context manager; `result` / `error` hold the outcome after `join()`.
    """

    def __init__(self, target: Callable[[Connection], Any], **peer_kwargs: Any) -> None:
        to_be_r, to_be_w = os.pipe()
        to_fd_r, to_fd_w = os.pipe()
        self.backend_conn = Connection.from_fds(to_be_r, to_fd_w)
        self.peer = FDPeer(Connection.from_fds(to_fd_r, to_be_w, strict=True), **peer_kwargs)
        self._fds = (to_be_r, to_fd_w)
        self._peer_read_fd = to_fd_r
        self.result: Any = None
        self.error: BaseException | None = None
        self._target = target
        self.thread = threading.Thread(target=self._run, name="backend", daemon=True)

    def _run(self) -> None:
        try:
            self.result = self._target(self.backend_conn)
        except BaseException as exc:
            self.error = exc
        finally:
            for fd in self._fds:
                os.close(fd)

    def __enter__(self) -> BackendThread:
        self.thread.start()
        return self

    def join(self, timeout: float = 10.0) -> Any:
        self.thread.join(timeout)
        if self.thread.is_alive():
            raise TimeoutError("backend thread did not finish")
        if self.error is not None:
            raise self.error
        return self.result

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.peer.close()
        self.thread.join(10.0)
        os.close(self._peer_read_fd)
