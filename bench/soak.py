"""Soak: two nights of one job over 20 instances x 2 volumes against the simulator's hard mode.

    .venv/bin/python -m bench.soak [--instances 20] [--rate 2.8] [--orders pipelined,old] [--no-tls]

Night 1 is a Full, night 2 an Incremental after writes to every volume. The simulator runs
with `aws_hard=True` (EC2 eventual consistency, snapshot copy time proportional to the data
written since the volume's previous snapshot at `--rate` MiB/s, the three snapshot quotas,
EC2 request buckets, filter limits, a 30 s clock offset, HTTPS with the simulator's CA
given as `ca_bundle=`; `--no-tls` for plain HTTP), and its
snapshot sizes are chosen so that snapshots take about 5 to 60 s. Each night is one
backup job through the real `ec2-backend` process, driven as the FD drives it
(devkit.fdpeer), END included, so that retention runs.

Checked after every night: the job ended without an error or abort; every volume's image
chain restores (in memory: the Full, then the Incremental applied on it) to exactly the
bytes the simulator's `volume_sha256` gave for the volume just before the job (nothing is
written during a job, so that is the volume at snapshot time). After night 2: the only
snapshots left are the 40 committed bases of night 2, and no volume or image was left
behind. Reported per order: time to the first byte of the first block image, and the
whole job's time. `old` is the order before issue 11 (every snapshot of every instance
completed before the first instance is read), reachable only through `BackupJob`'s
`wait_all_first` constructor argument: this script starts the backend process with it set
(`--backend-old`).

The table goes to stdout and to bench/results/soak-<time>.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bacula_ec2.backend import PLUGIN_API

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from devkit.driver import job_lines, job_name  # noqa: E402
from devkit.fdpeer import BackupItem, FDPeer  # noqa: E402
from devkit.jobkit import image_blocks  # noqa: E402
from devkit.simulator.fixtures import ACCESS_KEY, RunningSimulator, start_simulator, stop_simulator  # noqa: E402
from protocol import Connection, Mode  # noqa: E402

BLOCK = 524288
MIB = 1 << 20
GIB_BLOCKS = 2048
ZERO = bytes(BLOCK)


class TimedPeer(FDPeer):
    """FDPeer that notes when each file's data phase starts."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.started: dict[str, float] = {}

    def _data_phase(self, item: BackupItem) -> None:
        self.started.setdefault(item.name, time.monotonic())
        super()._data_phase(item)


@dataclass
class Night:
    order: str
    level: str
    seconds: float = 0.0
    first_byte: float = 0.0
    data_mib: float = 0.0
    images: int = 0
    exact: int = 0
    snapshot_lines: int = 0
    quota_lines: int = 0
    problems: list[str] = field(default_factory=list)

    def row(self) -> str:
        ok = "yes" if not self.problems else "NO: " + "; ".join(self.problems)
        return (
            f"| {self.order} | {self.level} | {self.first_byte:.1f} | {self.seconds:.1f} "
            f"| {self.data_mib:.0f} | {self.exact}/{self.images} | {self.quota_lines} | {ok} |"
        )


HEADER = (
    "| order | level | first byte (s) | job (s) | data MiB | images exact | quota retries | ok |\n"
    "|---|---|---:|---:|---:|---:|---:|---|"
)


def write_blocks(sim: RunningSimulator, volume_id: str, first: int, count: int, seed: int) -> None:
    """`count` distinct blocks from block index `first` (128 blocks per request)."""
    pattern = hashlib.sha256(str(seed).encode()).digest() * (BLOCK // 32)
    batch: list[bytes] = []
    start = first
    for n in range(count):
        chunk = bytearray(pattern)
        chunk[:16] = seed.to_bytes(8, "big") + n.to_bytes(8, "big")
        batch.append(bytes(chunk))
        if len(batch) == 128 or n == count - 1:
            sim.client.write_volume(volume_id, start * BLOCK, b"".join(batch))
            start += len(batch)
            batch = []


def backup(
    sim: RunningSimulator, tmp: Path, selection: str, *, order: str, level: str, jobid: int, since: int | None
) -> tuple[TimedPeer, float, float]:
    """One job through the backend process; (peer, its start, its seconds)."""
    endpoint = sim.api_endpoint()
    params = [
        "region=us-east-1",
        f"access_key={ACCESS_KEY}",
        "secret_key=bench-secret",
        f"endpoint_url={endpoint}",
        f"instances={selection}",
    ]
    if endpoint.startswith("https:"):
        params.append(f"ca_bundle={sim.ca_path}")
    cmd = (
        [sys.executable, "-m", "bench.soak", "--backend-old"]
        if order == "old"
        else [
            sys.executable,
            "-m",
            "bacula_ec2.backend",
        ]
    )
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop("BACULA_EC2_LOG", None)
    started = time.monotonic()
    proc = subprocess.Popen(
        cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd="/", env=env
    )
    assert proc.stdin and proc.stdout
    peer = TimedPeer(
        Connection.from_fds(proc.stdout.fileno(), proc.stdin.fileno(), strict=True), keep_data=True
    )
    prev = job_name(jobid - 1) if level != "F" else ""
    peer.setup(
        "ec2",
        PLUGIN_API,
        job_lines("B", tmp, level=level, jobid=jobid, prev=prev, since=since),
        params,
        Mode.BACKUP,
    )
    peer.items = peer.read_items(data_phase=True)  # type: ignore[attr-defined]
    peer.end()
    peer.terminate()
    proc.wait(timeout=120)
    seconds = time.monotonic() - started
    err = proc.stderr.read() if proc.stderr else b""
    if proc.returncode or err:
        raise RuntimeError(f"backend exit {proc.returncode}: {err[-2000:]!r}")
    return peer, started, seconds


def disk_sha256(disk: dict[int, bytes]) -> str:
    digest = hashlib.sha256()
    for index in range(GIB_BLOCKS):
        digest.update(disk.get(index, ZERO))
    return digest.hexdigest()


def run_order(
    sim: RunningSimulator, tmp: Path, order: str, count: int, rate: float, tls: bool
) -> list[Night]:
    sim.client.reset()
    sim.client.set_options(aws_hard=True, tls=tls, snapshot_mib_per_s=rate)
    vols: list[tuple[str, str, int]] = []  # (instance, volume, root MiB)
    for k in range(count):
        # 16..168 MiB on the root volumes: snapshots of 5..60 s (the job selects by instance
        # id, an order unrelated to these sizes)
        root_mib = 16 + (count - 1 - k) * (152 // max(1, count - 1))
        inst = sim.client.create_instance(
            f"soak-{k + 1}", volumes=[{"size_gib": 1, "device": d} for d in ("/dev/sda1", "/dev/xvdf")]
        )
        root, data = inst["volume_ids"]
        write_blocks(sim, root, 0, root_mib * MIB // BLOCK, seed=10 * k)
        write_blocks(sim, data, 100, 12 * MIB // BLOCK, seed=10 * k + 1)
        vols += [(inst["instance_id"], root, root_mib), (inst["instance_id"], data, 12)]
    selection = ",".join(f"soak-{k + 1}" for k in range(count))
    disks: dict[str, dict[int, bytes]] = {}
    nights: list[Night] = []
    since: int | None = None
    for jobid, level in ((1, "F"), (2, "I")):
        if level == "I":  # night 2: writes to every volume (smaller for the larger ones)
            for k, (_iid, vid, mib) in enumerate(vols):
                changed = max(4, (mib // 2 if k % 2 == 0 else 4)) * MIB // BLOCK
                write_blocks(sim, vid, 40 + (k % 7), changed, seed=1000 + k)
        held = {vid: sim.client.volume_sha256(vid) for _i, vid, _m in vols}
        start_epoch = int(time.time())
        night = Night(order, level)
        try:
            peer, started, night.seconds = backup(
                sim, tmp, selection, order=order, level=level, jobid=jobid, since=since
            )
        except Exception as exc:  # a failed job is a result, not a crash of the bench
            night.problems.append(f"job failed: {exc}")
            nights.append(night)
            break
        since = start_epoch
        bad = [t for s, t in peer.messages if s in "EAQ"]
        night.problems += [f"job message: {t}" for t in bad]
        night.snapshot_lines = sum(t.startswith("snapshots of ") for _s, t in peer.messages)
        night.quota_lines = sum("AWS refuses more snapshots" in t for _s, t in peer.messages)
        images = [it for it in peer.items if it.name.endswith(".bimg")]  # type: ignore[attr-defined]
        night.images = len(images)
        night.data_mib = sum(it.data_len for it in images) / MIB
        night.first_byte = min(peer.started[it.name] for it in images) - started
        for _iid, vid, _m in vols:
            mine = [it for it in images if vid in it.name]
            if len(mine) != 1:
                night.problems.append(f"{vid}: {len(mine)} images")
                continue
            header, blocks = image_blocks(bytes(mine[0].data or b""))
            disk = {} if header.base_snapshot_id is None else disks.get(vid, {})
            for index, data in blocks.items():
                if data is None or data == ZERO:
                    disk.pop(index, None)
                else:
                    disk[index] = data
            disks[vid] = disk
            if disk_sha256(disk) == held[vid]:
                night.exact += 1
            else:
                night.problems.append(f"{vid}: restored bytes differ")
            mine[0].data = None  # free it
        nights.append(night)
    if nights and not nights[-1].problems:
        nights[-1].problems += leaks(sim, {vid for _i, vid, _m in vols})
    return nights


def leaks(sim: RunningSimulator, volumes: set[str]) -> list[str]:
    """What is left that should not be: snapshots other than night 2's bases, any volume
    that is not an instance's, any image."""
    import boto3

    problems = []
    snaps = sim.client.snapshots()
    extra = [
        str(s["id"])
        for s in snaps
        if s["tags"].get("bacula-ec2:state") != "base" or s["tags"].get("bacula-ec2:jobid") != "2"
    ]
    if extra or len(snaps) != len(volumes):
        problems.append(f"{len(snaps)} snapshots left, {len(extra)} of them not night 2's bases")
    ec2 = boto3.client("ec2", **sim.boto3_kwargs())
    found = {
        v["VolumeId"] for page in ec2.get_paginator("describe_volumes").paginate() for v in page["Volumes"]
    }
    if found != volumes:
        problems.append(f"volumes left: {sorted(found - volumes)}")
    images = ec2.describe_images(Owners=["self"]).get("Images", [])
    if images:
        problems.append(f"images left: {[i['ImageId'] for i in images]}")
    return problems


def backend_old() -> int:
    """The backend process with `BackupJob(wait_all_first=True)`: the order before issue 11."""
    from bacula_ec2 import backend
    from bacula_ec2.jobs.backup import BackupJob

    defaults = BackupJob.__init__.__kwdefaults__
    assert defaults is not None and "wait_all_first" in defaults
    defaults["wait_all_first"] = True
    return backend.main()


def main(argv: list[str] | None = None) -> int:
    if argv is None and sys.argv[1:] == ["--backend-old"]:
        return backend_old()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--instances", type=int, default=20)
    ap.add_argument("--rate", type=float, default=2.8, help="snapshot copy rate, MiB/s (default 2.8)")
    ap.add_argument("--orders", default="pipelined,old")
    ap.add_argument(
        "--no-tls", dest="tls", action="store_false", help="plain HTTP (default: HTTPS, the simulator's CA)"
    )
    args = ap.parse_args(argv)
    sim = start_simulator(snapshot_delay=0.0)
    tmp = Path(os.environ.get("TMPDIR", "/tmp")) / f"bacula-ec2-soak-{os.getpid()}"
    tmp.mkdir(parents=True, exist_ok=True)
    nights: list[Night] = []
    try:
        for order in args.orders.split(","):
            for night in run_order(sim, tmp, order, args.instances, args.rate, args.tls):
                print(night.row(), flush=True)
                nights.append(night)
        knobs = {k: v for k, v in sim.client.options().items() if v not in (0, 0.0, False, None)}
    finally:
        stop_simulator(sim)
    table = HEADER + "\n" + "\n".join(n.row() for n in nights) + "\n"
    table += f"\n{args.instances} instances x 2 volumes; simulator options: {knobs}\n"
    out = REPO / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"soak-{dt.datetime.now():%Y%m%d-%H%M%S}.md"
    path.write_text(f"# bench.soak {dt.datetime.now().isoformat(timespec='seconds')}\n\n{table}")
    print("\n" + table + f"\nwritten to {path}")
    return 0 if all(not n.problems for n in nights) else 1


if __name__ == "__main__":
    sys.exit(main())
