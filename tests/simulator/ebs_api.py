"""EBS direct API (REST-JSON, signing name ``ebs``): the read side.

Implemented: ListSnapshotBlocks and GetSnapshotBlock, with AWS's documented behaviour
(only written blocks, numeric order, MaxResults clamped to 100..10000, opaque validated
NextToken and block tokens, only ``completed`` snapshots readable, SHA-256 headers).
Errors are JSON ``{"Message", "Reason"}`` with the ``x-amzn-ErrorType`` header botocore
reads the error code from.

Choices where AWS documents no exact wording:
- a *pending* snapshot gives 400 ValidationException, Reason ``INVALID_SNAPSHOT_ID``
  ("the id does not name a snapshot that can be read yet"), message
  "The snapshot 'snap-…' is not in completed state.";
- malformed path/query values (constraint violations) give ValidationException with no
  Reason, worded like AWS's framework validation.

Not yet implemented (a later issue; routes answer 501 NotImplemented):
ListChangedBlocks (``GET /snapshots/{second}/changedblocks``), StartSnapshot
(``POST /snapshots``), PutSnapshotBlock (``PUT /snapshots/{id}/blocks/{index}``),
CompleteSnapshot (``POST /snapshots/completion/{id}``).
"""

from __future__ import annotations

import bisect
import json
import re
from typing import Any

from . import tokens
from .errors import SimError
from .messages import Request, Response
from .model import BLOCK_SIZE, BLOCKS_PER_GIB, ZERO_BLOCK, Snapshot, World
from .policy import Call, Policy

MIN_RESULTS = 100
MAX_RESULTS = 10000
_SNAP_RE = re.compile(r"^snap-[0-9a-f]+$")
_BLOCK_HEADERS_LEN = str(BLOCK_SIZE)


def _validation(message: str, reason: str | None = None) -> SimError:
    return SimError("ValidationException", message, 400, reason)


def _constraint(value: str, member: str, constraint: str) -> SimError:
    return _validation(f"1 validation error detected: Value '{value}' at '{member}' failed "
                       f"to satisfy constraint: {constraint}")


def _int_param(raw: str | None, member: str, minimum: int = 0) -> int | None:
    if raw is None:
        return None
    try:
        value = int(raw)
    except ValueError:
        raise _constraint(raw, member, "Member must be a number") from None
    if value < minimum:
        raise _constraint(raw, member,
                          f"Member must have value greater than or equal to {minimum}")
    return value


def error_response(err: SimError) -> Response:
    """AWS rest-json error: code in ``x-amzn-ErrorType``, modeled fields in the body."""
    body: dict[str, Any] = {"Message": err.message}
    if err.reason:
        body["Reason"] = err.reason
    return Response(err.status, json.dumps(body).encode(),
                    headers=[("x-amzn-ErrorType", err.code)])


class EbsApi:
    """Routes ``/snapshots...`` requests and serves snapshot blocks from the model."""

    def __init__(self, world: World, policy: Policy) -> None:
        self.world = world
        self.policy = policy

    def handle(self, req: Request) -> Response:
        parts = req.path.strip("/").split("/")
        try:
            if req.method == "GET" and len(parts) == 3 and parts[2] == "blocks":
                return self.list_snapshot_blocks(req, parts[1])
            if req.method == "GET" and len(parts) == 4 and parts[2] == "blocks":
                return self.get_snapshot_block(req, parts[1], parts[3])
            if self._later(req.method, parts):
                raise SimError("NotImplemented",
                               "This EBS direct operation is not simulated yet", 501)
            raise SimError("UnknownOperationException", "Unknown operation", 404)
        except SimError as err:
            return error_response(err)

    @staticmethod
    def _later(method: str, parts: list[str]) -> bool:
        """Routes of the write side and ListChangedBlocks, reserved for a later issue."""
        return ((method == "GET" and len(parts) == 3 and parts[2] == "changedblocks")
                or (method == "POST" and parts == ["snapshots"])
                or (method == "PUT" and len(parts) == 4 and parts[2] == "blocks")
                or (method == "POST" and len(parts) == 3 and parts[1] == "completion"))

    def _readable(self, region_name: str, snapshot_id: str) -> Snapshot:
        """The completed snapshot, or the error EBS direct gives for it."""
        if not _SNAP_RE.match(snapshot_id) or len(snapshot_id) > 64:
            raise _constraint(snapshot_id, "snapshotId",
                              "Member must satisfy regular expression pattern: ^snap-[0-9a-f]+$")
        snap = self.world.region(region_name).snapshots.get(snapshot_id)
        if snap is None:
            raise SimError("ResourceNotFoundException",
                           f"The snapshot '{snapshot_id}' does not exist.", 404,
                           "SNAPSHOT_NOT_FOUND")
        if snap.state() != "completed":
            raise _validation(f"The snapshot '{snapshot_id}' is not in completed state.",
                              "INVALID_SNAPSHOT_ID")
        return snap

    def list_snapshot_blocks(self, req: Request, snapshot_id: str) -> Response:
        self.policy.admit(Call("ebs", "ListSnapshotBlocks", req.region, snapshot_id))
        snap = self._readable(req.region, snapshot_id)
        scope = f"{req.region}/{snap.id}"
        max_results = _int_param(req.query.get("maxResults"), "maxResults")
        max_results = min(MAX_RESULTS, max(MIN_RESULTS, max_results or MAX_RESULTS))
        page_token = req.query.get("pageToken")
        if page_token is not None:  # NextToken takes precedence over StartingBlockIndex
            start = tokens.page_token_index(page_token, scope + "/list")
            if start is None:
                raise _validation("The pagination token is invalid or has expired.",
                                  "INVALID_PAGE_TOKEN")
        else:
            start = _int_param(req.query.get("startingBlockIndex"), "startingBlockIndex") or 0
        indices = snap.indices()
        first = bisect.bisect_left(indices, start)
        page = indices[first:first + max_results]
        minted = tokens.BlockTokens(scope)
        body: dict[str, Any] = {
            "Blocks": [{"BlockIndex": i, "BlockToken": minted.mint(i)} for i in page],
            "ExpiryTime": float(minted.expiry),
            "VolumeSize": snap.volume_size,
            "BlockSize": BLOCK_SIZE,
        }
        if first + max_results < len(indices):
            body["NextToken"] = tokens.page_token(scope + "/list", indices[first + max_results])
        return Response(200, json.dumps(body, separators=(",", ":")).encode())

    def get_snapshot_block(self, req: Request, snapshot_id: str, raw_index: str) -> Response:
        self.policy.admit(Call("ebs", "GetSnapshotBlock", req.region, snapshot_id))
        index = _int_param(raw_index, "blockIndex")
        token = req.query.get("blockToken")
        if token is None:
            raise _constraint("null", "blockToken", "Member must not be null")
        snap = self._readable(req.region, snapshot_id)
        assert index is not None
        if index >= snap.volume_size * BLOCKS_PER_GIB or not tokens.block_token_valid(
                token, f"{req.region}/{snap.id}", index):
            raise _validation("The block token is invalid or has expired.",
                              "INVALID_BLOCK_TOKEN")
        block = snap.blocks.get(index, ZERO_BLOCK)
        return Response(200, block.data, "application/octet-stream", [
            ("x-amz-Data-Length", _BLOCK_HEADERS_LEN),
            ("x-amz-Checksum", block.checksum),
            ("x-amz-Checksum-Algorithm", "SHA256"),
        ])
