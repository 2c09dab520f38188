"""Micro-batching of concurrent single-item calls into batch RPCs, and a small LRU for query vectors."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")
K = TypeVar("K")
V = TypeVar("V")


class MicroBatcher(Generic[T, R]):
    """Collects items submitted concurrently and calls `fn(batch)` once per batch ("batch while busy").

    While fewer than `max_concurrent` batch calls are in flight, a batch is sent when it reaches
    `max_items` (or `max_bytes` by `size_of`) or `wait_s` after its first item arrived. While
    `max_concurrent` calls are in flight, items accumulate and the next batch leaves as soon as one
    returns, so batches grow exactly when the backend is the bottleneck (a backend with a fixed cost
    per call, like an index commit, then amortises it) and stay small when it is idle (low latency).
    `fn` returns one result per item, in order; when it raises, every item of that batch gets the
    exception (each caller decides what that means for it).
    """

    def __init__(
        self,
        fn: Callable[[list[T]], Awaitable[Sequence[R]]],
        *,
        max_items: int,
        wait_s: float,
        max_concurrent: int = 1,
        max_bytes: int | None = None,
        size_of: Callable[[T], int] | None = None,
    ) -> None:
        self._fn = fn
        self._max_items = max_items
        self._max_bytes = max_bytes
        self._size_of = size_of or (lambda _item: 0)
        self._wait_s = wait_s
        self._max_concurrent = max_concurrent
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._in_flight = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self.batch_sizes: list[int] = []  # observability (benchmarks, tests)

    async def submit(self, item: T) -> R:
        fut: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((item, fut))
        if self._in_flight < self._max_concurrent:
            if self._full():
                self._flush()
            elif self._timer is None:
                self._timer = asyncio.get_running_loop().call_later(self._wait_s, self._on_timer)
        return await fut

    def _full(self) -> bool:
        if len(self._pending) >= self._max_items:
            return True
        if self._max_bytes is None:
            return False
        return sum(self._size_of(i) for i, _ in self._pending) >= self._max_bytes

    def _on_timer(self) -> None:
        self._timer = None
        if self._in_flight < self._max_concurrent:
            self._flush()

    def _take(self) -> list[tuple[T, asyncio.Future[R]]]:
        batch: list[tuple[T, asyncio.Future[R]]] = []
        size = 0
        while self._pending and len(batch) < self._max_items:
            item_size = self._size_of(self._pending[0][0])
            if batch and self._max_bytes is not None and size + item_size > self._max_bytes:
                break
            batch.append(self._pending.pop(0))
            size += item_size
        return batch

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch = self._take()
        if not batch:
            return
        self._in_flight += 1
        self.batch_sizes.append(len(batch))
        task = asyncio.get_running_loop().create_task(self._run(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        futures = [f for _, f in batch]
        try:
            results = await self._fn([i for i, _ in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"batch call returned {len(results)} results for {len(batch)} items")
        except Exception as exc:  # delivered to every waiter of this batch
            for f in futures:
                if not f.done():
                    f.set_exception(exc)
            return
        except BaseException:
            for f in futures:
                if not f.done():
                    f.cancel()
            raise
        finally:
            self._in_flight -= 1
            if self._pending and self._in_flight < self._max_concurrent:
                self._flush()  # what accumulated meanwhile leaves now
        for f, r in zip(futures, results, strict=True):
            if not f.done():
                f.set_result(r)


class LRUCache(Generic[K, V]):
    """A bounded mapping with per-entry expiry (query text -> embedding)."""

    def __init__(self, max_entries: int, ttl_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._data: OrderedDict[K, tuple[float, V]] = OrderedDict()
        self._max = max_entries
        self._ttl = ttl_s
        self._clock = clock

    def get(self, key: K) -> V | None:
        entry = self._data.get(key)
        if entry is None:
            return None
        stored_at, value = entry
        if self._clock() - stored_at > self._ttl:
            del self._data[key]
            return None
        self._data.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        self._data[key] = (self._clock(), value)
        self._data.move_to_end(key)
        while len(self._data) > self._max:
            self._data.popitem(last=False)

    def clear(self) -> None:
        self._data.clear()

    def __len__(self) -> int:
        return len(self._data)
