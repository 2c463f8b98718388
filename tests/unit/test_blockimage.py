"""The block image codec: round trips under any chunking, and every corruption caught."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bacula_ec2.formats.blockimage import (
    BLOCK_SIZE,
    ZERO_BLOCK_SHA256,
    Block,
    BlockRecord,
    FileKind,
    FormatError,
    ImageHeader,
    RecordDecoder,
    RecordEncoder,
    RecordKind,
)

SMALL = 4096  # a small block size keeps property tests fast; the codec is size-agnostic


def header(kind: FileKind = FileKind.IMAGE, blocks: int = 64, block_size: int = SMALL) -> ImageHeader:
    return ImageHeader(
        kind=kind,
        volume_id="vol-0123456789abcdef0",
        volume_size=blocks * block_size,
        snapshot_id="snap-0123456789abcdef0",
        level="F",
        created="2026-11-26T16:00:00Z",
        block_size=block_size,
        instance_id="i-0123456789abcdef0",
        device="/dev/sda1",
        job_id=7,
    )


def encode(h: ImageHeader, blocks: list[tuple[int, bytes | None]]) -> bytes:
    enc = RecordEncoder(h)
    out = [enc.start()]
    for index, data in blocks:
        if data is None:
            rec = BlockRecord(
                index * h.block_size,
                h.block_size,
                RecordKind.ZERO,
                hashlib.sha256(bytes(h.block_size)).digest(),
            )
            out.append(enc.record(rec))
        else:
            rec = BlockRecord(
                index * h.block_size, h.block_size, RecordKind.DATA, hashlib.sha256(data).digest()
            )
            out.append(enc.record(rec))
            out.append(data)
    out.append(enc.end())
    return b"".join(out)


def decode(raw: bytes, chunk: int) -> tuple[ImageHeader | None, list[Block]]:
    dec = RecordDecoder()
    got: list[Block] = []
    hdr = None
    for i in range(0, len(raw), chunk):
        for item in dec.feed(raw[i : i + chunk]):
            if isinstance(item, ImageHeader):
                hdr = item
            else:
                got.append(item)
    dec.close()
    return hdr, got


blocks_strategy = st.lists(
    st.tuples(st.integers(0, 63), st.one_of(st.none(), st.binary(min_size=SMALL, max_size=SMALL))),
    max_size=12,
    unique_by=lambda t: t[0],
).map(lambda bl: sorted(bl, key=lambda t: t[0]))


@given(blocks=blocks_strategy, chunk=st.one_of(st.just(1), st.integers(40, 9000)))
@settings(max_examples=80, deadline=None)
def test_round_trip_any_chunking(blocks: list[tuple[int, bytes | None]], chunk: int) -> None:
    h = header()
    hdr, got = decode(encode(h, blocks), chunk)
    assert hdr == h
    assert [(b.record.offset // SMALL, b.data or None) for b in got] == blocks
    for b in got:
        assert b.record.kind is (RecordKind.DATA if b.data else RecordKind.ZERO)


@given(blocks=blocks_strategy, flip=st.integers(0, 10**9))
@settings(max_examples=100, deadline=None)
def test_any_single_byte_corruption_is_detected(blocks: list[tuple[int, bytes | None]], flip: int) -> None:
    raw = bytearray(encode(header(), blocks))
    pos = flip % len(raw)
    raw[pos] ^= 0x01
    with pytest.raises(FormatError):
        decode(bytes(raw), 1000)


@given(blocks=blocks_strategy, cut=st.integers(1, 10**9))
@settings(max_examples=100, deadline=None)
def test_truncation_is_detected(blocks: list[tuple[int, bytes | None]], cut: int) -> None:
    raw = encode(header(), blocks)
    with pytest.raises(FormatError):
        decode(raw[: cut % len(raw)], 777)


def test_real_block_size_and_zero_checksum() -> None:
    assert BLOCK_SIZE == 524288
    assert hashlib.sha256(bytes(BLOCK_SIZE)).digest() == ZERO_BLOCK_SHA256
    # The base64 form EBS sends for an all-zero block (ebs-direct-facts.md §1.1).
    import base64

    assert base64.b64encode(ZERO_BLOCK_SHA256) == b"B4VNL+8pega6gWheZgwzLeNtXRjVRpJ9MNqtbX/aFUE="


def test_record_is_48_bytes_and_big_endian() -> None:
    rec = BlockRecord(0x0102030405060708, 524288, RecordKind.DATA, bytes(range(32)))
    raw = rec.pack()
    assert len(raw) == 48
    assert raw[:8] == bytes([1, 2, 3, 4, 5, 6, 7, 8])
    assert raw[8:12] == (524288).to_bytes(4, "big")
    assert raw[12:13] == b"D"
    assert BlockRecord.unpack(raw) == rec


def test_map_records_carry_no_data() -> None:
    h = header(FileKind.MAP)
    enc = RecordEncoder(h)
    data_sha = hashlib.sha256(b"x" * SMALL).digest()
    raw = enc.start() + enc.record(BlockRecord(0, SMALL, RecordKind.DATA, data_sha)) + enc.end()
    hdr, got = decode(raw, 5)
    assert hdr is not None and hdr.kind is FileKind.MAP
    assert got[0].record.sha256 == data_sha and got[0].data == b""


def test_empty_map_refuses_data_records() -> None:
    enc = RecordEncoder(header(FileKind.EMPTY_MAP))
    with pytest.raises(ValueError, match="only zero records"):
        enc.record(BlockRecord(0, SMALL, RecordKind.DATA, bytes(32)))


def test_misaligned_or_out_of_volume_record_refused() -> None:
    enc = RecordEncoder(header(blocks=4))
    with pytest.raises(ValueError):
        enc.record(BlockRecord(100, SMALL, RecordKind.ZERO, bytes(32)))
    with pytest.raises(ValueError):
        enc.record(BlockRecord(4 * SMALL, SMALL, RecordKind.ZERO, bytes(32)))


def test_wrong_kind_expected() -> None:
    raw = encode(header(FileKind.MAP), [])
    dec = RecordDecoder(expect=FileKind.IMAGE)
    with pytest.raises(FormatError, match="expected a IMAGE file"):
        list(dec.feed(raw))


def test_not_our_file() -> None:
    with pytest.raises(FormatError, match="bad magic"):
        list(RecordDecoder().feed(b"\x7fELF" + bytes(60)))


def test_data_after_end_refused() -> None:
    raw = encode(header(), [(0, b"a" * SMALL)])
    dec = RecordDecoder()
    with pytest.raises(FormatError, match="after the end"):
        list(dec.feed(raw + b"x"))
