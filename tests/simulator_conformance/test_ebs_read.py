"""EBS direct read side against AWS's documented semantics (ebs-direct-facts.md 1.1-1.3, 1.5):
ListSnapshotBlocks / ListChangedBlocks paging and tokens, lineage, pending reads, the
"does not exist" window."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from devkit.simulator import BLOCK_SIZE

from .conftest import ClientFactory, block, error_of, list_blocks, list_changed, put, read

if TYPE_CHECKING:
    from devkit.simulator.fixtures import RunningSimulator


def _volume_with(sim: RunningSimulator, writes: dict[int, bytes], size: int = 1) -> str:
    vol = sim.client.create_volume(size)
    for index, data in writes.items():
        sim.client.write_volume(vol, index * BLOCK_SIZE, data)
    return vol


def test_changed_blocks_same_volume(sim: RunningSimulator, aws: ClientFactory) -> None:
    sim.client.set_options(snapshot_delay=0)
    ec2, ebs = aws("ec2"), aws("ebs")
    vol = _volume_with(sim, {0: block(0), 5: block(5), 9: block(9)})
    first = ec2.create_snapshot(VolumeId=vol)["SnapshotId"]
    sim.client.write_volume(vol, 5 * BLOCK_SIZE, block("5b"))  # changed
    sim.client.write_volume(vol, 9 * BLOCK_SIZE, block(9))  # rewritten with the same bytes
    sim.client.write_volume(vol, 1500 * BLOCK_SIZE, block(1500))  # new
    second = ec2.create_snapshot(VolumeId=vol)["SnapshotId"]

    changed, _ = list_changed(ebs, second, first)
    by_index = {c["BlockIndex"]: c for c in changed}
    # EBS tracks writes: a block rewritten with identical bytes is reported too.
    assert sorted(by_index) == [5, 9, 1500]
    assert "FirstBlockToken" not in by_index[1500]  # absent from the first snapshot
    assert all("SecondBlockToken" in c for c in changed)
    assert read(ebs, first, 5, by_index[5]["FirstBlockToken"]) == block(5)
    assert read(ebs, second, 5, by_index[5]["SecondBlockToken"]) == block("5b")
    assert read(ebs, second, 1500, by_index[1500]["SecondBlockToken"]) == block(1500)
    # A token is bound to its own snapshot.
    err = error_of(lambda: ebs.get_snapshot_block(
        SnapshotId=second, BlockIndex=5, BlockToken=by_index[5]["FirstBlockToken"]))
    assert err["Error"]["Code"] == "ValidationException"
    assert err["Reason"] == "INVALID_BLOCK_TOKEN"

    # Reversed order: blocks absent from the (older) second snapshot have no SecondBlockToken.
    reverse, _ = list_changed(ebs, first, second)
    rev = {c["BlockIndex"]: c for c in reverse}
    assert sorted(rev) == [5, 9, 1500]
    assert "SecondBlockToken" not in rev[1500] and "FirstBlockToken" in rev[1500]

    # Without FirstSnapshotId: every written block of the second snapshot.
    alone, _ = list_changed(ebs, second)
    assert [c["BlockIndex"] for c in alone] == [0, 5, 9, 1500]
    assert all("FirstBlockToken" not in c for c in alone)

    # Same snapshot twice: nothing changed.
    same, _ = list_changed(ebs, second, second)
    assert same == []


def test_unrelated_snapshots_rejected(sim: RunningSimulator, aws: ClientFactory) -> None:
    sim.client.set_options(snapshot_delay=0)
    ec2, ebs = aws("ec2"), aws("ebs")
    a = ec2.create_snapshot(VolumeId=_volume_with(sim, {0: block(1)}))["SnapshotId"]
    b = ec2.create_snapshot(VolumeId=_volume_with(sim, {0: block(1)}))["SnapshotId"]
    err = error_of(lambda: ebs.list_changed_blocks(FirstSnapshotId=a, SecondSnapshotId=b))
    assert err["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert err["Error"]["Code"] == "ValidationException"
    assert err["Reason"] == "UNRELATED_SNAPSHOTS"


def test_lineage_through_parent_and_restored_volume(sim: RunningSimulator,
                                                    aws: ClientFactory) -> None:
    """A ParentSnapshotId chain is one lineage, and so is a volume created from a snapshot."""
    sim.client.set_options(snapshot_delay=0)
    ec2, ebs = aws("ec2"), aws("ebs")
    base = ec2.create_snapshot(VolumeId=_volume_with(sim, {0: block(0), 3: block(3)})
                               )["SnapshotId"]
    child = ebs.start_snapshot(VolumeSize=1, ParentSnapshotId=base)["SnapshotId"]
    put(ebs, child, 3, block("3b"))
    put(ebs, child, 7, block(7))
    ebs.complete_snapshot(SnapshotId=child, ChangedBlocksCount=2)
    grandchild = ebs.start_snapshot(VolumeSize=1, ParentSnapshotId=child)["SnapshotId"]
    put(ebs, grandchild, 8, block(8))
    ebs.complete_snapshot(SnapshotId=grandchild, ChangedBlocksCount=1)

    changed, _ = list_changed(ebs, child, base)
    assert [(c["BlockIndex"], "FirstBlockToken" in c) for c in changed] == [(3, True),
                                                                             (7, False)]
    assert [c["BlockIndex"] for c in list_changed(ebs, grandchild, base)[0]] == [3, 7, 8]

    restored = ec2.create_volume(SnapshotId=child, AvailabilityZone="us-east-1b")["VolumeId"]
    sim.client.write_volume(restored, 0, block("0b"))
    later = ec2.create_snapshot(VolumeId=restored)["SnapshotId"]
    assert [c["BlockIndex"] for c in list_changed(ebs, later, child)[0]] == [0]
    assert [c["BlockIndex"] for c in list_changed(ebs, later, base)[0]] == [0, 3, 7]


def test_changed_blocks_paging_windows(sim: RunningSimulator, aws: ClientFactory) -> None:
    """Sparse changes give empty pages that still carry NextToken; MaxResults is clamped to
    100..10000; StartingBlockIndex starts the scan; NextToken wins over it."""
    sim.client.set_options(snapshot_delay=0, changed_blocks_window=256)
    ec2, ebs = aws("ec2"), aws("ebs")
    vol = _volume_with(sim, {})
    first = ec2.create_snapshot(VolumeId=vol)["SnapshotId"]
    for i in [*range(0, 150), 2000]:
        sim.client.write_volume(vol, i * BLOCK_SIZE, block(i))
    second = ec2.create_snapshot(VolumeId=vol)["SnapshotId"]

    changed, sizes = list_changed(ebs, second, first, MaxResults=100)
    assert [c["BlockIndex"] for c in changed] == [*range(150), 2000]
    assert sizes[:2] == [100, 50] and 0 in sizes  # empty pages in the sparse middle
    assert max(sizes) <= 100

    page = ebs.list_changed_blocks(FirstSnapshotId=first, SecondSnapshotId=second,
                                   MaxResults=100, StartingBlockIndex=1900)
    assert [c["BlockIndex"] for c in page["ChangedBlocks"]] == [2000]
    assert "NextToken" not in page  # the window reached the end of the volume

    page1 = ebs.list_changed_blocks(FirstSnapshotId=first, SecondSnapshotId=second,
                                    MaxResults=100)
    page2 = ebs.list_changed_blocks(FirstSnapshotId=first, SecondSnapshotId=second,
                                    MaxResults=100, StartingBlockIndex=1900,
                                    NextToken=page1["NextToken"])
    assert page2["ChangedBlocks"][0]["BlockIndex"] == 100  # NextToken took precedence

    # A NextToken is bound to its snapshot pair.
    other = ec2.create_snapshot(VolumeId=vol)["SnapshotId"]
    err = error_of(lambda: ebs.list_changed_blocks(
        FirstSnapshotId=first, SecondSnapshotId=other, NextToken=page1["NextToken"]))
    assert err["Reason"] == "INVALID_PAGE_TOKEN"


def test_list_snapshot_blocks_paging(sim: RunningSimulator, aws: ClientFactory) -> None:
    sim.client.set_options(snapshot_delay=0)
    ec2, ebs = aws("ec2"), aws("ebs")
    vol = _volume_with(sim, {i: block(i) for i in [*range(0, 250), 1000, 2047]})
    snap = ec2.create_snapshot(VolumeId=vol)["SnapshotId"]
    blocks, sizes = list_blocks(ebs, snap, MaxResults=100)
    assert [b["BlockIndex"] for b in blocks] == [*range(250), 1000, 2047]
    assert sizes == [100, 100, 52]
    first = ebs.list_snapshot_blocks(SnapshotId=snap, StartingBlockIndex=249)
    assert [b["BlockIndex"] for b in first["Blocks"]] == [249, 1000, 2047]
    assert first["VolumeSize"] == 1 and first["BlockSize"] == BLOCK_SIZE
    assert "NextToken" not in first

    sim.client.set_options(list_blocks_window=300)  # the scanning behaviour, opt-in here
    blocks, sizes = list_blocks(ebs, snap, MaxResults=100)
    assert [b["BlockIndex"] for b in blocks] == [*range(250), 1000, 2047]
    assert 0 in sizes and sizes[-1] == 1


def test_tokens_change_on_relist_and_expire(sim: RunningSimulator, aws: ClientFactory) -> None:
    sim.client.set_options(snapshot_delay=0)
    ec2, ebs = aws("ec2"), aws("ebs")
    vol = _volume_with(sim, {i: block(i) for i in range(150)})
    snap = ec2.create_snapshot(VolumeId=vol)["SnapshotId"]
    one = ebs.list_snapshot_blocks(SnapshotId=snap, MaxResults=100)
    two = ebs.list_snapshot_blocks(SnapshotId=snap, MaxResults=100)
    assert one["Blocks"][0]["BlockToken"] != two["Blocks"][0]["BlockToken"]
    assert read(ebs, snap, 0, one["Blocks"][0]["BlockToken"]) == block(0)  # both still valid
    assert read(ebs, snap, 0, two["Blocks"][0]["BlockToken"]) == block(0)
    # A token for one index does not read another.
    err = error_of(lambda: ebs.get_snapshot_block(
        SnapshotId=snap, BlockIndex=1, BlockToken=one["Blocks"][0]["BlockToken"]))
    assert err["Reason"] == "INVALID_BLOCK_TOKEN"

    sim.client.set_options(block_token_ttl=0.3, page_token_ttl=0.3)
    fresh = ebs.list_snapshot_blocks(SnapshotId=snap, MaxResults=100)
    changed = ebs.list_changed_blocks(SecondSnapshotId=snap, MaxResults=100)
    assert fresh["ExpiryTime"].timestamp() < time.time() + 5
    time.sleep(0.4)
    err = error_of(lambda: ebs.get_snapshot_block(
        SnapshotId=snap, BlockIndex=0, BlockToken=fresh["Blocks"][0]["BlockToken"]))
    assert err["Reason"] == "INVALID_BLOCK_TOKEN"
    err = error_of(lambda: ebs.list_snapshot_blocks(SnapshotId=snap,
                                                    NextToken=fresh["NextToken"]))
    assert err["Reason"] == "INVALID_PAGE_TOKEN"
    err = error_of(lambda: ebs.list_changed_blocks(SecondSnapshotId=snap,
                                                   NextToken=changed["NextToken"]))
    assert err["Reason"] == "INVALID_PAGE_TOKEN"


def test_pending_snapshot_not_readable(sim: RunningSimulator, aws: ClientFactory) -> None:
    sim.client.set_options(snapshot_delay=0.5)
    ec2, ebs = aws("ec2"), aws("ebs")
    vol = _volume_with(sim, {0: block(0)})
    snap = ec2.create_snapshot(VolumeId=vol)["SnapshotId"]
    for call in (lambda: ebs.list_snapshot_blocks(SnapshotId=snap),
                 lambda: ebs.list_changed_blocks(SecondSnapshotId=snap)):
        err = error_of(call)
        assert err["Error"]["Code"] == "ValidationException"
        assert err["Reason"] == "INVALID_SNAPSHOT_ID"
    err = error_of(lambda: ebs.list_snapshot_blocks(SnapshotId="snap-0123456789abcdef0"))
    assert err["ResponseMetadata"]["HTTPStatusCode"] == 404
    assert err["Error"]["Code"] == "ResourceNotFoundException"
    assert err["Reason"] == "SNAPSHOT_NOT_FOUND"


def test_not_found_window(sim: RunningSimulator, aws: ClientFactory) -> None:
    """Just-created and just-completed snapshots answer "does not exist" for a while."""
    sim.client.set_options(snapshot_delay=0, not_found_window=0.4)
    ec2, ebs = aws("ec2"), aws("ebs")
    snap = ec2.create_snapshot(VolumeId=_volume_with(sim, {0: block(0)}))["SnapshotId"]
    assert ec2.describe_snapshots(SnapshotIds=[snap])["Snapshots"][0]["State"] == "completed"
    err = error_of(lambda: ebs.list_snapshot_blocks(SnapshotId=snap))
    assert err["Error"]["Code"] == "ResourceNotFoundException"
    new = ebs.start_snapshot(VolumeSize=1)["SnapshotId"]
    err = error_of(lambda: put(ebs, new, 0, block(0)))
    assert err["Error"]["Code"] == "ResourceNotFoundException"
    time.sleep(0.45)
    assert ebs.list_snapshot_blocks(SnapshotId=snap)["Blocks"]
    put(ebs, new, 0, block(0))
    ebs.complete_snapshot(SnapshotId=new, ChangedBlocksCount=1)
    err = error_of(lambda: ebs.list_snapshot_blocks(SnapshotId=new))  # just completed
    assert err["Error"]["Code"] == "ResourceNotFoundException"
    time.sleep(0.45)
    assert ebs.list_snapshot_blocks(SnapshotId=new)["Blocks"]
    assert sum(sim.client.stats()["not_found_window"].values()) == 3
