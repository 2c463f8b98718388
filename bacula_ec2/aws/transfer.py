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
import time
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator
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
        downloads: 20,000 entries (two ListSnapshotBlocks pages) take about 3 MiB. A listing
        split into block-index ranges (`merge_ranges`) holds as much again at most: each of
        the `RANGE_CHAINS` - 1 ranges listed ahead of the one being read buffers
        `list_ahead` / `RANGE_CHAINS` entries (5,000 parsed page entries of ~370 bytes:
        ~1.8 MiB) plus the page it is reading; only listings whose first page is not full
        are split, so their pages are small (a few entries each where changes are sparse):
        about 5.5 MiB more at the defaults, whatever the volume's size.
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

    def oldest_done(self) -> bool:
        """Whether the oldest outstanding result is there to be taken without waiting."""
        return bool(self._items) and self._items[0].done()

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
                # Fill the window, but hand out a result that is ready before asking the
                # items for more: a slow source (ListChangedBlocks pages, mostly empty, of a
                # large volume) must not hold back the blocks already read.
                while not exhausted and window.room() and not window.oldest_done():
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
    urgent: Callable[[], bool] | None = None,
) -> T:
    """One AWS request as the engine makes it: stopped by a cancel, paced, classified (cause
    kept), throttling told to the pacer, retried under `policy`. The block transfers and the
    block listings (`Aws._list_call`) both go through here.

    `urgent` (asked before each attempt): None, an ordinary request; True, one a consumer
    waits for now (`Pacer.wait(priority=True)`); False, a speculative one that takes only
    the slots left free (`Pacer.wait_spare`): the block ranges listed ahead."""
    what = errors.subject(operation, resource)

    def attempt() -> T:
        if cancel is not None and cancel.is_set():
            raise Cancelled(f"{what}: cancelled")
        if pacer is not None:
            if urgent is None:
                pacer.wait(cancel)
            elif urgent():
                pacer.wait(cancel, priority=True)
            else:
                pacer.wait_spare(cancel, promoted=urgent)
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

    listing = iter(source)

    def produce() -> None:
        count = 0
        try:
            for item in listing:
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
        finally:
            close = getattr(listing, "close", None)
            if close is not None:
                close()  # a ranged listing stops the chains it runs (merge_ranges)

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


# ---------------------------------------------------------------------------- block ranges

#: The block-index ranges of one listing (`split_ranges`): none smaller than this (128 GiB
#: of volume, about 27 ListChangedBlocks pages where AWS scans 10,000 indexes a page) ...
RANGE_MIN_BLOCKS = 1 << 18
#: ... and at most this many (each range ends with about one page it lists in vain: the
#: page that shows the range's end; 32 cost ~1% of a 16 TiB volume's 3,356 pages).
RANGE_MAX_COUNT = 32
#: Ranges listed at once: the one the consumer reads and the ones after it. Four chains of
#: ~60 ms round trips fill the 48/s list pacer; a chain that lists ahead only takes the
#: pacer's spare slots (`Pacer.wait_spare`), so the range being read is never slowed.
RANGE_CHAINS = 4


@dataclass
class BlockRange:
    """[lo, hi) of a listing's block-index space (hi None: to the end of the listing) and
    what its chain found out: `finished` when it ended, `ended_at` the first index at or
    past `hi` it met (None: the listing itself ended, nothing lies beyond), `volume_blocks`
    the volume's size as the first page said. `urgent` while the consumer reads it."""

    lo: int
    hi: int | None
    label: str = ""
    urgent: bool = False
    finished: bool = False
    ended_at: int | None = None
    volume_blocks: int | None = None

    def __str__(self) -> str:
        return f"block range {self.lo}..{self.hi - 1 if self.hi is not None else 'end'}"

    def empty_after(self) -> tuple[int, int | None] | None:
        """The indexes a finished chain proved empty: [hi, ended_at) (None: to the end)."""
        if not self.finished or self.hi is None:
            return None
        return self.hi, self.ended_at


def split_ranges(
    blocks: int | None, *, min_blocks: int = RANGE_MIN_BLOCKS, max_count: int = RANGE_MAX_COUNT
) -> list[BlockRange]:
    """The ranges a listing of a volume of `blocks` block indexes is split into, in index
    order; the last one is open (a volume that grew, a size not given: nothing is lost)."""
    if not blocks or blocks <= min_blocks or max_count < 2:
        return [BlockRange(0, None)]
    count = min(max_count, -(-blocks // min_blocks))
    size = -(-blocks // count)
    los = [n * size for n in range(count)]
    return [BlockRange(lo, los[n + 1] if n + 1 < count else None) for n, lo in enumerate(los)]


class _Ahead(Generic[T]):
    """One range's chain in a thread of its own, at most `buffer` entries ahead."""

    def __init__(self, rng: BlockRange, pages: Iterator[list[T]], buffer: int) -> None:
        self.rng = rng
        self.pages = pages
        self.queue: queue.Queue[object] = queue.Queue(maxsize=buffer)
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name=f"list-{rng.lo}", daemon=True)
        self.thread.start()

    def _put(self, item: object) -> bool:
        while not self.stop.is_set():
            try:
                self.queue.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            for page in self.pages:
                for entry in page:
                    if not self._put(entry):
                        return
                if self.stop.is_set():
                    return
            self._put(_DONE)
        except BaseException as exc:  # handed to the consumer
            self.error = exc
            self._put(exc)
        finally:
            close = getattr(self.pages, "close", None)
            if close is not None:
                close()


def merge_ranges(
    ranges: list[BlockRange],
    first: Iterable[list[T]],
    chain: Callable[[BlockRange], Iterator[list[T]]],
    *,
    chains: int = RANGE_CHAINS,
    buffer: int | None = None,
) -> Generator[T, None, None]:
    """The entries of every range, in range order: one listing in index order.

    `first` is the chain of ranges[0], already started (it runs in the caller's thread);
    `chain(rng)` starts the chain of another range (pages of the entries inside it, setting
    `finished` and `ended_at`). Up to `chains` ranges are listed at once, the consumer's and
    the next ones, each in a thread a bounded queue ahead (`buffer` entries, None:
    `list_ahead() // chains`). A chain that ended at `ended_at` proved [hi, ended_at) empty:
    ranges inside are skipped, and their chains stopped. The first failure of any range ends
    the listing (its message names the range, through its label).
    """
    chains = max(2, chains)  # the consumer's range and at least one after it
    if buffer is None:
        buffer = max(1, list_ahead() // chains)
    count = len(ranges)
    ahead: dict[int, _Ahead[T]] = {}
    skipped = [False] * count
    proved: list[tuple[int, int | None]] = []

    def learn(rng: BlockRange) -> None:
        span = rng.empty_after()
        if span is not None and span not in proved:
            proved.append(span)

    def is_empty(k: int) -> bool:
        lo, hi = ranges[k].lo, ranges[k].hi
        return any(a <= lo and (b is None or (hi is not None and hi <= b)) for a, b in proved)

    def refresh(current: int) -> None:
        """Fail fast on a range's error; skip what is proved empty; keep `chains` listing."""
        for helper in list(ahead.values()):
            if helper.error is not None:
                raise helper.error
            learn(helper.rng)
        for k in range(current + 1, count):
            if not skipped[k] and is_empty(k):
                running = ahead.get(k)
                if running is not None:
                    if not running.queue.empty():
                        continue  # it already found something: let it deliver
                    running.stop.set()
                    del ahead[k]
                skipped[k] = True
        for k in range(current + 1, min(count, current + chains)):
            if not skipped[k] and k not in ahead:
                ahead[k] = _Ahead(ranges[k], chain(ranges[k]), buffer)

    try:
        ranges[0].urgent = True
        for page in first:  # the chains ahead start once its first page is taken
            yield from page
            refresh(0)
        learn(ranges[0])
        for current in range(1, count):
            refresh(current - 1)
            if skipped[current]:
                continue
            refresh(current)
            helper = ahead.get(current)
            if helper is None:  # cannot happen: refresh started it
                raise RuntimeError(f"{ranges[current]} was never listed")
            ranges[current].urgent = True
            checked = time.monotonic()
            while True:
                try:
                    item = helper.queue.get(timeout=0.2)
                except queue.Empty:
                    refresh(current)
                    checked = time.monotonic()
                    continue
                if item is _DONE:
                    break
                if isinstance(item, BaseException):
                    raise item
                yield item  # type: ignore[misc]
                if time.monotonic() - checked > 0.2:
                    refresh(current)
                    checked = time.monotonic()
            del ahead[current]
            learn(ranges[current])
    finally:
        for helper in ahead.values():
            helper.stop.set()
