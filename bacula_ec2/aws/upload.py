"""Writing snapshots through the EBS direct APIs: StartSnapshot, PutSnapshotBlock (parallel,
bounded, checksummed, retried), CompleteSnapshot with the LINEAR aggregate checksum.

The counterpart of `download`, and the other use of the block transfer engine
(`transfer.BlockTransfer`): worker threads put blocks, the caller's thread takes their
digests in ascending index order and folds them into the LINEAR aggregate in that order.
Memory is bounded by the blocks in flight (each worker reads its own block from the source
just before it puts it), never by the volume.
"""

from __future__ import annotations

import base64
import hashlib
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from ..formats.blockimage import BLOCK_SIZE, ZERO_BLOCK
from ..pacing import Pacer
from ..retry import RetryPolicy
from .blocks import fast_client
from .client import Aws, tag_list
from .transfer import BLOCK_RETRY, BlockTransfer, TransferConfig

__all__ = [
    "BLOCK_SIZE",
    "DEFAULT_RATE",
    "TIMEOUT_MAX_MINUTES",
    "TIMEOUT_MIN_MINUTES",
    "BlockReader",
    "SnapshotWriter",
    "UploadResult",
    "file_reader",
    "start_timeout_minutes",
    "upload_fits",
]

#: Client-side pacing a little under the 1,000 PutSnapshotBlock/s per-snapshot quota.
DEFAULT_RATE = 950.0

#: StartSnapshot's Timeout (minutes): botocore's ebs model allows 10..4320 (72 h).
TIMEOUT_MIN_MINUTES, TIMEOUT_MAX_MINUTES = 10, 4320
#: Minutes on top of the data's time: StartSnapshot to the first put, retries and throttling
#: between two puts, CompleteSnapshot after the last.
TIMEOUT_MARGIN_MINUTES = 30
#: The data's time at the slowest rate, times this.
TIMEOUT_FACTOR = 1.5


def _data_minutes(data_bytes: int, min_bytes_per_s: float) -> float:
    if min_bytes_per_s <= 0:
        raise ValueError(f"the slowest upload rate must be positive, not {min_bytes_per_s}")
    if data_bytes < 0:
        raise ValueError(f"bytes to upload must not be negative, not {data_bytes}")
    return data_bytes / min_bytes_per_s / 60.0


def start_timeout_minutes(data_bytes: int, min_bytes_per_s: float) -> int:
    """StartSnapshot's Timeout for a snapshot that will get `data_bytes`, at no less than
    `min_bytes_per_s`: 30 min + 1.5 x the data's time at that rate, within 10..4320.

    AWS's wording ("cancelled if no blocks are written ... or the snapshot is not completed
    after writing the last block", botocore's model) reads either as counted from StartSnapshot
    or from the last put; sized this way the whole upload fits in it, so both readings hold
    as long as the upload is no slower than `min_bytes_per_s` (`upload_fits`)."""
    minutes = TIMEOUT_MARGIN_MINUTES + TIMEOUT_FACTOR * _data_minutes(data_bytes, min_bytes_per_s)
    return max(TIMEOUT_MIN_MINUTES, min(TIMEOUT_MAX_MINUTES, math.ceil(minutes)))


def upload_fits(data_bytes: int, min_bytes_per_s: float) -> bool:
    """Whether `start_timeout_minutes` still leaves the margin (not cut to 72 h)."""
    minutes = TIMEOUT_MARGIN_MINUTES + TIMEOUT_FACTOR * _data_minutes(data_bytes, min_bytes_per_s)
    return minutes <= TIMEOUT_MAX_MINUTES


#: Reads one block (index) of the source; returns exactly BLOCK_SIZE bytes.
BlockReader = Callable[[int], bytes]


@dataclass(frozen=True)
class UploadResult:
    snapshot_id: str
    blocks: int  # blocks put (ChangedBlocksCount)
    skipped_zero: int  # listed blocks that turned out to be all zeros: not put
    linear_checksum: str  # base64 SHA-256 over the per-block digests, ascending index
    seconds: float


def _ascending(indexes: Iterable[int]) -> Iterator[int]:
    last = -1
    for index in indexes:
        if index <= last:
            raise ValueError(f"block indexes must ascend ({index} after {last})")
        last = index
        yield index


class SnapshotWriter:
    """One Aws region's EBS direct write path.

    `pacer` paces the PutSnapshotBlock requests (pass one to share it); without one, the
    writer paces itself at `rate` requests/s (None: not paced).
    """

    def __init__(
        self,
        aws: Aws,
        concurrency: int | TransferConfig,
        *,
        window: int | None = None,
        rate: float | None = DEFAULT_RATE,
        policy: RetryPolicy = BLOCK_RETRY,
        pacer: Pacer | None = None,
    ) -> None:
        self.aws = aws
        self.config = TransferConfig.of(concurrency, window)
        self.pacer = pacer if pacer is not None else (Pacer(rate) if rate else None)
        self.fast = fast_client(aws)
        self.engine = BlockTransfer(
            self.config, name="ebs-put", policy=policy, pacer=self.pacer, stats=aws.stats, cancel=aws.cancel
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
        """StartSnapshot, idempotent through `client_token` (so it can be retried safely).
        `timeout_minutes`: see `start_timeout_minutes`."""
        if not TIMEOUT_MIN_MINUTES <= timeout_minutes <= TIMEOUT_MAX_MINUTES:
            raise ValueError(
                f"StartSnapshot Timeout {timeout_minutes} min is outside "
                f"{TIMEOUT_MIN_MINUTES}..{TIMEOUT_MAX_MINUTES}"
            )
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
        out = self.engine.request("StartSnapshot", lambda: self.aws.ebs.start_snapshot(**args), paced=False)
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
        fast = self.fast

        def put() -> Any:
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

        self.engine.request("PutSnapshotBlock", put, resource=f"{snapshot_id} block {index}")
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
        linear = hashlib.sha256()
        put = skipped = 0
        for digest in self.engine.map(
            _ascending(indexes),
            lambda index: self._put(snapshot_id, index, read),
            doing=f"writing the blocks of {snapshot_id}",
        ):
            if digest is None:
                skipped += 1
            else:
                linear.update(digest)
                put += 1
            if progress is not None:
                progress(put + skipped)
        return put, skipped, base64.b64encode(linear.digest()).decode()

    def complete(self, snapshot_id: str, blocks: int, linear_checksum: str) -> str:
        """CompleteSnapshot with ChangedBlocksCount and the LINEAR aggregate; returns its status."""
        args: dict[str, Any] = {"SnapshotId": snapshot_id, "ChangedBlocksCount": blocks}
        if blocks:
            args.update(
                Checksum=linear_checksum, ChecksumAlgorithm="SHA256", ChecksumAggregationMethod="LINEAR"
            )
        out = self.engine.request(
            "CompleteSnapshot",
            lambda: self.aws.ebs.complete_snapshot(**args),
            resource=snapshot_id,
            paced=False,
        )
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
