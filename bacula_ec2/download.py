"""Parallel, ordered block download through GetSnapshotBlock (the s3transfer idea, smaller).

Blocks are requested by a fixed pool of threads but handed out in index order, through a
window of at most `window` blocks: memory is bounded by the window (never by the volume),
and when the consumer (Bacula) reads slowly the window fills and requests stop.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

from .aws import Aws, BlockBody, BlockRef
from .formats.blockimage import ZERO_BLOCK_SHA256
from .retry import RetryPolicy, call_with_retry

BLOCK_RETRY = RetryPolicy(attempts=10, base_delay=0.1, max_delay=10.0)


def _zero(index: int) -> Future[BlockBody]:
    """A block known to read as zeros (absent from the newer snapshot): no request."""
    fut: Future[BlockBody] = Future()
    fut.set_result(BlockBody(index, b"", ZERO_BLOCK_SHA256))
    return fut


class BlockDownloader:
    def __init__(
        self,
        aws: Aws,
        concurrency: int,
        *,
        window: int | None = None,
        cancel: threading.Event | None = None,
        policy: RetryPolicy = BLOCK_RETRY,
    ) -> None:
        self.aws = aws
        self.concurrency = max(1, concurrency)
        self.window = window or 2 * self.concurrency
        self.cancel = cancel
        self.policy = policy

    def _get(self, snapshot_id: str, ref: BlockRef) -> BlockBody:
        return call_with_retry(
            lambda: self.aws.get_snapshot_block(snapshot_id, ref),
            what=f"GetSnapshotBlock {snapshot_id} block {ref.index}",
            policy=self.policy,
            stats=self.aws.stats,
            cancel=self.cancel,
        )

    def fetch(self, snapshot_id: str, refs: Iterable[BlockRef]) -> Iterator[BlockBody]:
        """Yield every listed block, in the order listed; raise on the first block lost."""
        source = iter(refs)
        pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="ebs-get")
        pending: deque[Future[BlockBody]] = deque()
        try:
            exhausted = False
            while True:
                while not exhausted and len(pending) < self.window:
                    ref = next(source, None)
                    if ref is None:
                        exhausted = True
                        break
                    if ref.token is None:
                        pending.append(_zero(ref.index))
                    else:
                        pending.append(pool.submit(self._get, snapshot_id, ref))
                if not pending:
                    return
                yield pending.popleft().result()
        finally:
            for fut in pending:
                fut.cancel()
            pool.shutdown(wait=True, cancel_futures=True)
