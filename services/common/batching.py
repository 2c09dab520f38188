"""The one batching primitive of the suite: concurrent single-item submissions become batch calls.

Every place that batches (the gateway's encode/lookup/upsert calls, the in-process ONNX Runtime towers,
the streaming RPCs) uses `MicroBatcher`, so deadline, cancellation and failure rules are the same
everywhere:

- an item whose caller gave up (cancelled, or its deadline passed while it waited) never reaches the
  batch function; a caller whose deadline passes while queued gets `DeadlineExceeded`;
- when the batch function raises, every item of that batch gets the exception (each caller decides
  what that means for it);
- the batch function returns one result per item, in order.

`submit_stream` feeds a stream of items through a batcher with bounded read-ahead (the streaming RPCs).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from services.common.errors import DeadlineExceeded

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class BatchStats:
    """Running totals, for metrics and benchmarks (bounded: no per-batch history is kept)."""

    batches: int = 0
    items: int = 0

    @property
    def mean_batch(self) -> float:
        return self.items / self.batches if self.batches else 0.0


@dataclass(eq=False)
class _Pending(Generic[T, R]):
    item: T
    size: int
    deadline: float | None  # time.monotonic(); None: no deadline of its own
    future: asyncio.Future[R]


class MicroBatcher(Generic[T, R]):
    """Collects items submitted concurrently and calls `fn(batch)` once per batch ("batch while busy").

    While fewer than `max_concurrent` batch calls are in flight, a batch leaves when it reaches
    `max_items` items (or `max_size` by `size_of`) or `wait_s` after its first item arrived. While
    `max_concurrent` calls are in flight, items accumulate and the next batch leaves as soon as one
    returns, so batches grow exactly when the backend is the bottleneck (a backend with a fixed cost
    per call, like an index commit or a model run, then amortises it) and stay small when it is idle.

    `size_of` measures an item (bytes of an image, rows of a tensor); an item larger than `max_size`
    still travels, alone. With `wait_s=0` a batch leaves at once with whatever is queued (the dynamic
    batcher of Triton with no queue delay).
    """

    def __init__(
        self,
        fn: Callable[[list[T]], Awaitable[Sequence[R]]],
        *,
        max_items: int,
        wait_s: float,
        max_concurrent: int = 1,
        max_size: int | None = None,
        size_of: Callable[[T], int] | None = None,
        name: str = "batch",
    ) -> None:
        if max_items < 1 or max_concurrent < 1 or wait_s < 0:
            raise ValueError("max_items and max_concurrent must be >= 1 and wait_s >= 0")
        self._fn = fn
        self._max_items = max_items
        self._max_size = max_size
        self._size_of = size_of
        self._wait_s = wait_s
        self._max_concurrent = max_concurrent
        self._name = name
        self._pending: deque[_Pending[T, R]] = deque()
        self._pending_size = 0
        self._timer: asyncio.TimerHandle | None = None
        self._in_flight = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self.stats = BatchStats()

    @property
    def queued(self) -> int:
        """Items waiting for a batch."""
        return len(self._pending)

    async def submit(self, item: T, *, timeout_s: float | None = None) -> R:
        """The result for `item`, once its batch returned. `timeout_s` bounds the whole wait."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        entry: _Pending[T, R] = _Pending(
            item, self._size_of(item) if self._size_of else 0, deadline, loop.create_future()
        )
        self._pending.append(entry)
        self._pending_size += entry.size
        if self._in_flight < self._max_concurrent:
            if self._full() or self._wait_s == 0:
                self._flush()
            elif self._timer is None:
                self._timer = loop.call_later(self._wait_s, self._on_timer)
        if timeout_s is None:
            return await entry.future
        # A timer rather than wait_for: no extra task per item (this runs once per model call). When it
        # fires the item fails; a batch that has not left skips it, one in flight drops its result.
        expiry = loop.call_later(max(0.0, timeout_s), self._expire, entry, timeout_s)
        try:
            return await entry.future
        finally:
            expiry.cancel()

    def _expire(self, entry: _Pending[T, R], timeout_s: float) -> None:
        if not entry.future.done():
            queued = self.queued
            message = f"{self._name}: no result within the deadline ({timeout_s:.3f}s; {queued} items queued)"
            entry.future.set_exception(DeadlineExceeded(message))

    def _full(self) -> bool:
        if len(self._pending) >= self._max_items:
            return True
        return self._max_size is not None and self._pending_size >= self._max_size

    def _on_timer(self) -> None:
        self._timer = None
        if self._in_flight < self._max_concurrent:
            self._flush()

    def _take(self) -> list[_Pending[T, R]]:
        """The next batch: live items in arrival order, within max_items and max_size."""
        batch: list[_Pending[T, R]] = []
        size = 0
        now = time.monotonic()
        while self._pending and len(batch) < self._max_items:
            head = self._pending[0]
            if self._max_size is not None and batch and size + head.size > self._max_size:
                break
            self._pending.popleft()
            self._pending_size -= head.size
            if head.future.done():  # the caller gave up
                continue
            if head.deadline is not None and head.deadline <= now:
                head.future.set_exception(DeadlineExceeded(f"{self._name}: the deadline passed while queued"))
                continue
            batch.append(head)
            size += head.size
        return batch

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch = self._take()
        if not batch:
            return
        self._in_flight += 1
        self.stats.batches += 1
        self.stats.items += len(batch)
        task = asyncio.get_running_loop().create_task(self._run(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, batch: list[_Pending[T, R]]) -> None:
        try:
            results = await self._fn([p.item for p in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"{self._name}: {len(results)} results for {len(batch)} items")
        except Exception as exc:  # delivered to every waiter of this batch
            for p in batch:
                if not p.future.done():
                    p.future.set_exception(exc)
            return
        except BaseException:
            for p in batch:
                if not p.future.done():
                    p.future.cancel()
            raise
        finally:
            self._in_flight -= 1
            if self._pending and self._in_flight < self._max_concurrent:
                self._flush()  # what accumulated meanwhile leaves now
        for p, r in zip(batch, results, strict=True):
            if not p.future.done():
                p.future.set_result(r)

    async def close(self) -> None:
        """Cancel queued items and wait for the batches in flight."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._pending:
            p = self._pending.popleft()
            if not p.future.done():
                p.future.cancel()
        self._pending_size = 0
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


@dataclass(frozen=True)
class _StreamEnd:
    """The reader's last word: how many items it submitted, and why it stopped early (if it did)."""

    count: int
    error: BaseException | None = None


async def submit_stream(
    submit: Callable[[T], Awaitable[R]], items: AsyncIterator[T], *, max_in_flight: int, ordered: bool
) -> AsyncIterator[R]:
    """Pass a stream's items to `submit` (usually a `MicroBatcher.submit`) as they arrive and yield one
    result per item: in arrival order (`ordered`) or as each completes.

    At most `max_in_flight` items are read ahead and not yet yielded: reading pauses until one is, so a
    fast sender is slowed down by flow control instead of being buffered without bound. The first
    exception (a failed submission, or the item iterator failing) ends the stream; the items still in
    flight are cancelled (those not yet batched never run).
    """
    if max_in_flight < 1:
        raise ValueError("max_in_flight must be >= 1")
    slots = asyncio.Semaphore(max_in_flight)
    answers: asyncio.Queue[asyncio.Future[R] | _StreamEnd] = asyncio.Queue()
    in_flight: set[asyncio.Future[R]] = set()

    async def read() -> None:
        count = 0
        iterator = aiter(items)
        try:
            while True:
                await slots.acquire()  # before pulling: an item is read only when there is room for it
                try:
                    item = await anext(iterator)
                except StopAsyncIteration:
                    break
                answer = asyncio.ensure_future(submit(item))
                in_flight.add(answer)
                if ordered:
                    answers.put_nowait(answer)
                else:
                    answer.add_done_callback(answers.put_nowait)
                count += 1
        except BaseException as exc:  # the consumer re-raises it (a cancelled reader included)
            answers.put_nowait(_StreamEnd(count, exc))
            if not isinstance(exc, Exception):
                raise
            return
        answers.put_nowait(_StreamEnd(count))

    reader = asyncio.ensure_future(read())
    yielded, total = 0, None
    try:
        while total is None or yielded < total:
            got = await answers.get()
            if isinstance(got, _StreamEnd):
                if got.error is not None:
                    raise got.error
                total = got.count
                continue
            try:
                result = await got  # done already unless `ordered`
            finally:
                in_flight.discard(got)
                slots.release()
            yielded += 1
            yield result
    finally:
        unfinished: list[asyncio.Future[Any]] = [reader, *in_flight]
        for task in unfinished:
            task.cancel()
        await asyncio.gather(*unfinished, return_exceptions=True)
