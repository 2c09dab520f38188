"""Clients over real gRPC (an in-process scripted servicer): retries, breaker, deadlines, statuses."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import numpy as np
import pytest
from imagesearch.v1 import common_pb2, encoder_pb2, encoder_pb2_grpc, search_pb2, search_pb2_grpc

from services.common import context
from services.common.errors import DeadlineExceeded
from services.gateway.backends.calls import BackendCalls, CircuitBreaker, RetryPolicy, channel
from services.gateway.backends.encoder import GrpcEncoderClient
from services.gateway.backends.errors import (
    BackendDeadlineExceeded,
    BackendError,
    BackendUnavailable,
    BreakerOpen,
)
from services.gateway.backends.search import GrpcSearchClient
from services.gateway.domain import Condition, Op, QuerySpec


class Script:
    """Status codes to fail the next calls with (None = succeed); records timeouts seen."""

    def __init__(self) -> None:
        self.failures: list[grpc.StatusCode] = []
        self.calls = 0
        self.delay_s = 0.0
        self.timeouts: list[float | None] = []
        self.request_ids: list[str] = []
        self.last_request: object = None

    async def step(self, ctx: grpc.aio.ServicerContext, request: object) -> None:
        self.calls += 1
        self.last_request = request
        self.timeouts.append(ctx.time_remaining())
        self.request_ids.append(dict(ctx.invocation_metadata() or ()).get("x-request-id", ""))
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.failures:
            code = self.failures.pop(0)
            await ctx.abort(code, f"scripted {code.name}")


class Encoder(encoder_pb2_grpc.EncoderServiceServicer):
    def __init__(self, script: Script) -> None:
        self.s = script

    async def EncodeTexts(self, request, context):  # type: ignore[no-untyped-def]
        await self.s.step(context, request)
        v = np.ones(4, dtype="<f4") / 2
        return encoder_pb2.EncodeTextsResponse(
            results=[
                encoder_pb2.EncodeResult(id=t.id, embedding=common_pb2.Embedding(values=v.tobytes()))
                if t.text
                else encoder_pb2.EncodeResult(
                    id=t.id, error=common_pb2.ItemError(code=3, message="empty text")
                )
                for t in request.texts
            ],
            model=common_pb2.ModelRef(name="m", version="1"),
        )


class Search(search_pb2_grpc.SearchServiceServicer):
    def __init__(self, script: Script) -> None:
        self.s = script

    async def Query(self, request, context):  # type: ignore[no-untyped-def]
        await self.s.step(context, request)
        return search_pb2.QueryResponse(
            hits=[search_pb2.QueryHit(asset=common_pb2.Asset(asset_id="a", tenant=request.tenant))],
            cached=True,
        )

    async def GetIndexGeneration(self, request, context):  # type: ignore[no-untyped-def]
        return search_pb2.GetIndexGenerationResponse(index_generation=7, consistent=True)  # never fails

    async def DeleteAssets(self, request, context):  # type: ignore[no-untyped-def]
        await self.s.step(context, request)
        return search_pb2.DeleteAssetsResponse(
            results=[search_pb2.DeleteResult(asset_id=i, deleted=True) for i in request.asset_ids]
        )


@pytest.fixture
async def server() -> AsyncIterator[tuple[str, Script]]:
    script = Script()
    srv = grpc.aio.server()
    encoder_pb2_grpc.add_EncoderServiceServicer_to_server(Encoder(script), srv)
    search_pb2_grpc.add_SearchServiceServicer_to_server(Search(script), srv)
    port = srv.add_insecure_port("127.0.0.1:0")
    await srv.start()
    yield f"127.0.0.1:{port}", script
    await srv.stop(0)


RETRY = RetryPolicy(attempts=3, initial_backoff_s=0.001, max_backoff_s=0.005)


def encoder(address: str, threshold: int = 5, reset_s: float = 60.0) -> GrpcEncoderClient:
    return GrpcEncoderClient(
        channel(address, 5.0, 4 << 20), CircuitBreaker("encoder", threshold, reset_s), RETRY, 1.0, 5.0
    )


def search(address: str) -> GrpcSearchClient:
    return GrpcSearchClient(
        channel(address, 5.0, 4 << 20), CircuitBreaker("search", 5, 60.0), RETRY, 1.0, 5.0
    )


async def test_idempotent_call_is_retried_on_unavailable(server: tuple[str, Script]) -> None:
    address, script = server
    script.failures = [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNAVAILABLE]
    batch = await encoder(address).encode_texts(["hello", ""])
    assert script.calls == 3
    assert batch.model is not None and batch.model.name == "m"
    assert batch.items[0].vector is not None and np.allclose(batch.items[0].vector, 0.5)
    assert batch.items[1].vector is None and batch.items[1].error_code == 3


async def test_retries_give_up_with_unavailable(server: tuple[str, Script]) -> None:
    address, script = server
    script.failures = [grpc.StatusCode.UNAVAILABLE] * 5
    with pytest.raises(BackendUnavailable) as err:
        await encoder(address).encode_texts(["x"])
    assert script.calls == 3 and err.value.code == grpc.StatusCode.UNAVAILABLE
    assert err.value.message.startswith("encoder: unavailable")


async def test_other_statuses_are_not_retried_and_keep_their_code(server: tuple[str, Script]) -> None:
    address, script = server
    script.failures = [grpc.StatusCode.INVALID_ARGUMENT]
    with pytest.raises(BackendError) as err:
        await search(address).query(QuerySpec(tenant="t", text="x"))
    assert script.calls == 1 and err.value.code == grpc.StatusCode.INVALID_ARGUMENT


async def test_non_idempotent_delete_is_not_retried(server: tuple[str, Script]) -> None:
    address, script = server
    script.failures = [grpc.StatusCode.UNAVAILABLE]
    with pytest.raises(BackendUnavailable):
        await search(address).delete_assets("t", ["a"])
    assert script.calls == 1


async def test_query_maps_filters_and_scores(server: tuple[str, Script]) -> None:
    address, script = server
    spec = QuerySpec(
        tenant="acme",
        text="cat",
        vector=np.ones(4, dtype=np.float32) / 2,
        alpha=0.5,
        filter=Condition("license_name", Op.IN, ("A", "B")),
        limit=7,
        include_vectors=True,
    )
    result = await search(address).query(spec)
    assert result.cached and result.hits[0].asset.asset_id == "a" and result.hits[0].asset.tenant == "acme"
    req = script.last_request
    assert isinstance(req, search_pb2.QueryRequest)
    assert req.tenant == "acme" and req.alpha == 0.5 and req.limit == 7 and req.include_vectors
    assert [v.string_value for v in req.filter.condition.values.values] == ["A", "B"]
    assert np.frombuffer(req.vector.values, dtype="<f4").tolist() == [0.5] * 4


async def test_breaker_opens_fails_fast_and_recovers_with_one_probe(server: tuple[str, Script]) -> None:
    address, script = server
    client = encoder(address, threshold=2, reset_s=0.2)
    script.failures = [grpc.StatusCode.UNAVAILABLE] * 6
    with pytest.raises(BackendUnavailable):
        await client.encode_texts(["x"])  # 2 failed attempts open the breaker; the 3rd fails fast
    assert client.breaker.state == CircuitBreaker.OPEN
    calls = script.calls
    with pytest.raises(BreakerOpen, match="circuit open"):
        await client.encode_texts(["x"])
    assert script.calls == calls  # failed fast, the backend saw nothing
    await asyncio.sleep(0.25)
    assert client.breaker.state == CircuitBreaker.HALF_OPEN
    script.failures = []
    script.delay_s = 0.05
    results = await asyncio.gather(*(client.encode_texts(["x"]) for _ in range(3)), return_exceptions=True)
    assert sum(isinstance(r, BreakerOpen) for r in results) == 2  # one probe only
    assert client.breaker.state == CircuitBreaker.CLOSED
    await client.encode_texts(["x"])


async def test_client_errors_do_not_trip_the_breaker(server: tuple[str, Script]) -> None:
    address, script = server
    client = encoder(address, threshold=2)
    script.failures = [grpc.StatusCode.INVALID_ARGUMENT] * 3
    for _ in range(3):
        with pytest.raises(BackendError):
            await client.encode_texts(["x"])
    assert client.breaker.state == CircuitBreaker.CLOSED


def test_breaker_state_machine_with_a_fake_clock() -> None:
    now = [0.0]
    b = CircuitBreaker("x", failure_threshold=3, reset_s=10, clock=lambda: now[0])
    for _ in range(2):
        assert b.acquire() is False
        b.record(False, False)
    assert b.state == b.CLOSED
    b.record(True, False)  # success resets the count
    for _ in range(3):
        b.record(False, False)
    assert b.state == b.OPEN
    now[0] = 10.0
    assert b.acquire() is True  # the probe
    with pytest.raises(BreakerOpen, match="probe call is in flight"):
        b.acquire()
    b.record(False, True)  # probe failed: open again for reset_s
    assert b.state == b.OPEN
    now[0] = 20.0
    probe = b.acquire()
    b.release_probe()  # cancelled probe: the next call may probe
    assert probe and b.acquire() is True


async def test_per_hop_deadline_is_capped_by_the_callers(server: tuple[str, Script]) -> None:
    address, script = server
    await encoder(address).encode_texts(["x"])  # per-hop 1.0 s, no caller deadline
    assert script.timeouts[-1] is not None and 0 < script.timeouts[-1] <= 1.01  # clock granularity
    client = GrpcEncoderClient(
        channel(address, 30.0, 4 << 20), CircuitBreaker("encoder", 5, 60.0), RETRY, 10.0, 10.0
    )
    tok = context.set_deadline(1.5)  # the caller's deadline is tighter than the 10 s per-hop budget
    rid = context.set_request_id("req-123")
    try:
        await client.encode_texts(["x"])
        assert script.timeouts[-1] is not None and script.timeouts[-1] <= 1.51  # clock granularity
        assert script.request_ids[-1] == "req-123"
        script.delay_s = 3.0
        with pytest.raises(BackendError) as err:
            await client.encode_texts(["x"])
        assert err.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
        await asyncio.sleep(0.05)
        with pytest.raises(DeadlineExceeded):  # nothing is started once the caller's deadline passed
            await client.encode_texts(["x"])
    finally:
        context.reset_deadline(tok)
        context.reset_request_id(rid)


def _failed(code: grpc.StatusCode) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, None, None, details=f"scripted {code.name}")


async def test_a_methods_circuit_opens_though_another_method_of_the_backend_succeeds() -> None:
    """F3, over fakes of the calls: the index store is down (Query times out) while the cache-backed
    generation read answers; neither that success nor another backend's resets Query's count."""
    breaker = CircuitBreaker("search", failure_threshold=3, reset_s=60.0)
    search_calls = BackendCalls("search", breaker, RetryPolicy(1, 0.001, 0.001))
    encoder_calls = BackendCalls("encoder", CircuitBreaker("encoder", 3, 60.0), RetryPolicy(1, 0.001, 0.001))
    seen: dict[str, int] = {"Query": 0}

    async def query(request: object, **call: object) -> None:
        seen["Query"] += 1
        raise _failed(grpc.StatusCode.DEADLINE_EXCEEDED)

    async def healthy(request: object, **call: object) -> str:
        return "ok"

    for _ in range(3):
        assert await search_calls.call(healthy, None, 1.0, idempotent=False, method="GetIndexGeneration")
        assert await encoder_calls.call(healthy, None, 1.0, idempotent=True, method="EncodeTexts")
        with pytest.raises(BackendDeadlineExceeded):
            await search_calls.call(query, None, 1.0, idempotent=True, method="Query")
    with pytest.raises(BreakerOpen, match="circuit open for Query"):  # fails fast, nothing sent
        await search_calls.call(query, None, 1.0, idempotent=True, method="Query")
    assert seen["Query"] == 3
    assert breaker.state_of("Query") == CircuitBreaker.OPEN and breaker.state == CircuitBreaker.OPEN
    assert breaker.state_of("GetIndexGeneration") == CircuitBreaker.CLOSED
    assert await search_calls.call(healthy, None, 1.0, idempotent=False, method="GetIndexGeneration")


async def test_search_outage_fails_fast_though_the_generation_read_succeeds(
    server: tuple[str, Script],
) -> None:
    address, script = server
    client = search(address)  # threshold 5, 3 attempts per call
    script.failures = [grpc.StatusCode.UNAVAILABLE] * 100
    for _ in range(2):  # what every search does: the generation read, then the first stage
        assert await client.index_generation("t") == 7
        with pytest.raises(BackendUnavailable):
            await client.query(QuerySpec(tenant="t", text="x"))
    sent = script.calls
    assert await client.index_generation("t") == 7
    with pytest.raises(BreakerOpen):
        await client.query(QuerySpec(tenant="t", text="x"))
    assert script.calls == sent == 5


async def test_retry_waits_grow_from_the_first_failed_attempt(monkeypatch: pytest.MonkeyPatch) -> None:
    """The first attempt runs outside the retry loop; the waits and attempts are still the loop's:
    backoff multiplier * 2 ** (failed attempts - 1), capped (jitter pinned to its upper bound)."""
    import random

    waits: list[float] = []

    async def no_sleep(seconds: float, *args: object) -> None:
        waits.append(seconds)

    monkeypatch.setattr(asyncio, "sleep", no_sleep)
    monkeypatch.setattr(random, "uniform", lambda low, high: high)
    calls = BackendCalls("encoder", CircuitBreaker("encoder", 100, 60.0), RetryPolicy(4, 0.01, 0.03))
    outcomes: list[grpc.StatusCode | None] = [grpc.StatusCode.UNAVAILABLE] * 3 + [None]

    async def fn(request: str, **call_options: float) -> str:  # the timeout, unused
        code = outcomes.pop(0)
        if code is not None:
            raise grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details="down")
        return request

    assert await calls.call(fn, "ok", 1.0, idempotent=True) == "ok"
    assert waits == pytest.approx([0.01, 0.02, 0.03]) and not outcomes

    waits.clear()
    outcomes[:] = [grpc.StatusCode.UNAVAILABLE] * 5
    with pytest.raises(BackendUnavailable):
        await calls.call(fn, "x", 1.0, idempotent=True)
    assert len(outcomes) == 1 and waits == pytest.approx([0.01, 0.02, 0.03])  # 4 attempts, 3 waits
