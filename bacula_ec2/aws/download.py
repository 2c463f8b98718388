"""Reading snapshots through GetSnapshotBlock: one use of the block transfer engine.

Blocks are requested by `concurrency` worker threads and handed out in index order
through a window of at most `window` blocks (`transfer.TransferConfig`): memory is bounded
by the window, never by the volume, and when the consumer (Bacula) reads slowly the window
fills and requests stop. A block absent from the newer snapshot (no token) reads as zeros:
its result is known without a request.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator

from ..formats.blockimage import ZERO_BLOCK_SHA256
from ..pacing import Pacer
from ..retry import RetryPolicy
from .blocks import fast_client
from .client import Aws, BlockBody, BlockRef
from .transfer import BLOCK_RETRY, BlockTransfer, TransferConfig, read_ahead

__all__ = ["BLOCK_RETRY", "BlockDownloader", "read_ahead"]


def _zero(ref: BlockRef) -> BlockBody | None:
    """A block known to read as zeros (absent from the newer snapshot): no request."""
    return BlockBody(ref.index, b"", ZERO_BLOCK_SHA256) if ref.token is None else None


class BlockDownloader:
    def __init__(
        self,
        aws: Aws,
        concurrency: int | TransferConfig,
        *,
        window: int | None = None,
        cancel: threading.Event | None = None,
        policy: RetryPolicy = BLOCK_RETRY,
        pacer: Pacer | None = None,
    ) -> None:
        self.aws = aws
        self.config = TransferConfig.of(concurrency, window)
        self.cancel = cancel
        self.reader = fast_client(aws)
        self.engine = BlockTransfer(
            self.config, name="ebs-get", policy=policy, pacer=pacer, stats=aws.stats, cancel=cancel
        )

    def _get(self, snapshot_id: str, ref: BlockRef) -> BlockBody:
        get = self.reader.get if self.reader is not None else self.aws.get_snapshot_block
        return self.engine.request(
            "GetSnapshotBlock", lambda: get(snapshot_id, ref), resource=f"{snapshot_id} block {ref.index}"
        )

    def fetch(self, snapshot_id: str, refs: Iterable[BlockRef]) -> Iterator[BlockBody]:
        """Yield every listed block, in the order listed; raise on the first block lost."""
        return self.engine.map(
            refs,
            lambda ref: self._get(snapshot_id, ref),
            ready=_zero,
            doing=f"reading the blocks of {snapshot_id}",
        )
