"""The backend process survives AWS's transport under the simulator's hard mode (issue 11):
a NextToken that expires while Bacula stalls the stream, EC2 throttling on every
control-plane call, a TLS endpoint trusted through ca_bundle=, and a refused clock."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from devkit.driver import backend
from devkit.fdpeer import BackendError
from devkit.helpers import sha256_file
from protocol import Mode

from .common import BLOCK, FakeBacula, Job, params


def _stall_every(peer: object, packets: int, seconds: float) -> None:
    """Make the FD side stop reading for `seconds` every `packets` packets (an SD waiting
    for a tape, a despool): the backend's window fills, then its listing waits too."""
    header: Callable[[], tuple[str, int]] = peer._header  # type: ignore[attr-defined]
    seen = [0]

    def slow() -> tuple[str, int]:
        seen[0] += 1
        if seen[0] % packets == 0:
            time.sleep(seconds)
        return header()

    peer._header = slow  # type: ignore[attr-defined]


def test_a_stalled_stream_outlives_the_next_token_and_restores_exactly(  # type: ignore[no-untyped-def]
    sim, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    inst = sim.client.create_instance("web-1", volumes=[{"size_gib": 1, "device": "/dev/sda1"}])
    iid, vid = inst["instance_id"], inst["volume_ids"][0]
    for n in range(48):  # spread over the volume: 16 listing pages of 128 indexes
        sim.client.write_volume(vid, ((n * 43) % 2048) * BLOCK, os.urandom(4096))
    expected = sim.client.volume_sha256(vid)
    sim.client.set_options(list_blocks_window=128, page_token_ttl=0.4)
    # a small list-ahead queue: the listing itself waits when the stream does (as it does
    # with the default 20,000 entries on a volume of more than 10 GiB of data)
    monkeypatch.setenv("BACULA_EC2_LIST_AHEAD", "4")
    with backend(Mode.BACKUP, params(sim.endpoint, "instances=web-1"), tmp_path, jobid=1, level="F") as be:
        _stall_every(be.peer, 40, 0.6)
        items = be.peer.read_items(data_phase=True)
        be.peer.end()
        be.peer.terminate()
        log = be.log()
    assert "NextToken expired (the stream stalled); resuming at block" in log
    assert sim.client.stats()["requests"].get("ListSnapshotBlocks", 0) > 16  # 16 pages + resumptions
    bacula = FakeBacula(sim, tmp_path)
    bacula.jobs.append(Job(1, "F", 0, items))
    messages, where = bacula.restore(bacula.jobs, tmp_path / "r", seed=3)
    assert not [m for m in messages if m[0] in "EQA"], messages
    assert sha256_file(where / "@amazon-ec2" / iid / f"{vid}-sda1-1G.img") == expected


def test_a_backup_over_tls_with_ca_bundle_and_ec2_throttling(sim, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    if "tls" not in sim.client.options():
        pytest.skip("the simulator has no tls knob yet")
    inst = sim.client.create_instance("web-1", volumes=[{"size_gib": 1, "device": "/dev/sda1"}])
    iid, vid = inst["instance_id"], inst["volume_ids"][0]
    sim.client.write_volume(vid, 0, os.urandom(3 * BLOCK))
    expected = sim.client.volume_sha256(vid)
    tiny = {
        c: [2.0, 2.0] for c in ("non_mutating", "unfiltered_non_mutating", "mutating", "resource_intensive")
    }
    sim.client.set_options(tls=True, ec2_request_buckets=tiny)
    args = params(sim.https_endpoint, "instances=web-1", f"ca_bundle={sim.ca_path}")
    bacula = FakeBacula(sim, tmp_path)
    with backend(Mode.BACKUP, args, tmp_path, jobid=1, level="F") as be:
        items = be.peer.read_items(data_phase=True)
        be.peer.end()
        be.peer.terminate()
    bacula.jobs.append(Job(1, "F", 0, items))
    messages, where = bacula.restore(bacula.jobs, tmp_path / "r", seed=1)
    assert not [m for m in messages if m[0] in "EQA"], messages
    assert sha256_file(where / "@amazon-ec2" / iid / f"{vid}-sda1-1G.img") == expected
    assert sim.client.stats()["throttled_by_reason"].get("RequestLimitExceeded", 0) > 0


def test_an_untrusted_endpoint_fails_the_job_once_with_what_to_set(sim, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    if "tls" not in sim.client.options():
        pytest.skip("the simulator has no tls knob yet")
    sim.client.create_instance("web-1", volumes=[{"size_gib": 1, "device": "/dev/sda1"}])
    sim.client.set_options(tls=True)
    started = time.monotonic()
    with backend(Mode.BACKUP, params(sim.https_endpoint, "instances=web-1"), tmp_path) as be:
        with pytest.raises(BackendError) as err:
            be.peer.read_items(data_phase=True)
        be.peer.close()
    assert "TLS certificate of 127.0.0.1 not trusted" in err.value.text
    assert "ca_bundle=" in err.value.text
    assert time.monotonic() - started < 20  # final: not retried for minutes


def test_a_skewed_clock_fails_the_job_with_the_offset(sim, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    sim.client.create_instance("web-1", volumes=[{"size_gib": 1, "device": "/dev/sda1"}])
    sim.client.set_options(clock_offset_s=-1800)
    with backend(Mode.BACKUP, params(sim.endpoint, "instances=web-1"), tmp_path) as be:
        with pytest.raises(BackendError) as err:
            be.peer.read_items(data_phase=True)
        be.peer.close()
    found = re.search(r"the host's clock is (\d+) s ahead of AWS's .*: fix NTP", err.value.text)
    assert found, err.value.text
    assert abs(int(found.group(1)) - 1800) <= 2  # the Date header counts whole seconds
