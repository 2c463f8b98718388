"""§9.1-§9.6: the backend's bytes must be exactly those of the real-FD transcripts."""

from __future__ import annotations

import pytest

from devkit.fdpeer import BackendThread
from protocol import Connection, EndReason, Mode, RestoreFile

from . import vectors as v
from .helpers import RecordingHandler, be_bytes, fd_bytes, scripted_backend

# §9.5: "The handshake and Job block are as in 9.3".
_SETUP_93 = v.LISTING[: v.LISTING.index(("FD", b"C000007\nParams\n"))]
QUERY_FULL = _SETUP_93 + v.QUERY

CASES = {
    "9.1-backup": (v.FULL_BACKUP, EndReason.END),
    "9.2-estimate": (v.ESTIMATE, EndReason.END),
    "9.3-listing": (v.LISTING, EndReason.END),
    "9.4-restore": (v.RESTORE, EndReason.END),
    "9.5-query": (QUERY_FULL, EndReason.TERMINATE),
}
# (max_read, max_write): whole buffers, then 1-byte reads and 3-byte partial writes.
IO_SHAPES = [(None, None), (1, 3), (7, 1)]


@pytest.mark.parametrize("shape", IO_SHAPES, ids=["whole", "r1w3", "r7w1"])
@pytest.mark.parametrize("name", list(CASES))
def test_transcript_bytes_exact(name: str, shape: tuple[int | None, int | None]) -> None:
    transcript, reason = CASES[name]
    conn = Connection.in_memory(fd_bytes(transcript), max_read=shape[0], max_write=shape[1])
    assert scripted_backend(conn) is reason
    assert conn.output == be_bytes(transcript)


def test_restore_transcript_delivers_the_file() -> None:
    handler = RecordingHandler()
    conn = Connection.in_memory(fd_bytes(v.RESTORE))
    scripted_backend(conn, handler)
    start = handler.calls[0][1]
    assert isinstance(start, RestoreFile)
    assert start.name == "/srv/bacula-restores/@metatest/hello.txt"
    assert (start.type, start.size, start.mode, start.linkfi) == ("F", 12, 0o100644, 0)
    assert (start.atime, start.mtime, start.ctime) == (1700000000, 1700000001, 1700000002)
    assert bytes(handler.data) == b"hello world\n"
    assert [c[0] for c in handler.calls] == ["start", "data", "end"]


def test_restore_extras_96() -> None:
    """§9.6: RESTOREOBJ with D, METADATA_STREAM without newline, then DATA."""
    setup = v.RESTORE[: v.RESTORE.index(("FD", b"C000047\nFNAME:/srv/bacula-restores/@metatest/hello.txt\n"))]
    fname_block = [p for p in v.RESTORE if p[1].startswith((b"C000047\nFNAME", b"C000025\nSTAT"))]
    fname_block += [("FD", b"C000040\nTSTAMP:1700000000 1700000001 1700000002\n"), ("FD", b"F000000\n")]
    objects = v.RESTORE_EXTRAS[:5]
    metadata = v.RESTORE_EXTRAS[6:10]
    data = [("FD", b"C000005\nDATA\n"), ("FD", b"D000012\nhello world\n"), ("FD", b"F000000\n")]
    tail = [("FD", b"C000007\nFINISH\n"), ("FD", b"C000004\nEND\n"), ("FD", b"T000000\n")]
    script = setup + objects + fname_block + [("BE", b"C000003\nOK\n")] + metadata + data + tail
    handler = RecordingHandler()
    conn = Connection.in_memory(fd_bytes(script))
    assert scripted_backend(conn, handler) is EndReason.END
    expected = be_bytes(setup + objects) + b"C000003\nOK\n" * 3 + b"F000000\n" * 2
    assert conn.output == expected
    assert handler.calls[0] == ("object", ("myobject", b"0123456789"))
    assert ("metadata", ("METADATA_STREAM", b'{"k": "v"}')) in handler.calls


def _job_lines(transcript: list[tuple[str, bytes]]) -> list[str]:
    fd = [p for d, p in transcript if d == "FD"]
    start = fd.index(b"C000004\nJob\n") + 1
    end = fd.index(b"F000000\n", start)
    return [p[8:-1].decode() for p in fd[start:end]]


@pytest.mark.parametrize(
    ("transcript", "mode", "data_phase"),
    [(v.FULL_BACKUP, Mode.BACKUP, True), (v.ESTIMATE, Mode.ESTIMATE, False)],
)
def test_fdpeer_drives_scripted_backend_over_pipes(
    transcript: list[tuple[str, bytes]], mode: Mode, data_phase: bool
) -> None:
    with BackendThread(scripted_backend) as bt:
        peer = bt.peer
        peer.setup("metatest", "1", _job_lines(transcript), ["scenario=two"], mode)
        items = peer.read_items(data_phase=data_phase, file_index_base=1)
        peer.end()
        peer.terminate()
        assert bt.join() is EndReason.END
    assert [(i.name, i.type, i.size, i.file_index) for i in items] == [
        ("/@metatest/hello.txt", "F", 12, 2),
        ("/@metatest/empty.txt", "E", 0, 3),
    ]
    assert items[0].times == (1700000000, 1700000001, 1700000002)
    assert items[0].mode == 0o100644 and items[1].mode == 0o100644
    assert bytes(items[0].data or b"") == (b"hello world\n" if data_phase else b"")
    assert peer.messages == []
