"""The one block transfer engine: bounded, ordered, paced, retried, cancellable.

GetSnapshotBlock (`download.BlockDownloader`) and PutSnapshotBlock (`upload.SnapshotWriter`)
are two uses of `BlockTransfer.map`: a fixed pool of `concurrency` worker threads runs one
request each, the caller's thread hands the results out in the order of the items through a
`Window` of at most `window` outstanding results. When the caller stops reading (Bacula is
slow) the window fills and no new request starts: back-pressure, never a buffered volume.

Every request goes through `BlockTransfer.request`: wait for a start slot of the pacer
(passed in, so that several volumes or jobs can share one), call, map the failure with
`errors.classify` (its cause kept), tell the pacer when AWS throttled, and retry under the
policy (passed in). A cancel stops the loop between two results and every request that has
not started yet.
"""

from __future__ import annotations

import os
import queue
import threading
from collections import deque
from collections.abc import Callable, Generator, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, TypeVar

from ..formats.blockimage import BLOCK_SIZE
from ..pacing import Pacer
from ..retry import REAL_CLOCK, Cancelled, Clock, Retryable, RetryPolicy, RetryStats, call_with_retry
from . import errors

Item = TypeVar("Item")
R = TypeVar("R")
T = TypeVar("T")

#: Retries of one block request (Get or Put): more attempts than the control plane, shorter waits.
BLOCK_RETRY = RetryPolicy(attempts=10, base_delay=0.1, max_delay=10.0)


@dataclass(frozen=True)
class TransferConfig:
    """The knobs of one block transfer, validated once, here.

    concurrency
        Requests in flight, one per worker thread (the FileSet's `concurrent_threads`,
        default 64: by Little's law 1,000 requests/s at up to 64 ms each). Memory: each
        request holds one block, so up to `concurrency` x 512 KiB (32 MiB at 64) are being
        received or sent at any time.
    window
        Results that may be outstanding, counted from the oldest one the caller has not
        taken yet; 0 means 2 x `concurrency`. It must be at least `concurrency` (else
        workers stay idle). Memory: a download holds one block per result, so the window
        bounds it all: `window` x 512 KiB (64 MiB at the defaults), including the blocks in
        flight. An upload's results are 32-byte digests: its memory is the blocks in flight.
    list_ahead
        Block list entries (`BlockRef`s, ~150 bytes each) `read_ahead` may fetch ahead of the
        downloads: 20,000 entries (two ListSnapshotBlocks pages) take about 3 MiB.
    """

    concurrency: int = 64
    window: int = 0
    list_ahead: int = 20000

    def __post_init__(self) -> None:
        for name in ("concurrency", "window", "list_ahead"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"TransferConfig.{name} must be an integer, not {value!r}")
        if self.concurrency < 1:
            raise ValueError(f"TransferConfig.concurrency must be at least 1, not {self.concurrency}")
        if self.window == 0:
            object.__setattr__(self, "window", 2 * self.concurrency)
        if self.window < self.concurrency:
            raise ValueError(
                f"TransferConfig.window ({self.window}) must be at least concurrency ({self.concurrency})"
            )
        if self.list_ahead < 1:
            raise ValueError(f"TransferConfig.list_ahead must be at least 1, not {self.list_ahead}")

    @classmethod
    def of(cls, concurrency: int | TransferConfig, window: int | None = None) -> TransferConfig:
        """A config as given, or the one for `concurrency` requests in flight."""
        if isinstance(concurrency, TransferConfig):
            return concurrency
        return cls(concurrency=concurrency, window=window or 0)

    @property
    def download_memory(self) -> int:
        """The bytes of block data a download holds at most (the window of blocks)."""
        return self.window * BLOCK_SIZE


class Window(Generic[R]):
    """At most `size` outstanding results, handed out oldest first (a sliding window).

    The bound of the engine as an object of its own: `add` refuses to go past `size`
    (the caller asks `room()` first), `take` returns the oldest result, `cancel` drops the
    rest. It is reusable: after `cancel`, or once emptied, it starts over. `peak` is the
    most results it ever held.
    """

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"a window holds at least one result, not {size}")
        self.size = size
        self.peak = 0
        self._items: deque[Future[R]] = deque()

    def __len__(self) -> int:
        return len(self._items)

    def room(self) -> bool:
        return len(self._items) < self.size

    def add(self, fut: Future[R]) -> None:
        if len(self._items) >= self.size:
            raise RuntimeError(f"window of {self.size} is full")
        self._items.append(fut)
        self.peak = max(self.peak, len(self._items))

    def take(self) -> Future[R]:
        """The oldest outstanding result (it may still be running)."""
        return self._items.popleft()

    def cancel(self) -> None:
        """Cancel what has not started and forget everything outstanding."""
        for fut in self._items:
            fut.cancel()
        self._items.clear()


def done(value: R) -> Future[R]:
    """A result known without a request (e.g. a block that reads as zeros)."""
    fut: Future[R] = Future()
    fut.set_result(value)
    return fut


class BlockTransfer:
    """Runs block requests for one direction; one instance may serve many `map` calls."""

    def __init__(
        self,
        config: TransferConfig,
        *,
        name: str,
        policy: RetryPolicy = BLOCK_RETRY,
        pacer: Pacer | None = None,
        stats: RetryStats | None = None,
        cancel: threading.Event | None = None,
        clock: Clock = REAL_CLOCK,
    ) -> None:
        self.config = config
        self.name = name
        self.policy = policy
        self.pacer = pacer
        self.stats = stats
        self.cancel = cancel
        self.clock = clock

    def request(
        self, operation: str, fn: Callable[[], T], *, resource: str | None = None, paced: bool = True
    ) -> T:
        """One AWS request: paced, classified (cause kept), throttling told to the pacer, retried."""
        return paced_request(
            operation,
            fn,
            resource=resource,
            pacer=self.pacer if paced else None,
            policy=self.policy,
            stats=self.stats,
            cancel=self.cancel,
            clock=self.clock,
        )

    def map(
        self,
        items: Iterable[Item],
        work: Callable[[Item], R],
        *,
        ready: Callable[[Item], R | None] | None = None,
        doing: str = "transferring blocks",
    ) -> Generator[R, None, None]:
        """`work(item)` for every item on the worker threads; the results in item order.

        `ready(item)` may give an item's result at once, without a request (None: it needs
        one). The first failure ends it all: it is raised here, and the requests not started
        yet are dropped. A cancel raises `Cancelled("cancelled while <doing>")`.
        """
        cancel = self.cancel
        pool = ThreadPoolExecutor(max_workers=self.config.concurrency, thread_name_prefix=self.name)
        window: Window[R] = Window(self.config.window)
        source = iter(items)
        try:
            exhausted = False
            while True:
                while not exhausted and window.room():
                    try:
                        item = next(source)
                    except StopIteration:
                        exhausted = True
                        break
                    known = ready(item) if ready is not None else None
                    window.add(done(known) if known is not None else pool.submit(work, item))
                if not window:
                    return
                if cancel is not None and cancel.is_set():
                    raise Cancelled(f"cancelled while {doing}")
                yield window.take().result()
        finally:
            window.cancel()
            pool.shutdown(wait=True, cancel_futures=True)


def paced_request(
    operation: str,
    fn: Callable[[], T],
    *,
    resource: str | None,
    pacer: Pacer | None,
    policy: RetryPolicy,
    stats: RetryStats | None,
    cancel: threading.Event | None,
    clock: Clock,
) -> T:
    """One AWS request as the engine makes it: stopped by a cancel, paced, classified (cause
    kept), throttling told to the pacer, retried under `policy`. The block transfers and the
    block listings (`Aws._list_call`) both go through here."""
    what = errors.subject(operation, resource)

    def attempt() -> T:
        if cancel is not None and cancel.is_set():
            raise Cancelled(f"{what}: cancelled")
        if pacer is not None:
            pacer.wait(cancel)
        try:
            return errors.call(operation, fn, resource=resource)
        except Retryable as exc:
            if exc.throttled and pacer is not None:
                pacer.throttled()
            raise

    return call_with_retry(attempt, what=what, policy=policy, stats=stats, cancel=cancel, clock=clock)


_DONE = object()


def list_ahead() -> int:
    """How many block list entries `read_ahead` holds by default: `TransferConfig.list_ahead`,
    or BACULA_EC2_LIST_AHEAD (a diagnostic and test knob: with a small queue a stalled
    consumer stalls the listing itself, as a large volume does with the default)."""
    raw = os.environ.get("BACULA_EC2_LIST_AHEAD", "")
    return int(raw) if raw.isdigit() and int(raw) > 0 else TransferConfig.list_ahead


def read_ahead(
    source: Iterable[T], maxsize: int | None = None, on_done: Callable[[int], None] | None = None
) -> Generator[T, None, None]:
    """Run a listing in a thread of its own, a bounded queue ahead of its consumer.

    `on_done(n)` is called (in the listing's thread) when the listing has ended after `n`
    entries, before the consumer sees its end: a progress display learns its total there.

    Listing pages cost a round trip each (and ListChangedBlocks returns empty pages where
    changes are sparse); fetched this way they overlap with the block downloads instead
    of stalling them. The queue bounds memory (`maxsize` entries, None: `list_ahead()`);
    closing the generator stops the thread. When the consumer stalls for long (Bacula
    waiting for a tape), the listing waits with a NextToken that may expire meanwhile:
    `Aws._block_pages` resumes after it.
    """
    if maxsize is None:
        maxsize = list_ahead()
    items: queue.Queue[object] = queue.Queue(maxsize=maxsize)
    stop = threading.Event()

    def produce() -> None:
        count = 0
        try:
            for item in source:
                count += 1
                while not stop.is_set():
                    try:
                        items.put(item, timeout=0.2)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            if on_done is not None:
                on_done(count)
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
