"""The backend's stdout pipe to the FD and its D packet size (bacula_ec2/fdpipe.py).

The backend asks for a 1 MiB stdout pipe when it starts (docs/PERFORMANCE.md, "The
real-FD path"); the diagnostic variables BACULA_EC2_PIPE_SIZE / BACULA_EC2_DATA_PACKET
override that, a bad value fails the job naming the variable, and a backup written in
split D packets restores byte for byte from the records a real FD would make of them.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from bacula_ec2 import fdpipe
from bacula_ec2.backend import PLUGIN_API
from devkit.driver import backend, spawn_backend
from protocol import Mode

from .common import BLOCK, params

_HELLO_TEXT = f"Hello ec2 {PLUGIN_API}\n".encode()
HELLO = b"C%06d\n" % len(_HELLO_TEXT) + _HELLO_TEXT


def _start(env_extra: dict[str, str]) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BACULA_EC2_")}
    env.update(env_extra)
    return spawn_backend(env)


def _first_reply(env_extra: dict[str, str]) -> tuple[bytes, int | None, int | None]:
    """Start the backend on pipes, send a Hello, read its first packet; return that packet,
    the stdout pipe's size before the start and the size once the backend has answered."""
    proc = _start(env_extra)
    assert proc.stdin and proc.stdout
    before = fdpipe.pipe_size(proc.stdout.fileno())
    try:
        proc.stdin.write(HELLO)
        proc.stdin.flush()
        header = proc.stdout.read(8)
        packet = header + proc.stdout.read(int(header[1:7]))
        after = fdpipe.pipe_size(proc.stdout.fileno())
    finally:
        proc.stdin.close()
        proc.stdout.read()
        assert proc.wait(timeout=30) == 0
        assert proc.stderr is not None and proc.stderr.read() == b""
    return packet, before, after


def _can_have(size: int) -> bool:
    return os.geteuid() == 0 or int(Path("/proc/sys/fs/pipe-max-size").read_text()) >= size


@pytest.mark.skipif(not _can_have(fdpipe.DEFAULT_PIPE_SIZE), reason="pipe-max-size below 1 MiB")
def test_backend_raises_its_stdout_pipe_to_1_mib() -> None:
    packet, before, after = _first_reply({})
    assert packet.startswith(b"C") and b"Hello Bacula" in packet, packet
    assert before == 65536  # what the kernel gives the FD's pipe
    assert after == fdpipe.DEFAULT_PIPE_SIZE == 1 << 20


def test_pipe_size_variable_overrides_and_zero_leaves_the_pipe() -> None:
    _packet, before, after = _first_reply({fdpipe.PIPE_SIZE_ENV: "0"})
    assert after == before == 65536
    _packet, _before, after = _first_reply({fdpipe.PIPE_SIZE_ENV: "256K"})
    assert after == 256 << 10


@pytest.mark.parametrize(
    ("name", "value"),
    [
        (fdpipe.DATA_PACKET_ENV, "100"),  # below 4096
        (fdpipe.DATA_PACKET_ENV, "1M"),  # above 999999
        (fdpipe.PIPE_SIZE_ENV, "lots"),
    ],
)
def test_bad_diagnostic_value_is_an_abort_naming_it(name: str, value: str) -> None:
    packet, _before, _after = _first_reply({name: value})
    assert packet.startswith(b"A"), packet
    assert name.encode() in packet and repr(value).encode() in packet


def test_sizes_parse_and_pipe_setting_never_fails(tmp_path: Path) -> None:
    t = fdpipe.from_environ({fdpipe.PIPE_SIZE_ENV: "64KiB", fdpipe.DATA_PACKET_ENV: "999999"})
    assert t == fdpipe.DataTuning(pipe_size=65536, packet=999_999)
    assert fdpipe.from_environ({}) == fdpipe.DataTuning(pipe_size=1 << 20, packet=999_999)
    assert fdpipe.from_environ({fdpipe.DATA_PACKET_ENV: " 128k "}).packet == 128 << 10
    with (tmp_path / "f").open("wb") as fh:  # not a pipe: nothing set, nothing raised
        assert fdpipe.set_pipe_size(fh.fileno(), 1 << 20) is None
    r, w = os.pipe()
    try:
        # 2**40 would wrap to 0 in the kernel's unsigned int (a one-page pipe): not asked.
        assert fdpipe.set_pipe_size(w, 1 << 40) == 65536
        assert fdpipe.set_pipe_size(w, 200_000) == 256 << 10  # rounded up to pages, a power of 2
    finally:
        os.close(r)
        os.close(w)


def test_split_packets_restore_byte_exact(sim, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """A backup in 100,000-byte D packets (not a multiple of anything the image uses),
    restored from the records a real FD stores: each packet cut at its 65536-byte buffer."""
    inst = sim.client.create_instance("split-1", volumes=[{"size_gib": 1, "device": "/dev/sda1"}])
    (vid,) = inst["volume_ids"]
    iid = inst["instance_id"]
    sim.client.write_volume(vid, 0, os.urandom(5 * BLOCK + 777))
    sim.client.write_volume(vid, 300 * BLOCK + 3, os.urandom(1000))
    want = sim.client.volume_sha256(vid)
    monkeypatch.setenv(fdpipe.DATA_PACKET_ENV, "100000")
    packets: dict[str, list[int]] = {}
    with backend(Mode.BACKUP, params(sim.endpoint, "instances=split-1"), tmp_path) as be:
        reader = be.peer.conn.reader
        real = reader.read_header
        sizes: list[int] = []

        def note(*a: Any, **kw: Any) -> tuple[str, int]:
            got = real(*a, **kw)
            if got[0] == "D":
                sizes.append(got[1])
            return got

        reader.read_header = note  # type: ignore[method-assign]
        items = be.peer.read_items(data_phase=True)
        be.peer.end()
        be.peer.terminate()
        assert be.process.wait() == 0 and be.stderr() == b""
    monkeypatch.delenv(fdpipe.DATA_PACKET_ENV)
    assert sizes and max(sizes) == 100_000 and 100_000 in sizes
    assert sum(sizes) == sum(it.data_len for it in items)
    # Which packets belong to which file: in stream order, data_packets per item.
    pos = 0
    for it in items:
        packets[it.name] = sizes[pos : pos + it.data_packets]
        pos += it.data_packets
    bimg = next(it for it in items if it.name.endswith(".bimg"))
    assert len(packets[bimg.name]) > 1 and all(n <= 100_000 for n in packets[bimg.name])

    where = tmp_path / "restore"
    with backend(Mode.RESTORE, ["region=us-east-1"], tmp_path, where=str(where)) as be:
        for it in items:
            stat = f"{it.type} {it.size} 0 0 {it.mode:06o} 1 0"
            assert be.peer.restore_file(str(where) + it.name, stat, it.times) == "OK"
            if it.data:
                data, records, off = bytes(it.data), [], 0
                for n in packets[it.name]:  # the FD: one record per read of <= 65536 bytes
                    records += [data[off + k : off + min(n, k + 65536)] for k in range(0, n, 65536)]
                    off += n
                assert off == len(data)
                assert be.peer.send_data(records) == "OK", be.peer.messages
        be.peer.finish()
        be.peer.end()
        be.peer.terminate()
        assert be.stderr() == b""
        assert not [m for m in be.peer.messages if m[0] in ("E", "Q", "A")], be.peer.messages
    image = where / "@amazon-ec2" / iid / f"{vid}-sda1-1G.img"
    digest = hashlib.sha256()
    with image.open("rb") as fh:
        while chunk := fh.read(1 << 22):
            digest.update(chunk)
    assert digest.hexdigest() == want
