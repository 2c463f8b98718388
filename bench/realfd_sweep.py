"""The real-FD path: what the backend's packet size, its pipe size and the FD's Maximum
Network Buffer Size cost bacula-fd (and the backend) per GiB of a Full.

    .venv/bin/python -m bench.realfd_sweep [--gib 1] [--runs 2] [--settings a,b,...]

Each setting runs bench.backup's `bacula` scenario (the same Full through a real Bacula
15.0.3 DIR/SD/FD, simulator in `aws_like` mode); the settings are interleaved (round 1 of
every setting, then round 2, ...) so a change in the machine's load spreads over all of
them. CPU-s/GiB per process is the figure to compare; MiB/s depends on what else the shared
machine runs. The table goes to stdout and to bench/results/realfd-<time>.md.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.backup import Run, scenario_bacula  # noqa: E402
from devkit.simulator.fixtures import start_simulator, stop_simulator  # noqa: E402


@dataclass(frozen=True)
class Setting:
    name: str
    pipe: str  # BACULA_EC2_PIPE_SIZE ("0": the FD's pipe as it is, 64 KiB)
    packet: str = ""  # BACULA_EC2_DATA_PACKET ("": one packet per 524,336-byte record)
    netbuf: int | None = None  # the FD's Maximum Network Buffer Size (None: 65536)
    comm_compression: bool | None = None  # the FD's CommCompression (None: yes)
    tls_psk: bool | None = None  # the FD's TLS PSK Enable (None: yes)

    def env(self) -> dict[str, str]:
        env = {"BACULA_EC2_PIPE_SIZE": self.pipe}
        if self.packet:
            env["BACULA_EC2_DATA_PACKET"] = self.packet
        return env


SETTINGS = {
    s.name: s
    for s in (
        Setting("pipe 64K, packet 512K+48 (before)", "0"),
        Setting("pipe 64K, packet 64K", "0", "64K"),
        Setting("pipe 64K, packet 128K", "0", "128K"),
        Setting("pipe 64K, packet 256K", "0", "256K"),
        Setting("pipe 1M, packet 512K+48", "1M"),
        Setting("pipe 1M, packet 64K", "1M", "64K"),
        Setting("pipe 1M, packet 512K+48, FD netbuf 513K", "1M", "", 525312),
        Setting("pipe 64K, packet 512K+48, FD netbuf 513K", "0", "", 525312),
        Setting("pipe 1M, packet 512K+48, FD CommCompression=no", "1M", "", None, False),
        Setting("pipe 64K, packet 512K+48, FD CommCompression=no", "0", "", None, False),
        Setting("pipe 1M, packet 64K, FD CommCompression=no", "1M", "64K", None, False),
        Setting("pipe 1M, packet 512K+48, FD TLS PSK off", "1M", "", None, None, False),
        Setting("pipe 1M, packet 512K+48, FD TLS PSK off + CommCompression=no", "1M", "", None, False, False),
    )
}
SHORT = {f"s{n}": name for n, name in enumerate(SETTINGS, 1)}


def _stats(values: list[float], digits: int = 2) -> str:
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def table(results: dict[str, list[Run]]) -> str:
    lines = [
        "| setting | runs | bacula-fd CPU-s/GiB | backend CPU-s/GiB | backend + FD "
        "| data phase: backend + FD | bacula-sd CPU-s/GiB | MiB/s (data phase) "
        "| bacula-fd / backend context switches per GiB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, runs in results.items():
        ok = [r for r in runs if r.data_bytes]
        if not ok:
            lines.append(f"| {name} | 0 of {len(runs)} | failed | | | | | | |")
            continue
        gib = [r.data_bytes / (1 << 30) for r in ok]
        fd = [r.extra["fd_cpu"] / g for r, g in zip(ok, gib, strict=True)]
        be = [r.extra["backend_cpu"] / g for r, g in zip(ok, gib, strict=True)]
        sd = [r.extra["sd_cpu"] / g for r, g in zip(ok, gib, strict=True)]
        both = [a + b for a, b in zip(fd, be, strict=True)]
        phase = [
            (r.extra["phase_backend_cpu"] + r.extra["phase_fd_cpu"]) / g for r, g in zip(ok, gib, strict=True)
        ]
        rate = [r.mib_s for r in ok]
        sw_fd = [r.extra["fd_switches"] / g for r, g in zip(ok, gib, strict=True)]
        sw_be = [r.extra["backend_switches"] / g for r, g in zip(ok, gib, strict=True)]
        runs_text = f"{len(ok)}" if len(ok) == len(runs) else f"{len(ok)} of {len(runs)}"
        lines.append(
            f"| {name} | {runs_text} | {_stats(fd)} | {_stats(be)} | {_stats(both)} | {_stats(phase)} "
            f"| {_stats(sd)} "
            f"| {_stats(rate, 0)} | {statistics.mean(sw_fd):.0f} / {statistics.mean(sw_be):.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gib", type=float, default=1.0)
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument(
        "--settings",
        default=",".join(SHORT),
        help="comma-separated: " + "; ".join(f"{k} = {v}" for k, v in SHORT.items()),
    )
    args = ap.parse_args(argv)
    chosen = [SETTINGS[SHORT.get(k, k)] for k in args.settings.split(",")]
    sim = start_simulator(snapshot_delay=0.0)
    tmp = Path(os.environ.get("TMPDIR", "/tmp")) / f"bacula-ec2-realfd-{os.getpid()}"
    tmp.mkdir(parents=True, exist_ok=True)
    results: dict[str, list[Run]] = {s.name: [] for s in chosen}
    try:
        for round_no in range(args.runs):
            for s in chosen:
                sim.client.reset()
                sim.client.set_options(aws_like=True, snapshot_delay=0.0)
                run = scenario_bacula(
                    sim,
                    tmp,
                    args.gib,
                    backend_env=s.env(),
                    fd_network_buffer=s.netbuf,
                    fd_comm_compression=s.comm_compression,
                    fd_tls_psk=s.tls_psk,
                    name=s.name,
                )
                results[s.name].append(run)
                print(f"round {round_no + 1}: {s.name}: {run.mib_s:.0f} MiB/s; {run.note}", flush=True)
    finally:
        stop_simulator(sim)
        with contextlib.suppress(OSError):
            tmp.rmdir()  # empty unless a failed run kept its stack there (see its note)
    text = (
        f"# bench.realfd_sweep {dt.datetime.now().isoformat(timespec='seconds')}\n\n"
        f"{args.gib:g} GiB Full of one volume through a real Bacula 15.0.3 DIR/SD/FD per run, "
        f"{args.runs} interleaved runs per setting; mean (min-max). CPU from /proc/<pid>/stat "
        "before and after the job (backend: the FD's reaped-children CPU).\n\n" + table(results) + "\n"
    )
    out = REPO / "bench" / "results" / f"realfd-{dt.datetime.now():%Y%m%d-%H%M%S}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print("\n" + text + f"\nwritten to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
