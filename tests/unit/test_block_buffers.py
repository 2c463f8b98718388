"""Recycled block buffers (aws/blocks.BufferPool, aws/download.fetch): a buffer is never
lent twice at once, never reused while its block is still in the caller's hands, a failed
read gives its buffer back, and a real download returns every block's exact content."""

from __future__ import annotations

import hashlib
import random
import socket
import threading
import time
from collections.abc import Iterator

from hypothesis import given, settings
from hypothesis import strategies as st

from bacula_ec2.aws.blocks import BlockClient, BufferPool, PoolBuffer
from bacula_ec2.aws.client import BlockBody, BlockRef
from bacula_ec2.aws.download import BlockDownloader, _recycling
from bacula_ec2.aws.settings import AwsSettings, Secret
from bacula_ec2.aws.transfer import BlockTransfer, TransferConfig
from bacula_ec2.retry import RetryPolicy
from devkit.simulator.fixtures import ACCESS_KEY, SECRET_KEY, RunningSimulator
from devkit.simulator.model import DEFAULT_REGION

SIZE = 4096


def content(index: int, size: int = SIZE) -> bytes:
    """What block `index` holds: distinct for every index."""
    return hashlib.shake_256(index.to_bytes(8, "big")).digest(size)


@settings(max_examples=200, deadline=None)
@given(ops=st.lists(st.tuples(st.sampled_from(["take", "give", "again", "foreign"]), st.integers(0, 99))))
def test_a_pool_never_lends_a_buffer_twice_at_once(ops: list[tuple[str, int]]) -> None:
    pool = BufferPool(size=16, keep=3)
    other = BufferPool(size=16, keep=3)
    lent: list[PoolBuffer] = []
    given_back: list[PoolBuffer] = []
    for op, n in ops:
        if op == "take":
            buf = pool.take()
            assert all(buf is not b for b in lent), "a buffer lent twice at once"
            assert len(buf) == 16 and buf.lent
            lent.append(buf)
            given_back = [b for b in given_back if b is not buf]  # lent again: a new lending
        elif op == "give" and lent:
            buf = lent.pop(n % len(lent))
            pool.give(buf)
            given_back.append(buf)
        elif op == "again" and given_back:
            pool.give(given_back[n % len(given_back)])  # a second give of one lending: ignored
        elif op == "foreign":
            pool.give(other.take() if n % 2 else bytearray(16))  # not ours: ignored
        assert len(pool._free) <= pool.keep
        assert all(not b.lent for b in pool._free)
        assert len({id(b) for b in pool._free}) == len(pool._free)
        assert not any(b is f for b in lent for f in pool._free)


def test_recycling_never_overwrites_a_block_the_caller_holds() -> None:
    """Stress: 16 workers fill recycled buffers while the caller checks each block twice,
    before and after letting the workers run; any early reuse shows as changed content."""
    pool = BufferPool(size=SIZE, keep=33)
    engine = BlockTransfer(TransferConfig(16, 32), name="t", policy=RetryPolicy(attempts=1))
    rng = random.Random(7)

    def work(index: int) -> BlockBody:
        buf = pool.take()
        buf[:] = content(index)
        if rng.random() < 0.3:
            time.sleep(0.0005)
        return BlockBody(index, buf, hashlib.sha256(buf).digest())

    count = 3000
    seen = 0
    for body in _recycling(engine.map(range(count), work), pool.give):
        first = bytes(body.data)
        time.sleep(0)  # let the workers run (and fill any buffer released too early)
        if body.index % 50 == 0:
            time.sleep(0.002)
        assert body.index == seen
        assert first == content(body.index) == bytes(body.data), f"block {body.index} overwritten"
        seen += 1
    assert seen == count
    assert pool.created <= 32 + 16 + 1, f"{pool.created} buffers for a window of 32: not recycled"


def test_recycling_keeps_the_last_block_when_the_caller_stops() -> None:
    pool = BufferPool(size=SIZE, keep=8)
    bodies: Iterator[BlockBody] = iter([BlockBody(i, pool.take(), b"") for i in range(3)])
    gen = _recycling(bodies, pool.give)
    first = next(gen)
    second = next(gen)  # the caller came back: the first block is released
    assert isinstance(first.data, PoolBuffer) and not first.data.lent
    gen.close()  # the caller stopped holding the second: not released
    assert isinstance(second.data, PoolBuffer) and second.data.lent


def _reader(response: bytes, pool: BufferPool) -> tuple[BlockClient, socket.socket]:
    """A BlockClient whose connection is one end of a socketpair holding `response`."""
    ours, theirs = socket.socketpair()
    theirs.sendall(response)
    theirs.close()
    client = BlockClient.__new__(BlockClient)
    client._local = threading.local()
    client._local.sock = ours
    client._local.head = bytearray(16384)
    client._ssl = None
    client.pool = pool
    return client, ours


def test_a_body_that_breaks_off_gives_its_buffer_back() -> None:
    pool = BufferPool(size=SIZE, keep=4)
    head = f"HTTP/1.1 200 OK\r\nContent-Length: {SIZE}\r\n\r\n".encode()
    client, sock = _reader(head + content(1)[: SIZE // 2], pool)
    status, _fields, data, got = client._read_response(sock, pool)
    assert (status, got) == (200, SIZE // 2)
    assert isinstance(data, PoolBuffer) and data.lent  # lent to the caller (get), which checks got
    client.release(data)
    assert pool.take() is data  # back in the pool, reused


def test_a_reset_mid_body_gives_the_buffer_back_and_raises() -> None:
    pool = BufferPool(size=SIZE, keep=4)

    class Breaks:
        def __init__(self) -> None:
            self.calls = 0

        def recv_into(self, view: memoryview, n: int = 0, flags: int = 0) -> int:
            self.calls += 1
            if self.calls == 1:
                head = f"HTTP/1.1 200 OK\r\nContent-Length: {SIZE}\r\n\r\n".encode()
                view[: len(head)] = head
                return len(head)
            raise ConnectionResetError("reset by peer")

    client, _sock = _reader(b"", pool)
    try:
        client._read_response(Breaks(), pool)  # type: ignore[arg-type]
    except ConnectionResetError:
        pass
    else:
        raise AssertionError("a reset must raise")
    assert len(pool._free) == 1 and not pool._free[0].lent


def test_an_error_status_or_odd_length_is_not_received_into_the_pool() -> None:
    pool = BufferPool(size=SIZE, keep=4)
    for status, length in ((500, SIZE), (200, SIZE - 1)):
        body = b"x" * length
        head = f"HTTP/1.1 {status} X\r\nContent-Length: {length}\r\n\r\n".encode()
        client, sock = _reader(head + body, pool)
        _status, _fields, data, got = client._read_response(sock, pool)
        assert not isinstance(data, PoolBuffer) and bytes(data[:got]) == body
    assert pool.created == 0


def test_a_real_download_through_recycled_buffers_is_exact(sim: RunningSimulator) -> None:
    """Against the simulator: 96 distinct blocks read through 8 connections and a window of
    8; every block as written, buffers recycled (far fewer buffers than blocks)."""
    from bacula_ec2.aws.client import Aws

    block = 512 * 1024
    sim.client.set_options(snapshot_delay=0)
    volume = sim.client.create_volume(1)
    blocks = 96
    expected = {}
    data = bytearray()
    for i in range(blocks):
        chunk = content(i, block)
        expected[i] = hashlib.sha256(chunk).digest()
        data += chunk
    sim.client.write_volume(volume, 0, bytes(data))
    aws = Aws(
        AwsSettings(
            access_key=ACCESS_KEY,
            secret_key=Secret(SECRET_KEY),
            region=DEFAULT_REGION,
            endpoint_url=sim.endpoint,
        ),
        policy=RetryPolicy(attempts=2, base_delay=0.0),
    )
    snap = aws.create_snapshot(volume, {"test": "buffers"}, "buffers").snapshot_id
    refs: list[BlockRef] = list(aws.list_snapshot_blocks(snap))
    down = BlockDownloader(aws, TransferConfig(8, 8))
    assert down.reader is not None, "the fast path must be used here"
    got = 0
    for body in down.fetch(snap, refs):
        assert hashlib.sha256(body.data).digest() == expected[body.index] == body.sha256
        got += 1
    assert got == blocks
    assert down.pool.created <= 8 + 8 + 1, down.pool.created


def test_a_stalled_body_times_out_after_the_read_timeout_and_is_retryable() -> None:
    """The block sockets are blocking, their timeouts kept by the kernel (SO_RCVTIMEO):
    a server that sends half a block and then nothing ends the attempt after the read
    timeout with a retryable error naming the host, the buffer given back, the connection
    dropped (not left half-read for the next request)."""
    from types import SimpleNamespace

    from botocore.credentials import Credentials

    from bacula_ec2.retry import Retryable

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    block = 512 * 1024
    held: list[socket.socket] = []

    def serve() -> None:
        conn, _ = listener.accept()
        held.append(conn)
        conn.recv(65536)
        conn.sendall(f"HTTP/1.1 200 OK\r\nContent-Length: {block}\r\n\r\n".encode() + b"x" * (block // 2))

    threading.Thread(target=serve, daemon=True).start()
    aws = SimpleNamespace(
        ebs=SimpleNamespace(meta=SimpleNamespace(endpoint_url=f"http://127.0.0.1:{port}")),
        credentials=Credentials("AKIDEXAMPLE", "secret"),
        region="us-east-1",
        read_timeout=0.4,
        connect_timeout=2.0,
    )
    pool = BufferPool(keep=4)
    client = BlockClient(aws, pool=pool)  # type: ignore[arg-type]
    started = time.monotonic()
    try:
        client.get("snap-0123456789abcdef0", BlockRef(7, "token"))
    except Retryable as exc:
        assert "no data from 127.0.0.1 for 0.4 s" in str(exc) and "block 7" in str(exc)
    else:
        raise AssertionError("a stalled body must fail the attempt")
    finally:
        listener.close()
        for conn in held:
            conn.close()
    assert 0.35 <= time.monotonic() - started < 5.0
    assert client._local.sock is None  # dropped
    assert pool.created == 1 and len(pool._free) == 1 and not pool._free[0].lent
