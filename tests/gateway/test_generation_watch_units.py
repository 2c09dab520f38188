"""The gateway's generation watch against a scripted search servicer over real gRPC: answered from
memory only while the watch is live, pushes and own writes applied, forgotten when the stream ends."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
from imagesearch.v1 import search_pb2, search_pb2_grpc

from services.gateway.backends.calls import CircuitBreaker, RetryPolicy, channel
from services.gateway.backends.search import GrpcSearchClient


class Search(search_pb2_grpc.SearchServiceServicer):
    def __init__(self) -> None:
        self.generation = 7
        self.reads = 0
        self.pushes: asyncio.Queue[tuple[str, int] | None] = asyncio.Queue()  # None: end the stream

    async def GetIndexGeneration(self, request, context):  # type: ignore[no-untyped-def]
        self.reads += 1
        return search_pb2.GetIndexGenerationResponse(index_generation=self.generation, consistent=True)

    async def WatchIndexGenerations(self, request, context):  # type: ignore[no-untyped-def]
        yield search_pb2.WatchIndexGenerationsResponse(subscribed=True)
        while (push := await self.pushes.get()) is not None:
            yield search_pb2.WatchIndexGenerationsResponse(tenant=push[0], index_generation=push[1])
        await context.abort(grpc.StatusCode.UNAVAILABLE, "scripted end of the watch")


@pytest.fixture
async def served() -> AsyncIterator[tuple[Search, GrpcSearchClient]]:
    servicer = Search()
    srv = grpc.aio.server()
    search_pb2_grpc.add_SearchServiceServicer_to_server(servicer, srv)
    port = srv.add_insecure_port("127.0.0.1:0")
    await srv.start()
    ch = channel(f"127.0.0.1:{port}", 5.0, 4 << 20)
    client = GrpcSearchClient(
        ch, CircuitBreaker("search", 5, 60.0), RetryPolicy(1, 0.001, 0.001), 1.0, 1.0, watch=(16, 60.0, 0.05)
    )
    task = asyncio.create_task(client.watch_generations())
    yield servicer, client
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await ch.close()
    await srv.stop(0)


async def _until(cond: object, timeout_s: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not cond():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


async def test_generations_come_from_memory_only_while_the_watch_lives(
    served: tuple[Search, GrpcSearchClient],
) -> None:
    search, client = served
    watch = client.watch
    assert watch is not None
    await _until(lambda: watch.live)
    assert await client.index_generation("t") == 7 and search.reads == 1  # read once under the watch
    assert await client.index_generation("t") == 7 and search.reads == 1  # then from memory
    search.pushes.put_nowait(("t", 9))
    await _until(lambda: watch._known.get("t") == 9)
    assert await client.index_generation("t") == 9 and search.reads == 1
    watch.wrote("t", 12)  # this gateway's own write, before its ack
    assert await client.index_generation("t") == 12 and search.reads == 1
    watch.wrote("t", 0)  # a write whose bump failed: read again
    search.generation = 13
    assert await client.index_generation("t") == 13 and search.reads == 2

    search.pushes.put_nowait(None)  # the stream ends: everything learned is forgotten
    await _until(lambda: not watch.live)
    search.generation = 14
    assert await client.index_generation("t") == 14
    await _until(lambda: watch.live)  # watched again
    reads = search.reads
    assert await client.index_generation("t") == 14 and search.reads == reads + 1
    assert await client.index_generation("t") == 14 and search.reads == reads + 1


async def test_without_a_watch_every_generation_is_read() -> None:
    servicer = Search()
    srv = grpc.aio.server()
    search_pb2_grpc.add_SearchServiceServicer_to_server(servicer, srv)
    port = srv.add_insecure_port("127.0.0.1:0")
    await srv.start()
    ch = channel(f"127.0.0.1:{port}", 5.0, 4 << 20)
    client = GrpcSearchClient(ch, CircuitBreaker("search", 5, 60.0), RetryPolicy(1, 0.001, 0.001), 1.0, 1.0)
    await client.watch_generations()  # returns at once: nothing to watch
    for n in (1, 2):
        assert await client.index_generation("t") == 7 and servicer.reads == n
    await ch.close()
    await srv.stop(0)
