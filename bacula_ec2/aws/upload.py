"""Writing snapshots through the EBS direct APIs: StartSnapshot, PutSnapshotBlock (parallel,
bounded, checksummed, retried), CompleteSnapshot with the LINEAR aggregate checksum.

The counterpart of `bacula_ec2.download`: a fixed pool of threads puts blocks, the caller's
thread hands them out in ascending index order through a window of at most `window` blocks,
and folds each block's SHA-256 into the LINEAR aggregate in that order. Memory is bounded by
the blocks in flight (each worker reads its own block from the source just before it puts
it), never by the volume.
"""

from __future__ import annotations

import base64
import hashlib
import os
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from ..pacing import Pacer
from ..retry import Cancelled, Retryable, RetryPolicy, call_with_retry
from .blocks import fast_client
from .client import Aws, _client_error, classify, tag_list

BLOCK_SIZE = 524288
ZERO_BLOCK = bytes(BLOCK_SIZE)
PUT_RETRY = RetryPolicy(attempts=10, base_delay=0.1, max_delay=10.0)
#: Client-side pacing a little under the 1,000 PutSnapshotBlock/s per-snapshot quota.
DEFAULT_RATE = 950.0

#: Reads one block (index) of the source; returns exactly BLOCK_SIZE bytes.
BlockReader = Callable[[int], bytes]


@dataclass(frozen=True)
class UploadResult:
    snapshot_id: str
    blocks: int  # blocks put (ChangedBlocksCount)
    skipped_zero: int  # listed blocks that turned out to be all zeros: not put
    linear_checksum: str  # base64 SHA-256 over the per-block digests, ascending index
    seconds: float


def _not_found_is_retryable(operation: str, exc: Exception) -> Exception:
    """ebs-direct-facts §1.5: "does not exist" right after StartSnapshot is a matter of time."""
    if (
        isinstance(exc, ClientError)
        and exc.response.get("Error", {}).get("Code") == "ResourceNotFoundException"
    ):
        return Retryable(str(_client_error(operation, exc)), not_found=True)
    return classify(operation, exc)


class SnapshotWriter:
    """One Aws region's EBS direct write path."""

    def __init__(
        self,
        aws: Aws,
        concurrency: int,
        *,
        window: int | None = None,
        rate: float | None = DEFAULT_RATE,
        policy: RetryPolicy = PUT_RETRY,
    ) -> None:
        self.aws = aws
        self.concurrency = max(1, concurrency)
        self.window = window or 2 * self.concurrency
        self.policy = policy
        self.pacer = Pacer(rate) if rate else None
        self.fast = fast_client(aws)

    def _retry(self, what: str, fn: Callable[[], Any]) -> Any:
        def once() -> Any:
            try:
                return fn()
            except Exception as exc:
                raise _not_found_is_retryable(what, exc) from None

        return call_with_retry(
            once, what=what, policy=self.policy, stats=self.aws.stats, cancel=self.aws.cancel
        )

    # ------------------------------------------------------------------ snapshot
    def start(
        self,
        volume_size_gib: int,
        *,
        client_token: str,
        description: str,
        tags: dict[str, str],
        encrypted: bool = False,
        kms_key_arn: str | None = None,
        timeout_minutes: int = 60,
    ) -> str:
        """StartSnapshot, idempotent through `client_token` (so it can be retried safely)."""
        args: dict[str, Any] = {
            "VolumeSize": volume_size_gib,
            "ClientToken": client_token,
            "Description": description,
            "Timeout": timeout_minutes,
            "Tags": tag_list(tags),
        }
        if encrypted or kms_key_arn:
            args["Encrypted"] = True
        if kms_key_arn:
            args["KmsKeyArn"] = kms_key_arn
        out = self._retry("StartSnapshot", lambda: self.aws.ebs.start_snapshot(**args))
        return str(out["SnapshotId"])

    def _put(self, snapshot_id: str, index: int, read: BlockReader) -> bytes | None:
        """Read, checksum and put one block; None if it is all zeros (nothing to put)."""
        data = read(index)
        if len(data) != BLOCK_SIZE:
            raise ValueError(f"block {index}: {len(data)} bytes, PutSnapshotBlock takes {BLOCK_SIZE}")
        if data == ZERO_BLOCK:
            return None
        digest = hashlib.sha256(data).digest()
        checksum = base64.b64encode(digest).decode()

        pacer, fast = self.pacer, self.fast

        def once() -> Any:
            if pacer is not None:
                pacer.wait(self.aws.cancel)
            try:
                if fast is not None:
                    return fast.put(snapshot_id, index, data, checksum)
                return self.aws.ebs.put_snapshot_block(
                    SnapshotId=snapshot_id,
                    BlockIndex=index,
                    BlockData=data,
                    DataLength=BLOCK_SIZE,
                    Checksum=checksum,
                    ChecksumAlgorithm="SHA256",
                )
            except Retryable as exc:
                if exc.throttled and pacer is not None:
                    pacer.throttled()
                raise
            except ClientError as exc:
                mapped = _not_found_is_retryable(f"PutSnapshotBlock {snapshot_id} block {index}", exc)
                if isinstance(mapped, Retryable) and mapped.throttled and pacer is not None:
                    pacer.throttled()
                raise mapped from None

        self._retry(f"PutSnapshotBlock {snapshot_id} block {index}", once)
        return digest

    def put_blocks(
        self,
        snapshot_id: str,
        indexes: Iterable[int],
        read: BlockReader,
        progress: Callable[[int], None] | None = None,
    ) -> tuple[int, int, str]:
        """Put every listed block (ascending indexes); return (put, zero-skipped, LINEAR).

        `progress(blocks_done)` is called from the caller's thread, so it may send
        protocol messages (keep-alives). The first block that cannot be put fails it all.
        """
        source = iter(indexes)
        linear = hashlib.sha256()
        put = skipped = 0
        last = -1
        pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="ebs-put")
        pending: deque[tuple[int, Future[bytes | None]]] = deque()
        cancel = self.aws.cancel
        try:
            exhausted = False
            while True:
                while not exhausted and len(pending) < self.window:
                    index = next(source, None)
                    if index is None:
                        exhausted = True
                        break
                    if index <= last:
                        raise ValueError(f"block indexes must ascend ({index} after {last})")
                    last = index
                    pending.append((index, pool.submit(self._put, snapshot_id, index, read)))
                if not pending:
                    break
                if cancel is not None and cancel.is_set():
                    raise Cancelled("restore cancelled while writing blocks")
                _index, fut = pending.popleft()
                digest = fut.result()
                if digest is None:
                    skipped += 1
                else:
                    linear.update(digest)
                    put += 1
                if progress is not None:
                    progress(put + skipped)
        finally:
            for _i, fut in pending:
                fut.cancel()
            pool.shutdown(wait=True, cancel_futures=True)
        return put, skipped, base64.b64encode(linear.digest()).decode()

    def complete(self, snapshot_id: str, blocks: int, linear_checksum: str) -> str:
        """CompleteSnapshot with ChangedBlocksCount and the LINEAR aggregate; returns its status."""
        args: dict[str, Any] = {"SnapshotId": snapshot_id, "ChangedBlocksCount": blocks}
        if blocks:
            args.update(
                Checksum=linear_checksum, ChecksumAlgorithm="SHA256", ChecksumAggregationMethod="LINEAR"
            )
        out = self._retry(f"CompleteSnapshot {snapshot_id}", lambda: self.aws.ebs.complete_snapshot(**args))
        return str(out.get("Status", ""))

    def upload(
        self,
        snapshot_id: str,
        indexes: Iterable[int],
        read: BlockReader,
        progress: Callable[[int], None] | None = None,
    ) -> UploadResult:
        """put_blocks + complete on a snapshot that `start` opened."""
        began = time.monotonic()
        put, skipped, linear = self.put_blocks(snapshot_id, indexes, read, progress)
        self.complete(snapshot_id, put, linear)
        return UploadResult(snapshot_id, put, skipped, linear, time.monotonic() - began)


def file_reader(fd: int) -> BlockReader:
    """Blocks of a (sparse) raw image file; a short tail is zero-padded to a whole block."""

    def read(index: int) -> bytes:
        data = os.pread(fd, BLOCK_SIZE, index * BLOCK_SIZE)
        if len(data) < BLOCK_SIZE:
            data += bytes(BLOCK_SIZE - len(data))
        return data

    return read
