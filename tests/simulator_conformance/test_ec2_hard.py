"""EC2 side of the simulator's hard mode (``aws_hard``): eventual consistency, snapshot copy
time and progress, the three snapshot limits, EC2 request buckets, the filter-value limit,
Describe paging, ModifyVolume and trim. Plain boto3, SDK retries off (conftest ``aws``)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest
from botocore.exceptions import ClientError
from botocore.retries.standard import RetryContext, ThrottledRetryableChecker
from hypothesis import given, settings
from hypothesis import strategies as st

from devkit.simulator import BLOCK_SIZE
from devkit.simulator.model import World
from devkit.simulator.options import AWS_HARD, Options

from .conftest import ClientFactory, block, error_of, list_blocks, list_changed

if TYPE_CHECKING:
    from devkit.simulator.fixtures import RunningSimulator

MIB = 1 << 20


def _code(call: Callable[[], Any]) -> str:
    return str(error_of(call)["Error"]["Code"])


def _until_ok(call: Callable[[], Any], limit: float) -> tuple[Any, float, int]:
    """Call until it stops failing with ``*.NotFound``: (result, seconds taken, failures)."""
    start = time.monotonic()
    failures = 0
    while True:
        try:
            return call(), time.monotonic() - start, failures
        except ClientError as err:
            if not err.response["Error"]["Code"].endswith(".NotFound"):
                raise
            failures += 1
            assert time.monotonic() - start < limit, f"still NotFound after {limit}s"
            time.sleep(0.02)


def _write(sim: RunningSimulator, vol: str, first: int, count: int, seed: int = 0) -> None:
    for i in range(first, first + count):
        sim.client.write_volume(vol, i * BLOCK_SIZE, block(seed * 100000 + i))


# ------------------------------------------------------------------ eventual consistency


def test_new_resources_are_not_found_for_part_of_the_window(
        sim: RunningSimulator, aws: ClientFactory) -> None:
    window = 0.5
    sim.client.set_options(ec2_not_found_window=window, snapshot_delay=0, fault_seed=7)
    ec2 = aws("ec2")
    hits = 0
    for _ in range(4):
        vid = ec2.create_volume(Size=1, AvailabilityZone="us-east-1a")["VolumeId"]
        listed = {v["VolumeId"] for v in ec2.describe_volumes()["Volumes"]}
        described, waited, failures = _until_ok(
            lambda vid=vid: ec2.describe_volumes(VolumeIds=[vid]), window + 0.5)
        assert described["Volumes"][0]["VolumeId"] == vid
        assert waited <= window + 0.2
        if failures:
            hits += 1
            assert vid not in listed  # hidden by id, hidden from the listing too
        # once visible, it stays visible, in listings too
        assert vid in {v["VolumeId"] for v in ec2.describe_volumes()["Volumes"]}
    assert hits >= 1, "no new volume was ever invisible"
    assert sim.client.stats()["not_found_window"].get("DescribeVolumes", 0) >= hits


def test_not_found_answers_name_the_resource_like_ec2(
        sim: RunningSimulator, aws: ClientFactory) -> None:
    sim.client.set_options(ec2_not_found_window=0.4, snapshot_delay=0, fault_seed=3)
    ec2 = aws("ec2")
    vol = sim.client.create_volume(1)  # seeded: visible at once
    ec2.describe_volumes(VolumeIds=[vol])
    seen: dict[str, str] = {}
    for _ in range(6):
        sid = ec2.create_snapshot(VolumeId=vol)["SnapshotId"]
        try:
            ec2.create_tags(Resources=[sid], Tags=[{"Key": "k", "Value": "v"}])
        except ClientError as err:
            seen[sid] = err.response["Error"]["Code"]
            assert err.response["Error"]["Message"] == f"The snapshot '{sid}' does not exist"
            assert err.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert seen, "CreateTags never met a snapshot EC2 did not know yet"
    assert set(seen.values()) == {"InvalidSnapshot.NotFound"}
    time.sleep(0.45)
    for sid in seen:  # after the window every call works
        ec2.create_tags(Resources=[sid], Tags=[{"Key": "k", "Value": "v"}])
        ec2.delete_snapshot(SnapshotId=sid)
    stats = sim.client.stats()["not_found_window"]
    assert stats.get("CreateTags", 0) == len(seen)


def test_deleted_snapshot_and_terminated_instance_linger(
        sim: RunningSimulator, aws: ClientFactory) -> None:
    window = 0.6
    ec2 = aws("ec2")
    sim.client.set_options(snapshot_delay=0)
    vol = sim.client.create_volume(1)
    snaps = [ec2.create_snapshot(VolumeId=vol)["SnapshotId"] for _ in range(4)]
    inst = sim.client.create_instance("web", [{"size_gib": 1}])["instance_id"]
    sim.client.set_options(ec2_not_found_window=window, fault_seed=11)
    lingered = 0
    for sid in snaps:
        ec2.delete_snapshot(SnapshotId=sid)
        # a second delete is refused at once: the model knows it is gone
        assert _code(lambda sid=sid: ec2.delete_snapshot(SnapshotId=sid)) \
            == "InvalidSnapshot.NotFound"
        start = time.monotonic()
        while True:
            try:
                found = ec2.describe_snapshots(SnapshotIds=[sid])["Snapshots"]
            except ClientError as err:
                assert err.response["Error"]["Code"] == "InvalidSnapshot.NotFound"
                break
            assert [s["SnapshotId"] for s in found] == [sid]
            lingered += 1
            assert time.monotonic() - start < window + 0.3
            time.sleep(0.02)
        assert sid not in {s["SnapshotId"]
                           for s in ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]}
    assert lingered >= 1, "no deleted snapshot was ever still listed"

    out = ec2.terminate_instances(InstanceIds=[inst])["TerminatingInstances"][0]
    assert out["CurrentState"]["Name"] == "shutting-down"
    states = []
    start = time.monotonic()
    while time.monotonic() - start < window + 0.3:
        res = ec2.describe_instances(InstanceIds=[inst])["Reservations"]
        states.append(res[0]["Instances"][0]["State"]["Name"])
        if states[-1] == "terminated":
            break
        time.sleep(0.02)
    assert states[-1] == "terminated"
    assert set(states) <= {"shutting-down", "terminated"}
    assert states == sorted(states, key=["shutting-down", "terminated"].index)


def test_seeded_resources_and_ebs_direct_are_not_affected(
        sim: RunningSimulator, aws: ClientFactory) -> None:
    sim.client.set_options(ec2_not_found_window=30, snapshot_delay=0)
    ec2 = aws("ec2")
    inst = sim.client.create_instance("db", [{"size_gib": 1}])
    assert ec2.describe_instances(InstanceIds=[inst["instance_id"]])["Reservations"]
    sids = [ec2.create_snapshot(VolumeId=inst["volume_ids"][0])["SnapshotId"]
            for _ in range(3)]
    codes = []
    for sid in sids:
        try:
            ec2.describe_snapshots(SnapshotIds=[sid])
            codes.append("visible")
        except ClientError as err:
            codes.append(err.response["Error"]["Code"])
    assert "InvalidSnapshot.NotFound" in codes and set(codes) <= {
        "InvalidSnapshot.NotFound", "visible"}
    # EBS direct has its own window (not_found_window), off here
    assert aws("ebs").list_snapshot_blocks(SnapshotId=sids[0])["VolumeSize"] == 1


# ------------------------------------------------------------------ snapshot copy time


def test_completion_time_follows_the_data_written_since_the_last_snapshot(
        sim: RunningSimulator, aws: ClientFactory) -> None:
    sim.client.set_options(snapshot_delay=0, snapshot_mib_per_s=40)
    ec2 = aws("ec2")
    vol = sim.client.create_volume(1)
    _write(sim, vol, 0, 32)  # 16 MiB -> 0.4 s

    def complete(sid: str) -> tuple[float, list[int]]:
        start = time.monotonic()
        progress = []
        while True:
            snap = ec2.describe_snapshots(SnapshotIds=[sid])["Snapshots"][0]
            progress.append(int(snap["Progress"].rstrip("%")))
            if snap["State"] == "completed":
                return time.monotonic() - start, progress
            assert snap["State"] == "pending"
            time.sleep(0.03)

    first = ec2.create_snapshot(VolumeId=vol)["SnapshotId"]
    took, progress = complete(first)
    assert 0.3 <= took <= 1.5  # ~0.5 s: never sooner; later only on a loaded machine
    assert progress == sorted(progress) and progress[-1] == 100
    assert max(progress[:-1]) <= 99 and len(set(progress)) >= 3
    _write(sim, vol, 0, 2, seed=1)  # 1 MiB changed -> 0.025 s
    second = ec2.create_snapshot(VolumeId=vol)["SnapshotId"]
    took2, _ = complete(second)
    assert took2 < 0.2
    third = ec2.create_snapshot(VolumeId=vol)["SnapshotId"]  # nothing changed
    assert ec2.describe_snapshots(SnapshotIds=[third])["Snapshots"][0]["State"] == "completed"


def test_a_snapshot_set_shows_99_percent_until_its_slowest_member(
        sim: RunningSimulator, aws: ClientFactory) -> None:
    sim.client.set_options(snapshot_delay=0, snapshot_mib_per_s=40)
    ec2 = aws("ec2")
    inst = sim.client.create_instance("app", [{"size_gib": 1}, {"size_gib": 1}])
    big, small = inst["volume_ids"]
    _write(sim, big, 0, 32)  # 0.4 s
    _write(sim, small, 0, 1)  # 0.0125 s
    snaps = ec2.create_snapshots(InstanceSpecification={"InstanceId": inst["instance_id"]},
                                 )["Snapshots"]
    by_vol = {s["VolumeId"]: s["SnapshotId"] for s in snaps}
    time.sleep(0.15)
    now = {s["VolumeId"]: s for s in ec2.describe_snapshots(
        SnapshotIds=list(by_vol.values()))["Snapshots"]}
    assert now[small]["State"] == "pending" and now[small]["Progress"] == "99%"
    assert now[big]["State"] == "pending" and int(now[big]["Progress"][:-1]) < 99
    time.sleep(0.35)
    done = ec2.describe_snapshots(SnapshotIds=list(by_vol.values()))["Snapshots"]
    assert {s["State"] for s in done} == {"completed"}
    assert {s["Progress"] for s in done} == {"100%"}


# ------------------------------------------------------------------ snapshot limits


def test_per_volume_rate_limit(sim: RunningSimulator, aws: ClientFactory) -> None:
    sim.client.set_options(snapshot_delay=0, snapshot_interval_per_volume=0.3)
    ec2 = aws("ec2")
    vol, other = sim.client.create_volume(1), sim.client.create_volume(1)
    ec2.create_snapshot(VolumeId=vol)
    err = error_of(lambda: ec2.create_snapshot(VolumeId=vol))
    assert err["Error"]["Code"] == "SnapshotCreationPerVolumeRateExceeded"
    assert err["Error"]["Message"] == (
        "The maximum per volume CreateSnapshot request rate has been exceeded. "
        "Use an increasing or variable sleep interval between requests.")
    assert err["ResponseMetadata"]["HTTPStatusCode"] == 400
    ec2.create_snapshot(VolumeId=other)  # another volume is not limited
    time.sleep(0.32)
    ec2.create_snapshot(VolumeId=vol)


def test_concurrent_snapshots_per_volume(sim: RunningSimulator, aws: ClientFactory) -> None:
    sim.client.set_options(snapshot_delay=30, concurrent_snapshots_per_volume=2)
    ec2 = aws("ec2")
    gp3, st1 = sim.client.create_volume(1), sim.client.create_volume(1, volume_type="st1")
    first = ec2.create_snapshot(VolumeId=gp3)["SnapshotId"]
    ec2.create_snapshot(VolumeId=gp3)
    err = error_of(lambda: ec2.create_snapshot(VolumeId=gp3))
    assert err["Error"]["Code"] == "ConcurrentSnapshotLimitExceeded"
    assert err["Error"]["Message"] == \
        "Maximum allowed in-progress snapshots for a single volume exceeded."
    # a snapshot deleted while pending still counts (its copy goes on)
    ec2.delete_snapshot(SnapshotId=first)
    assert _code(lambda: ec2.create_snapshot(VolumeId=gp3)) == "ConcurrentSnapshotLimitExceeded"
    ec2.create_snapshot(VolumeId=st1)  # st1/sc1: one at a time
    assert _code(lambda: ec2.create_snapshot(VolumeId=st1)) == "ConcurrentSnapshotLimitExceeded"


def test_pending_per_region_refuses_a_whole_set(sim: RunningSimulator,
                                                aws: ClientFactory) -> None:
    sim.client.set_options(snapshot_delay=30, pending_snapshots_per_region=3)
    ec2 = aws("ec2")
    inst = sim.client.create_instance("x", [{"size_gib": 1}, {"size_gib": 1}])
    ec2.create_snapshot(VolumeId=sim.client.create_volume(1))
    ec2.create_snapshot(VolumeId=sim.client.create_volume(1))
    before = len(sim.client.snapshots())
    err = error_of(lambda: ec2.create_snapshots(
        InstanceSpecification={"InstanceId": inst["instance_id"]}))
    assert err["Error"]["Code"] == "PendingSnapshotLimitExceeded"
    assert err["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert len(sim.client.snapshots()) == before  # nothing of the set was created
    ec2.create_snapshots(InstanceSpecification={"InstanceId": inst["instance_id"],
                                                "ExcludeBootVolume": True})
    assert len(sim.client.snapshots()) == before + 1


# ------------------------------------------------------------------ EC2 request buckets


def _is_throttle(err: ClientError) -> bool:
    context = RetryContext(attempt_number=1, parsed_response=err.response)
    return bool(ThrottledRetryableChecker().is_retryable(context))


def test_request_buckets_per_action_and_category(sim: RunningSimulator,
                                                 aws: ClientFactory) -> None:
    sim.client.set_options(ec2_request_buckets={"unfiltered_non_mutating": [3, 0.001],
                                                "non_mutating": [5, 0.001],
                                                "mutating": [2, 0.001]})
    ec2 = aws("ec2")
    vol = sim.client.create_volume(1)
    for _ in range(3):
        ec2.describe_volumes()
    with pytest.raises(ClientError) as info:
        ec2.describe_volumes()
    resp = info.value.response
    assert resp["Error"] == {"Code": "RequestLimitExceeded", "Message": "Request limit exceeded."}
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 503
    assert _is_throttle(info.value)
    # a filtered call of the same action is in another category; another action has its own
    for _ in range(5):
        ec2.describe_volumes(VolumeIds=[vol])
    assert _code(lambda: ec2.describe_volumes(VolumeIds=[vol])) == "RequestLimitExceeded"
    for _ in range(3):
        ec2.describe_snapshots()
    ec2.create_tags(Resources=[vol], Tags=[{"Key": "a", "Value": "1"}])
    ec2.create_tags(Resources=[vol], Tags=[{"Key": "a", "Value": "2"}])
    assert _code(lambda: ec2.create_tags(Resources=[vol], Tags=[{"Key": "a", "Value": "3"}])) \
        == "RequestLimitExceeded"
    stats = sim.client.stats()
    assert stats["throttled"] == {"DescribeVolumes": 2, "CreateTags": 1}
    assert stats["throttled_by_reason"]["RequestLimitExceeded"] == 3


def test_request_buckets_refill(sim: RunningSimulator, aws: ClientFactory) -> None:
    sim.client.set_options(ec2_request_buckets={"unfiltered_non_mutating": [2, 10]})
    ec2 = aws("ec2")
    ec2.describe_snapshots()
    ec2.describe_snapshots()
    assert _code(lambda: ec2.describe_snapshots()) == "RequestLimitExceeded"
    time.sleep(0.12)
    ec2.describe_snapshots()


def test_documented_bucket_sizes_by_default(sim: RunningSimulator,
                                            aws: ClientFactory) -> None:
    sim.client.set_options(ec2_request_buckets=True)
    ec2 = aws("ec2")
    ok = 0
    start = time.monotonic()
    for _ in range(1000):
        try:
            ec2.describe_regions()
            ok += 1
        except ClientError as err:
            assert err.response["Error"]["Code"] == "RequestLimitExceeded"
            break
    elapsed = time.monotonic() - start
    # 50 unfiltered tokens, plus 10 per second refilled meanwhile
    assert 50 <= ok <= 50 + 10 * elapsed + 1


# ------------------------------------------------------------------ filters and paging


def test_filter_value_limit(sim: RunningSimulator, aws: ClientFactory) -> None:
    sim.client.set_options(max_filter_values=3)
    ec2 = aws("ec2")
    vols = [sim.client.create_volume(1) for _ in range(3)]
    found = ec2.describe_volumes(Filters=[{"Name": "volume-id", "Values": vols}])["Volumes"]
    assert len(found) == 3
    err = error_of(lambda: ec2.describe_snapshots(
        Filters=[{"Name": "volume-id", "Values": [*vols, "vol-0123456789abcdef0"]}]))
    assert err["Error"]["Code"] == "FilterLimitExceeded"
    assert err["Error"]["Message"] == \
        "The maximum number of filter values specified on a single call is 3"
    assert err["ResponseMetadata"]["HTTPStatusCode"] == 400


@pytest.mark.parametrize("kind", ["volumes", "snapshots", "instances"])
def test_describe_pages_and_refuses_maxresults_with_ids(
        sim: RunningSimulator, aws: ClientFactory, kind: str) -> None:
    sim.client.set_options(snapshot_delay=0)
    ec2 = aws("ec2")
    ids: list[str] = []
    for n in range(7):
        inst = sim.client.create_instance(f"i{n}", [{"size_gib": 1}])
        vid = inst["volume_ids"][0]
        ids.append({"volumes": vid, "instances": inst["instance_id"],
                    "snapshots": ""}[kind] or ec2.create_snapshot(VolumeId=vid)["SnapshotId"])
    call = {"volumes": ec2.describe_volumes, "snapshots": ec2.describe_snapshots,
            "instances": ec2.describe_instances}[kind]
    id_arg = {"volumes": "VolumeIds", "snapshots": "SnapshotIds",
              "instances": "InstanceIds"}[kind]

    def ids_of(page: dict[str, Any]) -> list[str]:
        if kind == "volumes":
            return [v["VolumeId"] for v in page["Volumes"]]
        if kind == "snapshots":
            return [s["SnapshotId"] for s in page["Snapshots"]]
        return [i["InstanceId"] for r in page["Reservations"] for i in r["Instances"]]

    first = call(MaxResults=5)
    assert len(ids_of(first)) == 5 and first.get("NextToken")
    second = call(MaxResults=5, NextToken=first["NextToken"])
    assert not second.get("NextToken")
    assert ids_of(first) + ids_of(second) == ids
    err = error_of(lambda: call(MaxResults=5, **{id_arg: ids[:2]}))
    assert err["Error"]["Code"] == "InvalidParameterCombination"


def test_paging_is_stable_when_an_earlier_volume_is_deleted(
        sim: RunningSimulator, aws: ClientFactory) -> None:
    ec2 = aws("ec2")
    vols = [sim.client.create_volume(1) for _ in range(8)]
    first = ec2.describe_volumes(MaxResults=5)
    ec2.delete_volume(VolumeId=vols[0])
    second = ec2.describe_volumes(MaxResults=5, NextToken=first["NextToken"])
    assert [v["VolumeId"] for v in second["Volumes"]] == vols[5:]


# ------------------------------------------------------------------ ModifyVolume and trim


def test_modify_volume_grows_and_listchangedblocks_spans_sizes(
        sim: RunningSimulator, aws: ClientFactory) -> None:
    sim.client.set_options(snapshot_delay=0.1)
    ec2, ebs = aws("ec2"), aws("ebs")
    vol = sim.client.create_volume(1)
    _write(sim, vol, 0, 2)
    s1 = ec2.create_snapshot(VolumeId=vol)["SnapshotId"]
    mod = ec2.modify_volume(VolumeId=vol, Size=2)["VolumeModification"]
    assert (mod["OriginalSize"], mod["TargetSize"], mod["ModificationState"]) == (1, 2, "modifying")
    assert ec2.describe_volumes(VolumeIds=[vol])["Volumes"][0]["Size"] == 2
    assert _code(lambda: ec2.modify_volume(VolumeId=vol, Size=3)) == "IncorrectModificationState"
    states = []
    for _ in range(40):
        m = ec2.describe_volumes_modifications(VolumeIds=[vol])["VolumesModifications"][0]
        states.append(m["ModificationState"])
        if states[-1] == "completed":
            break
        time.sleep(0.02)
    assert list(dict.fromkeys(states)) == ["modifying", "optimizing", "completed"]
    assert _code(lambda: ec2.modify_volume(VolumeId=vol, Size=1)) == "InvalidParameterValue"
    beyond = 1024 + 5  # a block past the old 1 GiB end
    sim.client.write_volume(vol, beyond * BLOCK_SIZE, block("new"))
    s2 = ec2.create_snapshot(VolumeId=vol)["SnapshotId"]
    time.sleep(0.15)
    assert ec2.describe_snapshots(SnapshotIds=[s2])["Snapshots"][0]["VolumeSize"] == 2
    assert ebs.list_changed_blocks(FirstSnapshotId=s1, SecondSnapshotId=s2)["VolumeSize"] == 2
    changed, _ = list_changed(ebs, s2, s1)
    assert [(b["BlockIndex"], "FirstBlockToken" in b, "SecondBlockToken" in b)
            for b in changed] == [(beyond, False, True)]
    grown = sim.client.modify_volume(vol, size_gib=4)
    assert grown["size_gib"] == 4  # the control route answers the new size
    assert ec2.describe_volumes(VolumeIds=[vol])["Volumes"][0]["Size"] == 4


def test_trim_unwrites_blocks(sim: RunningSimulator, aws: ClientFactory) -> None:
    sim.client.set_options(snapshot_delay=0)
    ec2, ebs = aws("ec2"), aws("ebs")
    vol = sim.client.create_volume(1)
    _write(sim, vol, 0, 4)
    s1 = ec2.create_snapshot(VolumeId=vol)["SnapshotId"]
    # [1.5 blocks, 3.25 blocks): block 2 is unwritten; 1 and 3 keep a zeroed part
    assert sim.client.trim_volume(vol, BLOCK_SIZE * 3 // 2, BLOCK_SIZE * 7 // 4) == 1
    data = sim.client.read_volume(vol, 0, 4 * BLOCK_SIZE)
    assert data[BLOCK_SIZE * 3 // 2:BLOCK_SIZE * 13 // 4] == bytes(BLOCK_SIZE * 7 // 4)
    assert data[:BLOCK_SIZE * 3 // 2] == block(0) + block(1)[:BLOCK_SIZE // 2]
    assert data[BLOCK_SIZE * 13 // 4:] == block(3)[BLOCK_SIZE // 4:]
    s2 = ec2.create_snapshot(VolumeId=vol)["SnapshotId"]
    listed, _ = list_blocks(ebs, s2)
    assert [b["BlockIndex"] for b in listed] == [0, 1, 3]
    changed, _ = list_changed(ebs, s2, s1)
    assert [(b["BlockIndex"], "FirstBlockToken" in b, "SecondBlockToken" in b)
            for b in changed] == [(1, True, True), (2, True, False), (3, True, True)]
    assert sim.client.trim_volume(vol, 0, 10) == 0  # inside one block: nothing unwritten


# ------------------------------------------------------------------ the profile


def test_aws_hard_profile_sets_every_knob_and_explicit_ones_win() -> None:
    opts = Options()
    opts.update({"aws_hard": True, "ec2_not_found_window": 0.25})
    values = opts.as_dict()
    assert values["aws_like"] and values["throttling"] and values["latency_ms"] == 50.0
    for name, value in AWS_HARD.items():
        if name != "ec2_not_found_window":
            assert values[name] == value, name
    assert values["ec2_not_found_window"] == 0.25
    opts.update({"aws_hard": False})
    default = Options().as_dict()
    for name in [*AWS_HARD, "aws_like", "throttling", "latency_ms"]:
        assert opts.as_dict()[name] == default[name], name


def test_aws_hard_over_the_control_api(sim: RunningSimulator) -> None:
    values = sim.client.set_options(aws_hard=True, tls=False, snapshot_delay=0)
    assert values["aws_hard"] and values["snapshot_interval_per_volume"] == 15.0
    assert values["max_filter_values"] == 200 and values["ec2_request_buckets"] is True
    assert values["tls"] is False
    with pytest.raises(Exception, match="ec2_request_buckets"):
        sim.client.set_options(ec2_request_buckets={"mutating": [0, 1]})
    sim.client.reset()
    assert sim.client.options()["aws_hard"] is False


# ------------------------------------------------------------------ trim, as a property


_SPAN = 6 * BLOCK_SIZE
_ops = st.lists(st.tuples(st.sampled_from(["write", "trim"]),
                          st.integers(0, _SPAN - 1), st.integers(0, 2 * BLOCK_SIZE)),
                min_size=1, max_size=8)


@settings(max_examples=60, deadline=None)
@given(_ops)
def test_trim_and_write_match_a_byte_model(ops: list[tuple[str, int, int]]) -> None:
    """In-process: after any writes and trims the volume reads as a plain byte model, and
    a block is written exactly when some write touched it after the last trim that covered
    it whole."""
    region = World().region("us-east-1")
    vol = region.create_volume(1)
    model = bytearray(_SPAN)
    written: set[int] = set()
    for n, (op, offset, length) in enumerate(ops):
        length = min(length, _SPAN - offset)
        if op == "write":
            data = bytes([n % 255 + 1]) * length
            region.write_volume(vol.id, offset, data)
            model[offset:offset + length] = data
            if length:
                written |= set(range(offset // BLOCK_SIZE, -(-(offset + length) // BLOCK_SIZE)))
        else:
            whole = set(range(-(-offset // BLOCK_SIZE), (offset + length) // BLOCK_SIZE))
            assert region.trim_volume(vol.id, offset, length) == len(whole & written)
            model[offset:offset + length] = bytes(length)
            written -= whole
    assert region.read_volume(vol.id, 0, _SPAN) == bytes(model)
    assert set(vol.blocks) == written
