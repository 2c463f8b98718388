"""EBS direct API (REST-JSON, signing name ``ebs``): all six operations.

ListSnapshotBlocks, ListChangedBlocks, GetSnapshotBlock, StartSnapshot, PutSnapshotBlock and
CompleteSnapshot with AWS's documented behaviour (ebs-direct-facts.md section 1): only
written blocks, numeric order, MaxResults clamped to 100..10000, opaque validated NextToken
and block tokens that change on every List and expire, only ``completed`` snapshots readable,
SHA-256 headers, lineage checks, ParentSnapshotId inheritance, checksum verification.
Errors are JSON ``{"Message", "Reason"}`` with the ``x-amzn-ErrorType`` header botocore
reads the error code from.

Choices where AWS documents no exact behaviour (all listed in docs/SIMULATOR.md):
- a *pending* snapshot read gives 400 ValidationException, Reason ``INVALID_SNAPSHOT_ID``,
  "The snapshot 'snap-…' is not in completed state.";
- malformed path/query values (constraint violations) give ValidationException with no
  Reason, worded like AWS's framework validation;
- ListChangedBlocks reports blocks *written* since the first snapshot (EBS tracks writes),
  so a block rewritten with identical bytes is listed; each page scans a window of
  ``changed_blocks_window`` block indexes, so sparse changes give empty pages with NextToken.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import hashlib
import json
import re
import time
from typing import Any

from . import tokens
from .errors import SimError
from .messages import Request, Response
from .model import (
    BLOCK_SIZE,
    BLOCKS_PER_GIB,
    OWNER_ID,
    ZERO_BLOCK,
    Block,
    Region,
    Snapshot,
    World,
    kms_denied,
)
from .policy import Call, Policy

MIN_RESULTS = 100
MAX_RESULTS = 10000
_SNAP_RE = re.compile(r"^snap-[0-9a-f]+$")
_B64_RE = re.compile(r"^[A-Za-z0-9+/=]+$")
_KMS_RE = re.compile(r"arn:aws[a-z\-]*:kms:.*:[0-9]{12}:key/.*")
_BLOCK_HEADERS_LEN = str(BLOCK_SIZE)
_SNAP_PATTERN = "Member must satisfy regular expression pattern: ^snap-[0-9a-f]+$"


def _validation(message: str, reason: str | None = None) -> SimError:
    return SimError("ValidationException", message, 400, reason)


def _constraint(value: str, member: str, constraint: str) -> SimError:
    return _validation(f"1 validation error detected: Value '{value}' at '{member}' failed "
                       f"to satisfy constraint: {constraint}")


def _int_param(raw: str | None, member: str, minimum: int = 0,
               maximum: int | None = None) -> int | None:
    if raw is None:
        return None
    try:
        value = int(raw)
    except ValueError:
        raise _constraint(raw, member, "Member must be a number") from None
    if value < minimum:
        raise _constraint(raw, member,
                          f"Member must have value greater than or equal to {minimum}")
    if maximum is not None and value > maximum:
        raise _constraint(raw, member,
                          f"Member must have value less than or equal to {maximum}")
    return value


def _snapshot_id(value: str, member: str) -> str:
    if not _SNAP_RE.match(value) or len(value) > 64:
        raise _constraint(value, member, _SNAP_PATTERN)
    return value


def error_response(err: SimError) -> Response:
    """AWS rest-json error: code in ``x-amzn-ErrorType``, modeled fields in the body."""
    body: dict[str, Any] = {"Message": err.message}
    if err.reason:
        body["Reason"] = err.reason
    return Response(err.status, json.dumps(body).encode(),
                    headers=[("x-amzn-ErrorType", err.code)])


def linear_checksum(blocks: dict[int, Block], indexes: set[int] | list[int]) -> str:
    """CompleteSnapshot's LINEAR aggregate: SHA-256 over the raw per-block digests in
    ascending index order, base64 (what coldsnap sends and AWS accepts)."""
    digest = hashlib.sha256()
    for index in sorted(indexes):
        digest.update(base64.b64decode(blocks[index].checksum))
    return base64.b64encode(digest.digest()).decode()


def _json(status: int, value: dict[str, Any]) -> Response:
    return Response(status, json.dumps(value, separators=(",", ":")).encode())


class EbsApi:
    """Routes ``/snapshots...`` requests and serves snapshot blocks from the model."""

    def __init__(self, world: World, policy: Policy) -> None:
        self.world = world
        self.policy = policy
        self._diff_cache: dict[tuple[str, str, str], list[int]] = {}
        world.on_reset.append(self._diff_cache.clear)

    def handle(self, req: Request) -> Response:
        parts = req.path.strip("/").split("/")
        method = req.method
        try:
            if method == "GET" and len(parts) == 3 and parts[2] == "blocks":
                return self.list_snapshot_blocks(req, parts[1])
            if method == "GET" and len(parts) == 4 and parts[2] == "blocks":
                return self.get_snapshot_block(req, parts[1], parts[3])
            if method == "GET" and len(parts) == 3 and parts[2] == "changedblocks":
                return self.list_changed_blocks(req, parts[1])
            if method == "POST" and parts == ["snapshots"]:
                return self.start_snapshot(req)
            if method == "PUT" and len(parts) == 4 and parts[2] == "blocks":
                return self.put_snapshot_block(req, parts[1], parts[3])
            if method == "POST" and len(parts) == 3 and parts[1] == "completion":
                return self.complete_snapshot(req, parts[2])
            raise SimError("UnknownOperationException", "Unknown operation", 404)
        except SimError as err:
            return error_response(err)

    # -------------------------------------------------------------- lookups

    def _find(self, region: Region, snapshot_id: str, operation: str) -> Snapshot:
        """The snapshot as EBS direct sees it: absent, or inside the not-found window."""
        snap = region.snapshots.get(snapshot_id)
        if snap is not None and region.ebs_hidden(snap):
            self.policy.count_not_found(operation)
            snap = None
        if snap is None:
            raise SimError("ResourceNotFoundException",
                           f"The snapshot '{snapshot_id}' does not exist.", 404,
                           "SNAPSHOT_NOT_FOUND")
        return snap

    def _readable(self, region_name: str, snapshot_id: str, operation: str,
                  member: str = "snapshotId") -> Snapshot:
        """The completed snapshot, or the error EBS direct gives for it."""
        _snapshot_id(snapshot_id, member)
        snap = self._find(self.world.region(region_name), snapshot_id, operation)
        self._check_kms(snap, operation)
        if snap.state() != "completed":
            raise _validation(f"The snapshot '{snapshot_id}' is not in completed state.",
                              "INVALID_SNAPSHOT_ID")
        return snap

    def _check_kms(self, snap: Snapshot, operation: str) -> None:
        """AccessDeniedException / DEPENDENCY_ACCESS_DENIED for a key in kms_denied_keys."""
        if snap.kms_key_id is not None and snap.kms_key_id in self.world.opts.kms_denied_keys:
            raise kms_denied(operation, snap.id)

    def _now(self) -> float:
        """The service's clock (epoch seconds): real time plus ``clock_offset_s``."""
        return time.time() + self.world.opts.clock_offset_s

    def _page_bounds(self, req: Request, scope: str) -> tuple[int, int]:
        """(start index, max results) from pageToken / startingBlockIndex / maxResults."""
        max_results = _int_param(req.query.get("maxResults"), "maxResults")
        max_results = min(MAX_RESULTS, max(MIN_RESULTS, max_results or MAX_RESULTS))
        page_token = req.query.get("pageToken")
        if page_token is not None:  # NextToken takes precedence over StartingBlockIndex
            start = tokens.page_token_index(page_token, scope, now=self._now())
            if start is None:
                raise _validation("The pagination token is invalid or has expired.",
                                  "INVALID_PAGE_TOKEN")
        else:
            start = _int_param(req.query.get("startingBlockIndex"), "startingBlockIndex") or 0
        return start, max_results

    def _page(self, indices: list[int], start: int, max_results: int, bound: int,
              window: int) -> tuple[list[int], int | None]:
        """One page of ``indices`` from ``start``: at most ``max_results`` entries inside a
        scan window of ``window`` block indexes (0 = no window); and where the next page
        starts, or None at the end of the volume."""
        end = bound if window <= 0 else min(bound, start + window)
        lo = bisect.bisect_left(indices, start)
        hi = bisect.bisect_left(indices, end)
        if hi - lo > max_results:
            return indices[lo:lo + max_results], indices[lo + max_results]
        if window <= 0:
            return indices[lo:hi], None
        return indices[lo:hi], (end if end < bound else None)

    # -------------------------------------------------------------- reads

    def list_snapshot_blocks(self, req: Request, snapshot_id: str) -> Response:
        self.policy.admit(Call("ebs", "ListSnapshotBlocks", req.region, snapshot_id))
        snap = self._readable(req.region, snapshot_id, "ListSnapshotBlocks")
        scope = f"{req.region}/{snap.id}"
        start, max_results = self._page_bounds(req, scope + "/list")
        opts = self.world.opts
        page, next_index = self._page(snap.indices(), start, max_results,
                                      snap.volume_size * BLOCKS_PER_GIB, opts.list_blocks_window)
        now = self._now()
        minted = tokens.BlockTokens(scope, now=now, ttl=opts.block_token_ttl)
        body: dict[str, Any] = {
            "Blocks": [{"BlockIndex": i, "BlockToken": minted.mint(i)} for i in page],
            "ExpiryTime": minted.expiry_exact,
            "VolumeSize": snap.volume_size,
            "BlockSize": BLOCK_SIZE,
        }
        if next_index is not None:
            body["NextToken"] = tokens.page_token(scope + "/list", next_index, now=now,
                                                  ttl=opts.page_token_ttl)
        return _json(200, body)

    def _changed(self, first: Snapshot | None, second: Snapshot) -> list[int]:
        """Sorted indexes written in ``second`` since ``first`` (cached: both are sealed).

        Blocks are immutable objects shared by a volume, its snapshots and their children,
        so "written since" is "not the same Block object": a block rewritten with identical
        bytes is a different object and is reported, as EBS tracks writes, not content.
        """
        if first is None:
            return second.indices()
        key = (second.region, first.id, second.id)
        cached = self._diff_cache.get(key)
        if cached is None:
            a, b = first.blocks, second.blocks
            cached = sorted(i for i in a.keys() | b.keys() if a.get(i) is not b.get(i))
            self._diff_cache[key] = cached
        return cached

    def list_changed_blocks(self, req: Request, second_id: str) -> Response:
        self.policy.admit(Call("ebs", "ListChangedBlocks", req.region, second_id))
        first_id = req.query.get("firstSnapshotId")
        _snapshot_id(second_id, "secondSnapshotId")
        if first_id is not None:
            _snapshot_id(first_id, "firstSnapshotId")
        second = self._readable(req.region, second_id, "ListChangedBlocks", "secondSnapshotId")
        first = (self._readable(req.region, first_id, "ListChangedBlocks", "firstSnapshotId")
                 if first_id is not None else None)
        if first is not None and first.lineage != second.lineage:
            raise _validation(f"The snapshots '{first.id}' and '{second.id}' are not from the "
                              f"same volume or snapshot lineage.", "UNRELATED_SNAPSHOTS")
        scope = f"{req.region}/{first.id if first else ''}/{second.id}/changed"
        start, max_results = self._page_bounds(req, scope)
        opts = self.world.opts
        bound = max(second.volume_size, first.volume_size if first else 0) * BLOCKS_PER_GIB
        page, next_index = self._page(self._changed(first, second), start, max_results, bound,
                                      opts.changed_blocks_window)
        now = self._now()
        first_tokens = (tokens.BlockTokens(f"{req.region}/{first.id}", now=now,
                                           ttl=opts.block_token_ttl) if first else None)
        second_tokens = tokens.BlockTokens(f"{req.region}/{second.id}", now=now,
                                           ttl=opts.block_token_ttl)
        entries = []
        for i in page:
            entry: dict[str, Any] = {"BlockIndex": i}
            if first is not None and first_tokens is not None and i in first.blocks:
                entry["FirstBlockToken"] = first_tokens.mint(i)
            if i in second.blocks:
                entry["SecondBlockToken"] = second_tokens.mint(i)
            entries.append(entry)
        body: dict[str, Any] = {
            "ChangedBlocks": entries,
            "ExpiryTime": second_tokens.expiry_exact,
            "VolumeSize": second.volume_size,
            "BlockSize": BLOCK_SIZE,
        }
        if next_index is not None:
            body["NextToken"] = tokens.page_token(scope, next_index, now=now,
                                                  ttl=opts.page_token_ttl)
        return _json(200, body)

    def get_snapshot_block(self, req: Request, snapshot_id: str, raw_index: str) -> Response:
        effects = self.policy.admit(Call("ebs", "GetSnapshotBlock", req.region, snapshot_id,
                                         raw_index))
        index = _int_param(raw_index, "blockIndex")
        token = req.query.get("blockToken")
        if token is None:
            raise _constraint("null", "blockToken", "Member must not be null")
        snap = self._readable(req.region, snapshot_id, "GetSnapshotBlock")
        assert index is not None
        if index >= snap.volume_size * BLOCKS_PER_GIB or not tokens.block_token_valid(
                token, f"{req.region}/{snap.id}", index, now=self._now()):
            raise _validation("The block token is invalid or has expired.",
                              "INVALID_BLOCK_TOKEN")
        block = snap.blocks.get(index, ZERO_BLOCK)
        data = block.data
        if effects.fault == "corrupt_body":  # right checksum header, damaged bytes
            flipped = bytearray(data)
            flipped[len(flipped) // 2] ^= 0xFF
            data = bytes(flipped)
        return Response(200, data, "application/octet-stream", [
            ("x-amz-Data-Length", _BLOCK_HEADERS_LEN),
            ("x-amz-Checksum", block.checksum),
            ("x-amz-Checksum-Algorithm", "SHA256"),
        ], fault=effects.fault if effects.fault != "corrupt_body" else None)

    # -------------------------------------------------------------- writes

    def start_snapshot(self, req: Request) -> Response:
        self.policy.admit(Call("ebs", "StartSnapshot", req.region))
        try:
            args = json.loads(req.body or b"{}")
        except ValueError:
            raise _validation("The request body is not valid JSON.") from None
        if not isinstance(args, dict):
            raise _validation("The request body must be a JSON object.")
        size = args.get("VolumeSize")
        if size is None:
            raise _constraint("null", "volumeSize", "Member must not be null")
        if not isinstance(size, int) or size < 1:
            raise _constraint(str(size), "volumeSize",
                              "Member must have value greater than or equal to 1")
        timeout = args.get("Timeout", 60)
        if not isinstance(timeout, int) or not 10 <= timeout <= 4320:
            raise _constraint(str(timeout), "timeout", "Member must have value between 10 and "
                              "4320")
        description = args.get("Description", "")
        if not isinstance(description, str) or len(description) > 255:
            raise _constraint(str(description), "description",
                              "Member must have length less than or equal to 255")
        token = args.get("ClientToken")
        if token is not None and (not isinstance(token, str) or not 1 <= len(token) <= 255
                                  or any(c.isspace() for c in token)):
            raise _constraint(str(token), "clientToken",
                              "Member must satisfy regular expression pattern: ^[\\S]+$")
        kms = args.get("KmsKeyArn")
        if kms is not None and (not isinstance(kms, str) or not _KMS_RE.fullmatch(kms)):
            raise _constraint("***", "kmsKeyArn", "Member must satisfy regular expression "
                              "pattern: arn:aws[a-z\\-]*:kms:.*:[0-9]{12}:key/.*")
        encrypted = args.get("Encrypted")
        tags: dict[str, str] = {}
        for tag in args.get("Tags") or []:
            if not isinstance(tag, dict) or "Key" not in tag:
                raise _validation("Each tag needs a Key.", "INVALID_TAG")
            tags[str(tag["Key"])] = str(tag.get("Value", ""))
        region = self.world.region(req.region)
        parent = None
        parent_id = args.get("ParentSnapshotId")
        if parent_id is not None:
            parent = self._readable(req.region, _snapshot_id(str(parent_id),
                                                             "parentSnapshotId"),
                                    "StartSnapshot", "parentSnapshotId")
        snap = region.start_snapshot(
            size, parent, description, tags, token,
            None if encrypted is None else bool(encrypted), kms, timeout)
        out: dict[str, Any] = {
            "Description": snap.description or None,
            "SnapshotId": snap.id,
            "OwnerId": OWNER_ID,
            "Status": snap.state(),
            "StartTime": snap.start_time.timestamp(),
            "VolumeSize": snap.volume_size,
            "BlockSize": BLOCK_SIZE,
            "Tags": [{"Key": k, "Value": v} for k, v in snap.tags.items()] or None,
            "ParentSnapshotId": snap.parent_id,
            "KmsKeyArn": snap.kms_key_id,
            "SseType": snap.sse_type,
        }
        return _json(201, {k: v for k, v in out.items() if v is not None})

    def _open_snapshot(self, req: Request, snapshot_id: str, operation: str) -> Snapshot:
        _snapshot_id(snapshot_id, "snapshotId")
        snap = self._find(self.world.region(req.region), snapshot_id, operation)
        self._check_kms(snap, operation)
        state = snap.state()
        if state != "pending" or not snap.open:
            raise _validation(f"The snapshot '{snapshot_id}' is not in pending state "
                              f"(it is {state}).", "INVALID_SNAPSHOT_ID")
        return snap

    def put_snapshot_block(self, req: Request, snapshot_id: str, raw_index: str) -> Response:
        self.policy.admit(Call("ebs", "PutSnapshotBlock", req.region, snapshot_id, raw_index))
        index = _int_param(raw_index, "blockIndex")
        assert index is not None
        headers = req.headers
        length = _int_param(headers.get("x-amz-Data-Length"), "dataLength")
        checksum = headers.get("x-amz-Checksum")
        algorithm = headers.get("x-amz-Checksum-Algorithm")
        for value, member in ((length, "dataLength"), (checksum, "checksum"),
                              (algorithm, "checksumAlgorithm")):
            if value is None:
                raise _constraint("null", member, "Member must not be null")
        _int_param(headers.get("x-amz-Progress"), "progress", 0, 100)
        if algorithm != "SHA256":
            raise _constraint(str(algorithm), "checksumAlgorithm",
                              "Member must satisfy enum value set: [SHA256]")
        snap = self._open_snapshot(req, snapshot_id, "PutSnapshotBlock")
        if index >= snap.volume_size * BLOCKS_PER_GIB:
            raise _validation(f"The block index {index} is beyond the end of the "
                              f"{snap.volume_size} GiB volume.", "INVALID_BLOCK")
        if length != BLOCK_SIZE or len(req.body) != BLOCK_SIZE:
            raise _validation(f"The data length must be {BLOCK_SIZE} bytes (DataLength "
                              f"{length}, body {len(req.body)} bytes).", "INVALID_BLOCK")
        block = Block.of(req.body)
        if block.checksum != checksum:
            raise _validation("The checksum of the block data does not match the provided "
                              "checksum.", "INVALID_BLOCK")
        self.world.region(req.region).put_block(snap, index, block)
        return Response(201, b"{}", headers=[("x-amz-Checksum", block.checksum),
                                             ("x-amz-Checksum-Algorithm", "SHA256")])

    def complete_snapshot(self, req: Request, snapshot_id: str) -> Response:
        self.policy.admit(Call("ebs", "CompleteSnapshot", req.region, snapshot_id))
        headers = req.headers
        count = _int_param(headers.get("x-amz-ChangedBlocksCount"), "changedBlocksCount")
        if count is None:
            raise _constraint("null", "changedBlocksCount", "Member must not be null")
        checksum = headers.get("x-amz-Checksum")
        algorithm = headers.get("x-amz-Checksum-Algorithm")
        method = headers.get("x-amz-Checksum-Aggregation-Method")
        if algorithm is not None and algorithm != "SHA256":
            raise _constraint(algorithm, "checksumAlgorithm",
                              "Member must satisfy enum value set: [SHA256]")
        if method is not None and method != "LINEAR":
            raise _constraint(method, "checksumAggregationMethod",
                              "Member must satisfy enum value set: [LINEAR]")
        if checksum is not None and (not _B64_RE.match(checksum) or len(checksum) > 64):
            raise _constraint(checksum, "checksum",
                              "Member must satisfy regular expression pattern: ^[A-Za-z0-9+/=]+$")
        snap = self._open_snapshot(req, snapshot_id, "CompleteSnapshot")
        region = self.world.region(req.region)
        with self.world.lock:
            written = set(snap.written)
        if count != len(written):
            raise _validation(f"ChangedBlocksCount {count} does not match the {len(written)} "
                              f"blocks written to the snapshot.", "INVALID_PARAMETER_VALUE")
        if checksum is not None:
            if algorithm is None or method is None:
                raise _validation("An aggregate checksum needs ChecksumAlgorithm SHA256 and "
                                  "ChecksumAggregationMethod LINEAR.", "INVALID_PARAMETER_VALUE")
            expected = linear_checksum(snap.blocks, written)
            try:
                given = base64.b64decode(checksum, validate=True)
            except (binascii.Error, ValueError):
                given = b""
            if given != base64.b64decode(expected):
                raise _validation("The aggregate checksum does not match the blocks written "
                                  "to the snapshot.", "INVALID_PARAMETER_VALUE")
        region.seal(snap)
        return Response(202, json.dumps({"Status": snap.state(time.monotonic())}).encode())
