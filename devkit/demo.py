"""`make demo`: one Full backup and one local restore through a real Bacula 15.0.3 stack.

Starts the AWS simulator and a Director/SD/FD on 127.0.0.1 in a temporary directory,
seeds an instance with two volumes, backs it up with `Plugin = "ec2: ..."`, restores it to
raw images, checks their SHA-256 against the snapshots, and says what it did.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

from devkit.harness import BaculaStack, ensure_build
from devkit.helpers import sha256_file
from devkit.simulator.fixtures import ACCESS_KEY, start_simulator, stop_simulator

BLOCK = 524288
SECRET_KEY = "demo/" + os.urandom(12).hex()  # the simulator accepts any key pair


def say(text: str) -> None:
    print(f"demo: {text}", flush=True)


def main() -> int:
    keep = os.environ.get("DEMO_KEEP") == "1"
    say("building or reusing the cached Bacula 15.0.3 and ec2-fd.so ...")
    build = ensure_build()
    sim = start_simulator()
    workdir = Path(tempfile.mkdtemp(prefix="bacula-ec2-demo-"))
    try:
        say(f"AWS simulator at {sim.endpoint}")
        inst = sim.client.create_instance(
            "demo-web",
            volumes=[{"size_gib": 1, "device": "/dev/sda1"}, {"size_gib": 2, "device": "/dev/xvdf"}],
            tags={"env": "demo"},
        )
        root, data = inst["volume_ids"]
        sim.client.write_volume(root, 0, os.urandom(4 * BLOCK))
        sim.client.write_volume(root, 100 * BLOCK, bytes(BLOCK))
        sim.client.write_volume(data, 1 << 30, os.urandom(3 * BLOCK))
        say(f"instance {inst['instance_id']} 'demo-web': {root} (sda1, 1 GiB), {data} (xvdf, 2 GiB)")

        plugin = (
            f"ec2: region=us-east-1 endpoint_url={sim.endpoint} access_key={ACCESS_KEY} "
            f"secret_key={SECRET_KEY} instances=demo-web"
        )
        with BaculaStack(
            workdir / "bacula", [plugin], prefix=build.prefix, plugin_so=build.plugin_so
        ) as stack:
            shown = plugin.replace(SECRET_KEY, "***")
            say(f'Bacula DIR/SD/FD running under {workdir}/bacula, FileSet: Plugin = "{shown}"')
            t0 = time.monotonic()
            jobid = stack.run_job(level="Full", timeout=300)
            log = stack.job_log(jobid)
            if "Backup OK" not in log:
                say("the backup failed:\n" + log)
                return 1
            say(f"Full backup job {jobid}: Backup OK in {time.monotonic() - t0:.1f} s")
            for line in log.splitlines():
                if "ec2:" in line and ("volume" in line or "snapshots" in line):
                    say("  " + line.split("ec2:", 1)[1].strip())
            for path in stack.list_files(jobid):
                say(f"  catalog: {path}")
            where = workdir / "restore"
            rjobid, status = stack.restore(jobid, where=where, timeout=300)
            if status != "T":
                say("the restore failed:\n" + stack.job_log(rjobid))
                return 1
            say(f"restore job {rjobid}: Restore OK into {where}")
            snaps = {s["volume_id"]: s["id"] for s in sim.client.snapshots()}
            for image in sorted(where.rglob("*.img")):
                vid = image.name.split("-")[0] + "-" + image.name.split("-")[1]
                ok = sha256_file(image) == sim.client.snapshot_sha256(snaps[vid])
                say(
                    f"  {image.name}: {image.stat().st_size >> 20} MiB sparse raw image, "
                    f"SHA-256 {'matches' if ok else 'DOES NOT MATCH'} snapshot {snaps[vid]}"
                )
                if not ok:
                    return 1
        say("done: backup and restore verified byte for byte")
        return 0
    finally:
        stop_simulator(sim)
        if keep:
            say(f"kept {workdir}")
        else:
            import shutil

            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
