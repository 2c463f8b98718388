"""Owner and lease of pending snapshots: who may delete a snapshot another job left."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import threading
import time

from bacula_ec2.aws.model import Snapshot
from bacula_ec2.jobs.lease import (
    LEASE_SECONDS,
    LEASE_TAG,
    LEGACY_GRACE,
    OWNER_TAG,
    LeaseKeeper,
    Owner,
    judge,
    lease_until,
    parse_iso,
    process_alive,
    this_process,
)
from bacula_ec2.retry import REAL_CLOCK, RetryPolicy

NOW = 1_800_000_000.0


def tags(owner: Owner | None, lease: float | None) -> dict[str, str]:
    out = {}
    if owner is not None:
        out[OWNER_TAG] = owner.tag()
    if lease is not None:
        out[LEASE_TAG] = dt.datetime.fromtimestamp(lease, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return out


def test_owner_tag_round_trips_and_names_this_process() -> None:
    me = this_process()
    assert Owner.parse(me.tag()) == me
    assert me.start > 0 and me.boot != "unknown" and me.pidns != "unknown"  # Linux /proc
    assert len(me.tag()) < 256  # an EC2 tag value
    assert Owner.parse("garbage") is None and Owner.parse("host=a pid=x") is None
    assert process_alive(me)


def test_a_finished_or_reused_pid_is_not_alive() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    me = this_process()
    gone = Owner(me.host, me.boot, me.pidns, child.pid, me.start)
    assert not process_alive(gone)
    reused = Owner(me.host, me.boot, me.pidns, me.pid, me.start + 1)  # same pid, other process
    assert not process_alive(reused)


def test_verdicts() -> None:
    me = this_process()
    here_alive = Owner(me.host, me.boot, me.pidns, 4242, 7)
    elsewhere = Owner("other-host", me.boot, me.pidns, 4242, 7)
    other_boot = Owner(me.host, "0123456789abcdef", me.pidns, 4242, 7)

    def v(t: dict[str, str], alive: bool, start: object = None) -> bool:
        return judge(t, start, me, now=NOW, alive=lambda o: alive).stale

    # Same machine: the process decides, whatever the lease says.
    assert not v(tags(here_alive, NOW - 5), alive=True)
    assert v(tags(here_alive, NOW + 600), alive=False)
    # Elsewhere (another host, or this host before a reboot): the lease decides.
    for owner in (elsewhere, other_boot):
        assert not v(tags(owner, NOW + 60), alive=False)
        assert v(tags(owner, NOW - 1), alive=True)
    # No owner tag, or an unreadable one: the lease decides.
    assert not v(tags(None, NOW + 60), alive=False)
    assert v({OWNER_TAG: "nonsense", LEASE_TAG: "2020-01-01T00:00:00Z"}, alive=True)
    # Neither tag (an older bacula-ec2): leased for LEGACY_GRACE after its start.
    started = dt.datetime.fromtimestamp(NOW - LEGACY_GRACE + 60, dt.UTC)
    assert not v({}, alive=False, start=started)
    assert v({}, alive=False, start=started - dt.timedelta(seconds=120))
    assert not v({}, alive=False)  # no start time either: never deleted
    # The reason is said in the job log.
    why = judge(tags(elsewhere, NOW - 1), None, me, now=NOW).why
    assert "other-host" in why and "expired" in why


def test_lease_format() -> None:
    until = parse_iso(lease_until(NOW))
    assert until == NOW + LEASE_SECONDS
    assert lease_until(NOW).endswith("Z")
    assert parse_iso("not a time") is None


def test_keeper_renews_until_stopped_and_never_holds_the_process() -> None:
    calls: list[tuple[list[str], dict[str, str]]] = []
    ids = ["snap-1"]
    failures = [RuntimeError("throttled")]

    def renew(resources: list[str], new: dict[str, str]) -> None:
        if failures:
            raise failures.pop()
        calls.append((list(resources), new))

    keeper = LeaseKeeper(renew, lambda: ids, every=0.05)
    keeper.start()
    assert keeper._thread is not None and keeper._thread.daemon
    deadline = time.monotonic() + 10
    while len(calls) < 2:  # the failed attempt did not stop it
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert calls[0][0] == ["snap-1"] and set(calls[0][1]) == {LEASE_TAG}
    keeper.stop()
    assert not keeper.running
    n = len(calls)
    time.sleep(0.2)
    assert len(calls) == n


def test_keeper_stops_on_cancel() -> None:
    cancel = threading.Event()
    keeper = LeaseKeeper(lambda r, t: None, lambda: ["snap-1"], cancel=cancel, every=0.05)
    keeper.start()
    cancel.set()
    deadline = time.monotonic() + 5
    while keeper.running:
        assert time.monotonic() < deadline
        time.sleep(0.01)


class FakeAws:
    """Just what SnapshotLedger.take/commit/rollback call."""

    def __init__(self) -> None:
        self.tags: list[tuple[list[str], dict[str, str]]] = []
        self.deleted: list[str] = []

    def create_snapshots(
        self, instance_id: str, exclude: list[str], boot: bool, tags: dict[str, str], description: str
    ) -> list[Snapshot]:
        self.created_with = tags
        return [Snapshot("snap-1", "vol-1")]

    def tag(self, ids: list[str], tags: dict[str, str], *, fresh: bool = False) -> None:
        self.tags.append((list(ids), dict(tags)))

    def delete_snapshot(self, sid: str) -> None:
        self.deleted.append(sid)

    # what the ledger's confirmed delete and its waits use
    clock = REAL_CLOCK
    policy = RetryPolicy()

    def describe_snapshots(self, *, ids: list[str]) -> list[Snapshot]:
        return [Snapshot(s, "vol-1") for s in ids if s not in self.deleted]


def ledger(aws: FakeAws):  # type: ignore[no-untyped-def]
    from bacula_ec2.aws.model import Instance, Volume
    from bacula_ec2.jobs.context import JobContext
    from bacula_ec2.jobs.selection import InstanceTarget, VolumeTarget
    from bacula_ec2.jobs.snapshots import SnapshotLedger
    from bacula_ec2.params import parse_parameters

    class Quiet:
        def info(self, text: str) -> None: ...
        def warning(self, text: str) -> None: ...
        def error(self, text: str) -> None: ...

    ctx = JobContext(
        parse_parameters([("instances", "web-1")]), "web.2026-11-26_16.00.00_01", 1, "F", Quiet(), ""
    )
    target = InstanceTarget(Instance("i-1"), [VolumeTarget(Volume("vol-1", size_gib=1), "/dev/sda1", True)])
    return SnapshotLedger(aws, ctx), target  # type: ignore[arg-type]


def test_ledger_leases_from_creation_to_commit_or_rollback() -> None:
    for end in ("commit", "rollback"):
        aws = FakeAws()
        led, target = ledger(aws)
        led.take(target, {})
        assert parse_iso(aws.created_with[LEASE_TAG]) is not None  # leased from the first moment
        assert Owner.parse(aws.created_with[OWNER_TAG]) == this_process()
        assert led.keeper is not None and led.keeper.running and led.keeper._thread.daemon  # type: ignore[union-attr]
        getattr(led, end)()
        assert not led.keeper.running
    assert aws.deleted == ["snap-1"]
