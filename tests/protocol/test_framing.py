"""Framing (§1.2-§1.8): headers, splitting, exact reads, partial writes, malformed input."""

from __future__ import annotations

import os
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import Connection, EndOfStream, FramingError, PacketBatch, TruncatedPacket
from protocol.framing import (
    KNOWN_STATUSES,
    MAX_PAYLOAD,
    FdReader,
    MemoryReader,
    MemoryWriter,
    PacketReader,
    PacketWriter,
    encode_header,
    parse_header,
)

STATUSES = sorted(KNOWN_STATUSES - {"F", "T"})


def test_header_format() -> None:
    assert encode_header("C", 12) == b"C000012\n"
    assert encode_header("D", 65536) == b"D065536\n"
    assert encode_header("F", 0) == b"F000000\n"
    with pytest.raises(ValueError, match="outside"):
        encode_header("D", MAX_PAYLOAD + 1)
    with pytest.raises(ValueError, match="unknown packet status"):
        encode_header("x", 1)


@given(st.sampled_from(sorted(KNOWN_STATUSES)), st.integers(0, MAX_PAYLOAD))
def test_header_round_trip(status: str, n: int) -> None:
    n = 0 if status in "FT" else n
    assert parse_header(encode_header(status, n)) == (status, n)


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(STATUSES), st.integers(1, MAX_PAYLOAD), st.integers(0, 255))
def test_packet_round_trip_any_size(status: str, n: int, fill: int) -> None:
    payload = bytes([fill]) * n
    conn = Connection.in_memory()
    conn.send(status, payload)
    conn.send("F")
    back = Connection.in_memory(conn.output)
    pkt = back.read_packet()
    assert pkt.status == status and pkt.payload == payload
    assert back.read_packet() == ("F", b"")


@settings(max_examples=40, deadline=None)
@given(st.binary(min_size=0, max_size=3000), st.integers(1, 4))
def test_split_preserves_bytes(chunk: bytes, repeat: int) -> None:
    data = chunk * (repeat * 700)  # up to ~8 MB, several 999999-byte packets
    batch = PacketBatch()
    assert batch.add_data(data) == len(data)
    out = MemoryWriter()
    PacketWriter(out).send_batch(batch)
    reader = PacketReader(MemoryReader(out.getvalue()))
    got = bytearray()
    while got != data:
        status, n = reader.read_header()
        assert status == "D" and 1 <= n <= MAX_PAYLOAD
        got += reader.read_payload(n)
    assert out.calls <= 1


def test_one_writev_per_block() -> None:
    out = MemoryWriter()
    w = PacketWriter(out)
    b = PacketBatch()
    b.add_data(bytes(512 * 1024))
    w.send_batch(b)
    assert out.calls == 1 and out.buffer[:8] == b"D524288\n"
    b = PacketBatch()
    b.add_data(bytearray(3 * MAX_PAYLOAD + 5))
    w.send_batch(b)
    assert out.calls == 2  # header+payload pairs of 4 packets in one writev


def test_batch_refuses_forbidden_packets() -> None:
    with pytest.raises(ValueError, match="zero-length C"):
        PacketBatch().add("C", b"")
    with pytest.raises(ValueError, match="zero-length D"):
        PacketBatch().add("D", memoryview(b""))
    with pytest.raises(ValueError, match="never carry"):
        PacketBatch().add("F", b"x")
    empty = PacketBatch()
    assert empty.add_data(b"") == 0 and len(empty) == 0


def test_memoryview_not_copied_and_other_formats() -> None:
    import array

    arr = array.array("I", [1, 2, 3])
    out = MemoryWriter()
    b = PacketBatch()
    b.add_data(memoryview(arr))
    PacketWriter(out).send_batch(b)
    assert out.getvalue() == b"D000012\n" + arr.tobytes()


@pytest.mark.parametrize(
    ("data", "exc", "message"),
    [
        (b"", EndOfStream, "EOF"),
        (b"C00", TruncatedPacket, "EOF inside header: got 3 of 8"),
        (b"C00001x\n", FramingError, "bad length"),
        (b"C-00001\n", FramingError, "bad length"),
        (b"C+00001\n", FramingError, "bad length"),
        (b"x000001\nA", FramingError, "unknown status byte b'x'"),
        (b"c000001\nA", FramingError, "unknown status byte b'c'"),
        (b"C1000000\n" + b"A" * 10, FramingError, "exactly 6 digits"),
        (b"C000010\nabc", TruncatedPacket, "EOF inside payload"),
    ],
)
def test_malformed_input(data: bytes, exc: type[Exception], message: str) -> None:
    conn = Connection.in_memory(data)
    with pytest.raises(exc, match=message):
        conn.read_packet()


def test_f_with_digits_reads_no_payload() -> None:
    conn = Connection.in_memory(b"F000005\nC000002\nx\n")
    assert conn.read_packet() == ("F", b"")  # §1.2: the digits are ignored
    assert conn.read_packet() == ("C", b"x\n")
    with pytest.raises(FramingError, match="non-zero length"):
        Connection.in_memory(b"F000005\n", strict=True).read_packet()


def test_pipe_partial_writes_and_exact_reads() -> None:
    """A 3 MB block through a 64 KiB pipe: writev is partial many times."""
    r, w = os.pipe()
    data = os.urandom(3 * 1024 * 1024)
    got = bytearray()

    def consume() -> None:
        reader = PacketReader(FdReader(r))
        while len(got) < len(data):
            _status, n = reader.read_header()
            got.extend(reader.read_payload_view(n))

    t = threading.Thread(target=consume)
    t.start()
    conn = Connection.from_fds(r, w)
    b = PacketBatch()
    b.add_data(memoryview(data))
    conn.send_batch(b)
    t.join(10)
    os.close(r)
    os.close(w)
    assert bytes(got) == data


def test_broken_pipe_is_end_of_stream() -> None:
    r, w = os.pipe()
    os.close(r)
    conn = Connection.from_fds(r, w)
    with pytest.raises(EndOfStream):
        conn.send("C", b"hello\n")
    os.close(w)
