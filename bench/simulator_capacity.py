"""How much GetSnapshotBlock traffic the simulator serves alone (512 KiB bodies, loopback).

The simulator must not be what limits a benchmark of the product, so this measures it
without the product: a load generator of several processes, each with raw keep-alive
sockets (a minimal HTTP/1.1 client reading bodies into a reused buffer, with a
SigV4-looking Authorization header), hammers GetSnapshotBlock on a snapshot seeded with
random blocks. No latency, no throttling, no faults. It reports MiB/s, requests/s and the
CPU seconds the simulator process used (utime+stime from /proc), so MiB/s per CPU second is
the "per core" figure.

    .venv/bin/python -m bench.simulator_capacity [--seconds 10] [--procs 2] [--conns 2]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from devkit.simulator import BLOCK_SIZE  # noqa: E402
from devkit.simulator.fixtures import start_simulator, stop_simulator  # noqa: E402

AUTH = (
    "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20260101/us-east-1/ebs/aws4_request, "
    "SignedHeaders=host;x-amz-date, Signature=" + "0" * 64
)


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _worker(
    host: str,
    port: int,
    snapshot_id: str,
    blocks: list[tuple[int, str]],
    conns: int,
    deadline: float,
    out: Any,
) -> None:
    """One load-generator process: ``conns`` sockets, round-robin, one request in flight
    on each; counts responses and body bytes."""
    socks = [socket.create_connection((host, port)) for _ in range(conns)]
    for s in socks:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    # The simulator refuses a request dated more than 15 minutes off (RequestTimeTooSkewed,
    # as AWS does): the date is now's (the signature is not checked).
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    auth = AUTH.replace("20260101", stamp[:8])
    reqs = [
        (
            f"GET /snapshots/{snapshot_id}/blocks/{i}?blockToken={tok} HTTP/1.1\r\n"
            f"Host: {host}:{port}\r\nAuthorization: {auth}\r\nX-Amz-Date: {stamp}\r\n"
            f"User-Agent: capacity-bench\r\n\r\n"
        ).encode()
        for i, tok in blocks
    ]
    buf = bytearray(BLOCK_SIZE + 65536)
    view = memoryview(buf)
    n = nbytes = errors = 0
    k = os.getpid()
    pending = [False] * conns
    while time.time() < deadline:
        for c, s in enumerate(socks):
            if not pending[c]:
                s.sendall(reqs[k % len(reqs)])
                k += 1
                pending[c] = True
        for c, s in enumerate(socks):
            got = 0
            head_end = -1
            while head_end < 0:
                r = s.recv_into(view[got:], len(buf) - got)
                if r == 0:
                    raise ConnectionError("server closed the connection")
                got += r
                head_end = buf.find(b"\r\n\r\n", 0, got)
            head = bytes(buf[:head_end]).decode("latin-1")
            if not head.startswith("HTTP/1.1 200"):
                errors += 1
            length = 0
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                if name.lower() == "content-length":
                    length = int(value)
            body_have = got - head_end - 4
            while body_have < length:
                r = s.recv_into(view, min(len(buf), length - body_have))
                if r == 0:
                    raise ConnectionError("server closed the connection")
                body_have += r
            pending[c] = False
            n += 1
            nbytes += length
    for s in socks:
        s.close()
    out.put((n, nbytes, errors))


def run(seconds: float, procs: int, conns: int, nblocks: int) -> dict[str, Any]:
    import boto3

    sim = start_simulator(snapshot_delay=0)
    try:
        client = sim.client
        vol = client.create_volume(1)
        data = os.urandom(BLOCK_SIZE)
        for i in range(nblocks):
            client.write_volume(vol, i * BLOCK_SIZE, data[i:] + data[:i])
        ec2 = boto3.client("ec2", **sim.boto3_kwargs())
        ebs = boto3.client("ebs", **sim.boto3_kwargs())
        snap = ec2.create_snapshot(VolumeId=vol)["SnapshotId"]
        listed = ebs.list_snapshot_blocks(SnapshotId=snap)["Blocks"]
        blocks = [
            (b["BlockIndex"], b["BlockToken"].replace("+", "%2B").replace("/", "%2F").replace("=", "%3D"))
            for b in listed
        ]
        host, port = sim.endpoint.removeprefix("http://").split(":")
        pid = sim.process.pid
        queue: Any = mp.Queue()
        start = time.time() + 0.5
        deadline = start + seconds
        workers = [
            mp.Process(target=_worker, args=(host, int(port), snap, blocks, conns, deadline, queue))
            for _ in range(procs)
        ]
        for w in workers:
            w.start()
        time.sleep(max(0.0, start - time.time()))
        cpu0, t0 = _cpu_seconds(pid), time.time()
        results = [queue.get(timeout=seconds + 60) for _ in workers]
        cpu1, t1 = _cpu_seconds(pid), time.time()
        for w in workers:
            w.join()
    finally:
        stop_simulator(sim)
    n = sum(r[0] for r in results)
    nbytes = sum(r[1] for r in results)
    errors = sum(r[2] for r in results)
    wall = t1 - t0
    cpu = cpu1 - cpu0
    return {
        "seconds": round(wall, 2),
        "processes": procs,
        "connections": procs * conns,
        "requests": n,
        "errors": errors,
        "req_per_s": round(n / wall, 1),
        "MiB_per_s": round(nbytes / wall / 2**20, 1),
        "simulator_cpu_s": round(cpu, 2),
        "simulator_cores_used": round(cpu / wall, 2),
        "MiB_per_simulator_cpu_s": round(nbytes / 2**20 / cpu, 1) if cpu else None,
        "cpus": os.cpu_count(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--procs", type=int, default=2, help="load-generator processes")
    parser.add_argument("--conns", type=int, default=2, help="connections per process")
    parser.add_argument("--blocks", type=int, default=64, help="distinct blocks served")
    args = parser.parse_args()
    result = run(args.seconds, args.procs, args.conns, args.blocks)
    print(json.dumps(result, indent=2))
    if result["errors"]:
        # An error answer is not capacity: a figure made of them would mislead (it once did:
        # every request refused as RequestTimeTooSkewed, "1 MiB/s at 10,000 requests/s").
        print(f"{result['errors']} of {result['requests']} requests were refused", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
