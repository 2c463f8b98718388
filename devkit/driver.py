"""Run the real `ec2-backend` process over pipes, with the strict FD peer driving it."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from bacula_ec2.backend import PLUGIN_API
from devkit.fdpeer import FDPeer
from protocol import Connection, Mode

REPO = Path(__file__).resolve().parents[1]


def job_name(jobid: int) -> str:
    return f"ec2test.2026-11-26_16.00.00_{jobid:02d}"


def job_lines(
    jobtype: str,
    working_dir: Path,
    *,
    level: str | None = "F",
    jobid: int = 7,
    where: str | None = None,
    since: int | None = None,
    prev: str = "",
) -> list[str]:
    """The Job block as a 15.0.3 FD sends it (metaplugin-protocol.md §3.3), in order."""
    lines = [f"Name={job_name(jobid)}", f"JobID={jobid}", f"Type={jobtype}"]
    if level is not None and jobtype != "R":
        lines.append(f"Level={level}")
        if since is not None and level in "ID":
            lines.append(f"Since={since}")
    if where is not None:
        lines += [f"Where={where}", "Replace=a"]
    lines += [
        "Namespace=@amazon-ec2",
        f"PrevJobName={prev}",
        f"WorkingDir={working_dir}",
        "SysconfigPath=/etc/bacula/",
        "ExePath=/usr/sbin/",
    ]
    return lines


@dataclass
class RunningBackend:
    peer: FDPeer
    process: subprocess.Popen[bytes]
    working_dir: Path

    def stderr(self) -> bytes:
        assert self.process.stderr is not None
        return self.process.stderr.read()

    def log(self) -> str:
        path = self.working_dir / "bacula-ec2.log"
        return path.read_text() if path.exists() else ""


def spawn_backend(env: Mapping[str, str] | None = None) -> subprocess.Popen[bytes]:
    """`python -m bacula_ec2.backend` with stdin, stdout and stderr on pipes, in `/` (as the
    FD starts it), with `env` (None: this process's environment)."""
    return subprocess.Popen(
        [sys.executable, "-m", "bacula_ec2.backend"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd="/",
        env=dict(env) if env is not None else None,
    )


@contextmanager
def backend(mode: Mode, params: list[str], working_dir: Path, **job: object) -> Iterator[RunningBackend]:
    """Start `python -m bacula_ec2.backend`, do the setup, and hand over the peer."""
    jobtype = {Mode.BACKUP: "B", Mode.RESTORE: "R"}.get(mode, "E")
    env = dict(os.environ)
    env.pop("BACULA_EC2_LOG", None)
    proc = spawn_backend(env)
    assert proc.stdin is not None and proc.stdout is not None
    peer = FDPeer(Connection.from_fds(proc.stdout.fileno(), proc.stdin.fileno(), strict=True))
    running = RunningBackend(peer, proc, working_dir)
    try:
        peer.setup("ec2", PLUGIN_API, job_lines(jobtype, working_dir, **job), params, mode)  # type: ignore[arg-type]
        yield running
    finally:
        with suppress(OSError):
            proc.stdin.close()
        proc.wait(timeout=60)
