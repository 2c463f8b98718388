"""Restore throughput: the EBS direct write engine (`bacula_ec2.aws.upload`) writing a
staged volume of N data blocks into a new snapshot, against the simulator set to AWS-like
quotas and latency (PutSnapshotBlock 1,000/s per snapshot and per account, 50 +- 10 ms).

The ceiling is the quota: 1,000 blocks/s x 512 KiB = 500 MiB/s. For each (threads, pacing)
setting it reports MiB/s, the ratio to 500 MiB/s, the requests throttled and the retries,
and checks the snapshot's bytes against the staged image.

    .venv/bin/python -m bench.restore_throughput [--blocks 4000] [--threads 64,96] [--no-pacing]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bacula_ec2.aws.upload import BLOCK_SIZE, DEFAULT_RATE, SnapshotWriter, file_reader  # noqa: E402
from bacula_ec2.jobs.context import connect  # noqa: E402
from bacula_ec2.params import parse_parameters  # noqa: E402
from devkit.simulator.fixtures import ACCESS_KEY, SECRET_KEY, start_simulator, stop_simulator  # noqa: E402

GIB = 1 << 30
CEILING_MIB_S = 500.0


def stage(path: str, blocks: int, size_gib: int) -> tuple[list[int], str]:
    """A sparse image with `blocks` random data blocks spread over the volume; its SHA-256."""
    step = max(1, (size_gib * GIB // BLOCK_SIZE) // blocks)
    indexes = [i * step for i in range(blocks)]
    with open(path, "wb") as fh:
        fh.truncate(size_gib * GIB)
        for i in indexes:
            fh.seek(i * BLOCK_SIZE)
            fh.write(os.urandom(BLOCK_SIZE))
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 22):
            digest.update(chunk)
    return indexes, digest.hexdigest()


def run(endpoint: str, sim, path: str, indexes: list[int], size_gib: int, threads: int, rate: float | None):  # type: ignore[no-untyped-def]
    params = parse_parameters(
        [
            ("region", "us-east-1"),
            ("access_key", ACCESS_KEY),
            ("secret_key", SECRET_KEY),
            ("endpoint_url", endpoint),
            ("concurrent_threads", str(threads)),
        ]
    )
    aws = connect(params)
    sim.client.reset_stats()
    writer = SnapshotWriter(aws, threads, rate=rate)
    cpu0, sim_cpu0 = time.process_time(), _cpu_seconds(sim.process.pid)
    sid = writer.start(size_gib, client_token=f"bench-{time.time()}", description="bench", tags={})
    fd = os.open(path, os.O_RDONLY)
    began = time.monotonic()
    try:
        result = writer.upload(sid, iter(indexes), file_reader(fd))
    finally:
        os.close(fd)
    seconds = time.monotonic() - began
    cpu = (time.process_time() - cpu0, _cpu_seconds(sim.process.pid) - sim_cpu0)
    stats = sim.client.stats()
    aws.wait_snapshots([sid], timeout=120)
    return result, seconds, stats, aws.stats, sid, cpu


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--blocks", type=int, default=4000, help="data blocks to write (default 4000 = 2000 MiB)")
    ap.add_argument("--size-gib", type=int, default=8)
    ap.add_argument("--threads", default="64,96", help="PutSnapshotBlock workers to try, comma separated")
    ap.add_argument("--no-pacing", action="store_true", help="also run without the client-side pacer")
    args = ap.parse_args()
    sim = start_simulator(options={"aws_like": True, "snapshot_delay": 0.0})
    rows = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "staged.img")
            indexes, want = stage(path, args.blocks, args.size_gib)
            settings = [(int(t), DEFAULT_RATE) for t in args.threads.split(",")]
            if args.no_pacing:
                settings += [(int(t), None) for t in args.threads.split(",")]
            for threads, rate in settings:
                result, seconds, stats, retry_stats, sid, cpu = run(
                    sim.endpoint, sim, path, indexes, args.size_gib, threads, rate
                )
                ok = sim.client.snapshot_sha256(sid) == want
                mib = result.blocks * BLOCK_SIZE / (1 << 20)
                rows.append(
                    (
                        threads,
                        f"{rate:.0f}/s" if rate else "off",
                        result.blocks,
                        seconds,
                        mib / seconds,
                        sum(stats.get("throttled", {}).values()),
                        retry_stats.retries,
                        cpu,
                        ok,
                    )
                )
    finally:
        stop_simulator(sim)
    print(f"simulator aws_like=True (PutSnapshotBlock 1000/s per snapshot, 50+-10 ms); {args.blocks} blocks")
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    print(
        "| threads | pacing | blocks | seconds | MiB/s | of 500 MiB/s | throttled | retries "
        "| client CPU s | simulator CPU s | bytes ok |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for threads, pacing, blocks, seconds, rate_mib, throttled, retries, cpu, ok in rows:
        print(
            f"| {threads} | {pacing} | {blocks} | {seconds:.1f} | {rate_mib:.0f} | "
            f"{rate_mib / CEILING_MIB_S:.0%} | {throttled} | {retries} | {cpu[0]:.1f} | {cpu[1]:.1f} "
            f"| {'yes' if ok else 'NO'} |"
        )
    return 0 if all(r[-1] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
