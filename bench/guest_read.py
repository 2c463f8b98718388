"""Bytes a file-level restore reads from a bec2 folder: `ls /etc` and one 1 MiB file, from a
Full + Incremental chain of a 100 GiB volume.

    .venv/bin/python -m bench.guest_read [--volume-gib 100] [--fs-gib 2] [--bulk-mib 48]

The volume: a sparse `--volume-gib` disk with a GPT whose p1 is an ext4 of `--fs-gib`
(mkfs.ext4 -d, 4 KiB blocks) holding /etc (about 300 files in 30 directories), a 1 MiB
file /home/app/data/one-mib.bin and `--bulk-mib` of other data under /var/bulk. The Full
holds every block of the disk that is not zeros; then the filesystem is changed with
`debugfs -w` (a file written in /etc, one removed, the 1 MiB file rewritten) and the
Incremental holds the blocks that differ. Both are written as complete backups of a bec2
folder through `jobs.folder` (its writer and manifest; devkit/guestdisks.folder_backup).

Measured through `jobs.chainview.open_folder_chain` (the plan and checks of a bec2
restore, then the index of the chain from the parts' record headers) and the chain view's
byte counter (every byte read from the part files: headers, record headers, blocks):

- `open`: the folder plan, its checks, the chain index (no block data);
- `ls /etc`: partition table, superblock, group descriptors, the inodes and directory
  blocks of / and /etc, the inodes of /etc's entries;
- `restore one-mib.bin`: a fresh view, the path looked up and the file extracted
  (its data comes from the Incremental).

A whole-image restore reads every byte of both parts (their sizes are shown). Not in the
counter: `folder.check_plan` reads the first 64 KiB of each part to check its header
against the manifest (one read per part). The table goes to stdout and to
bench/results/guest_read-<time>.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bacula_ec2.formats.blockimage import BLOCK_SIZE  # noqa: E402
from bacula_ec2.guest import extract, open_disk, parse_patterns  # noqa: E402
from bacula_ec2.guest.extraction import select  # noqa: E402
from bacula_ec2.jobs.chainview import open_folder_chain  # noqa: E402
from devkit import guestdisks as gd  # noqa: E402

GIB, MIB = 1 << 30, 1 << 20
PART_START = MIB


def make_tree(root: Path, bulk_mib: int) -> None:
    for d in range(30):
        for f in range(10):
            path = root / f"etc/conf{d:02d}.d/file{f}.conf"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(f"# {d} {f}\n".encode() * (5 + 7 * f))
    (root / "etc/hostname").write_bytes(b"bench\n")
    (root / "home/app/data").mkdir(parents=True)
    (root / "home/app/data/one-mib.bin").write_bytes(gd._pattern(11, MIB))
    (root / "var/bulk").mkdir(parents=True)
    for i in range(max(1, bulk_mib // 8)):
        (root / f"var/bulk/chunk{i}.bin").write_bytes(gd._pattern(100 + i, 8 * MIB))


def shifted(blocks: Iterable[tuple[int, bytes | None]], by: int) -> Iterator[tuple[int, bytes | None]]:
    """Partition block indexes as disk block indexes (the partition starts on a block)."""
    return ((i + by, d) for i, d in blocks)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--volume-gib", type=int, default=100)
    ap.add_argument("--fs-gib", type=int, default=2)
    ap.add_argument("--bulk-mib", type=int, default=48)
    args = ap.parse_args()
    size = args.volume_gib * GIB
    bs = BLOCK_SIZE
    with tempfile.TemporaryDirectory(prefix="bench-guest-") as tmp:
        base = Path(tmp)
        tree = base / "tree"
        make_tree(tree, args.bulk_mib)
        fs1, fs2, disk = base / "fs1.img", base / "fs2.img", base / "disk.img"
        with open(fs1, "wb") as fh:
            fh.truncate(args.fs_gib * GIB)
        t = time.monotonic()
        subprocess.run(["mkfs.ext4", "-q", "-F", "-b", "4096", "-d", str(tree), str(fs1)], check=True)
        subprocess.run(["cp", "--sparse=always", str(fs1), str(fs2)], check=True)
        new = base / "new.conf"
        new.write_bytes(b"# written for the Incremental\n")
        changed = base / "changed.bin"
        changed.write_bytes(gd._pattern(12, MIB))
        for cmd in (
            f"write {new} /etc/app.conf",
            "rm /etc/conf00.d/file0.conf",
            "rm /home/app/data/one-mib.bin",
            f"write {changed} /home/app/data/one-mib.bin",
        ):
            subprocess.run(["debugfs", "-w", "-R", cmd, str(fs2)], check=True, capture_output=True)
        with open(disk, "wb") as fh:
            fh.truncate(size)
        script = f"label: gpt\nstart={PART_START // 512}, size={args.fs_gib * GIB // 512}, type=L\n"
        subprocess.run(["sfdisk", "-q", str(disk)], input=script.encode(), check=True, capture_output=True)
        gd._sparse_copy(fs1, disk, PART_START)
        folder = base / "folder"
        t0 = dt.datetime(2026, 12, 1, 10, 0, tzinfo=dt.UTC)
        full = gd.PartSpec("vol-0bench00000000001", size, "snap-0full", t0.strftime("%Y-%m-%dT%H:%M:%SZ"))
        full_path = gd.folder_backup(folder, full, gd.image_blocks(disk, bs), started=t0.timestamp())
        t1 = t0 + dt.timedelta(days=1)
        incr = gd.PartSpec(
            full.volume_id, size, "snap-1incr", t1.strftime("%Y-%m-%dT%H:%M:%SZ"), level="I",
            base_snapshot_id=full.snapshot_id, base_created=full.created, job_id=2, chain_position=1,
        )  # fmt: skip
        blocks = gd.changed_blocks(fs1, fs2, bs)
        incr_path = gd.folder_backup(folder, incr, shifted(blocks, PART_START // bs), started=t1.timestamp())
        build_s = time.monotonic() - t
        full_size, incr_size = os.path.getsize(full_path), os.path.getsize(incr_path)

        rows = []
        t = time.monotonic()
        view = open_folder_chain(str(folder))
        rows.append(
            ("open (plan, checks, chain index)", view.bytes_read, view.blocks_read, time.monotonic() - t)
        )
        before, blocks_before = view.bytes_read, view.blocks_read
        t = time.monotonic()
        fs = open_disk(view).open_fs("p1")
        names = [e.name for e in fs.listdir("/etc")]
        rows.append(
            ("ls /etc", view.bytes_read - before, view.blocks_read - blocks_before, time.monotonic() - t)
        )
        view.close()
        assert "app.conf" in names and len(names) == 32, names

        view = open_folder_chain(str(folder))
        before, blocks_before = view.bytes_read, view.blocks_read
        out = base / "out"
        t = time.monotonic()
        disk_ = open_disk(view)
        report = extract(select(disk_, parse_patterns("/home/app/data/one-mib.bin")), str(out))
        rows.append(
            ("restore one-mib.bin (1 MiB)", view.bytes_read - before, view.blocks_read - blocks_before,
             time.monotonic() - t)
        )  # fmt: skip
        view.close()
        assert (out / "p1/home/app/data/one-mib.bin").read_bytes() == changed.read_bytes()
        assert report.files == 1
        shutil.rmtree(out)

    lines = [
        f"# guest_read: {args.volume_gib} GiB volume, ext4 of {args.fs_gib} GiB, block {bs // 1024} KiB",
        "",
        f"Parts: Full {full_size:,} bytes, Incremental {incr_size:,} bytes (a whole-image restore reads "
        f"{full_size + incr_size:,}); built in {build_s:.1f} s.",
        "",
        "| step | bytes read from the parts | blocks read | seconds |",
        "|---|---:|---:|---:|",
        *(f"| {name} | {n:,} | {b} | {s:.3f} |" for name, n, b, s in rows),
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    results = REPO / "bench" / "results"
    results.mkdir(exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    (results / f"guest_read-{stamp}.md").write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
