"""Parallel, ordered block download through GetSnapshotBlock (the s3transfer idea, smaller).

Blocks are requested by a fixed pool of threads but handed out in index order, through a
window of at most `window` blocks: memory is bounded by the window (never by the volume),
and when the consumer (Bacula) reads slowly the window fills and requests stop.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

from .aws import Aws, BlockBody, BlockRef
from .aws.blocks import fast_client
from .formats.blockimage import ZERO_BLOCK_SHA256
from .pacing import Pacer
from .retry import Retryable, RetryPolicy, call_with_retry

T = TypeVar("T")
BLOCK_RETRY = RetryPolicy(attempts=10, base_delay=0.1, max_delay=10.0)


_DONE = object()


def read_ahead(source: Iterable[T], maxsize: int = 20000) -> Iterator[T]:
    """Run a listing in a thread of its own, a bounded queue ahead of its consumer.

    Listing pages cost a round trip each (and ListChangedBlocks returns empty pages where
    changes are sparse); fetched this way they overlap with the block downloads instead
    of stalling them. The queue bounds memory; closing the generator stops the thread.
    """
    items: queue.Queue[object] = queue.Queue(maxsize=maxsize)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in source:
                while not stop.is_set():
                    try:
                        items.put(item, timeout=0.2)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            items.put(_DONE)
        except BaseException as exc:  # handed to the consumer
            items.put(exc)

    thread = threading.Thread(target=produce, name="list-ahead", daemon=True)
    thread.start()
    try:
        while True:
            item = items.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item  # type: ignore[misc]
    finally:
        stop.set()


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
        pacer: Pacer | None = None,
    ) -> None:
        self.aws = aws
        self.concurrency = max(1, concurrency)
        self.window = window or 2 * self.concurrency
        self.cancel = cancel
        self.policy = policy
        self.reader = fast_client(aws)
        self.pacer = pacer

    def _get(self, snapshot_id: str, ref: BlockRef) -> BlockBody:
        get = self.reader.get if self.reader is not None else self.aws.get_snapshot_block
        pacer = self.pacer

        def attempt() -> BlockBody:
            if pacer is not None:
                pacer.wait(self.cancel)
            try:
                return get(snapshot_id, ref)
            except Retryable as exc:
                if exc.throttled and pacer is not None:
                    pacer.throttled()
                raise

        return call_with_retry(
            attempt,
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
