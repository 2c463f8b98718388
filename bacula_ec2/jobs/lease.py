"""Who owns a `pending` snapshot, and for how long (docs/SNAPSHOTS.md, "Concurrent jobs").

Every pending snapshot carries two tags besides the job's identity:

- `bacula-ec2:owner`: the process that created it, `host=<name> boot=<id> pidns=<inode>
  pid=<pid> start=<ticks>` (the boot id, pid namespace and process start time make the
  pid unambiguous on one machine: a reused pid has another start time);
- `bacula-ec2:lease-until`: ISO 8601 UTC (`2026-11-26T16:15:00Z`), renewed by the owner
  while its job runs.

A pending snapshot of another job is stale when its owner is provably gone: a process on
this very host (same host name, boot and pid namespace) that no longer runs, or, for an
owner elsewhere (or one this host cannot check), a lease that has expired. A snapshot
without these tags (made before they existed) counts as leased for `LEGACY_GRACE` after its
start time.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .. import timefmt
from .chain import TAG

OWNER_TAG = TAG + "owner"
LEASE_TAG = TAG + "lease-until"
#: How long a lease lasts, and how often the owner renews it while its job runs.
LEASE_SECONDS = 15 * 60
RENEW_SECONDS = 2 * 60
#: Renewal retried this soon after a failed attempt.
RETRY_SECONDS = 20
#: Lease assumed for a pending snapshot without lease tags (an older bacula-ec2 made it).
LEGACY_GRACE = 24 * 3600

log = logging.getLogger("bacula-ec2.lease")


def iso(epoch: float) -> str:
    return timefmt.utc_iso(int(epoch), timespec="seconds")


def parse_iso(value: str) -> float | None:
    try:
        return timefmt.parse_iso(value).timestamp()
    except ValueError:
        return None


def lease_until(now: float | None = None) -> str:
    return iso((time.time() if now is None else now) + LEASE_SECONDS)


# --------------------------------------------------------------------------- owner


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="ascii", errors="replace") as fh:
            return fh.read()
    except OSError:
        return None


def _boot_id() -> str:
    return (_read("/proc/sys/kernel/random/boot_id") or "").strip().replace("-", "")[:16] or "unknown"


def _pid_namespace() -> str:
    try:
        return str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        return "unknown"


def _proc_state(pid: int) -> tuple[str, int] | None:
    """(state letter, start time in clock ticks since boot) of a process, None if it is gone
    (or this system has no /proc)."""
    text = _read(f"/proc/{pid}/stat")
    if text is None:
        return None
    rest = text[text.rfind(")") + 2 :].split()  # the command name may hold spaces and ')'
    try:
        return rest[0], int(rest[19])
    except (IndexError, ValueError):
        return None


@dataclass(frozen=True)
class Owner:
    host: str
    boot: str
    pidns: str
    pid: int
    start: int  # 0: unknown (no /proc)

    def tag(self) -> str:
        return f"host={self.host} boot={self.boot} pidns={self.pidns} pid={self.pid} start={self.start}"

    @classmethod
    def parse(cls, value: str) -> Owner | None:
        fields = dict(part.partition("=")[::2] for part in value.split())
        try:
            return cls(
                fields["host"], fields["boot"], fields["pidns"], int(fields["pid"]), int(fields["start"])
            )
        except (KeyError, ValueError):
            return None

    def same_machine(self, other: Owner) -> bool:
        """Same host, boot and pid namespace: `pid` means the same process for both."""
        known = "unknown" not in (self.boot, self.pidns)
        return known and (self.host, self.boot, self.pidns) == (other.host, other.boot, other.pidns)


def this_process() -> Owner:
    pid = os.getpid()
    state = _proc_state(pid)
    return Owner(socket.gethostname(), _boot_id(), _pid_namespace(), pid, state[1] if state else 0)


def process_alive(owner: Owner) -> bool:
    """Whether the owner process (on this machine) still runs. Zombies count as gone."""
    state = _proc_state(owner.pid)
    if state is None:
        if os.path.isdir("/proc/self"):
            return False  # /proc works, the pid is not there
        try:
            os.kill(owner.pid, 0)
        except ProcessLookupError:
            return False
        except OSError:
            return True
        return True
    letter, start = state
    if letter in ("Z", "X"):
        return False
    return not (owner.start and start != owner.start)  # another process reusing the pid


@dataclass(frozen=True)
class Verdict:
    stale: bool
    why: str


def judge(
    tags: dict[str, str],
    start_time: Any,
    me: Owner,
    now: float | None = None,
    alive: Callable[[Owner], bool] = process_alive,
) -> Verdict:
    """Is this pending snapshot (of another job) stale? `why` is said in the job log."""
    now = time.time() if now is None else now
    owner = Owner.parse(tags.get(OWNER_TAG, ""))
    if owner is not None and owner.same_machine(me):
        if alive(owner):
            return Verdict(False, f"its job's process {owner.pid} on this host is still running")
        return Verdict(True, f"its job's process {owner.pid} on this host is gone")
    raw = tags.get(LEASE_TAG)
    until = parse_iso(raw) if raw is not None else None
    if until is None:
        started = start_time.timestamp() if isinstance(start_time, dt.datetime) else None
        if started is None:
            return Verdict(False, "it has no lease and no start time")
        until = started + LEGACY_GRACE
    where = f" on {owner.host}" if owner is not None else ""
    if until > now:
        return Verdict(False, f"its job{where} holds a lease until {iso(until)}")
    return Verdict(True, f"its job's lease{where} expired at {iso(until)}")


# --------------------------------------------------------------------------- renewal


class LeaseKeeper:
    """Renews the lease of a job's pending snapshots in a daemon thread until stopped.

    `renew(ids, tags)` is the CreateTags call; `pending()` gives the ids to renew (read each
    time, so snapshots created later are covered). The thread never keeps the process alive
    (daemon), and stops at `stop()`, or when `cancel` is set.
    """

    def __init__(
        self,
        renew: Callable[[list[str], dict[str, str]], None],
        pending: Callable[[], list[str]],
        cancel: threading.Event | None = None,
        every: float = RENEW_SECONDS,
    ) -> None:
        self._renew = renew
        self._pending = pending
        self._cancel = cancel
        self._every = every
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.renewals = 0

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="bacula-ec2-lease", daemon=True)
            self._thread.start()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _stopped(self) -> bool:
        return self._stop.is_set() or (self._cancel is not None and self._cancel.is_set())

    def _run(self) -> None:
        delay = self._every
        while not self._stop.wait(delay):
            if self._stopped():
                return
            ids = list(self._pending())
            if not ids:
                delay = self._every
                continue
            try:
                self._renew(ids, {LEASE_TAG: lease_until()})
                self.renewals += 1
                delay = self._every
            except Exception as exc:  # the lease runs for LEASE_SECONDS: try again soon
                if self._stopped():
                    return
                log.warning("could not renew the lease of %s: %s", ", ".join(ids), exc)
                delay = min(self._every, RETRY_SECONDS)
