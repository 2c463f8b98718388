"""Measurement helpers shared by the benches: per-process CPU and true peak memory.

Why not `os.wait4()`'s `ru_maxrss`: on Linux a child's maximum RSS starts from the RSS it
inherited at fork, so for a backend started by a big bench driver it reads
max(driver RSS at spawn, backend peak) — the driver's memory, not the backend's. The
peak here is the kernel's high-water mark of the process itself (`VmHWM` in
/proc/<pid>/status), sampled while it runs (the mark only grows, so the last sample taken
before the process exits is its peak up to that moment). CPU is read per process from
/proc/<pid>/stat (utime + stime of that process and its threads).
"""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path

MIB = 1 << 20
_TICK = os.sysconf("SC_CLK_TCK")


def proc_cpu(pid: int) -> float:
    """User + system CPU seconds of process `pid` so far (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def vm_hwm(pid: int) -> int | None:
    """The process's own peak resident set (VmHWM) in bytes; None once it has exited."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return None  # a zombie has no memory lines


class ProcSampler:
    """Samples a running process's VmHWM and CPU every `interval` seconds until stopped.

    `peak_rss` is the highest VmHWM seen, `cpu` the last CPU reading (take the exact figure
    from the reaped child's rusage when there is one: utime/stime there are the child's own).
    """

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.pid = pid
        self.interval = interval
        self.peak_rss = 0
        self.cpu = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"sample-{pid}", daemon=True)

    def start(self) -> ProcSampler:
        self._thread.start()
        return self

    def sample(self) -> None:
        hwm = vm_hwm(self.pid)
        if hwm is not None:
            self.peak_rss = max(self.peak_rss, hwm)
        with contextlib.suppress(OSError, IndexError, ValueError):
            self.cpu = proc_cpu(self.pid)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def stop(self) -> None:
        """Take a last sample (call before the process is reaped) and stop."""
        self.sample()
        self._stop.set()
        self._thread.join()

    @property
    def peak_mib(self) -> float:
        return self.peak_rss / MIB
