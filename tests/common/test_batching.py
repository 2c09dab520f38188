"""The suite's one batching primitive: batch shapes, deadlines, cancellation, failures."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from services.common.batching import MicroBatcher, submit_stream
from services.common.errors import DeadlineExceeded


class Recorder:
    """A batch function that records each batch and can be held open."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.gate = asyncio.Event()
        self.gate.set()

    async def __call__(self, items: list[int]) -> list[int]:
        self.batches.append(list(items))
        await self.gate.wait()
        return [i * 10 for i in items]


async def test_concurrent_items_share_one_batch_and_results_keep_order() -> None:
    fn = Recorder()
    b = MicroBatcher(fn, max_items=8, wait_s=0.01)
    results = await asyncio.gather(*(b.submit(i) for i in range(5)))
    assert results == [0, 10, 20, 30, 40]
    assert fn.batches == [[0, 1, 2, 3, 4]]
    assert (b.stats.batches, b.stats.items, b.stats.mean_batch) == (1, 5, 5.0)


async def test_a_full_batch_leaves_without_waiting() -> None:
    fn = Recorder()
    b = MicroBatcher(fn, max_items=3, wait_s=60)
    results = await asyncio.wait_for(asyncio.gather(*(b.submit(i) for i in range(3))), timeout=1)
    assert results == [0, 10, 20]


async def test_batches_grow_while_the_backend_is_busy() -> None:
    fn = Recorder()
    fn.gate.clear()
    b = MicroBatcher(fn, max_items=100, wait_s=0)
    first = asyncio.ensure_future(b.submit(0))
    await asyncio.sleep(0)
    rest = [asyncio.ensure_future(b.submit(i)) for i in range(1, 6)]
    await asyncio.sleep(0.01)
    assert fn.batches == [[0]]  # the others wait for the one call in flight
    fn.gate.set()
    assert await asyncio.gather(first, *rest) == [0, 10, 20, 30, 40, 50]
    assert fn.batches == [[0], [1, 2, 3, 4, 5]]


async def test_size_limit_splits_batches_and_an_oversized_item_travels_alone() -> None:
    fn = Recorder()
    fn.gate.clear()
    b = MicroBatcher(fn, max_items=100, wait_s=0, max_size=10, size_of=lambda i: i)
    blocker = asyncio.ensure_future(b.submit(1))
    await asyncio.sleep(0)
    waiting = [asyncio.ensure_future(b.submit(i)) for i in (4, 5, 3, 30, 2)]
    await asyncio.sleep(0)
    fn.gate.set()
    await asyncio.gather(blocker, *waiting)
    assert fn.batches == [[1], [4, 5], [3], [30], [2]]


async def test_a_failing_batch_fails_each_of_its_items_and_the_next_batch_runs() -> None:
    calls: list[list[int]] = []

    async def flaky(items: list[int]) -> list[int]:
        calls.append(items)
        if len(calls) == 1:
            raise ConnectionError("backend down")
        return items

    b = MicroBatcher(flaky, max_items=2, wait_s=0.001)
    first = await asyncio.gather(b.submit(1), b.submit(2), return_exceptions=True)
    assert all(isinstance(r, ConnectionError) for r in first)
    assert await b.submit(3) == 3


async def test_wrong_result_count_is_an_error_not_a_silent_mismatch() -> None:
    async def short(items: list[int]) -> list[int]:
        return items[:-1]

    b = MicroBatcher(short, max_items=4, wait_s=0.001)
    with pytest.raises(RuntimeError, match="1 results for 2 items"):
        await asyncio.gather(b.submit(1), b.submit(2))


async def test_an_item_whose_deadline_passed_in_the_queue_never_reaches_the_backend() -> None:
    fn = Recorder()
    fn.gate.clear()
    b = MicroBatcher(fn, max_items=100, wait_s=0, name="tower")
    blocker = asyncio.ensure_future(b.submit(1))
    await asyncio.sleep(0)
    with pytest.raises(DeadlineExceeded, match="tower: no result within the deadline"):
        await b.submit(2, timeout_s=0.02)
    late = asyncio.ensure_future(b.submit(3))
    fn.gate.set()
    assert await asyncio.gather(blocker, late) == [10, 30]
    assert fn.batches == [[1], [3]]


async def test_a_cancelled_caller_is_dropped_from_its_batch() -> None:
    fn = Recorder()
    fn.gate.clear()
    b = MicroBatcher(fn, max_items=100, wait_s=0)
    blocker = asyncio.ensure_future(b.submit(1))
    await asyncio.sleep(0)
    gone = asyncio.ensure_future(b.submit(2))
    kept = asyncio.ensure_future(b.submit(3))
    await asyncio.sleep(0)
    gone.cancel()
    await asyncio.sleep(0)
    fn.gate.set()
    assert await asyncio.gather(blocker, kept) == [10, 30]
    assert fn.batches == [[1], [3]]


async def test_close_cancels_what_is_queued() -> None:
    fn = Recorder()
    fn.gate.clear()
    b = MicroBatcher(fn, max_items=100, wait_s=0)
    running = asyncio.ensure_future(b.submit(1))
    await asyncio.sleep(0)
    queued = asyncio.ensure_future(b.submit(2))
    await asyncio.sleep(0)
    fn.gate.set()
    await b.close()
    assert await running == 10
    assert queued.cancelled()
    assert fn.batches == [[1]]


def test_bad_limits_are_rejected() -> None:
    async def fn(items: list[int]) -> list[int]:
        return items

    with pytest.raises(ValueError):
        MicroBatcher(fn, max_items=0, wait_s=0)


async def _numbers(n: int, pulled: list[int], fail_at: int | None = None) -> AsyncIterator[int]:
    for i in range(n):
        if i == fail_at:
            raise ConnectionError("the sender went away")
        pulled.append(i)
        yield i


async def test_a_stream_is_answered_in_arrival_order_with_bounded_read_ahead() -> None:
    fn = Recorder()
    b = MicroBatcher(fn, max_items=4, wait_s=0)
    pulled: list[int] = []
    out = []
    async for r in submit_stream(b.submit, _numbers(10, pulled), max_in_flight=3, ordered=True):
        assert len(pulled) - len(out) <= 3  # never more than max_in_flight unanswered items
        out.append(r)
    assert out == [i * 10 for i in range(10)]
    assert max(len(batch) for batch in fn.batches) <= 3


async def test_an_unordered_stream_yields_each_batch_as_it_returns() -> None:
    async def slow_evens(items: list[int]) -> list[int]:
        await asyncio.sleep(0.02 if items[0] % 2 == 0 else 0)
        return items

    b = MicroBatcher(slow_evens, max_items=1, wait_s=0, max_concurrent=2)
    out = [r async for r in submit_stream(b.submit, _numbers(4, []), max_in_flight=4, ordered=False)]
    assert sorted(out) == [0, 1, 2, 3] and out != [0, 1, 2, 3]


async def test_a_failing_batch_or_sender_ends_the_stream() -> None:
    async def down(items: list[int]) -> list[int]:
        raise ConnectionError("backend down")

    with pytest.raises(ConnectionError, match="backend down"):
        async for _ in submit_stream(
            MicroBatcher(down, max_items=2, wait_s=0).submit, _numbers(5, []), max_in_flight=2, ordered=True
        ):
            pass
    fn = Recorder()
    got: list[int] = []
    with pytest.raises(ConnectionError, match="sender went away"):
        async for r in submit_stream(
            MicroBatcher(fn, max_items=2, wait_s=0).submit,
            _numbers(5, [], fail_at=3),
            max_in_flight=8,
            ordered=True,
        ):
            got.append(r)
    assert got == [0, 10, 20]  # what arrived before the failure is still answered
