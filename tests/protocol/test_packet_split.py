"""FileWriter.write(..., packet_size=N): the parts' bytes as D packets of exactly N bytes
(the last one shorter), spanning parts, in one writev; the default stays one D per write."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devkit.fdpeer import FDPeer
from protocol import BackendSession, Connection, FileAttrs, Mode
from protocol.framing import MAX_PAYLOAD, MemoryWriter


def _session() -> tuple[BackendSession, Connection]:
    conn = Connection.in_memory()
    s = BackendSession(conn, "metatest", "1")
    s.mode = Mode.BACKUP
    return s, conn


def _data_packets(output: bytes) -> list[int]:
    """Payload sizes of the D packets in a backend's output (one file, no messages)."""
    sizes, pos = [], 0
    while pos < len(output):
        status, n = chr(output[pos]), int(output[pos + 1 : pos + 7])
        pos += 8 + (0 if status in "FT" else n)
        if status == "D":
            sizes.append(n)
    return sizes


def test_one_block_record_byte_exact_at_64k() -> None:
    """A 48-byte record header + a 512 KiB block at 64 KiB: 8 packets of 65536 and one of 48."""
    s, conn = _session()
    out = s.item_stream()
    head, block = bytes(range(48)), bytes(range(256)) * 2048
    w = out.open_file(FileAttrs(name="/@x/v.bimg", size=len(block)))
    raw = conn.raw_writer
    assert isinstance(raw, MemoryWriter)
    calls = raw.calls
    w.write(head, memoryview(block), packet_size=65536)
    # Attribute block, DATA and all nine packets leave in one writev.
    assert raw.calls == calls + 1
    w.close()
    out.finish()
    stream = head + block
    assert _data_packets(conn.output) == [65536] * 8 + [48]
    body = b"".join(b"D065536\n" + stream[i : i + 65536] for i in range(0, 8 * 65536, 65536))
    assert body + b"D000048\n" + stream[-48:] + b"F000000\n" in conn.output


def test_default_is_one_packet_per_write() -> None:
    s, conn = _session()
    out = s.item_stream()
    w = out.open_file(FileAttrs(name="/@x/v.bimg", size=1))
    w.write(b"h" * 48, b"b" * 524288)
    w.close()
    out.finish()
    assert _data_packets(conn.output) == [524336]


@pytest.mark.parametrize("bad", [0, -1, MAX_PAYLOAD + 1])
def test_packet_size_outside_the_protocol_is_refused(bad: int) -> None:
    s, _conn = _session()
    w = s.item_stream().open_file(FileAttrs(name="/@x/a", size=1))
    with pytest.raises(ValueError, match="packet size"):
        w.write(b"x", packet_size=bad)


@settings(max_examples=60, deadline=None)
@given(
    parts=st.lists(st.lists(st.binary(min_size=0, max_size=3000), max_size=4), min_size=1, max_size=6),
    size=st.integers(min_value=1, max_value=5000),
)
def test_split_packets_carry_every_byte_in_order(parts: list[list[bytes]], size: int) -> None:
    """Any writes, any packet size: the FD sees the same bytes, no packet above the size,
    no empty packet, and only each write's last packet shorter."""
    s, conn = _session()
    out = s.item_stream()
    w = out.open_file(FileAttrs(name="/@x/f", size=1))
    want = bytearray()
    expected_sizes: list[int] = []
    for write in parts:
        w.write(*write, packet_size=size)
        total = sum(map(len, write))
        want += b"".join(write)
        expected_sizes += [size] * (total // size) + ([total % size] if total % size else [])
    w.close()
    out.finish()
    assert _data_packets(conn.output) == expected_sizes
    items = FDPeer(Connection.in_memory(conn.output, strict=True), hash_data=True).read_items(data_phase=True)
    assert [(i.name, i.data_len) for i in items] == [("/@x/f", len(want))]
    if want:
        assert items[0].sha256 == hashlib.sha256(want).hexdigest()
