"""Shared helpers for the simulator conformance suite: plain boto3 clients aimed at the
simulator (``sim`` fixture from tests/conftest.py), with SDK retries off so every AWS error
is seen as the wire sent it."""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from devkit.simulator import BLOCK_SIZE

if TYPE_CHECKING:
    from devkit.simulator.fixtures import RunningSimulator

ClientFactory = Callable[..., Any]


@pytest.fixture(scope="session")
def _session() -> boto3.session.Session:
    return boto3.session.Session()


@pytest.fixture
def aws(sim: RunningSimulator, _session: boto3.session.Session) -> Iterator[ClientFactory]:
    """``aws("ebs", region=..., **config)`` -> a boto3 client with retries off."""
    cache: dict[tuple[Any, ...], Any] = {}

    def make(service: str, region: str = "us-east-1", **config: Any) -> Any:
        key = (service, region, repr(sorted(config.items())))
        if key not in cache:
            config.setdefault("retries", {"total_max_attempts": 1, "mode": "standard"})
            cache[key] = _session.client(service, config=Config(**config),
                                         **sim.boto3_kwargs(region))
        return cache[key]

    yield make


def error_of(call: Callable[[], Any]) -> dict[str, Any]:
    """The parsed error response of a call that must fail."""
    with pytest.raises(ClientError) as info:
        call()
    response: dict[str, Any] = info.value.response
    return response


def block(seed: int | bytes) -> bytes:
    """A deterministic 512 KiB block."""
    unit = hashlib.sha256(seed if isinstance(seed, bytes) else str(seed).encode()).digest()
    return unit * (BLOCK_SIZE // len(unit))


def random_block() -> bytes:
    return os.urandom(BLOCK_SIZE)


def b64sha(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def put(ebs: Any, snapshot_id: str, index: int, data: bytes, **kw: Any) -> dict[str, Any]:
    args: dict[str, Any] = {"SnapshotId": snapshot_id, "BlockIndex": index, "BlockData": data,
                            "DataLength": len(data), "Checksum": b64sha(data),
                            "ChecksumAlgorithm": "SHA256"}
    args.update(kw)
    result: dict[str, Any] = ebs.put_snapshot_block(**args)
    return result


def linear(blocks: dict[int, bytes]) -> str:
    """LINEAR aggregate: SHA-256 over raw per-block digests in index order, base64."""
    digest = hashlib.sha256()
    for index in sorted(blocks):
        digest.update(hashlib.sha256(blocks[index]).digest())
    return base64.b64encode(digest.digest()).decode()


def list_changed(ebs: Any, second: str, first: str | None = None, **kw: Any
                 ) -> tuple[list[dict[str, Any]], list[int]]:
    """Every ChangedBlock through the NextToken loop, and each page's size."""
    out: list[dict[str, Any]] = []
    sizes: list[int] = []
    args: dict[str, Any] = {"SecondSnapshotId": second, **kw}
    if first:
        args["FirstSnapshotId"] = first
    while True:
        page = ebs.list_changed_blocks(**args)
        out += page["ChangedBlocks"]
        sizes.append(len(page["ChangedBlocks"]))
        if not page.get("NextToken"):
            return out, sizes
        args["NextToken"] = page["NextToken"]


def list_blocks(ebs: Any, snapshot_id: str, **kw: Any) -> tuple[list[dict[str, Any]], list[int]]:
    out: list[dict[str, Any]] = []
    sizes: list[int] = []
    args: dict[str, Any] = {"SnapshotId": snapshot_id, **kw}
    while True:
        page = ebs.list_snapshot_blocks(**args)
        out += page["Blocks"]
        sizes.append(len(page["Blocks"]))
        if not page.get("NextToken"):
            return out, sizes
        args["NextToken"] = page["NextToken"]


def read(ebs: Any, snapshot_id: str, index: int, token: str) -> bytes:
    resp = ebs.get_snapshot_block(SnapshotId=snapshot_id, BlockIndex=index, BlockToken=token)
    data: bytes = resp["BlockData"].read()
    assert resp["Checksum"] == b64sha(data) and resp["ChecksumAlgorithm"] == "SHA256"
    assert resp["DataLength"] == len(data) == BLOCK_SIZE
    return data
