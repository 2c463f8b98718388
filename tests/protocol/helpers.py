"""Shared test helpers: a tiny scripted backend built only on the public API."""

from __future__ import annotations

from protocol import (
    BackendSession,
    BaseRestoreHandler,
    Connection,
    EndReason,
    FileAttrs,
    Mode,
    Reply,
    RestoreFile,
)

A, M, C = 1700000000, 1700000001, 1700000002


class RecordingHandler(BaseRestoreHandler):
    """Restore handler that records every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []
        self.data = bytearray()

    def restore_object(self, name: str, data: bytes) -> None:
        self.calls.append(("object", (name, data)))

    def start_file(self, f: RestoreFile) -> Reply:
        self.calls.append(("start", f))
        return Reply.OK

    def file_data(self, chunk: memoryview) -> None:
        self.data += chunk
        self.calls.append(("data", bytes(chunk)))

    def end_file_data(self) -> None:
        self.calls.append(("end", None))

    def metadata(self, kind: str, blob: bytes) -> Reply:
        self.calls.append(("metadata", (kind, blob)))
        return Reply.OK

    def acl(self, data: bytes) -> None:
        self.calls.append(("acl", data))

    def xattr(self, data: bytes) -> None:
        self.calls.append(("xattr", data))


def scripted_backend(conn: Connection, handler: RecordingHandler | None = None) -> EndReason:
    """The "metatest" backend of the §9 transcripts, written against the public API."""
    s = BackendSession(conn, plugin_name="metatest", plugin_api="1")
    s.handshake()
    s.read_job()
    s.read_params()
    mode = s.read_start()
    if mode in (Mode.BACKUP, Mode.ESTIMATE):
        out = s.item_stream()
        hello = FileAttrs(
            name="/@metatest/hello.txt", type="F", size=12, mode=0o100644, atime=A, mtime=M, ctime=C
        )
        out.file(hello, data=[b"hello world\n"])
        empty = FileAttrs(
            name="/@metatest/empty.txt", type="E", size=0, mode=0o644, atime=A, mtime=M, ctime=C
        )
        out.file(empty)
        out.finish()
    elif mode is Mode.LISTING:
        out = s.item_stream()
        out.directory("containers", atime=A, mtime=M, ctime=C)
        out.finish()
    elif mode is Mode.QUERY:
        q = s.query_stream()
        q.send_kv("foo", "alpha")
        q.send_pairs([("foo", "beta"), ("other", "gamma")])
        q.finish()
    else:
        s.run_restore(handler if handler is not None else RecordingHandler())
    return s.wait_for_end()


def fd_bytes(transcript: list[tuple[str, bytes]]) -> bytes:
    return b"".join(p for d, p in transcript if d == "FD")


def be_bytes(transcript: list[tuple[str, bytes]]) -> bytes:
    return b"".join(p for d, p in transcript if d == "BE")
