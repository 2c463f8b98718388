"""How long an Incremental of a large, mostly unchanged volume takes: listing-bound or quota-bound.

    .venv/bin/python -m bench.incremental [--sizes 1024,16384] [--changed 1000] [--runs 3]
                                          [--window 10000] [--tree DIR]

For each volume size (GiB) and each run: a fresh instance with one sparse volume (1,000
blocks written through the simulator's control API, spread over the volume), a Full
through the real `ec2-backend` process (bench.backup.backend_backup: pipes, a strict FD
peer), then `--changed` blocks written at even strides and an Incremental. The simulator
runs with `aws_like=True` (50 +/- 10 ms a request, 50 ListChangedBlocks/s per account, as
AWS's quota) and scans `--window` block indexes per ListChangedBlocks page (10,000:
a 1 TiB volume is 210 pages, a 16 TiB one 3,356, whatever changed).

Reported per run: the Incremental's listing+read time (from the end of the volume's .json
item to the end of its block image: the listing runs there, overlapped with the block
reads), the whole job (process start included), ListChangedBlocks requests and throttled
List responses (the simulator's counters), and GetSnapshotBlock requests (must be the
changed blocks). `--tree DIR` runs the backend from another source tree (e.g. an export
of an older commit: before/after figures).

The table goes to stdout and to bench/results/incremental-<time>.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.backup import backend_backup, seed_volume  # noqa: E402
from devkit.driver import job_name  # noqa: E402
from devkit.simulator.fixtures import RunningSimulator, start_simulator, stop_simulator  # noqa: E402

BLOCKS_PER_GIB = 2048
LISTS = ("ListChangedBlocks", "ListSnapshotBlocks")


def one_run(sim: RunningSimulator, tmp: Path, size_gib: int, changed: int, n: int) -> dict[str, float]:
    name = f"bench-inc-{size_gib}-{n}"
    inst = sim.client.create_instance(name, volumes=[{"size_gib": size_gib, "device": "/dev/sda1"}])
    vid = inst["volume_ids"][0]
    blocks = size_gib * BLOCKS_PER_GIB
    seed_volume(sim, vid, 1000, stride=blocks // 1000)
    start = int(time.time())
    full_id = 100 + 2 * n
    backend_backup(sim, name, tmp, jobid=full_id)
    seed_volume(sim, vid, changed, stride=blocks // changed, start=7)
    sim.client.reset_stats()
    t0 = time.monotonic()
    run = backend_backup(sim, name, tmp, level="I", jobid=full_id + 1, prev=job_name(full_id), since=start)
    wall = time.monotonic() - t0
    # From the end of the item before the block image (the volume's .json, sent before
    # the listing starts) to the end of the block image: the listing and the reads.
    peer = run.peer
    ((b0, b1),) = [span for name, span in peer.times.items() if name.endswith(".bimg")]
    before = [t1 for name, (_t0, t1) in peer.times.items() if not name.endswith(".bimg") and t1 <= b0]
    listing_read = b1 - max(before, default=b0)
    stats = sim.client.stats()
    return {
        "listing_read": listing_read,
        "wall": wall,
        "pages": stats["requests"].get("ListChangedBlocks", 0),
        "throttled": sum(stats["throttled"].get(op, 0) for op in LISTS),
        "gets": stats["requests"].get("GetSnapshotBlock", 0),
        "cpu": run.cpu,
        "rss_mib": run.rss_mib,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--sizes", default="1024,16384", help="volume sizes in GiB, comma-separated")
    ap.add_argument("--changed", type=int, default=1000, help="blocks written after the Full")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--window", type=int, default=10000, help="block indexes a ListChangedBlocks page scans")
    ap.add_argument("--tree", default="", help="run the backend from this source tree (PYTHONPATH)")
    args = ap.parse_args()
    if args.tree:
        os.environ["PYTHONPATH"] = str(Path(args.tree).resolve())
    sizes = [int(s) for s in args.sizes.split(",") if s]
    sim = start_simulator(
        options={
            "aws_like": True,
            "changed_blocks_window": args.window,
            "snapshot_mib_per_s": 0,
            "snapshot_delay": 0.0,
        }
    )
    rows: list[tuple[int, list[dict[str, float]]]] = []
    try:
        with tempfile.TemporaryDirectory(prefix="bench-inc-") as tmp:
            for size in sizes:
                runs = []
                for n in range(args.runs):
                    runs.append(one_run(sim, Path(tmp), size, args.changed, n + 10 * len(rows)))
                    print(f"{size} GiB run {n + 1}: {runs[-1]}", file=sys.stderr, flush=True)
                rows.append((size, runs))
    finally:
        stop_simulator(sim)
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    tree = args.tree or "this tree"
    lines = [
        f"# Incremental of a large volume, {when}",
        "",
        f"Backend from {tree}. Simulator aws_like=True (50 +/- 10 ms, 50 List calls/s), scan window "
        f"{args.window} indexes per ListChangedBlocks page; {args.changed} changed blocks; "
        f"{args.runs} runs each, on a shared 2-core machine (wall times vary with its load).",
        "",
        "| volume | listing+read s (min / median / max) | whole job s (median) | ListChangedBlocks "
        "| throttled List | GetSnapshotBlock | backend CPU s (median) |",
        "|---|---|---|---|---|---|---|",
    ]
    for size, runs in rows:
        lr = [r["listing_read"] for r in runs]
        lines.append(
            f"| {size // 1024} TiB | {min(lr):.1f} / {statistics.median(lr):.1f} / {max(lr):.1f} "
            f"| {statistics.median(r['wall'] for r in runs):.1f} "
            f"| {', '.join(str(int(r['pages'])) for r in runs)} "
            f"| {', '.join(str(int(r['throttled'])) for r in runs)} "
            f"| {', '.join(str(int(r['gets'])) for r in runs)} "
            f"| {statistics.median(r['cpu'] for r in runs):.1f} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    out = REPO / "bench" / "results" / f"incremental-{when.replace(':', '')}.md"
    out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
