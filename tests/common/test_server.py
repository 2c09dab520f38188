"""The shared server plumbing, exercised in-process with a tiny test servicer on a real grpc.aio server."""

from __future__ import annotations

import asyncio
import urllib.request
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from imagesearch.v1 import common_pb2, search_pb2, search_pb2_grpc

from services.common import context
from services.common.errors import InvalidArgument
from services.common.server import App, Probe, serve
from services.common.settings import ServiceSettings
from tests.service_process import free_port


def _get(url: str) -> str:
    with urllib.request.urlopen(url) as response:
        return str(response.read().decode())


class _Servicer(search_pb2_grpc.SearchServiceServicer):
    """GetStats echoes what the plumbing gave it; Query fails like domain code does."""

    def __init__(self) -> None:
        self.seen_deadline: float | None = None
        self.release = asyncio.Event()

    async def GetStats(self, request, context_):  # type: ignore[no-untyped-def]
        if request.tenant == "slow":
            await self.release.wait()  # held open to test draining on shutdown
        self.seen_deadline = context.remaining(default=1e9)
        return search_pb2.GetStatsResponse(backend=context.request_id())

    async def Query(self, request, context_):  # type: ignore[no-untyped-def]
        raise InvalidArgument("alpha must be in [0, 1], got 2")

    async def StreamUpsertAssets(self, request_iterator, context_):  # type: ignore[no-untyped-def]
        async for request in request_iterator:  # echoes each asset id
            yield search_pb2.StreamUpsertAssetsResponse(
                result=search_pb2.UpsertResult(asset_id=request.asset.asset.asset_id)
            )


class _Running:
    def __init__(self, probes: list[Probe]) -> None:
        self.port = free_port()
        self.metrics_port = free_port()
        self.servicer = _Servicer()
        self.stop = asyncio.Event()
        self.settings = ServiceSettings(
            port=self.port, metrics_port=self.metrics_port, health_interval_s=0.05, shutdown_grace_s=5
        )
        self.app = App(
            name="test",
            services=[
                (
                    search_pb2_grpc.add_SearchServiceServicer_to_server,
                    self.servicer,
                    "imagesearch.v1.SearchService",
                )
            ],
            probes=probes,
        )
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> _Running:
        self.task = asyncio.create_task(serve(self.app, self.settings, self.stop))
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{self.port}")
        await asyncio.wait_for(self.channel.channel_ready(), 10)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.stop.set()
        assert self.task is not None
        await asyncio.wait_for(self.task, 15)
        await self.channel.close()


async def test_request_id_and_deadline_reach_the_handler() -> None:
    async with _Running([]) as srv:
        stub = search_pb2_grpc.SearchServiceStub(srv.channel)
        call = stub.GetStats(search_pb2.GetStatsRequest(), metadata=[("x-request-id", "rid-42")], timeout=3)
        response = await call
        assert response.backend == "rid-42"  # the handler saw the caller's request id
        assert ("x-request-id", "rid-42") in list(await call.trailing_metadata())
        seen = srv.servicer.seen_deadline
        assert seen is not None and 0 < seen <= 3.1  # grpc-timeout header rounds up


async def test_request_id_is_generated_when_absent() -> None:
    async with _Running([]) as srv:
        call = search_pb2_grpc.SearchServiceStub(srv.channel).GetStats(search_pb2.GetStatsRequest())
        response = await call
        assert len(response.backend) == 32
        assert ("x-request-id", response.backend) in list(await call.trailing_metadata())


async def test_domain_error_becomes_precise_status_and_is_counted() -> None:
    async with _Running([]) as srv:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await search_pb2_grpc.SearchServiceStub(srv.channel).Query(search_pb2.QueryRequest())
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert info.value.details() == "alpha must be in [0, 1], got 2"
        metrics = await asyncio.to_thread(_get, f"http://127.0.0.1:{srv.metrics_port}/metrics")
        assert 'grpc_server_handled_total{grpc_code="INVALID_ARGUMENT",grpc_method="Query"' in metrics


async def test_unimplemented_method_reports_unimplemented() -> None:
    async with _Running([]) as srv:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await search_pb2_grpc.SearchServiceStub(srv.channel).GetAssets(search_pb2.GetAssetsRequest())
        assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_health_follows_required_and_optional_probes() -> None:
    state = {"db": True, "cache": True}

    async def db() -> bool:
        return state["db"]

    async def cache() -> bool:
        return state["cache"]

    async with _Running([Probe("db", db), Probe("cache", cache, required=False)]) as srv:
        health = health_pb2_grpc.HealthStub(srv.channel)

        async def status(name: str) -> int:
            return (await health.Check(health_pb2.HealthCheckRequest(service=name))).status

        async def settles(name: str, want: int) -> int:
            """The status once the probes (every 0.05 s) have seen the change: `want` within 5 s."""
            for _ in range(100):
                if (got := await status(name)) == want:
                    return got
                await asyncio.sleep(0.05)
            return got

        serving = health_pb2.HealthCheckResponse.SERVING
        not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
        assert await status("") == serving
        state["cache"] = False  # optional backend down: degraded, still serving
        assert await settles("backend:cache", not_serving) == not_serving
        assert await status("") == serving
        state["db"] = False  # required backend down: not serving
        assert await settles("", not_serving) == not_serving
        assert await status("imagesearch.v1.SearchService") == not_serving
        assert await status("liveness") == serving  # alive: a restart would not bring the db back
        state["db"] = True
        assert await settles("", serving) == serving


async def test_shutdown_drains_in_flight_calls() -> None:
    srv = _Running([])
    async with srv:
        stub = search_pb2_grpc.SearchServiceStub(srv.channel)
        slow = search_pb2.GetStatsRequest(tenant="slow")
        in_flight = asyncio.ensure_future(stub.GetStats(slow, timeout=10))
        await asyncio.sleep(0.2)
        srv.stop.set()  # as SIGTERM would
        await asyncio.sleep(0.2)
        assert not in_flight.done()  # still draining, not cancelled
        srv.servicer.release.set()
        response = await asyncio.wait_for(in_flight, 5)
        assert response.backend  # completed normally during the grace period


async def test_undecodable_requests_are_invalid_argument_and_counted() -> None:
    """Bytes that are not the method's request message: INVALID_ARGUMENT naming the message type, from
    the same error mapping as every other client mistake (never UNKNOWN with a class name)."""
    async with _Running([]) as srv:
        query = srv.channel.unary_unary(
            "/imagesearch.v1.SearchService/Query",
            request_serializer=None,
            response_deserializer=search_pb2.QueryResponse.FromString,
        )
        bad_utf8 = b"\x0a\x02t1\x12\x02\xff\xfe"  # tenant "t1", text: invalid UTF-8
        truncated = search_pb2.QueryRequest(tenant="t1", text="car").SerializeToString()[:-1]
        for raw in (bad_utf8, truncated):
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await query(raw)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert info.value.details().startswith(
                "the request could not be decoded as imagesearch.v1.QueryRequest: "
            ), info.value.details()
            assert "Error" not in info.value.details()
            assert any(k == "x-request-id" for k, _ in info.value.trailing_metadata() or ())
        # Stream items are decoded as the servicer reads them: the good ones are answered first.
        upsert = srv.channel.stream_stream(
            "/imagesearch.v1.SearchService/StreamUpsertAssets",
            request_serializer=None,
            response_deserializer=search_pb2.StreamUpsertAssetsResponse.FromString,
        )
        good = search_pb2.StreamUpsertAssetsRequest(
            asset=search_pb2.AssetRecord(asset=common_pb2.Asset(asset_id="a1"))
        ).SerializeToString()
        call = upsert(iter([good, good[:-1]]))
        first = await call.read()
        assert first.result.asset_id == "a1"
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call.read()
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "imagesearch.v1.StreamUpsertAssetsRequest" in info.value.details()
        metrics = await asyncio.to_thread(_get, f"http://127.0.0.1:{srv.metrics_port}/metrics")
        assert 'grpc_server_handled_total{grpc_code="INVALID_ARGUMENT",grpc_method="Query"' in metrics
        assert 'grpc_code="INVALID_ARGUMENT",grpc_method="StreamUpsertAssets"' in metrics


async def test_health_port_serves_plaintext_health_only_beside_a_mutual_tls_port(suite_certs: Path) -> None:
    port, health_port = free_port(), free_port()
    settings = ServiceSettings(
        port=port, health_port=health_port, tls_dir=suite_certs, health_interval_s=0.05
    )
    app = App(
        name="search",
        services=[
            (search_pb2_grpc.add_SearchServiceServicer_to_server, _Servicer(), "imagesearch.v1.SearchService")
        ],
    )
    stop = asyncio.Event()
    task = asyncio.create_task(serve(app, settings, stop))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{health_port}") as probe:
            await asyncio.wait_for(probe.channel_ready(), 10)
            health = health_pb2_grpc.HealthStub(probe)
            for service in ("", "imagesearch.v1.SearchService", "liveness"):
                reply = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=3)
                assert reply.status == health_pb2.HealthCheckResponse.SERVING
            with pytest.raises(grpc.aio.AioRpcError) as info:  # nothing but health on this port
                await search_pb2_grpc.SearchServiceStub(probe).GetStats(
                    search_pb2.GetStatsRequest(), timeout=3
                )
            assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as plaintext:  # the main port stays mTLS
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await health_pb2_grpc.HealthStub(plaintext).Check(health_pb2.HealthCheckRequest(), timeout=3)
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)
