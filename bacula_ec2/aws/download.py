"""Reading snapshots through GetSnapshotBlock: one use of the block transfer engine.

Blocks are requested by `concurrency` worker threads and handed out in index order
through a window of at most `window` blocks (`transfer.TransferConfig`): memory is bounded
by the window, never by the volume, and when the consumer (Bacula) reads slowly the window
fills and requests stop. A block absent from the newer snapshot (no token) reads as zeros:
its result is known without a request.

Blocks are received into recycled buffers (`blocks.BufferPool`): a block `fetch` yields is
valid until the caller asks for the next one (or closes the iterator); then its buffer goes
back to the pool and is overwritten by a later block. A caller that keeps a block longer
must copy it. The pool keeps at most a window's worth (+1) of buffers.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator

from ..formats.blockimage import ZERO_BLOCK_SHA256
from ..pacing import Pacer
from ..retry import RetryPolicy
from .blocks import BufferPool, fast_client
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
        #: The block buffers: those of the window plus the one the caller holds.
        self.pool = BufferPool(keep=self.config.window + 1)
        self.reader = fast_client(aws, self.pool)
        self.engine = BlockTransfer(
            self.config, name="ebs-get", policy=policy, pacer=pacer, stats=aws.stats, cancel=cancel
        )

    def _get(self, snapshot_id: str, ref: BlockRef) -> BlockBody:
        get = self.reader.get if self.reader is not None else self.aws.get_snapshot_block
        return self.engine.request(
            "GetSnapshotBlock", lambda: get(snapshot_id, ref), resource=f"{snapshot_id} block {ref.index}"
        )

    def fetch(self, snapshot_id: str, refs: Iterable[BlockRef]) -> Iterator[BlockBody]:
        """Yield every listed block, in the order listed; raise on the first block lost.

        A yielded block's data is valid until the next block is asked for (see above)."""
        blocks = self.engine.map(
            refs,
            lambda ref: self._get(snapshot_id, ref),
            ready=_zero,
            doing=f"reading the blocks of {snapshot_id}",
        )
        return blocks if self.reader is None else _recycling(blocks, self.reader.release)


def _recycling(blocks: Iterator[BlockBody], release: Callable[[object], None]) -> Iterator[BlockBody]:
    """Yield each block; when the caller comes back for the next one it is done with this
    one, whose buffer is released for reuse. A caller that stops (closes the iterator, or
    an exception) may still hold its last block: that buffer is not released, only dropped."""
    try:
        for body in blocks:
            yield body
            release(body.data)
    finally:
        close = getattr(blocks, "close", None)
        if close is not None:
            close()
