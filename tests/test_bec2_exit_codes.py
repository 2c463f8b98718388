"""bec2's exit codes, row by row as README.md "bec2" lists them, through the installed `bec2`
entry point (a subprocess) against the simulator.

| 0 | success | 1 | the job failed or partly failed | 2 | usage, parameter or configuration
error (no region, no credentials, nothing selected) | 130 | Ctrl-C (SIGINT); 143 SIGTERM |
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from devkit.simulator.fixtures import ACCESS_KEY, SECRET_KEY

BEC2 = str(Path(sys.executable).with_name("bec2"))
BLOCK = 524288


def clean_env(home: Path) -> dict[str, str]:
    """No AWS configuration from the host: no AWS_* variables, an empty HOME, no IMDS."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(HOME=str(home), AWS_EC2_METADATA_DISABLED="true")
    return env


def run(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [BEC2, *args], capture_output=True, text=True, timeout=timeout, env=env, stdin=subprocess.DEVNULL
    )


def aws_args(sim: Any, region: bool = True, credentials: bool = True) -> list[str]:
    args = [f"--endpoint_url={sim.endpoint}"]
    if region:
        args.append("--region=us-east-1")
    if credentials:
        args += [f"--access_key={ACCESS_KEY}", f"--secret_key={SECRET_KEY}"]
    return args


@pytest.fixture
def world(sim: Any, tmp_path: Path) -> tuple[Any, dict[str, str], str]:
    """The simulator with web-1 (one 1 GiB volume holding 2 MiB), a clean environment and the
    id of web-1's volume."""
    sim.client.set_options(snapshot_delay=0.02)
    inst = sim.client.create_instance("web-1", volumes=[{"size_gib": 1, "device": "/dev/sda1"}])
    vid = inst["volume_ids"][0]
    sim.client.write_volume(vid, 0, os.urandom(4 * BLOCK))
    home = tmp_path / "home"
    home.mkdir()
    return sim, clean_env(home), vid


def test_0_success(world: Any, tmp_path: Path) -> None:
    sim, env, _vid = world
    store = tmp_path / "store"
    proc = run(env, "--operation=backup", "--instances=web-1", f"--output={store}", *aws_args(sim))
    assert proc.returncode == 0, proc.stderr
    proc = run(env, "--operation=list", f"--output={store}")
    assert proc.returncode == 0 and "complete" in proc.stdout, proc.stderr


def test_1_job_failed(world: Any, tmp_path: Path) -> None:
    """A partly failed backup (one of two instances missing); a restore from a damaged
    backup. (A selection that finds nothing at all is a configuration error: exit 2.)"""
    sim, env, _vid = world
    store = tmp_path / "store"
    proc = run(env, "--operation=backup", "--instances=nope-1", f"--output={store}", *aws_args(sim))
    assert proc.returncode == 2, proc.stderr
    assert "nope-1" in proc.stderr
    proc = run(env, "--operation=backup", "--instances=web-1,nope-1", f"--output={store}", *aws_args(sim))
    assert proc.returncode == 1, proc.stderr
    assert "nope-1" in proc.stderr
    proc = run(env, "--operation=backup", "--instances=web-1", f"--output={store}", *aws_args(sim))
    assert proc.returncode == 0, proc.stderr
    images = list(store.glob("backups/*/@amazon-ec2/i-*/*.bimg"))
    assert images
    for image in images:  # one byte of block data flipped in each
        with open(image, "r+b") as fh:
            fh.seek(-BLOCK // 2, os.SEEK_END)
            byte = fh.read(1)
            fh.seek(-1, os.SEEK_CUR)
            fh.write(bytes([byte[0] ^ 0xFF]))
    target = tmp_path / "r"
    proc = run(env, "--operation=restore", f"--output={store}", f"--local_path={target}")
    assert proc.returncode == 1, proc.stderr
    assert "SHA-256" in proc.stderr and ".bimg" in proc.stderr
    assert not list(target.rglob("*.img"))


@pytest.mark.parametrize(
    "case",
    [
        "unknown parameter",
        "bad value",
        "bad level",
        "no region",
        "no credentials",
        "nothing selected",
        "job name with /",
        "zone of another region",
    ],
)
def test_2_usage_parameter_or_configuration(world: Any, tmp_path: Path, case: str) -> None:
    sim, env, _vid = world
    store = tmp_path / "store"
    backup = ["--operation=backup", "--instances=web-1", f"--output={store}"]
    args, wanted = {
        "unknown parameter": ([*backup, "--instance=web-1", *aws_args(sim)], "unrecognized arguments"),
        "bad value": ([*backup, "--concurrent_threads=lots", *aws_args(sim)], "concurrent_threads"),
        "bad level": ([*backup, "--level=Weekly", *aws_args(sim)], "'Weekly' is not a level"),
        "no region": ([*backup, *aws_args(sim, region=False)], "no region"),
        "no credentials": ([*backup, *aws_args(sim, credentials=False)], "no AWS credentials"),
        "nothing selected": (
            ["--operation=backup", f"--output={store}", *aws_args(sim)],
            "nothing selected",
        ),
        "job name with /": ([*backup, "--job_name=nightly/web", *aws_args(sim)], "no '/'"),
        "zone of another region": (
            [
                "--operation=restore",
                "--restore_to=aws",
                f"--output={store}",
                "--restore_availability_zone=eu-west-1b",
                *aws_args(sim, region=False),
            ],
            "restore_availability_zone eu-west-1b is a zone of eu-west-1",
        ),
    }[case]
    if case == "zone of another region":
        proc = run(env, *backup, *aws_args(sim))
        assert proc.returncode == 0, proc.stderr
    before = {s["id"] for s in sim.client.snapshots()}
    proc = run(env, *args)
    assert proc.returncode == 2, f"{case}: exit {proc.returncode}\n{proc.stderr}"
    assert wanted in proc.stderr, proc.stderr
    assert {s["id"] for s in sim.client.snapshots()} == before, "nothing was created"
    assert sim.client.snapshots("eu-west-1") == []
    assert not list(store.glob("bacula-ec2-restore-*")), "nothing was staged"


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_130_interrupted_cleans_up(world: Any, tmp_path: Path, sig: int, code: int) -> None:
    """A signal while the blocks are read: the job stops, its snapshot is deleted and its
    backup directory removed; exit 128 + the signal's number."""
    sim, env, vid = world
    sim.client.write_volume(vid, 8 * BLOCK, os.urandom(16 * BLOCK))
    sim.client.set_options(latency_ms=400, latency_operations=["GetSnapshotBlock"])
    store = tmp_path / "store"
    proc = subprocess.Popen(
        [BEC2, "--operation=backup", "--instances=web-1", f"--output={store}", "--concurrent_threads=2",
         *aws_args(sim)],
        env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while sim.client.stats()["requests"].get("GetSnapshotBlock", 0) < 2:
            assert proc.poll() is None and time.monotonic() < deadline, "the backup never read a block"
            time.sleep(0.05)
        assert sim.client.snapshots(), "the job's snapshot exists while it reads"
        proc.send_signal(sig)
        _out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == code, err
    assert f"interrupted ({signal.Signals(sig).name})" in err
    assert sim.client.snapshots() == [], "the interrupted job's snapshot was deleted"
    assert list((store / "backups").iterdir()) == [], "its backup directory was removed"
