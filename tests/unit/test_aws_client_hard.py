"""The aws/ transport against AWS as it really behaves (issue 11), through the simulator.

Each test drives `bacula_ec2.aws.Aws` (boto3 and the hand-signed block path) against the
simulator's hard-mode knobs and counts what reached it (`sim.client.stats()`): exact
attempts, throttling on the control plane, NextToken expiry under back-pressure, filters
over 200 values, MaxResults paging, EC2 eventual consistency, TLS trust, clock skew and
expired session tokens.
"""

from __future__ import annotations

import itertools
import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from botocore.exceptions import (
    ConnectionClosedError,
    ConnectTimeoutError,
    CredentialRetrievalError,
    EndpointConnectionError,
    MetadataRetrievalError,
    ReadTimeoutError,
)
from botocore.stub import Stubber
from hypothesis import given, settings
from hypothesis import strategies as st

from bacula_ec2.aws import client as client_module
from bacula_ec2.aws import shapes
from bacula_ec2.aws.blocks import BlockClient
from bacula_ec2.aws.client import AmbiguousCreate, Aws, AwsError, BlockRef
from bacula_ec2.aws.errors import Kind, RetryableAwsError, ambiguous_create, classify
from bacula_ec2.aws.settings import AwsSettings, Secret
from bacula_ec2.aws.transfer import BlockTransfer, TransferConfig, read_ahead
from bacula_ec2.pacing import Pacer
from bacula_ec2.retry import RetriesExhausted, Retryable, RetryPolicy, RetryStats
from devkit.simulator.fixtures import ACCESS_KEY, SECRET_KEY, RunningSimulator
from devkit.simulator.model import DEFAULT_REGION

BLOCK = 512 * 1024
NO_WAIT = RetryPolicy(attempts=3, base_delay=0.0, max_delay=0.0, not_found_window=0.0)


def connect(sim: RunningSimulator, policy: RetryPolicy = NO_WAIT, **settings: Any) -> Aws:
    values: dict[str, Any] = {
        "access_key": ACCESS_KEY,
        "secret_key": Secret(SECRET_KEY),
        "region": DEFAULT_REGION,
        "endpoint_url": sim.endpoint,
    }
    values.update(settings)
    return Aws(AwsSettings(**values), policy=policy)


def requests(sim: RunningSimulator, operation: str) -> int:
    return int(sim.client.stats()["requests"].get(operation, 0))


def sent(aws: Aws, operation: str) -> list[int]:
    """Counts the HTTP requests boto3 sends for an EC2 `operation` from now on (also those
    the simulator refuses before counting them: skew, expired tokens)."""
    hits: list[int] = []
    aws.ec2.meta.events.register(f"before-send.ec2.{operation}", lambda **_: hits.append(1))
    return hits


def snapshot_with_blocks(sim: RunningSimulator, aws: Aws, indexes: list[int], size_gib: int = 1) -> str:
    """A completed snapshot of a new volume with one small write in each block of `indexes`."""
    sim.client.set_options(snapshot_delay=0)
    volume = sim.client.create_volume(size_gib)
    for index in indexes:
        sim.client.write_volume(volume, index * BLOCK, bytes([index % 251 + 1]) * 16)
    return aws.create_snapshot(volume, {"test": "hard"}, "hard mode").snapshot_id


# ---------------------------------------------------------------------- exact attempts


def test_a_control_plane_call_makes_exactly_the_policys_attempts(sim: RunningSimulator) -> None:
    """botocore's own retries are off: 3 attempts of ours are 3 requests (cdb0bf7 made 8 x 3)."""
    aws = connect(sim)
    sim.client.set_options(error_rate=1.0, fault_operations=["DescribeRegions"])
    with pytest.raises(RetriesExhausted, match=r"DescribeRegions.*InternalError") as caught:
        aws.describe_regions()
    assert isinstance(caught.value.__cause__, RetryableAwsError)
    assert requests(sim, "DescribeRegions") == 3


def test_a_listing_makes_exactly_the_policys_attempts(sim: RunningSimulator) -> None:
    aws = connect(sim)
    snap = snapshot_with_blocks(sim, aws, [0, 3])
    sim.client.set_options(error_rate=1.0, fault_operations=["ListSnapshotBlocks"])
    with pytest.raises(RetriesExhausted, match=rf"ListSnapshotBlocks {snap}"):
        list(aws.list_snapshot_blocks(snap))
    assert requests(sim, "ListSnapshotBlocks") == 3


@pytest.mark.parametrize("path", ["boto3", "fast"])
def test_a_block_read_makes_exactly_the_policys_attempts(sim: RunningSimulator, path: str) -> None:
    """The data path: one request per attempt of the engine's policy, on both paths (the
    boto3 client had max_attempts=1, which botocore reads as one retry: two requests)."""
    aws = connect(sim)
    snap = snapshot_with_blocks(sim, aws, [5])
    ref = next(iter(aws.list_snapshot_blocks(snap)))
    get: Callable[[str, BlockRef], Any] = aws.get_snapshot_block if path == "boto3" else BlockClient(aws).get
    engine = BlockTransfer(TransferConfig(1), name="t", policy=RetryPolicy(attempts=4, base_delay=0.0))
    sim.client.set_options(error_rate=1.0, fault_operations=["GetSnapshotBlock"])
    with pytest.raises(RetriesExhausted, match=rf"GetSnapshotBlock {snap} block 5"):
        engine.request("GetSnapshotBlock", lambda: get(snap, ref), resource=f"{snap} block 5")
    assert requests(sim, "GetSnapshotBlock") == 4


@pytest.mark.parametrize("fault", ["error_rate", "reset_rate"])
@pytest.mark.parametrize("operation", ["CreateSnapshots", "CreateSnapshot"])
def test_a_create_is_one_attempt_and_ambiguous_without_a_definite_answer(
    sim: RunningSimulator, operation: str, fault: str
) -> None:
    """A 500 or a reset: AWS may have made the snapshots, so one request only and an
    AmbiguousCreate that keeps the failure as its cause (the job looks up its own first)."""
    aws = connect(sim, policy=RetryPolicy(attempts=5, base_delay=0.0))
    inst = sim.client.create_instance("web", [{"size_gib": 1, "device": "/dev/xvda"}])
    sim.client.set_options(**{fault: 1.0}, fault_operations=[operation])
    with pytest.raises(AmbiguousCreate, match="may have been created") as caught:
        if operation == "CreateSnapshots":
            aws.create_snapshots(inst["instance_id"], [], False, {"job": "1"}, "d")
        else:
            aws.create_snapshot(inst["volume_ids"][0], {"job": "1"}, "d")
    assert caught.value.kind is Kind.AMBIGUOUS and Kind.of(caught.value) is Kind.AMBIGUOUS
    assert caught.value.__cause__ is not None
    assert not isinstance(caught.value, Retryable)  # never retried blindly
    assert requests(sim, operation) == 1


def test_a_snapshot_quota_refusal_is_definite_with_its_own_kind(sim: RunningSimulator) -> None:
    """ConcurrentSnapshotLimitExceeded is a 4xx answer: nothing was made, one request, and
    Kind.SNAPSHOT_LIMIT tells the job to try again after 15-30 s."""
    aws = connect(sim)
    sim.client.set_options(snapshot_delay=30, concurrent_snapshots_per_volume=1)
    volume = sim.client.create_volume(1)
    aws.create_snapshot(volume, {}, "first")
    sim.client.reset_stats()
    with pytest.raises(AwsError) as caught:
        aws.create_snapshot(volume, {}, "second")
    assert caught.value.code == "ConcurrentSnapshotLimitExceeded"
    assert caught.value.kind is Kind.SNAPSHOT_LIMIT and not isinstance(caught.value, AmbiguousCreate)
    assert requests(sim, "CreateSnapshot") == 1


@pytest.mark.parametrize(
    ("cause", "ambiguous"),
    [
        (ReadTimeoutError(endpoint_url="https://ec2"), True),
        (ConnectionClosedError(endpoint_url="https://ec2"), True),
        (EndpointConnectionError(endpoint_url="https://ec2"), False),  # never sent
        (ConnectTimeoutError(endpoint_url="https://ec2"), False),
    ],
)
def test_which_connection_failures_leave_a_create_ambiguous(cause: Exception, ambiguous: bool) -> None:
    mapped = classify("CreateSnapshots", cause)
    mapped.__cause__ = cause
    assert isinstance(mapped, Retryable)
    assert ambiguous_create(mapped) is ambiguous


# ---------------------------------------------------------------------- throttling


def test_ec2_throttling_is_retried_on_every_control_plane_call(sim: RunningSimulator) -> None:
    """EC2's request token buckets (RequestLimitExceeded, HTTP 503): tiny buckets, and every
    call still answers, its throttles counted."""
    aws = connect(sim, policy=RetryPolicy(attempts=12, base_delay=0.05, max_delay=0.3))
    inst = sim.client.create_instance("web", [{"size_gib": 1, "device": "/dev/xvda"}])
    tiny = {
        c: [2.0, 20.0] for c in ("non_mutating", "unfiltered_non_mutating", "mutating", "resource_intensive")
    }
    sim.client.set_options(ec2_request_buckets=tiny, snapshot_delay=0)
    for _ in range(4):
        assert aws.describe_regions()
        assert aws.describe_instance(inst["instance_id"]).instance_id == inst["instance_id"]
        assert aws.describe_volumes(inst["volume_ids"])
    snap = aws.create_snapshot(inst["volume_ids"][0], {}, "d")
    aws.tag([snap.snapshot_id], {"k": "v"})
    assert sim.client.stats()["throttled_by_reason"].get("RequestLimitExceeded", 0) > 0
    assert aws.stats.throttled > 0


def test_listings_share_one_pacer_under_the_account_quota(sim: RunningSimulator) -> None:
    """ListSnapshotBlocks of every volume passes the client's one list pacer: 30 pages of two
    snapshots at 20/s take about 1.5 s (cdb0bf7 listed them unpaced)."""
    aws = connect(sim)
    first = snapshot_with_blocks(sim, aws, list(range(0, 2048, 128)))
    second = snapshot_with_blocks(sim, aws, list(range(64, 2048, 128)))
    sim.client.set_options(list_blocks_window=128)  # 16 pages each
    aws.list_pacer = Pacer(20.0, burst=0.0)
    began = time.monotonic()
    one, two = aws.list_snapshot_blocks(first), aws.list_snapshot_blocks(second)
    got = [(next(one).index, next(two).index) for _ in range(15)]  # interleaved, 30 pages
    elapsed = time.monotonic() - began
    assert got == [(i, i + 64) for i in range(0, 15 * 128, 128)]
    assert elapsed >= 29 / 20.0 - 0.1, elapsed


def test_a_throttled_listing_cuts_the_shared_pacer(sim: RunningSimulator) -> None:
    aws = connect(sim, policy=RetryPolicy(attempts=20, base_delay=0.01, max_delay=0.1))
    snap = snapshot_with_blocks(sim, aws, list(range(0, 2048, 128)))
    sim.client.set_options(
        list_blocks_window=128, throttling=True, account_rates={"ListSnapshotBlocks": 10.0}, burst_seconds=0.2
    )
    assert [r.index for r in aws.list_snapshot_blocks(snap)] == list(range(0, 2048, 128))
    throttled = sim.client.stats()["throttled"].get("ListSnapshotBlocks", 0)
    assert throttled > 0 and aws.list_pacer.throttles == throttled
    assert aws.list_pacer.rate < client_module.LIST_RATE


# ---------------------------------------------------------------------- NextToken expiry


def _stalling(entries: Iterator[BlockRef], stall: float, every: int) -> list[int]:
    """A consumer that stops for `stall` seconds every `every` entries (Bacula waiting for
    a tape, a despool)."""
    out = []
    for n, ref in enumerate(entries):
        out.append(ref.index)
        if n % every == every - 1:
            time.sleep(stall)
    return out


@pytest.mark.parametrize("through_read_ahead", [False, True])
def test_an_expired_next_token_resumes_at_the_next_index(
    sim: RunningSimulator, through_read_ahead: bool
) -> None:
    """Pages of 128 indexes; the consumer stalls longer than the NextToken lives after
    every 5 blocks: each next page resumes at last index + 1, nothing skipped or repeated."""
    aws = connect(sim)
    written = sorted({(i * 67) % 2048 for i in range(30)})
    snap = snapshot_with_blocks(sim, aws, written)
    sim.client.set_options(list_blocks_window=128, page_token_ttl=0.1)
    sim.client.reset_stats()
    listing: Iterator[BlockRef] = aws.list_snapshot_blocks(snap)
    if through_read_ahead:
        listing = read_ahead(listing, maxsize=2)  # the backend's back-pressure
    assert _stalling(listing, 0.15, 5) == written
    # expired tokens were met (ValidationException INVALID_PAGE_TOKEN) and survived
    assert requests(sim, "ListSnapshotBlocks") > 16


def test_an_expired_next_token_of_list_changed_blocks_resumes_too(sim: RunningSimulator) -> None:
    aws = connect(sim)
    sim.client.set_options(snapshot_delay=0)
    volume = sim.client.create_volume(1)
    sim.client.write_volume(volume, 0, b"x")
    first = aws.create_snapshot(volume, {}, "1").snapshot_id
    changed = sorted({(i * 83) % 2048 for i in range(24)})
    for index in changed:
        sim.client.write_volume(volume, index * BLOCK, b"changed")
    second = aws.create_snapshot(volume, {}, "2").snapshot_id
    sim.client.set_options(changed_blocks_window=128, page_token_ttl=0.1)
    sim.client.reset_stats()
    got = _stalling(aws.list_changed_blocks(first, second), 0.15, 4)
    assert got == changed
    assert requests(sim, "ListChangedBlocks") > 16


def test_a_token_that_keeps_expiring_without_progress_fails_loudly() -> None:
    """Resumption is bounded: a listing whose resumed pages bring nothing and whose every
    token is refused fails with the refusal, never loops."""
    aws = Aws.__new__(Aws)  # no clients: `method` plays EBS
    aws.policy, aws.cancel, aws.stats = NO_WAIT, None, RetryStats()
    calls: list[dict[str, Any]] = []

    def method(**args: Any) -> dict[str, Any]:
        calls.append(args)
        if "NextToken" in args:
            raise AwsError(
                "ListSnapshotBlocks", "ValidationException", "expired", reason="INVALID_PAGE_TOKEN"
            )
        return {"Blocks": [], "NextToken": "t"}

    with pytest.raises(AwsError, match=r"INVALID_PAGE_TOKEN|expired"):
        list(aws._block_pages("ListSnapshotBlocks", method, "Blocks", {"SnapshotId": "snap-1"}, "snap-1"))
    assert len(calls) <= 2 * (Aws.MAX_RESUMES_WITHOUT_PROGRESS + 1) + 1


# ---------------------------------------------------------------------- large accounts


def test_filters_over_200_values_go_in_chunks(sim: RunningSimulator) -> None:
    aws = connect(sim)
    sim.client.set_options(max_filter_values=200, snapshot_delay=0)
    real = [sim.client.create_volume(1) for _ in range(3)]
    unknown = [f"vol-{n:017x}" for n in range(1, 450)]
    wanted = [*unknown[:150], real[0], *unknown[150:300], real[1], *unknown[300:], real[2]]
    assert sorted(v.volume_id for v in aws.describe_volumes_filtered(wanted)) == sorted(real)
    assert requests(sim, "DescribeVolumes") == 3
    snaps = [aws.create_snapshot(v, {}, "d").snapshot_id for v in real]
    found = aws.describe_snapshots(volume_ids=wanted)
    assert sorted(s.snapshot_id for s in found) == sorted(snaps)


def test_describe_without_ids_is_paginated_with_max_results(
    sim: RunningSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    aws = connect(sim)
    monkeypatch.setitem(client_module.DESCRIBE_PAGES, "DescribeVolumes", 5)
    volumes = {sim.client.create_volume(1) for _ in range(12)}
    sent: list[dict[str, Any]] = []
    aws.ec2.meta.events.register("provide-client-params.ec2.*", lambda params, **_: sent.append(dict(params)))
    assert {v.volume_id for v in aws.describe_all_volumes()} == volumes
    assert requests(sim, "DescribeVolumes") == 3
    assert all(p.get("MaxResults") == 5 for p in sent)
    sent.clear()
    aws.describe_volumes(sorted(volumes))  # ids: MaxResults not allowed
    aws.describe_instances(tags={"a": "b"})  # DescribeInstances: not with tag filters
    assert sent and all("MaxResults" not in p for p in sent)


# ---------------------------------------------------------------------- eventual consistency


def test_fresh_ids_are_waited_for_while_ec2_does_not_show_them(sim: RunningSimulator) -> None:
    policy = RetryPolicy(attempts=3, base_delay=0.05, max_delay=0.2, not_found_window=10.0)
    aws = connect(sim, policy=policy)
    sim.client.set_options(snapshot_delay=0, ec2_not_found_window=1.5)
    volumes = [sim.client.create_volume(1) for _ in range(3)]
    snaps = [aws.create_snapshot(v, {}, "d").snapshot_id for v in volumes]
    aws.tag(snaps, {"bacula-ec2:job": "1"}, fresh=True)
    found = aws.describe_snapshots(ids=snaps, fresh=True)
    assert sorted(s.snapshot_id for s in found) == sorted(snaps)
    for sid in snaps:
        aws.delete_snapshot(sid, fresh=True)
    assert sum(sim.client.stats()["not_found_window"].values()) > 0  # the window was met


def test_without_fresh_ec2s_not_found_is_final(sim: RunningSimulator) -> None:
    aws = connect(sim, policy=RetryPolicy(attempts=3, base_delay=0.0, not_found_window=5.0))
    with pytest.raises(AwsError, match=r"InvalidSnapshot\.NotFound") as caught:
        aws.tag(["snap-0123456789abcdef0"], {"k": "v"})
    assert caught.value.kind is Kind.FINAL
    assert requests(sim, "CreateTags") == 1


def test_a_fresh_delete_of_a_snapshot_that_stays_unknown_ends_as_gone(sim: RunningSimulator) -> None:
    aws = connect(sim, policy=RetryPolicy(attempts=3, base_delay=0.05, max_delay=0.05, not_found_window=0.3))
    aws.delete_snapshot("snap-0123456789abcdef0", fresh=True)  # no exception: gone
    assert requests(sim, "DeleteSnapshot") > 2


def test_a_fresh_delete_after_a_lost_answer_takes_not_found_as_done(sim: RunningSimulator) -> None:
    """A 500 may have deleted it: the NotFound that follows means done, not "wait 150 s"."""
    aws = connect(sim, policy=RetryPolicy(attempts=3, base_delay=0.0, not_found_window=3600.0))
    with Stubber(aws.ec2) as stub:
        stub.add_client_error("delete_snapshot", "InternalError", http_status_code=500)
        stub.add_client_error("delete_snapshot", "InvalidSnapshot.NotFound", http_status_code=400)
        aws.delete_snapshot("snap-0123456789abcdef0", fresh=True)
        stub.assert_no_pending_responses()


# ---------------------------------------------------------------------- credentials


@pytest.mark.parametrize(
    "failure",
    [
        CredentialRetrievalError(provider="assume-role", error_msg="STS timed out"),
        MetadataRetrievalError(error_msg="IMDS refused"),
    ],
)
def test_a_credential_refresh_failure_is_retried_like_a_transient_error(
    sim: RunningSimulator, failure: Exception
) -> None:
    aws = connect(sim)
    calls = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) == 1:
            raise failure
        return "ok"

    assert aws._call("DescribeRegions", flaky) == "ok"
    assert len(calls) == 2 and aws.stats.retries == 1


def test_an_expired_static_session_token_says_what_to_do(sim: RunningSimulator) -> None:
    temp = sim.client.session_token(ttl=1.0)
    aws = connect(
        sim,
        access_key=temp["access_key_id"],
        secret_key=Secret(temp["secret_access_key"]),
        session_token=Secret(temp["session_token"]),
    )
    snap = snapshot_with_blocks(sim, aws, [1])
    ref = next(iter(aws.list_snapshot_blocks(snap)))
    time.sleep(1.3)
    regions = sent(aws, "DescribeRegions")
    with pytest.raises(AwsError, match="role_arn= or a profile") as ec2:
        aws.describe_regions()
    assert ec2.value.kind is Kind.FINAL and len(regions) == 1
    with pytest.raises(AwsError, match=r"session token has expired.*role_arn="):
        BlockClient(aws).get(snap, ref)
    with pytest.raises(AwsError, match=r"session token has expired.*role_arn="):
        list(aws.list_snapshot_blocks(snap))


# ---------------------------------------------------------------------- clock skew


@pytest.mark.parametrize("offset", [900.0, -900.0])
def test_clock_skew_fails_once_with_the_offset_and_fix_ntp(sim: RunningSimulator, offset: float) -> None:
    """We fail rather than correct: a host whose clock is minutes off also stamps Bacula's
    catalog and the snapshots' lease tags wrongly; NTP is the fix, said with the offset."""
    aws = connect(sim)
    snap = snapshot_with_blocks(sim, aws, [2])
    ref = next(iter(aws.list_snapshot_blocks(snap)))
    sim.client.set_options(clock_offset_s=offset)
    regions = sent(aws, "DescribeRegions")
    engine = BlockTransfer(TransferConfig(1), name="t", policy=RetryPolicy(attempts=5, base_delay=0.0))
    fast, tried = BlockClient(aws), []

    def get() -> Any:
        tried.append(1)
        return fast.get(snap, ref)

    direction = "behind" if offset > 0 else "ahead of"
    for call in (
        aws.describe_regions,
        lambda: engine.request("GetSnapshotBlock", get),
        lambda: next(iter(aws.list_snapshot_blocks(snap))),
    ):
        with pytest.raises(AwsError, match=rf"clock is \d+ s {direction} AWS's.*fix NTP") as caught:
            call()
        seconds = int(re.search(r"clock is (\d+) s", str(caught.value)).group(1))  # type: ignore[union-attr]
        assert abs(seconds - abs(offset)) <= 5
        assert caught.value.kind is Kind.FINAL
    assert len(regions) == 1 and len(tried) == 1  # final: not retried


def test_a_small_offset_within_the_tolerance_works(sim: RunningSimulator) -> None:
    aws = connect(sim)
    sim.client.set_options(clock_offset_s=30.0)
    assert aws.describe_regions()


# ---------------------------------------------------------------------- TLS


def _tls_sim(sim: RunningSimulator) -> None:
    if "tls" not in sim.client.options():
        pytest.skip("the simulator has no tls knob yet")
    sim.client.set_options(tls=True)


def test_tls_with_ca_bundle_works_on_both_paths(sim: RunningSimulator) -> None:
    _tls_sim(sim)
    aws = connect(sim, endpoint_url=sim.https_endpoint, ca_bundle=sim.ca_path)
    assert aws.describe_regions()
    snap = snapshot_with_blocks(sim, aws, [7])
    ref = next(iter(aws.list_snapshot_blocks(snap)))
    fast = BlockClient(aws)
    assert fast.https and fast.get(snap, ref).index == 7


def test_aws_ca_bundle_is_honoured_by_the_fast_path(
    sim: RunningSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    _tls_sim(sim)
    monkeypatch.setenv("AWS_CA_BUNDLE", sim.ca_path)
    aws = connect(sim, endpoint_url=sim.https_endpoint)
    assert aws.verify == sim.ca_path
    assert aws.ebs._endpoint.http_session._verify == aws.verify  # botocore resolved the same
    snap = snapshot_with_blocks(sim, aws, [9])
    ref = next(iter(aws.list_snapshot_blocks(snap)))
    assert BlockClient(aws).get(snap, ref).index == 9


def test_an_untrusted_certificate_is_final_with_a_clear_message(
    sim: RunningSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    _tls_sim(sim)
    monkeypatch.delenv("AWS_CA_BUNDLE", raising=False)
    aws = connect(sim, endpoint_url=sim.https_endpoint, policy=RetryPolicy(attempts=5, base_delay=0.0))
    expected = r"TLS certificate of 127\.0\.0\.1 not trusted: .*set ca_bundle= or AWS_CA_BUNDLE"
    with pytest.raises(AwsError, match=expected) as caught:
        aws.describe_regions()
    assert caught.value.kind is Kind.FINAL and not isinstance(caught.value, RetriesExhausted)
    engine = BlockTransfer(TransferConfig(1), name="t", policy=RetryPolicy(attempts=5, base_delay=0.0))
    fast = BlockClient(aws)
    tried = []

    def get() -> Any:
        tried.append(1)
        return fast.get("snap-0123456789abcdef0", BlockRef(0, "token"))

    with pytest.raises(AwsError, match=expected):
        engine.request("GetSnapshotBlock", get)
    assert len(tried) == 1


def test_the_fast_path_connects_with_boto3s_connect_timeout(sim: RunningSimulator) -> None:
    aws = connect(sim, connect_timeout=3.5, read_timeout=42.0)
    fast = BlockClient(aws)
    assert (fast.connect_timeout, fast.timeout) == (3.5, 42.0)
    assert aws.ebs.meta.config.connect_timeout == 3.5


def test_an_sts_hiccup_while_assuming_role_arn_is_retried_exactly(sim: RunningSimulator) -> None:
    """role_arn=: the refresh's AssumeRole fails (500) on every try; each of our 3 attempts
    makes one AssumeRole (botocore's STS retries are off too), and the error says it was
    the refresh. Then STS answers and the same call succeeds."""
    aws = connect(sim, role_arn="arn:aws:iam::123456789012:role/backup")
    sim.client.set_options(error_rate=1.0, fault_operations=["AssumeRole"])
    with pytest.raises(RetriesExhausted, match=r"while refreshing credentials: AssumeRole") as caught:
        aws.describe_regions()
    assert Kind.of(caught.value.__cause__) is Kind.RETRYABLE  # type: ignore[arg-type]
    assert requests(sim, "AssumeRole") == 3
    sim.client.set_options(error_rate=0.0)
    assert aws.describe_regions()


# ---------------------------------------------------------------------- chunking, as a property

_values = st.lists(st.text("abcdef0123456789", min_size=1, max_size=6), unique=True, max_size=30)


@settings(max_examples=80, deadline=None)
@given(
    filters=st.lists(
        st.tuples(st.sampled_from(["volume-id", "tag:a", "tag-key", "owner"]), _values), max_size=3
    ),
    ids=_values,
    limit=st.integers(1, 7),
)
def test_chunked_requests_ask_exactly_what_the_request_asks(
    filters: list[tuple[str, list[str]]], ids: list[str], limit: int
) -> None:
    """Every chunked request stays within the limit, and together they cover each
    combination of one value per filter (and each id) exactly once: filters are ANDed sets."""
    request: dict[str, Any] = {"OwnerIds": ["self"]}
    if filters:
        request["Filters"] = [shapes.match(name, values) for name, values in filters]
    if ids:
        request["SnapshotIds"] = ids
    chunks = shapes.chunk_request(request, limit)
    if all(len(v) <= limit for _, v in filters) and len(ids) <= limit:
        assert chunks == [request]
    combos: list[tuple[Any, ...]] = []
    for chunk in chunks:
        assert chunk["OwnerIds"] == ["self"]
        got_filters = chunk.get("Filters", [])
        assert [f["Name"] for f in got_filters] == [name for name, _ in filters]
        assert all(len(f["Values"]) <= limit for f in got_filters)
        assert len(chunk.get("SnapshotIds", [])) <= limit
        combos += itertools.product(
            chunk.get("SnapshotIds", [None]), *[f["Values"] or [None] for f in got_filters]
        )
    wanted = list(itertools.product(ids or [None], *[values or [None] for _, values in filters]))
    assert sorted(combos, key=repr) == sorted(wanted, key=repr)
