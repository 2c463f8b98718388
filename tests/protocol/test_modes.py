"""Backup/estimate emitter (§4, §5.1), query (§5.3), restore dispatcher (§6), FDPeer strictness."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from devkit.fdpeer import BackendError, FDPeer, FDViolation
from protocol import (
    BackendSession,
    Connection,
    FileAttrs,
    Mode,
    ProtocolError,
    Reply,
    RestoreFile,
    RestoreRefused,
)

from .helpers import RecordingHandler


def c(text: str | bytes) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return b"C%06d\n" % len(raw) + raw


def session(mode: Mode, data: bytes = b"") -> tuple[BackendSession, Connection]:
    conn = Connection.in_memory(data)
    s = BackendSession(conn, "metatest", "1")
    s.mode = mode
    return s, conn


def peer_of(output: bytes, **kw: bool) -> FDPeer:
    return FDPeer(Connection.in_memory(output, strict=True), **kw)


# ----------------------------------------------------------------- backup / estimate


def test_backup_item_kinds_parse_strictly() -> None:
    s, conn = session(Mode.BACKUP)
    out = s.item_stream()
    out.directory("/@x/i-1", mtime=5)
    out.file(FileAttrs(name="/@x/link", type="S", mode=0o777, link="target/path"))
    out.file(FileAttrs(name="/@x/hard", type="L", size=10, nlink=2, linkfi=7, link="/@x/orig"))
    out.file(
        FileAttrs(name="/@x/a.json", size=3),
        b"abc",
        metadata=[("METADATA_STREAM", b"{}")],
        acl=b"acl",
        xattr=b"",
    )
    out.restore_object("obj", b"x" * 1_500_000)
    out.finish()
    assert b"C000022\nSTAT:D 0 0 0 040755 1\n" in conn.output
    assert b"STAT:S 0 0 0 120777 1\n" in conn.output and b"STAT:L 10 0 0 100640 2 7\n" in conn.output
    items = peer_of(conn.output).read_items(data_phase=True)
    assert [i.name for i in items] == ["/@x/i-1/", "/@x/link", "/@x/hard", "/@x/a.json", "obj"]
    assert items[0].times == (5, 5, 5) and items[1].link == "target/path"
    assert bytes(items[3].data or b"") == b"abc" and items[3].acl == b"acl" and items[3].xattr == b""
    assert items[3].metadata == [("METADATA_STREAM", b"{}")]
    assert items[4].data_len == 1_500_000


def test_estimate_has_no_data_phase() -> None:
    s, conn = session(Mode.ESTIMATE)
    out = s.item_stream()
    assert not out.has_data_phase

    def never() -> Iterator[bytes]:
        raise AssertionError("estimate must not consume data")
        yield b""

    out.file(FileAttrs(name="/@x/a", size=3), never())
    with pytest.raises(RuntimeError, match="no data phase"):
        out.open_file(FileAttrs(name="/@x/b"))
    out.finish()
    assert b"DATA" not in conn.output
    assert len(peer_of(conn.output).read_items(data_phase=False)) == 1


def test_streaming_writer_and_failure_mid_file() -> None:
    s, conn = session(Mode.BACKUP)
    out = s.item_stream()
    with out.open_file(FileAttrs(name="/@x/big", size=10)) as w:
        w.write(b"")
        w.write(memoryview(b"12345"))
    with pytest.raises(OSError, match="disk"), out.open_file(FileAttrs(name="/@x/bad", size=9)) as w:
        w.write(b"part")
        raise OSError("disk gone")

    def chunks() -> Iterator[bytes]:
        yield b"ok"
        raise ValueError("source broke")

    with pytest.raises(ValueError, match="source broke"):
        out.file(FileAttrs(name="/@x/gen", size=9), chunks())
    out.file(FileAttrs(name="/@x/empty", type="E"), [b"", b""])
    out.finish()
    peer = peer_of(conn.output)
    items = peer.read_items(data_phase=True)
    assert [(i.name, i.data) for i in items] == [
        ("/@x/big", b"12345"),
        ("/@x/bad", b"part"),
        ("/@x/gen", b"ok"),
        ("/@x/empty", None),
    ]
    assert not items[3].has_data
    assert [m[0] for m in peer.messages] == ["Q", "Q"] and "disk gone" in peer.messages[0][1]


def test_item_stream_guards() -> None:
    s, _ = session(Mode.BACKUP)
    out = s.item_stream()
    w = out.open_file(FileAttrs(name="/@x/a"))
    with pytest.raises(RuntimeError, match="still open"):
        out.finish()
    w.close()
    for bad in (
        FileAttrs(name="/@x/d", type="D"),
        FileAttrs(name="/@x/s", type="S"),
        FileAttrs(name="/@x/l", type="L"),
        FileAttrs(name="/@x/t "),
        FileAttrs(name="/@x/\x00"),
        FileAttrs(name="/@x/q", type="Q"),
    ):
        with pytest.raises(ValueError):
            out.file(bad)
    out.fail("nothing to do")
    with pytest.raises(RuntimeError, match="finished"):
        out.finish()
    s, _ = session(Mode.RESTORE)
    with pytest.raises(RuntimeError):
        s.item_stream()


def test_file_index_query() -> None:
    s, conn = session(Mode.BACKUP, c("3\n"))
    assert s.item_stream().file_index() == 3
    assert conn.output == c("FileIndex\n")


# ----------------------------------------------------------------- query


def test_query_stream() -> None:
    s, conn = session(Mode.QUERY)
    q = s.query_stream()
    q.send_kv("k", "v=w")
    q.send_text("free text")
    for key, value in (("a,b", "1"), ("k", "x,y"), ("a=b", "1"), ("", "1"), ("k", "v\n")):
        with pytest.raises(ValueError):
            q.send_kv(key, value)
    with pytest.raises(ValueError):
        q.send_pairs([])
    q.finish()
    assert peer_of(conn.output).read_query() == [("C", "k=v=w"), ("D", b"free text")]


# ----------------------------------------------------------------- restore


def fname(name: str, stat: str = "F 12 0 0 100644 1 0", link: str | None = None) -> bytes:
    out = c(f"FNAME:{name}\n") + c(f"STAT:{stat}\n") + c("TSTAMP:1 2 3\n")
    return out + (c(f"LSTAT:{link}\n") if link else b"") + b"F000000\n"


def data(*records: bytes) -> bytes:
    return c("DATA\n") + b"".join(b"D%06d\n" % len(r) + r for r in records) + b"F000000\n"


class Picky(RecordingHandler):
    def start_file(self, f: RestoreFile) -> Reply:
        super().start_file(f)
        if f.name.endswith("skip"):
            return Reply.SKIP
        if f.name.endswith("core"):
            return Reply.CORE
        if f.name.endswith("refuse"):
            raise RestoreRefused("not allowed here")
        if f.name.endswith("crash"):
            raise KeyError("boom")
        return Reply.OK

    def file_data(self, chunk: memoryview) -> None:
        if bytes(chunk) == b"bad":
            raise OSError("write failed")
        super().file_data(chunk)

    def metadata(self, kind: str, blob: bytes) -> Reply:
        raise ValueError("bad metadata")

    def acl(self, data: bytes) -> None:
        raise ValueError("bad acl")


def test_restore_dispatch_and_failures() -> None:
    stream = b"".join(
        [
            fname("/r/skip"),
            fname("/r/core"),
            fname("/r/refuse"),
            fname("/r/crash"),
            c("ACL\n") + b"D000001\na" + b"F000000\n",  # ACL for a refused file: just OK
            fname("/r/link", "S 0 0 0 120777 1 0", link="tgt"),
            fname("/r/ok"),
            data(b"good", b"bad", b"more"),
            fname("/r/ok2"),
            c("METADATA_STREAM") + b"D000002\n{}F000000\n",
            fname("/r/ok3"),
            c("ACL\n") + b"D000001\naF000000\n",
            c("XATTR\n") + b"D000000\nF000000\n",
            c("FINISH\n"),
        ]
    )
    s, conn = session(Mode.RESTORE, stream)
    h = Picky()
    s.run_restore(h)
    replies: list[tuple[str, bytes]] = []
    peer = peer_of(conn.output)
    reader = peer.conn.reader
    while True:
        try:
            status, n = reader.read_header()
        except Exception:
            break
        replies.append((status, reader.read_payload(n)))
    assert replies == [
        ("C", b"SKIP\n"),
        ("C", b"CORE\n"),
        ("E", b"not allowed here\n"),
        ("E", b"/r/crash: KeyError: 'boom'\n"),
        ("C", b"OK\n"),
        ("C", b"OK\n"),  # link
        ("C", b"OK\n"),
        ("E", b"/r/ok: OSError: write failed\n"),
        ("C", b"OK\n"),
        ("Q", b"/r/ok2: ValueError: bad metadata\n"),
        ("C", b"SKIP\n"),
        ("C", b"OK\n"),
        ("Q", b"/r/ok3: ValueError: bad acl\n"),
        ("C", b"OK\n"),
        ("C", b"OK\n"),
        ("F", b""),
    ]
    assert bytes(h.data) == b"good"  # the rest of the failed file was dropped
    assert ("end", None) not in h.calls
    link = [f for k, f in h.calls if k == "start" and isinstance(f, RestoreFile) and f.type == "S"]
    assert link[0].link == "tgt" and link[0].mode == 0o120777 and link[0].atime == 1
    assert len(s.restore_failures) == 5


def test_restore_object_multi_d() -> None:
    payload = b"y" * 1_200_000
    stream = c("RESTOREOBJ:o\n") + c(f"RESTOREOBJ_LEN:{len(payload)}\n")
    stream += b"D999999\n" + payload[:999999] + b"D%06d\n" % (len(payload) - 999999)
    stream += payload[999999:] + b"F000000\n" + c("RESTOREOBJ:e\n") + c("RESTOREOBJ_LEN:0\n")
    stream += b"F000000\n" + c("FINISH\n")
    s, conn = session(Mode.RESTORE, stream)
    h = RecordingHandler()
    s.run_restore(h)
    assert h.calls == [("object", ("o", payload)), ("object", ("e", b""))]
    assert conn.output == c("OK\n") * 2 + b"F000000\n"


@pytest.mark.parametrize(
    ("stream", "message"),
    [
        (c("BOGUS\n"), "unknown command 'BOGUS'"),
        (data(b"x"), "DATA before any FNAME"),
        (b"D000001\nx", "expected a restore command, got D"),
        (c("FNAME:/a\n") + c("TSTAMP:1 2 3\n") + b"F000000\n", "has no STAT"),
        (c("FNAME:/a\n") + c("STAT:F x 0 0 1 1 0\n") + b"F000000\n", "malformed STAT"),
        (fname("/a") + c("DATA\n") + c("oops\n"), "expected D or F in data of '/a', got C 'oops"),
        (c("RESTOREOBJ:o\n") + c("X\n"), "expected RESTOREOBJ_LEN"),
    ],
)
def test_restore_protocol_errors(stream: bytes, message: str) -> None:
    s, _ = session(Mode.RESTORE, stream)
    with pytest.raises(ProtocolError, match=message):
        s.run_restore(RecordingHandler())


# ----------------------------------------------------------------- FDPeer strictness


@pytest.mark.parametrize(
    ("be_output", "data_phase", "exc", "message"),
    [
        (
            c("FNAME:/a\n")
            + c("STAT:F 1 0 0 100644 1\n")
            + b"F000000\n"
            + c("DATA\n")
            + b"D000000\nF000000\n",
            True,
            FDViolation,
            "zero-length D",
        ),
        (
            c("FNAME:/a\n") + c("STAT:F 1 0 0 100644 1\n") + b"F000000\n" + c("DATA\n"),
            False,
            FDViolation,
            "unknown command: DATA",
        ),
        (
            c("FNAME:/a\n") + c("STAT:F 1 0 0 100644 1\n") + b"F000000\n" + c("X\n"),
            True,
            FDViolation,
            "expected DATA or F",
        ),
        (
            c("FNAME:/a\n") + c("TSTAMP:1 2 3\n") + b"F000000\n",
            False,
            FDViolation,
            "not enough file attributes",
        ),
        (c("FNAME:/d\n") + c("STAT:D 0 0 0 040755 1\n") + b"F000000\n", False, FDViolation, "end in '/'"),
        (c("FNAME:/h\n") + c("STAT:L 0 0 0 100644 1\n") + b"F000000\n", False, FDViolation, "7th field"),
        (c("FNAME:/a \n"), False, FDViolation, "whitespace"),
        (b"C000000\n", False, FDViolation, "zero-length C"),
        (c("FNAME:/a\n") + c("STAT: F 1 0 0 1 1\n"), False, FDViolation, "Invalid File Attributes"),
        (c("ACL\n") + b"D000001\nx" + b"D000001\ny", False, FDViolation, "Expected packet: F"),
        (b"E000004\nErr\n", False, BackendError, "backend sent E: Err"),
        (b"F000001\n", False, ProtocolError, "non-zero length"),
        (b"T000000\n", False, FDViolation, "backend sent T"),
    ],
)
def test_fdpeer_is_strict(be_output: bytes, data_phase: bool, exc: type[Exception], message: str) -> None:
    with pytest.raises(exc, match=message):
        peer_of(be_output).read_items(data_phase=data_phase)


def test_fdpeer_records_messages_and_replies_file_index() -> None:
    peer = FDPeer(Connection.in_memory(b"I000003\nhi\n" + c("FileIndex\n") + b"F000000\n", strict=True))
    assert peer.read_items(data_phase=True, file_index_base=1) == []
    assert peer.messages == [("I", "hi")]
    assert peer.conn.output == c("1\n")
