"""bec2 alone: the chain scenario into a local folder, point-in-time restores, exit codes."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import time
from pathlib import Path

from tests.helpers import sha256_file
from tests.simulator.fixtures import ACCESS_KEY

BLOCK = 524288
SECRET = "bec2/SECRET/key/123456789"


def bec2(sim, *args: str, check: int | None = 0) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    cmd = [sys.executable, "-m", "bacula_ec2.cli", *args]
    if sim is not None:
        cmd += [
            "--region=us-east-1",
            f"--access_key={ACCESS_KEY}",
            f"--secret_key={SECRET}",
            f"--endpoint_url={sim.endpoint}",
        ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if check is not None:
        assert proc.returncode == check, proc.stderr
    assert SECRET not in proc.stdout + proc.stderr
    return proc


def test_chain_through_bec2_restores_every_point(sim, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    inst = sim.client.create_instance("cli-web", volumes=[{"size_gib": 1, "device": "/dev/sda1"}])
    iid, vid = inst["instance_id"], inst["volume_ids"][0]
    w = sim.client.write_volume
    w(vid, 0, os.urandom(4 * BLOCK))
    store = tmp_path / "store"
    common = ["--instances=cli-web", "--keep_full_snapshot=yes", f"--output={store}", "--verbose"]
    steps = [
        ("F", []),
        ("I", [(2 * BLOCK, b"one")]),
        ("I", [(0, bytes(BLOCK)), (99 * BLOCK, b"n")]),
        ("D", [(500 * BLOCK, b"d")]),
        ("I", [(99 * BLOCK, bytes(BLOCK)), (7, b"z")]),
    ]
    points = []
    for level, writes in steps:
        for offset, data in writes:
            w(vid, offset, data)
        out = bec2(sim, "--operation=backup", f"--level={level}", *common)
        assert "backup" in out.stderr and "stored under" in out.stderr
        points.append((dt.datetime.now(dt.UTC).isoformat(), sim.client.volume_sha256(vid)))
        time.sleep(0.05)
    names = sorted(p.name for p in (store / "@amazon-ec2" / iid).iterdir())
    assert sum(n.endswith(".bimg") for n in names) == 5, names
    assert len(sim.client.snapshots()) == 2  # the Full's (keep_full_snapshot) and the last one
    for n, (when, want) in enumerate(points):
        target = tmp_path / f"r{n}"
        bec2(None, "--operation=restore", f"--output={store}", f"--local_path={target}", f"--before={when}")
        assert sha256_file(target / "@amazon-ec2" / iid / f"{vid}-sda1-1G.img") == want, f"point {n}"


def test_exit_codes_and_help(sim, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = bec2(None, "--help")
    for name in ("--region", "--instances", "--keep_full_snapshot", "--bitmap_headers", "--local_path"):
        assert name in out.stdout
    bad = bec2(sim, "--operation=backup", "--instances=x", "--concurrent_threads=lots", check=2)
    assert "concurrent_threads" in bad.stderr
    missing = bec2(
        sim, "--operation=backup", "--instances=i-0123456789abcdef0", f"--output={tmp_path}", check=1
    )
    assert "i-0123456789abcdef0 not found" in missing.stderr
    assert sim.client.snapshots() == []
    empty = bec2(
        None, "--operation=restore", f"--output={tmp_path / 'none'}", f"--local_path={tmp_path}", check=1
    )
    assert "no bacula-ec2 backup" in empty.stderr
