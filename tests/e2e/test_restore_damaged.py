"""End to end through real Bacula: a Full + Incremental chain whose Incremental was damaged
on the Storage Daemon's File volume ends in "Restore Error", naming the damaged part, and
leaves no image (issue 9).

The damage is one flipped byte inside the Incremental's block data. The SD checks every
block of its volume against an XXH3-64 checksum (BB03 block header) and would refuse the
block itself; the test recomputes that checksum with the XXH3 of Bacula's own libbac, so
the damaged bytes reach the backend as they would from a volume damaged before Bacula
wrote it, or from a storage that lies: the backend's own verification (every block's
SHA-256) must catch them.
"""

from __future__ import annotations

import ctypes
import os
import struct
from collections.abc import Callable
from pathlib import Path

from devkit.harness import BaculaBuild

from .common import BLOCK, plugin_line, restore_before

HEADER = 32  # BB03 header: options, len, number, id, session id, session time, xxh3-64


def _xxh3(build: BaculaBuild) -> Callable[[bytes], int]:
    """XXH3-64 as the SD computes it (libbac's XXH3_64bits)."""
    lib = ctypes.CDLL(str(build.prefix / "lib" / "libbac.so"))
    fn = lib.XXH3_64bits
    fn.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
    fn.restype = ctypes.c_uint64
    return lambda data: int(fn(data, len(data)))


def blocks(volume: bytes) -> list[tuple[int, int]]:
    """(offset, length) of every block of a File volume (blocks follow each other)."""
    out, pos = [], 0
    while pos + HEADER <= len(volume):
        length = struct.unpack_from(">I", volume, pos + 4)[0]
        assert volume[pos + 12 : pos + 16] == b"BB03", f"block header expected at {pos}"
        assert HEADER <= length <= len(volume) - pos
        out.append((pos, length))
        pos += length
    assert pos == len(volume), "the volume must end with a whole block"
    return out


def checksum(xxh3: Callable[[bytes], int], block: bytes) -> int:
    """The block's checksum: XXH3-64 of the whole block with the checksum field zeroed."""
    return xxh3(block[:24] + bytes(8) + block[32:])


def test_damaged_incremental_on_the_sd_ends_in_restore_error_with_no_image(  # type: ignore[no-untyped-def]
    sim, bacula_stack, bacula_build: BaculaBuild, tmp_path: Path
) -> None:
    inst = sim.client.create_instance("damaged-web", volumes=[{"size_gib": 1, "device": "/dev/sda1"}])
    iid, vid = inst["instance_id"], inst["volume_ids"][0]
    sim.client.write_volume(vid, 0, os.urandom(2 * BLOCK))
    stack = bacula_stack([plugin_line(sim.endpoint, "instances=damaged-web")])
    full = stack.run_job(level="Full", timeout=180)
    assert "Backup OK" in stack.job_log(full)
    payload = os.urandom(BLOCK)
    sim.client.write_volume(vid, 40 * BLOCK, payload)
    inc = stack.run_job(level="Incremental", timeout=180)
    assert "Backup OK" in stack.job_log(inc)

    # Find the Incremental's new block in the SD's volume file and flip one byte of it.
    xxh3 = _xxh3(bacula_build)
    needle = payload[BLOCK // 2 : BLOCK // 2 + 64]
    volumes = sorted(p for p in stack.storage_dir.iterdir() if p.is_file())
    hits = [(p, p.read_bytes().find(needle)) for p in volumes]
    path, at = next((p, i) for p, i in hits if i >= 0)
    data = bytearray(path.read_bytes())
    assert data.count(needle) == 1
    layout = blocks(bytes(data))
    for off, length in layout[:3]:  # our XXH3 is the SD's: it matches untouched blocks
        assert checksum(xxh3, bytes(data[off : off + length])) == struct.unpack_from(">Q", data, off + 24)[0]
    off, length = next((o, n) for o, n in layout if o + HEADER <= at < o + n)
    data[at + 10] ^= 0x20
    struct.pack_into(">Q", data, off + 24, checksum(xxh3, bytes(data[off : off + length])))
    path.write_bytes(bytes(data))

    where = tmp_path / "restore"
    rjobid, status = restore_before(stack, "2099-01-01 00:00:00", where)
    log = stack.job_log(rjobid)
    assert status in ("E", "e", "f"), log
    assert "Restore Error" in log, log
    assert f"{vid}-sda1-1G.I{inc}.bimg" in log and "SHA-256" in log, log
    left = [p for p in where.rglob("*") if p.is_file() and (p.suffix == ".img" or p.name.startswith("."))]
    assert not left, left
    assert (where / "@amazon-ec2" / iid / f"{iid}.json").is_file(), (
        "the healthy files of the job are restored"
    )
