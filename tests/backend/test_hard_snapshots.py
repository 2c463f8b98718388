"""The backup's snapshot lifecycle through the real backend process against the simulator's
hard mode (`aws_hard`, docs/SIMULATOR.md): snapshots that take time in proportion to the
data written, and EC2's eventual consistency: each instance is read as soon as its own
snapshots are completed (the fast one first, whatever the selection order), every image
exact, every snapshot committed.

The snapshot quotas are waited out 15-30 s at a time: tests/unit/test_backup_pipeline.py
checks the three codes, the budget and the cancel on a fake clock, and
tests/e2e/test_hard_mode.py runs a chain through real Bacula whose jobs follow each other
within the 15 s per-volume interval.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from devkit.driver import backend
from devkit.jobkit import image_blocks
from protocol import Mode

from .common import BLOCK, params


def fleet(sim, mib: list[int]) -> list[tuple[str, list[str]]]:  # type: ignore[no-untyped-def]
    """Instances with two 1 GiB volumes each, in instance id order (the order the job selects
    them in): the n-th gets `mib[n]` MiB on its first volume."""
    made = [
        sim.client.create_instance(
            f"web-{n}", volumes=[{"size_gib": 1, "device": d} for d in ("/dev/sda1", "/dev/xvdf")]
        )
        for n in range(len(mib))
    ]
    out = []
    for inst, size in zip(sorted(made, key=lambda i: i["instance_id"]), mib, strict=True):
        root, data = inst["volume_ids"]
        sim.client.write_volume(root, 0, os.urandom(size << 20))
        sim.client.write_volume(data, 3 * BLOCK, os.urandom(BLOCK))
        out.append((inst["instance_id"], inst["volume_ids"]))
    return out


def run_backup(sim, tmp: Path, selection: str):  # type: ignore[no-untyped-def]
    with backend(Mode.BACKUP, params(sim.endpoint, f"instances={selection}"), tmp, jobid=1, level="F") as be:
        items = be.peer.read_items(data_phase=True)
        be.peer.end()
        be.peer.terminate()
        assert be.stderr() == b""
        return items, list(be.peer.messages)


def image_sha256(data: bytes, size: int) -> str:
    """The SHA-256 of the disk a block image restores (unwritten blocks read as zeros)."""
    _header, blocks = image_blocks(data)
    digest = hashlib.sha256()
    zero = bytes(BLOCK)
    for index in range(size // BLOCK):
        block = blocks.get(index)
        digest.update(zero if block is None else block)
    return digest.hexdigest()


def test_the_instance_whose_snapshots_complete_first_is_read_first(sim, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    sim.client.set_options(aws_hard=True, tls=False, snapshot_mib_per_s=8.0)
    # the first selected ~6 s, the second ~0.1 s
    (slow, slow_vols), (fast, fast_vols) = fleet(sim, [48, 1])
    held = {v: sim.client.volume_sha256(v) for v in slow_vols + fast_vols}
    items, messages = run_backup(sim, tmp_path, f"{slow},{fast}")
    assert not [m for m in messages if m[0] in "EAQW"], messages
    files = [it.name for it in items if it.kind == "file"]
    first_of = {iid: min(i for i, name in enumerate(files) if iid in name) for iid in (slow, fast)}
    last_of = {iid: max(i for i, name in enumerate(files) if iid in name) for iid in (slow, fast)}
    assert last_of[fast] < first_of[slow], files  # the fast one entirely before the slow one
    images = {it.name: it for it in items if it.name.endswith(".bimg")}
    assert len(images) == 4
    for vid, sha in held.items():
        [item] = [it for name, it in images.items() if vid in name]
        assert image_sha256(item.data, 1 << 30) == sha, vid  # type: ignore[attr-defined]
    snaps = sim.client.snapshots()
    assert len(snaps) == 4 and all(s["tags"]["bacula-ec2:state"] == "base" for s in snaps)
