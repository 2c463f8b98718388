"""Pytest fixtures running the simulator as a subprocess (the backend under test runs in
other processes, so the simulator must be a real server, not an in-process mock).

Use from ``tests/conftest.py``::

    from devkit.simulator.fixtures import sim, simulator  # noqa: F401

``simulator`` (session) starts ``python -m devkit.simulator --port 0`` once; ``sim``
(function) is the same object after ``reset()``, so every test starts from an empty world
with default options.

HTTPS: the same port speaks TLS (``https_endpoint``); ``ca_path`` is a file holding the
simulator's CA. ``api_endpoint()``, ``boto3_kwargs()`` and ``env()`` follow the ``tls`` knob
by default (https and the CA while it is on, since plain HTTP to the AWS APIs is then
refused); pass ``tls=`` to choose.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from .control import SimulatorClient
from .model import DEFAULT_REGION

REPO_ROOT = Path(__file__).resolve().parents[2]
ENDPOINT_PREFIX = "SIMULATOR_ENDPOINT="
ACCESS_KEY = "AKIDEXAMPLE"
SECRET_KEY = "secret"


@dataclass
class RunningSimulator:
    endpoint: str  # http://127.0.0.1:<port>
    client: SimulatorClient
    process: subprocess.Popen[str]
    _ca_dir: str | None = field(default=None, repr=False)

    @property
    def https_endpoint(self) -> str:
        """``https://127.0.0.1:<port>``: the same port over TLS (trust :attr:`ca_path`)."""
        return "https://" + self.endpoint.split("://", 1)[1]

    @property
    def ca_path(self) -> str:
        """A file with the simulator's CA certificate (PEM), fetched once."""
        if self._ca_dir is None:
            pem = self.client.tls_ca_pem()
            self._ca_dir = tempfile.mkdtemp(prefix="aws-sim-ca-")
            Path(self._ca_dir, "ca.pem").write_bytes(pem)
        return str(Path(self._ca_dir, "ca.pem"))

    def _tls(self, tls: bool | None) -> bool:
        return bool(self.client.options()["tls"]) if tls is None else tls

    def api_endpoint(self, tls: bool | None = None) -> str:
        """The endpoint for AWS calls (``endpoint_url=``): https while the ``tls`` knob is on
        (``tls=None``), else http; ``tls=True/False`` chooses."""
        return self.https_endpoint if self._tls(tls) else self.endpoint

    def boto3_kwargs(self, region: str = DEFAULT_REGION,
                     tls: bool | None = None) -> dict[str, Any]:
        """Keyword arguments for ``boto3.client(service, **...)`` aimed at the simulator
        (over https with ``verify=`` the CA while the ``tls`` knob is on, see
        :meth:`api_endpoint`)."""
        kwargs: dict[str, Any] = {"endpoint_url": self.endpoint, "region_name": region,
                                  "aws_access_key_id": ACCESS_KEY,
                                  "aws_secret_access_key": SECRET_KEY}
        if self._tls(tls):
            kwargs["endpoint_url"] = self.https_endpoint
            kwargs["verify"] = self.ca_path
        return kwargs

    def env(self, region: str = DEFAULT_REGION, tls: bool | None = None) -> dict[str, str]:
        """Environment for a child process (e.g. the backend) so plain boto3 uses us
        (https and ``AWS_CA_BUNDLE`` while the ``tls`` knob is on)."""
        env = {"AWS_ENDPOINT_URL": self.endpoint, "AWS_DEFAULT_REGION": region,
               "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}
        if self._tls(tls):
            env["AWS_ENDPOINT_URL"] = self.https_endpoint
            env["AWS_CA_BUNDLE"] = self.ca_path
        return env


def start_simulator(snapshot_delay: float | None = None, timeout: float = 20.0,
                    verbose: bool = False, options: Mapping[str, Any] | None = None
                    ) -> RunningSimulator:
    """Start ``python -m devkit.simulator`` and wait for its endpoint line.

    ``options`` are start-up knob values (docs/SIMULATOR.md), kept across ``reset()``.
    """
    cmd = [sys.executable, "-m", "devkit.simulator", "--port", "0"]
    if snapshot_delay is not None:
        cmd += ["--snapshot-delay", str(snapshot_delay)]
    for name, value in (options or {}).items():
        cmd += ["--option", f"{name}={json.dumps(value)}"]
    if verbose:
        cmd.append("--verbose")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT),
                                                      env.get("PYTHONPATH")]))
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    line = ""
    while not line.endswith("\n"):
        remaining = deadline - time.monotonic()
        ready, _, _ = select.select([proc.stdout], [], [], max(0.0, remaining))
        if not ready:
            _terminate(proc)
            raise RuntimeError(f"simulator printed no endpoint within {timeout}s")
        chunk = proc.stdout.readline()
        if not chunk:
            _terminate(proc)
            raise RuntimeError(f"simulator exited early (code {proc.poll()})")
        line += chunk
    if not line.startswith(ENDPOINT_PREFIX):
        _terminate(proc)
        raise RuntimeError(f"unexpected simulator output: {line!r}")
    endpoint = line[len(ENDPOINT_PREFIX):].strip()
    return RunningSimulator(endpoint, SimulatorClient(endpoint), proc)


def _terminate(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout:
        proc.stdout.close()


def stop_simulator(running: RunningSimulator) -> None:
    _terminate(running.process)
    if running._ca_dir is not None:
        shutil.rmtree(running._ca_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def simulator() -> Iterator[RunningSimulator]:
    """One simulator process for the whole session."""
    running = start_simulator()
    try:
        yield running
    finally:
        stop_simulator(running)


@pytest.fixture
def sim(simulator: RunningSimulator) -> RunningSimulator:
    """The session simulator, emptied and back to default options for this test."""
    simulator.client.reset()
    return simulator
