"""A file-level restore through real Bacula against a whole-image restore of the same chain.

    .venv/bin/python -m bench.file_restore [--volume-gib 100] [--fs-gib 2] [--bulk-mib 48]

The volume is bench/guest_read.py's: a sparse `--volume-gib` GPT disk whose p1 is an ext4
of `--fs-gib` (/etc with about 300 files, a 1 MiB /home/app/data/one-mib.bin, `--bulk-mib`
of other data), written to a simulated EBS volume, backed up Full by a real Bacula 15.0.3
stack (DIR/SD/FD on 127.0.0.1, ec2-fd.so and the backend); then the filesystem is changed
with `debugfs -w` and the changed blocks written, and an Incremental runs. Both restores
take the same chain (`select current`, the Full and the Incremental):

- whole image: `where=/dir`, a sparse raw image of the volume;
- files: `restore_as=files`, `restore_files=/home/app/data/one-mib.bin` (Plugin Options).

Time: from bconsole's "Job queued" to the job's final status in the catalog (polled every
0.1-0.5 s), so both include the same Bacula overhead (job start, SD mount, the parts
streamed); the files restore adds the guest reader's work and the removal of its staging.
Also shown: the bytes the SD sent (the job's "Bytes Restored"). The table goes to stdout
and to bench/results/file_restore-<time>.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bacula_ec2.params import restore_option_items  # noqa: E402
from bench.guest_read import PART_START, make_tree  # noqa: E402
from devkit import guestdisks as gd  # noqa: E402
from devkit.harness import BaculaStack, ensure_build  # noqa: E402
from devkit.simulator.fixtures import ACCESS_KEY, start_simulator, stop_simulator  # noqa: E402

GIB, MIB = 1 << 30, 1 << 20
BLOCK = 524288
SECRET = "bench/" + os.urandom(8).hex()


def restore(stack: BaculaStack, where: Path, options: dict[str, str]) -> tuple[float, str]:
    names = [name for name, *_ in restore_option_items()]
    commands = [
        f"restore client={stack.client} fileset={stack.fileset} select current all done where={where}"
    ]
    if options:
        commands += ["mod", "13"]
        for key, value in options.items():
            commands += ["mod", str(names.index(key) + 1), value]
        commands += ["yes"]
    commands += ["yes"]
    t = time.monotonic()
    out = stack.bconsole(*commands)
    match = re.search(r"Job queued\. JobId=(\d+)", out)
    assert match, out
    status = stack.wait_job(int(match.group(1)), timeout=1800)
    took = time.monotonic() - t
    log = stack.job_log(int(match.group(1)))
    assert status == "T", log
    got = re.search(r"Bytes Restored:\s+([\d,]+)", log)
    return took, got.group(1) if got else "?"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--volume-gib", type=int, default=100)
    ap.add_argument("--fs-gib", type=int, default=2)
    ap.add_argument("--bulk-mib", type=int, default=48)
    args = ap.parse_args()
    build = ensure_build()
    sim = start_simulator()
    try:
        with tempfile.TemporaryDirectory(prefix="bench-file-restore-") as tmp:
            base = Path(tmp)
            tree = base / "tree"
            make_tree(tree, args.bulk_mib)
            fs1, fs2 = base / "fs1.img", base / "fs2.img"
            with open(fs1, "wb") as fh:
                fh.truncate(args.fs_gib * GIB)
            subprocess.run(["mkfs.ext4", "-q", "-F", "-b", "4096", "-d", str(tree), str(fs1)], check=True)
            subprocess.run(["cp", "--sparse=always", str(fs1), str(fs2)], check=True)
            changed = base / "changed.bin"
            changed.write_bytes(gd._pattern(12, MIB))
            for cmd in ("rm /home/app/data/one-mib.bin", f"write {changed} /home/app/data/one-mib.bin"):
                subprocess.run(["debugfs", "-w", "-R", cmd, str(fs2)], check=True, capture_output=True)
            disk = base / "disk.img"
            with open(disk, "wb") as fh:
                fh.truncate(args.fs_gib * GIB + 2 * MIB)
            script = f"label: gpt\nstart={PART_START // 512}, size={args.fs_gib * GIB // 512}, type=L\n"
            subprocess.run(
                ["sfdisk", "-q", str(disk)], input=script.encode(), check=True, capture_output=True
            )
            gd._sparse_copy(fs1, disk, PART_START)
            inst = sim.client.create_instance(
                "bench-files", volumes=[{"size_gib": args.volume_gib, "device": "/dev/xvda"}]
            )
            vid = inst["volume_ids"][0]
            for index, data in gd.image_blocks(disk, BLOCK):
                sim.client.write_volume(vid, index * BLOCK, data)
            line = (
                f"ec2: region=us-east-1 endpoint_url={sim.endpoint} access_key={ACCESS_KEY} "
                f"secret_key={SECRET} instances=bench-files"
            )
            with BaculaStack(
                base / "bacula", [line], prefix=build.prefix, plugin_so=build.plugin_so
            ) as stack:
                assert "Backup OK" in stack.job_log(stack.run_job("Full", timeout=1800))
                time.sleep(1.1)
                for index, data in gd.changed_blocks(fs1, fs2, BLOCK):
                    payload = data if data is not None else bytes(BLOCK)
                    sim.client.write_volume(vid, PART_START + index * BLOCK, payload)
                assert "Backup OK" in stack.job_log(stack.run_job("Incremental", timeout=1800))
                image_s, image_bytes = restore(stack, base / "image", {})
                files_s, files_bytes = restore(
                    stack,
                    base / "files",
                    {"restore_as": "files", "restore_files": "/home/app/data/one-mib.bin"},
                )
                got = next((base / "files").rglob("one-mib.bin")).read_bytes()
                assert got == changed.read_bytes(), "the restored file is not the Incremental's"
    finally:
        stop_simulator(sim)
    lines = [
        f"# file_restore: {args.volume_gib} GiB volume, ext4 of {args.fs_gib} GiB, Full + Incremental, "
        "real Bacula",
        "",
        "| restore | seconds (queued to final status) | bytes the SD sent |",
        "|---|---:|---:|",
        f"| whole image (where=/dir) | {image_s:.1f} | {image_bytes} |",
        f"| one 1 MiB file (restore_as=files) | {files_s:.1f} | {files_bytes} |",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    results = REPO / "bench" / "results"
    results.mkdir(exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    (results / f"file_restore-{stamp}.md").write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
