"""Backup throughput of the backend against the simulator set to AWS-like conditions.

    .venv/bin/python -m bench.backup [--gib 4] [--scenarios full,four,incremental,memory,dsnap,bacula]

Every scenario runs the real `ec2-backend` process over pipes, driven by a consumer that
parses the packets as the FD does (devkit.fdpeer.FDPeer), except `bacula`, which runs the
same Full through a real Bacula 15.0.3 FD/SD/DIR. The simulator runs with `aws_like=True`:
~50 ms (+/- 10 ms) per request, 1,000 GetSnapshotBlock/s per snapshot and per account, 50
List calls/s. The table goes to stdout and to bench/results/backup-<time>.md.

How each figure is measured (bench/common.py): the backend's peak RSS is its own VmHWM
(/proc/<pid>/status, sampled while it runs), not `ru_maxrss` of `os.wait4()` (that is
max(this driver's RSS at spawn, the child's peak)); CPU is per process: the backend's from
its rusage at exit, the consumer's (this process, playing the FD) from `time.process_time()`,
the simulator's from /proc/<pid>/stat. MiB/s is wall-clock and depends on the load of the
machine; CPU-s/GiB does not (much).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bacula_ec2.backend import PLUGIN_API

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import ProcSampler, proc_cpu  # noqa: E402
from devkit.fdpeer import BackupItem, FDPeer  # noqa: E402
from devkit.simulator.fixtures import ACCESS_KEY, RunningSimulator, start_simulator, stop_simulator  # noqa: E402
from protocol import Connection, Mode  # noqa: E402

BLOCK = 524288
CEILING_MIB = 500.0
MIB = 1 << 20
EXTRA: list[str] = [p for p in os.environ.get("BENCH_PARAMS", "").split() if p]


class _StampedMessages(list[tuple[str, str]]):
    """The peer's message list, noting when the backend said it starts reading a volume."""

    reading: float | None = None

    def append(self, item: tuple[str, str]) -> None:
        if self.reading is None and "to read from" in item[1]:
            self.reading = time.monotonic()
        super().append(item)


class TimedPeer(FDPeer):
    """FDPeer that notes when each file's data phase starts and ends, when the first block
    arrives, and the backend's CPU (/proc/<pid>/stat) at the first block and at the end of
    the last block image: the data phase's own CPU, without start-up and snapshot calls."""

    def __init__(self, *args: Any, pid: int = 0, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.pid = pid
        self.times: dict[str, tuple[float, float]] = {}
        self.messages = _StampedMessages()
        #: When the first data packet of a block image arrived (its first block).
        self.first_block: float | None = None
        self.cpu_first_block = 0.0
        self.cpu_images_end = 0.0

    @property
    def reading(self) -> float | None:
        """When the backend said it starts reading a volume ("... block(s) to read")."""
        return self.messages.reading if isinstance(self.messages, _StampedMessages) else None

    def _data_phase(self, item: BackupItem) -> None:
        t0 = time.monotonic()
        if item.name.endswith(".bimg") and self.first_block is None:
            real = self.conn.reader.read_header

            def first(*a: Any, **kw: Any) -> Any:
                got = real(*a, **kw)
                if got[0] == "D" and self.first_block is None:
                    self.first_block = time.monotonic()
                    if self.pid:
                        self.cpu_first_block = proc_cpu(self.pid)
                return got

            self.conn.reader.read_header = first  # type: ignore[method-assign]
            try:
                super()._data_phase(item)
            finally:
                self.conn.reader.read_header = real  # type: ignore[method-assign]
        else:
            super()._data_phase(item)
        self.times[item.name] = (t0, time.monotonic())
        if item.name.endswith(".bimg") and self.pid:
            self.cpu_images_end = proc_cpu(self.pid)


@dataclass
class Run:
    name: str
    data_bytes: int = 0
    seconds: float = 0.0
    cpu: float = 0.0
    rss_mib: float = 0.0
    requests: int = 0
    throttled: int = 0
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    start_s: float = 0.0  # process start -> first block's data at the consumer
    rate: bool = True  # False: MiB/s would mislead (an Incremental's time is its listing's)

    @property
    def mib_s(self) -> float:
        return self.data_bytes / MIB / self.seconds if self.seconds else 0.0

    def row(self) -> str:
        gib = self.data_bytes / (1 << 30)
        cpu_per_gib = self.cpu / gib if gib else 0.0
        throttled = f"{self.throttled} ({100.0 * self.throttled / max(1, self.requests):.2f}%)"
        rate = f"{self.mib_s:.0f} | {100 * self.mib_s / CEILING_MIB:.0f}%" if self.rate else "- | -"
        return (
            f"| {self.name} | {gib:.2f} | {self.seconds:.2f} | {rate} | "
            f"{cpu_per_gib:.2f} | {self.rss_mib:.0f} | {throttled} "
            f"| {self.note} |"
        )


HEADER = (
    "| scenario | GiB read | seconds | MiB/s | of 500 MiB/s | backend CPU s/GiB | backend peak RSS MiB "
    "| throttled responses | notes |\n|---|---|---|---|---|---|---|---|---|"
)


def seed_volume(sim: RunningSimulator, volume_id: str, blocks: int, stride: int = 1, start: int = 0) -> None:
    """Write `blocks` distinct random-looking blocks, one every `stride` block indexes."""
    pattern = os.urandom(64 * BLOCK)
    batch: list[bytes] = []
    first = start
    for n in range(blocks):
        chunk = bytearray(pattern[(n % 64) * BLOCK : (n % 64 + 1) * BLOCK])
        chunk[:8] = n.to_bytes(8, "big")
        if stride == 1:
            batch.append(bytes(chunk))
            if len(batch) == 128 or n == blocks - 1:
                sim.client.write_volume(volume_id, first * BLOCK, b"".join(batch))
                first += len(batch)
                batch = []
        else:
            sim.client.write_volume(volume_id, (start + n * stride) * BLOCK, bytes(chunk))


@dataclass
class BackendRun:
    """One backend process: its own CPU and true peak RSS, and its start-up times."""

    peer: TimedPeer
    cpu: float  # backend user + system seconds (rusage of the reaped child: its own)
    rss_mib: float  # backend VmHWM, sampled
    first_block_s: float | None  # Popen -> first data packet of the first block image
    reading_s: float | None  # Popen -> the "block(s) to read" message (listing counted)


def backend_backup(
    sim: RunningSimulator,
    instance: str,
    tmp: Path,
    *,
    level: str = "F",
    jobid: int = 1,
    extra: tuple[str, ...] = (),
    prev: str = "",
    since: int | None = None,
) -> BackendRun:
    """One backup through the backend process (see BackendRun)."""
    from devkit.driver import job_lines

    params = [
        "region=us-east-1",
        f"access_key={ACCESS_KEY}",
        "secret_key=bench-secret",
        *EXTRA,
        f"endpoint_url={sim.endpoint}",
        f"instances={instance}",
        *extra,
    ]
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bacula_ec2.backend"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd="/",
    )
    assert proc.stdin and proc.stdout
    sampler = ProcSampler(proc.pid).start()
    peer = TimedPeer(
        Connection.from_fds(proc.stdout.fileno(), proc.stdin.fileno(), strict=True),
        keep_data=False,
        pid=proc.pid,
    )
    peer.setup(
        "ec2",
        PLUGIN_API,
        job_lines("B", tmp, level=level, jobid=jobid, prev=prev, since=since),
        params,
        Mode.BACKUP,
    )
    peer.items = peer.read_items(data_phase=True)  # type: ignore[attr-defined]
    peer.end()
    sampler.stop()
    peer.terminate()
    _pid, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read() if proc.stderr else b""
    if proc.returncode or err:
        raise RuntimeError(f"backend exit {proc.returncode}: {err[-2000:]!r}")
    return BackendRun(
        peer,
        usage.ru_utime + usage.ru_stime,
        sampler.peak_mib,
        peer.first_block - started if peer.first_block is not None else None,
        peer.reading - started if peer.reading is not None else None,
    )


def image_time(peer: TimedPeer) -> tuple[int, float]:
    """Bytes and seconds of the block images' data phases (all volumes)."""
    spans = [(t0, t1) for name, (t0, t1) in peer.times.items() if name.endswith(".bimg")]
    data = sum(it.data_len for it in peer.items if it.name.endswith(".bimg"))  # type: ignore[attr-defined]
    return data, max(t1 for _t0, t1 in spans) - min(t0 for t0, _t1 in spans)


def get_requests(sim: RunningSimulator) -> tuple[int, int]:
    stats = sim.client.stats()
    return stats["requests"].get("GetSnapshotBlock", 0), sum(stats["throttled"].values())


def scenario_full(sim: RunningSimulator, tmp: Path, gib: float) -> Run:
    blocks = int(gib * 2048)
    inst = sim.client.create_instance(
        "bench-full", volumes=[{"size_gib": max(1, int(gib + 1)), "device": "/dev/sda1"}]
    )
    seed_volume(sim, inst["volume_ids"][0], blocks)
    sim.client.reset_stats()
    sim_cpu0, me0 = proc_cpu(sim.process.pid), time.process_time()
    spawned = time.time()  # the simulator's first_request_at is on this clock (same host)
    run = backend_backup(sim, "bench-full", tmp)
    sim_cpu, me = proc_cpu(sim.process.pid) - sim_cpu0, time.process_time() - me0
    data, seconds = image_time(run.peer)
    req, thr = get_requests(sim)
    first_get = sim.client.stats().get("first_request_at", {}).get("GetSnapshotBlock")
    at_sim = first_get - spawned if first_get is not None else None
    gib_read = data / (1 << 30)
    phase_cpu = run.peer.cpu_images_end - run.peer.cpu_first_block
    first = f"{run.first_block_s:.2f} s" if run.first_block_s is not None else "?"
    reading = f"{run.reading_s:.2f} s" if run.reading_s is not None else "?"
    to_sim = f"{at_sim:.2f} s" if at_sim is not None else "?"
    note = (
        f"CPU s/GiB: backend {run.cpu / gib_read:.2f} (whole process; data phase only "
        f"{phase_cpu / gib_read:.2f}), consumer (FD's part) {me / gib_read:.2f}, "
        f"simulator {sim_cpu / gib_read:.2f}; process start to the first GetSnapshotBlock at the "
        f"simulator {to_sim}, to the first block at the consumer {first} "
        f"(to the 'to read' message, sent once the count beside the read has ended, {reading})"
    )
    out = Run("Full, 1 volume", data, seconds, run.cpu, run.rss_mib, req, thr, note)
    out.start_s = run.first_block_s or 0.0
    out.extra = dict(
        consumer_cpu=me,
        simulator_cpu=sim_cpu,
        reading_s=run.reading_s,
        phase_cpu=phase_cpu,
        first_get_s=at_sim,
    )
    return out


@contextlib.contextmanager
def backend_of(rev: str, tmp: Path) -> Iterator[None]:
    """The backends started inside run the code of commit `rev` (a git archive of it in a
    temporary tree, put first on their PYTHONPATH); "" runs this tree's."""
    if not rev:
        yield
        return
    tree = tmp / f"tree-{rev}"
    if not tree.exists():
        tree.mkdir(parents=True)
        archive = subprocess.run(["git", "-C", str(REPO), "archive", rev], capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True)
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = str(tree)
    try:
        yield
    finally:
        if old is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = old


def scenario_full_before(sim: RunningSimulator, tmp: Path, gib: float) -> Run:
    """The same Full with the backend of `--before REV`: before/after from one run."""
    with backend_of(BEFORE["rev"], tmp):
        run = scenario_full(sim, tmp, gib)
    run.name = f"Full, 1 volume, backend of {BEFORE['rev']} (before)"
    return run


def scenario_startup(sim: RunningSimulator, tmp: Path, gib: float, pairs: int = 5) -> Run:
    """Start-up alone: `pairs` Fulls of a 16 MiB volume with this tree's backend, each
    followed by one with the backend of `--before` (if given), on a fresh simulator state;
    medians of the time from process start to the first GetSnapshotBlock at the simulator
    and to the first block's data at the consumer. The simulator scans 4 block indexes per
    ListSnapshotBlocks page (`list_blocks_window`): the 1 GiB volume's 2,048 indexes take 512
    pages (about 11 s at the List quota), its 32 blocks are in the first 8. A slow listing
    with the data at its start, as a large sparse volume's can be."""
    got: dict[str, list[tuple[float, float]]] = {"after": [], "before": []}
    for _ in range(pairs):
        for label, rev in (("after", ""), ("before", BEFORE["rev"])):
            if label == "before" and not rev:
                continue
            sim.client.reset()
            sim.client.set_options(aws_like=True, snapshot_delay=0.0, list_blocks_window=4)
            with backend_of(rev, tmp):
                run = scenario_full(sim, tmp, 1 / 64)
            got[label].append((run.extra.get("first_get_s") or 0.0, run.start_s))
    parts = []
    for label, runs in got.items():
        if runs:
            at_sim = statistics.median(r[0] for r in runs)
            at_consumer = statistics.median(r[1] for r in runs)
            which = "this tree" if label == "after" else f"backend of {BEFORE['rev']}"
            parts.append(
                f"{which}: first GetSnapshotBlock at the simulator {at_sim:.2f} s, first block at "
                f"the consumer {at_consumer:.2f} s"
            )
    out = Run(
        f"Start-up: medians of {pairs} Fulls of 16 MiB listed in 512 pages (interleaved)",
        0,
        0.0,
        note="; ".join(parts),
    )
    out.rate = False
    out.extra = {label: runs for label, runs in got.items()}
    return out


#: `--before REV`: the commit whose backend `full_before` runs.
BEFORE: dict[str, str] = {"rev": ""}


def scenario_four(sim: RunningSimulator, tmp: Path, gib: float) -> Run:
    """Four volumes (four jobs) at once, sharing the account's 1,000 GetSnapshotBlock/s."""
    per = max(0.5, gib / 2)
    names = [f"bench-four-{n}" for n in range(4)]
    for name in names:
        inst = sim.client.create_instance(
            name, volumes=[{"size_gib": max(1, int(per + 1)), "device": "/dev/sda1"}]
        )
        seed_volume(sim, inst["volume_ids"][0], int(per * 2048))
    sim.client.reset_stats()
    results: dict[str, BackendRun] = {}

    def one(n: int, name: str) -> None:
        results[name] = backend_backup(sim, name, tmp / name, jobid=10 + n)

    for name in names:
        (tmp / name).mkdir(parents=True, exist_ok=True)
    threads = [threading.Thread(target=one, args=(n, name)) for n, name in enumerate(names)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    peers = [r.peer for r in results.values()]
    spans = [image_time(p) for p in peers]
    starts = [min(t0 for nm, (t0, _t1) in p.times.items() if nm.endswith(".bimg")) for p in peers]
    ends = [max(t1 for nm, (_t0, t1) in p.times.items() if nm.endswith(".bimg")) for p in peers]
    total = sum(d for d, _s in spans)
    rates = [d / MIB / s for d, s in spans]
    req, thr = get_requests(sim)
    cpu = sum(r.cpu for r in results.values())
    rss = max(r.rss_mib for r in results.values())
    each = ", ".join(f"{r:.0f}" for r in rates)
    note = f"per volume {each} MiB/s; fairness min/max {min(rates) / max(rates):.2f}"
    return Run("Full, 4 volumes at once (4 jobs)", total, max(ends) - min(starts), cpu, rss, req, thr, note)


def scenario_incremental(sim: RunningSimulator, tmp: Path, gib: float, window: int = 10000) -> list[Run]:
    """Incrementals of a 1 TiB and a 16 TiB volume with 1,000 changed blocks (bench.incremental:
    1,000 blocks written over the volume, a Full, 1,000 more written at even strides, the
    Incremental; issue 15's targets: <= 6 s and <= 80 s).

    How many block indexes AWS scans per ListChangedBlocks page is not documented; the
    simulator's `changed_blocks_window` sets it (10,000 = MaxResults here)."""
    from bench.incremental import one_run

    sim.client.set_options(changed_blocks_window=window, snapshot_mib_per_s=0)
    rows = []
    for n, size in enumerate((1024, 16384)):
        got = one_run(sim, tmp, size, 1000, 40 + n)
        run = Run(
            f"Incremental, {size // 1024} TiB volume, 1,000 changed blocks (scan window {window})",
            int(got["gets"]) * BLOCK,
            got["wall"],
            got["cpu"],
            got["rss_mib"],
            int(got["gets"]),
            int(got["throttled"]),
            f"whole job {got['wall']:.1f} s (process start to exit), listing and reads "
            f"{got['listing_read']:.1f} s; {int(got['gets'])} GetSnapshotBlock, "
            f"{int(got['pages'])} ListChangedBlocks pages, {int(got['throttled'])} List responses throttled",
        )
        run.extra = dict(got, size_gib=size)
        run.rate = False
        rows.append(run)
    return rows


def scenario_memory(sim: RunningSimulator, tmp: Path, gib: float) -> Run:
    """Peak RSS of a 16 GiB and a 16 TiB volume holding the same 1 GiB of data."""
    rss: dict[int, float] = {}
    for size, stride in ((16, 8), (16384, 8192)):
        name = f"bench-mem-{size}"
        inst = sim.client.create_instance(name, volumes=[{"size_gib": size, "device": "/dev/sda1"}])
        seed_volume(sim, inst["volume_ids"][0], 2048, stride=stride)
        run = backend_backup(sim, name, tmp, jobid=30 + len(rss))
        cpu, rss[size] = run.cpu, run.rss_mib
        data, seconds = image_time(run.peer)
    note = (
        f"backend's own peak RSS (VmHWM, sampled): 16 GiB volume {rss[16]:.0f} MiB, "
        f"16 TiB volume {rss[16384]:.0f} MiB"
    )
    return Run("Memory: 16 TiB sparse vs 16 GiB", data, seconds, cpu, rss[16384], 0, 0, note)


DSNAP_SCRIPT = """
import sys, time, boto3
from dsnap.snapshot import LocalSnapshot
snap, out = sys.argv[1], sys.argv[2]
t0 = time.monotonic()
LocalSnapshot(out, snap, boto3_session=boto3.session.Session(region_name="us-east-1")).fetch()
print(time.monotonic() - t0)
"""


def dsnap_python() -> Path:
    """A private virtualenv with dsnap (PyPI), so its pins don't touch ours."""
    root = Path(os.environ.get("BACULA_EC2_CACHE", Path.home() / ".cache" / "bacula-ec2")) / "dsnap-venv"
    py = root / "bin" / "python"
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(root)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", "dsnap==1.0.1"], check=True)
    return py


def scenario_dsnap(sim: RunningSimulator, tmp: Path, gib: float) -> Run:
    """The peer: dsnap 1.0.1 downloading the same kind of snapshot from the same simulator."""
    import boto3

    inst = sim.client.create_instance(
        "bench-dsnap", volumes=[{"size_gib": max(1, int(gib + 1)), "device": "/dev/sda1"}]
    )
    vid = inst["volume_ids"][0]
    seed_volume(sim, vid, int(gib * 2048))
    ec2 = boto3.client("ec2", **sim.boto3_kwargs())
    snap = ec2.create_snapshot(VolumeId=vid)["SnapshotId"]
    py = dsnap_python()
    out = tmp / "dsnap"
    out.mkdir(parents=True, exist_ok=True)
    sim.client.reset_stats()
    env = dict(os.environ, **sim.env())
    proc = subprocess.run(
        [str(py), "-c", DSNAP_SCRIPT, snap, str(out)], capture_output=True, text=True, env=env, check=False
    )
    if proc.returncode:
        return Run("dsnap 1.0.1 (peer), same snapshot size", 0, 0, note=f"failed: {proc.stderr[-300:]!r}")
    seconds = float(proc.stdout.strip().splitlines()[-1])
    for f in out.glob("*.img"):
        f.unlink()
    req, thr = get_requests(sim)
    return Run(
        "dsnap 1.0.1 (peer), same snapshot size",
        int(gib * 2048) * BLOCK,
        seconds,
        0,
        0,
        req,
        thr,
        "whole download incl. listing, writes a raw file",
    )


REAL_FD = "Full through real Bacula FD/SD"


def _stat_fields(pid: int) -> list[str]:
    """/proc/<pid>/stat after the command name: [0] state, [1] ppid, [11..14] utime, stime,
    cutime, cstime (clock ticks)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def _cpu_and_reaped(pid: int) -> tuple[float, float, float]:
    """(own utime+stime, of which stime, utime+stime of the children it has reaped) of
    `pid`, in seconds."""
    f = _stat_fields(pid)
    tick = os.sysconf("SC_CLK_TCK")
    return (int(f[11]) + int(f[12])) / tick, int(f[12]) / tick, (int(f[13]) + int(f[14])) / tick


def _task_switches(pid: int) -> dict[int, int]:
    """Context switches (voluntary + involuntary) of each live thread of `pid`."""
    out = {}
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return {}
    for tid in tasks:
        try:
            text = Path(f"/proc/{pid}/task/{tid}/status").read_text()
        except OSError:
            continue
        keys = ("voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:")
        out[int(tid)] = sum(int(line.split()[1]) for line in text.splitlines() if line.startswith(keys))
    return out


class ChildSampler:
    """The children of `parent` (the FD's backends): each one's last CPU reading from
    /proc/<pid>/stat and its VmHWM, sampled every `interval` s until it exits or we stop;
    and the context switches of the parent's and the children's threads (a thread's count
    as last seen: one that ends between two samples loses at most one interval's worth)."""

    def __init__(self, parent: int, interval: float = 0.05) -> None:
        self.parent = parent
        self.interval = interval
        self.cpu: dict[int, float] = {}
        self.peak: dict[int, int] = {}
        self.parent_base = _task_switches(parent)
        self.parent_switches: dict[int, int] = dict(self.parent_base)
        self.child_switches: dict[tuple[int, int], int] = {}
        #: (monotonic time, the children's CPU so far, the parent's own CPU) at each sample.
        self.series: list[tuple[float, float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"children-{parent}", daemon=True)

    def start(self) -> ChildSampler:
        self._thread.start()
        return self

    def busiest(self, seconds: float) -> tuple[float, float]:
        """(children's CPU, parent's CPU) in the `seconds`-long window of samples in which
        the parent (bacula-fd, busy only while data flows) spent the most: the data phase,
        when `seconds` is its length."""
        best = (0.0, -1.0)
        j = 0
        for t1, c1, p1 in self.series:
            while self.series[j][0] < t1 - seconds - self.interval / 2:
                j += 1
            _t0, c0, p0 = self.series[j]
            if p1 - p0 > best[1]:
                best = (c1 - c0, p1 - p0)
        return best[0], max(0.0, best[1])

    def switches(self) -> tuple[int, int]:
        """(the parent's context switches since the start, the children's in all)."""
        fd = sum(n - self.parent_base.get(tid, 0) for tid, n in self.parent_switches.items())
        return fd, sum(self.child_switches.values())

    def sample(self) -> None:
        from bench.common import vm_hwm

        self.parent_switches.update(_task_switches(self.parent))
        now = time.monotonic()
        try:
            own = proc_cpu(self.parent)
        except (OSError, IndexError, ValueError):
            own = self.series[-1][2] if self.series else 0.0
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            pid = int(entry.name)
            try:
                f = _stat_fields(pid)
            except (OSError, IndexError):
                continue
            if int(f[1]) != self.parent or f[0] == "Z":
                continue
            self.cpu[pid] = (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
            hwm = vm_hwm(pid)
            if hwm is not None:
                self.peak[pid] = max(self.peak.get(pid, 0), hwm)
            for tid, n in _task_switches(pid).items():
                self.child_switches[pid, tid] = n
        self.series.append((now, sum(self.cpu.values()), own))

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def scenario_bacula(
    sim: RunningSimulator,
    tmp: Path,
    gib: float,
    *,
    backend_env: dict[str, str] | None = None,
    fd_network_buffer: int | None = None,
    fd_comm_compression: bool | None = None,
    fd_tls_psk: bool | None = None,
    name: str = REAL_FD,
) -> Run:
    """The same Full through a real Bacula 15.0.3 FD/SD/DIR (the SD writes to local disk).

    CPU per process over the job (/proc/<pid>/stat before and after): bacula-fd's own
    utime+stime; the backend's from the FD's cutime+cstime delta (bacula-fd reaps its
    backend with waitpid at the end of the job, so the child's whole CPU lands there; it is
    checked against the backend's last /proc sample); bacula-sd; the simulator. MiB/s is
    the volume's data phase as the backend logs it. `backend_env` reaches the backend
    through the FD's environment (the diagnostic knobs of bacula_ec2/fdpipe.py);
    `fd_network_buffer` is the FD's Maximum Network Buffer Size (None: Bacula's 65536),
    `fd_comm_compression` its CommCompression, `fd_tls_psk` its TLS PSK Enable (None:
    Bacula's defaults, yes and yes).
    """
    import re
    import shutil

    from devkit.harness import BaculaStack, ensure_build

    build = ensure_build()
    label = f"bench-bacula-{os.getpid()}-{time.monotonic_ns()}"
    inst = sim.client.create_instance(
        label, volumes=[{"size_gib": max(1, int(gib + 1)), "device": "/dev/sda1"}]
    )
    seed_volume(sim, inst["volume_ids"][0], int(gib * 2048))
    line = (
        f"ec2: region=us-east-1 endpoint_url={sim.endpoint} access_key={ACCESS_KEY} "
        f"secret_key=bench-secret instances={label} " + " ".join(EXTRA)
    )
    sim.client.reset_stats()
    stack_dir = tmp / f"bacula-{label}"
    with BaculaStack(
        stack_dir,
        [line],
        prefix=build.prefix,
        plugin_so=build.plugin_so,
        fd_env=backend_env,
        fd_network_buffer=fd_network_buffer,
        fd_comm_compression=fd_comm_compression,
        fd_tls_psk=fd_tls_psk,
    ) as stack:
        fd_pid, sd_pid = stack.pid("fd"), stack.pid("sd")
        fd0, fd_sys0, reaped0 = _cpu_and_reaped(fd_pid)
        sd0, sim0 = proc_cpu(sd_pid), proc_cpu(sim.process.pid)
        children = ChildSampler(fd_pid).start()
        jobid = stack.run_job("Full", timeout=1800)
        children.stop()
        fd1, fd_sys1, reaped1 = _cpu_and_reaped(fd_pid)
        sd_cpu, sim_cpu = proc_cpu(sd_pid) - sd0, proc_cpu(sim.process.pid) - sim0
        log = stack.job_log(jobid)
    m = re.search(r"([\d.]+) MiB data, \d+ empty, ([\d.]+) s \(", log)
    if "Backup OK" not in log or not m:
        (stack_dir / "job.log").write_text(log)
        tail = " / ".join(log.strip().splitlines()[-6:])
        return Run(name, 0, 0, note=f"failed (stack kept in {stack_dir}): {tail[-600:]}")
    shutil.rmtree(stack_dir, ignore_errors=True)  # the SD's volume: as big as the data
    req, thr = get_requests(sim)
    data = int(float(m.group(1)) * MIB)
    gib_data = data / (1 << 30)
    fd_cpu, reaped = fd1 - fd0, reaped1 - reaped0
    sampled = sum(children.cpu.values())
    # The reaped figure is exact; the sample misses at most the last interval of the child.
    backend_cpu, how = (
        (reaped, "FD's cutime+cstime") if reaped >= sampled > 0 else (sampled, "last /proc sample")
    )
    peak = max(children.peak.values(), default=0) / MIB
    fd_switches, backend_switches = children.switches()
    phase_backend, phase_fd = children.busiest(float(m.group(2)))
    note = (
        f"CPU s/GiB: backend {backend_cpu / gib_data:.2f} ({how}; sampled {sampled / gib_data:.2f}), "
        f"bacula-fd {fd_cpu / gib_data:.2f} (system {(fd_sys1 - fd_sys0) / gib_data:.2f}), "
        f"bacula-sd {sd_cpu / gib_data:.2f}, simulator {sim_cpu / gib_data:.2f}; in the data phase "
        f"(bacula-fd's busiest {float(m.group(2)):.1f} s, sampled): backend "
        f"{phase_backend / gib_data:.2f}, bacula-fd {phase_fd / gib_data:.2f}; "
        f"context switches per GiB: bacula-fd "
        f"{fd_switches / gib_data:.0f}, backend {backend_switches / gib_data:.0f}; "
        "data phase as the backend logs it"
    )
    out = Run(name, data, float(m.group(2)), backend_cpu, peak, req, thr, note)
    out.extra = dict(
        fd_cpu=fd_cpu,
        fd_system=fd_sys1 - fd_sys0,
        backend_cpu=backend_cpu,
        backend_sampled=sampled,
        backend_reaped=reaped,
        backend_how=how,
        sd_cpu=sd_cpu,
        simulator_cpu=sim_cpu,
        backends=len(children.cpu),
        fd_switches=fd_switches,
        phase_backend_cpu=phase_backend,
        phase_fd_cpu=phase_fd,
        backend_switches=backend_switches,
    )
    return out


SCENARIOS: dict[str, Callable[[RunningSimulator, Path, float], Run | list[Run]]] = {
    "full": scenario_full,
    "full_before": scenario_full_before,
    "startup": scenario_startup,
    "four": scenario_four,
    "incremental": scenario_incremental,
    "incremental1024": lambda sim, tmp, gib: scenario_incremental(sim, tmp, gib, window=1024),
    "memory": scenario_memory,
    "dsnap": scenario_dsnap,
    "bacula": scenario_bacula,
}


def simulator_capacity() -> str:
    """The simulator's own ceiling, measured alone (bench.simulator_capacity)."""
    proc = subprocess.run(
        [sys.executable, "-m", "bench.simulator_capacity", "--seconds", "4"],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )
    try:
        doc = json.loads(proc.stdout)
    except ValueError:
        return f"(capacity run failed: {proc.stderr[-200:]!r})"
    if proc.returncode:
        return f"(capacity run failed: {proc.stderr.strip()[-200:]})"
    return (
        f"{doc['MiB_per_s']:.0f} MiB/s ({doc['req_per_s']:.0f} GetSnapshotBlock/s) using "
        f"{doc['simulator_cores_used']:.2f} cores = "
        f"{doc['MiB_per_simulator_cpu_s']:.0f} MiB per simulator CPU second"
    )


def real_fd_line(real: Run) -> str:
    """The real-FD Full: MiB/s, and backend + bacula-fd CPU-s/GiB (what a backup proxy whose
    SD runs elsewhere spends), then the SD's and the simulator's."""
    gib = real.data_bytes / (1 << 30)
    x, y = real.extra["backend_cpu"] / gib, real.extra["fd_cpu"] / gib
    px, py = real.extra["phase_backend_cpu"] / gib, real.extra["phase_fd_cpu"] / gib
    return (
        f"- real FD: {real.mib_s:.0f} MiB/s; backend {x:.2f} + bacula-fd {y:.2f} = {x + y:.2f} CPU-s/GiB "
        f"(whole job; in the data phase {px:.2f} + {py:.2f} = {px + py:.2f}); "
        f"sd {real.extra['sd_cpu'] / gib:.2f}, simulator {real.extra['simulator_cpu'] / gib:.2f}"
    )


def _target(value: float, limit: float, unit: str = "") -> str:
    return f"target <= {limit:g}{unit}: {'met' if value <= limit else 'NOT met'}"


def summary(rows: list[Run]) -> str:
    """The headline figures of issue 15, from this run's rows (absent scenarios say so)."""
    by = {r.name: r for r in rows}
    lines = ["Summary (one run; MiB/s measured on a shared, loaded machine; CPU-s/GiB is the robust figure):"]
    full = by.get("Full, 1 volume")
    if full and full.data_bytes:
        gib = full.data_bytes / (1 << 30)
        lines += [
            f"- Full, 1 volume: {full.mib_s:.0f} MiB/s, {100 * full.mib_s / CEILING_MIB:.0f}% of the "
            f"{CEILING_MIB:.0f} MiB/s ceiling; backend {full.cpu / gib:.2f} CPU-s/GiB "
            f"(whole process, {_target(full.cpu / gib, 1.0)}; {full.extra['phase_cpu'] / gib:.2f} in the "
            f"data phase; consumer {full.extra['consumer_cpu'] / gib:.2f}, "
            f"simulator {full.extra['simulator_cpu'] / gib:.2f})",
        ]
        before = next((r for r in rows if r.name.startswith("Full, 1 volume, backend of")), None)
        if before and before.data_bytes:
            bgib = before.data_bytes / (1 << 30)
            lines.append(
                f"- the same Full, {before.name.split(', ', 2)[2]}: {before.mib_s:.0f} MiB/s; backend "
                f"{before.cpu / bgib:.2f} CPU-s/GiB (whole process; {before.extra['phase_cpu'] / bgib:.2f} "
                f"in the data phase); time to first block {before.start_s:.2f} s"
            )
        lines.append(
            "- time to first block: backend process start to the first GetSnapshotBlock at the "
            + (
                f"simulator {full.extra['first_get_s']:.2f} s"
                if full.extra.get("first_get_s") is not None
                else "simulator ?"
            )
            + f", to the first block's data at the consumer {full.start_s:.2f} s"
        )
    else:
        lines.append("- Full, 1 volume: not run")
    start = next((r for r in rows if r.name.startswith("Start-up")), None)
    if start:
        lines.append(f"- {start.name}: {start.note}")
    mem = next((r for r in rows if r.name.startswith("Memory")), None)
    lines.append(
        f"- backend true peak RSS (VmHWM): {mem.note.split(': ', 1)[1]}" if mem else "- memory: not run"
    )
    incr = [r for r in rows if r.name.startswith("Incremental")]
    limits = {1024: 6.0, 16384: 80.0}
    for r in incr:
        size = r.extra.get("size_gib")
        check = f", {_target(r.seconds, limits[size], ' s')}" if size in limits else ""
        lines.append(
            f"- {r.name}: {r.seconds:.1f} s whole job{check} (listing and reads "
            f"{r.extra.get('listing_read', 0.0):.1f} s), {r.throttled} throttled List responses"
        )
    if not incr:
        lines.append("- Incremental: not run")
    real = by.get(REAL_FD)
    lines.append(real_fd_line(real) if real and real.data_bytes else "- real FD: not run")
    return "\n".join(lines)


#: What `make bench` runs when --scenarios is not given (incremental1024 costs ~2 minutes
#: of ListChangedBlocks pages and is left to be asked for).
DEFAULT_SCENARIOS = "full,full_before,startup,four,incremental,memory,dsnap,bacula"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gib", type=float, default=4.0, help="data per volume in GiB (default 4)")
    ap.add_argument("--scenarios", default=DEFAULT_SCENARIOS, help=f"of {', '.join(SCENARIOS)}")
    ap.add_argument(
        "--before",
        default="",
        metavar="REV",
        help="also run the Full with the backend of this commit (full_before): before/after in one run",
    )
    args = ap.parse_args(argv)
    names = [n for n in args.scenarios.split(",") if n]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        ap.error(f"unknown scenario(s) {', '.join(unknown)}: choose from {', '.join(SCENARIOS)}")
    BEFORE["rev"] = args.before
    if not args.before:
        names = [n for n in names if n != "full_before"]
    capacity = simulator_capacity()
    print(f"simulator alone: {capacity}", flush=True)
    sim = start_simulator(snapshot_delay=0.0)
    tmp = Path(os.environ.get("TMPDIR", "/tmp")) / f"bacula-ec2-bench-{os.getpid()}"
    tmp.mkdir(parents=True, exist_ok=True)
    rows: list[Run] = []
    try:
        for name in names:
            sim.client.reset()
            sim.client.set_options(aws_like=True, snapshot_delay=0.0)
            got = SCENARIOS[name](sim, tmp, args.gib)
            for run in got if isinstance(got, list) else [got]:
                print(run.row(), flush=True)
                rows.append(run)
    finally:
        stop_simulator(sim)
        shutil.rmtree(tmp, ignore_errors=True)
    table = HEADER + "\n" + "\n".join(r.row() for r in rows) + "\n"
    table += "\n" + summary(rows) + "\n"
    out = REPO / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"backup-{dt.datetime.now():%Y%m%d-%H%M%S}.md"
    table += f"\nSimulator alone (no latency, loopback): {capacity}\n"
    path.write_text(f"# bench.backup {dt.datetime.now().isoformat(timespec='seconds')}\n\n{table}")
    print("\n" + table + f"\nwritten to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
