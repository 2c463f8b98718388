"""How long an estimate of a 1 TiB volume takes against the simulator in AWS-like mode.

    .venv/bin/python -m bench.estimate [--data-gib 6] [--changed 1000] [--window 10000]

A sparse 1 TiB volume (an instance `bench-est`) gets `--data-gib` of data in 32 MiB runs
spread over the volume (control API), then a snapshot (the Full's base, tagged as a
committed snapshot of Job `bench-est`), then `--changed` scattered blocks and a newer
snapshot. The simulator runs with `aws_like=True` (50 +/- 10 ms per request, 50 List
calls/s); snapshots complete at once (`snapshot_mib_per_s=0`: their copy time is not what
is measured). Timed, each three times, best and median:

- `full`: a Full estimate (jobs/estimate.py) in-process: DescribeInstances/Volumes/
  Snapshots, then ListSnapshotBlocks of the newest snapshot, page by page (10,000 a page);
- `incremental`: an Incremental estimate: ListChangedBlocks between the base and the newer
  snapshot (the simulator scans `changed_blocks_window` block indexes a page, as
  AWS pages through a sparse diff; `--window`: 1,024 by default, 2,048 pages for 1 TiB;
  10,000: 210 pages);
- `bec2`: `bec2 --operation=estimate` as a command (Python and boto3 start-up included);
- `listing`: ListSnapshotBlocks of the newer snapshot alone (10,000 entries a page), whose
  rate (entries/s) scales the Full to a fully allocated 1 TiB (2,097,152 blocks, 210 pages).

The table goes to stdout and to bench/results/estimate-<time>.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import boto3

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bacula_ec2.jobs.context import JobContext, connect  # noqa: E402
from bacula_ec2.jobs.estimate import Basis, estimate  # noqa: E402
from bacula_ec2.params import parse_parameters  # noqa: E402
from devkit.jobkit import Recorder, RecordingSink  # noqa: E402
from devkit.simulator.fixtures import ACCESS_KEY, SECRET_KEY, start_simulator, stop_simulator  # noqa: E402

BLOCK = 524288
TIB_BLOCKS = (1 << 40) // BLOCK
RUN = 32 << 20
JOB = "bench-est"
JOB_NAME = f"{JOB}.2026-12-01_12.00.00_01"


def timed(fn: Callable[[], object], repeat: int = 3) -> tuple[list[float], object]:
    times, out = [], None
    for _ in range(repeat):
        t0 = time.monotonic()
        out = fn()
        times.append(time.monotonic() - t0)
    return times, out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-gib", type=float, default=6.0, help="data written before the base snapshot")
    ap.add_argument("--changed", type=int, default=1000, help="blocks written between the two snapshots")
    ap.add_argument(
        "--window",
        type=int,
        default=None,
        help="changed_blocks_window (block indexes a ListChangedBlocks page scans; default the simulator's)",
    )
    args = ap.parse_args()

    options = {"aws_like": True, "snapshot_mib_per_s": 0, "snapshot_delay": 0.0}
    if args.window is not None:
        options["changed_blocks_window"] = args.window
    sim = start_simulator(options=options)
    try:
        client = sim.client
        inst = client.create_instance("bench-est", volumes=[{"size_gib": 1024, "device": "/dev/sda1"}])
        vid = inst["volume_ids"][0]
        runs = max(1, int(args.data_gib * (1 << 30)) // RUN)
        chunk = os.urandom(RUN)
        stride = (1 << 40) // runs // BLOCK * BLOCK
        for n in range(runs):
            client.write_volume(vid, n * stride, chunk)
        ec2 = boto3.client("ec2", **sim.boto3_kwargs("us-east-1"))

        def snapshot(tags: dict[str, str]) -> str:
            spec = [{"ResourceType": "snapshot", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}]
            sid = str(ec2.create_snapshot(VolumeId=vid, TagSpecifications=spec)["SnapshotId"])
            while ec2.describe_snapshots(SnapshotIds=[sid])["Snapshots"][0]["State"] != "completed":
                time.sleep(0.1)
            return sid

        base = snapshot(
            {"bacula-ec2:state": "base", "bacula-ec2:job": JOB, "bacula-ec2:jobname": JOB_NAME,
             "bacula-ec2:level": "F", "bacula-ec2:position": "0"}
        )  # fmt: skip
        base_start = ec2.describe_snapshots(SnapshotIds=[base])["Snapshots"][0]["StartTime"]
        time.sleep(1.1)
        step = TIB_BLOCKS // max(1, args.changed)
        for n in range(args.changed):
            client.write_volume(vid, (n * step + 7) * BLOCK, b"changed")
        newer = snapshot({})
        written = {n * stride // BLOCK + i for n in range(runs) for i in range(RUN // BLOCK)}
        window = client.options()["changed_blocks_window"]
        allocated = len(written | {n * step + 7 for n in range(args.changed)})

        env = {
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        }
        os.environ.update(env)
        params = parse_parameters(
            [("region", "us-east-1"), ("endpoint_url", sim.endpoint), ("instances", "bench-est")]
        )

        def run(level: str) -> Callable[[], object]:
            def go() -> object:
                since = int(base_start.timestamp()) + 1
                ctx = JobContext(params, "-Console-.2026-12-01_12.30.00_02", 0, level, Recorder(), "",
                                 since=since, reference_job=JOB_NAME)  # fmt: skip
                return estimate(ctx, connect(params), RecordingSink()).volumes[0]

            return go

        rows = []
        times, full = timed(run("F"))
        assert full.basis is Basis.ALLOCATED and full.blocks == allocated, full  # type: ignore[attr-defined]
        rows.append(("full", f"{allocated} blocks allocated, ListSnapshotBlocks of {newer}", times))
        times, incr = timed(run("I"))
        assert incr.basis is Basis.CHANGED and incr.blocks == args.changed, incr  # type: ignore[attr-defined]
        rows.append(
            ("incremental", f"{args.changed} changed blocks, ListChangedBlocks {base}..{newer}", times)
        )
        bec2 = [
            sys.executable, "-m", "bacula_ec2.cli", "--operation=estimate", "--region=us-east-1",
            f"--endpoint_url={sim.endpoint}", "--instances=bench-est",
        ]  # fmt: skip
        cmd_env = {**os.environ, **env, "PYTHONPATH": str(REPO)}
        times, _ = timed(
            lambda: subprocess.run(
                bec2, env=cmd_env, check=True, capture_output=True, stdin=subprocess.DEVNULL
            )
        )
        rows.append(("bec2", "bec2 --operation=estimate (a Full), process start included", times))
        aws = connect(params)
        times, _ = timed(lambda: sum(1 for _ in aws.list_snapshot_blocks(newer)))
        pages = -(-allocated // 10000)
        rows.append(("listing", f"ListSnapshotBlocks alone: {allocated} entries, {pages} pages", times))
    finally:
        stop_simulator(sim)

    full_tib = min(times) / allocated * TIB_BLOCKS
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    lines = [
        f"# Estimate of a 1 TiB volume, {when}",
        "",
        f"Simulator aws_like=True; {args.data_gib:g} GiB of data in {runs} runs of 32 MiB, "
        f"{args.changed} blocks changed before the newer snapshot; changed_blocks_window {window}.",
        "",
        "| what | best s | median s | notes |",
        "|---|---|---|---|",
    ]
    for name, note, times in rows:
        lines.append(f"| {name} | {min(times):.3f} | {statistics.median(times):.3f} | {note} |")
    lines += [
        "",
        f"A fully allocated 1 TiB (2,097,152 entries, 210 pages) at the listing rate: ~{full_tib:.1f} s.",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    out = REPO / "bench" / "results" / f"estimate-{when.replace(':', '')}.md"
    out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
