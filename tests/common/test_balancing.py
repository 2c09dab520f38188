"""Client-side balancing over replicas (services/common/balancing.py) on real grpc.aio servers: calls
are spread round robin, a replica reporting NOT_SERVING or gone is skipped, and it gets calls again
once it reports SERVING or comes back on its port."""

from __future__ import annotations

import asyncio
from collections import Counter

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from imagesearch.v1 import search_pb2, search_pb2_grpc
from pydantic import ValidationError

from services.common.balancing import balancing_options, grpc_target, is_balanced
from services.gateway.settings import GatewaySettings
from tests.service_process import free_port

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.mark.parametrize(
    ("address", "target"),
    [
        ("127.0.0.1:50072", "127.0.0.1:50072"),
        ("search:50072", "search:50072"),
        ("127.0.0.1:1,127.0.0.1:2", "ipv4:127.0.0.1:1,127.0.0.1:2"),
        (" 10.0.0.1:1 , 10.0.0.2:1 ", "ipv4:10.0.0.1:1,10.0.0.2:1"),
        ("[::1]:1,[::1]:2", "ipv6:[::1]:1,[::1]:2"),
        ("dns:///rel-search:50051", "dns:///rel-search:50051"),
    ],
)
def test_address_forms_become_grpc_targets(address: str, target: str) -> None:
    assert grpc_target(address) == target
    assert is_balanced(address) == ("," in address or address.startswith("dns:"))


@pytest.mark.parametrize(
    ("address", "hint"),
    [
        ("search-a:1,search-b:1", "dns:///name:port"),
        ("127.0.0.1:1,[::1]:2", "not both"),
        ("127.0.0.1", "not host:port"),
        ("127.0.0.1:70000", "not host:port"),
        ("", "empty address"),
    ],
)
def test_invalid_addresses_fail_at_start_up_with_what_to_write(address: str, hint: str) -> None:
    with pytest.raises(ValidationError, match=hint):
        GatewaySettings(search_address=address)


def test_a_single_address_keeps_the_default_policy_and_reconnects_quickly() -> None:
    single = dict(balancing_options("127.0.0.1:50072"))
    assert "grpc.service_config" not in single
    assert single["grpc.max_reconnect_backoff_ms"] <= 2000  # not gRPC's two minutes
    balanced = dict(balancing_options("dns:///search:1"))
    assert "grpc.service_config" in balanced and balanced["grpc.max_reconnect_backoff_ms"] <= 2000


class _Replica:
    """A grpc.aio server on a fixed port whose GetStats answers with its own name."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.port = free_port()
        self.health = HealthServicer()
        self.server: grpc.aio.Server | None = None

    async def start(self) -> None:
        name = self.name

        class Servicer(search_pb2_grpc.SearchServiceServicer):
            async def GetStats(self, request, context):  # type: ignore[no-untyped-def]
                return search_pb2.GetStatsResponse(backend=name)

        self.health = HealthServicer()
        self.server = grpc.aio.server()
        search_pb2_grpc.add_SearchServiceServicer_to_server(Servicer(), self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        assert self.server.add_insecure_port(f"127.0.0.1:{self.port}") == self.port
        await self.health.set("", SERVING)
        await self.server.start()

    async def stop(self) -> None:
        assert self.server is not None
        await self.server.stop(0)


async def _spread(stub: search_pb2_grpc.SearchServiceStub, calls: int = 40) -> Counter[str]:
    replies = [await stub.GetStats(search_pb2.GetStatsRequest(), timeout=5) for _ in range(calls)]
    return Counter(r.backend for r in replies)


async def _until(stub: search_pb2_grpc.SearchServiceStub, want: set[str], timeout_s: float = 10) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while set(await _spread(stub, 10)) != want:
        assert asyncio.get_running_loop().time() < deadline, f"never reached {want}"
        await asyncio.sleep(0.1)


async def test_round_robin_skips_unhealthy_and_dead_replicas_and_takes_them_back() -> None:
    a, b = _Replica("a"), _Replica("b")
    await a.start()
    await b.start()
    address = f"127.0.0.1:{a.port},127.0.0.1:{b.port}"
    channel = grpc.aio.insecure_channel(grpc_target(address), options=balancing_options(address))
    stub = search_pb2_grpc.SearchServiceStub(channel)
    try:
        await _until(stub, {"a", "b"})
        spread = await _spread(stub)
        assert abs(spread["a"] - spread["b"]) <= 2  # round robin, not pick-first

        await b.health.set("", NOT_SERVING)  # e.g. its database is down: no new calls
        await _until(stub, {"a"})
        assert await _spread(stub) == Counter({"a": 40})
        await b.health.set("", SERVING)
        await _until(stub, {"a", "b"})

        await a.stop()  # gone: every call still succeeds on b
        assert await _spread(stub) == Counter({"b": 40})
        await a.start()  # back on its port: calls return to it within the reconnect backoff
        await _until(stub, {"a", "b"})
    finally:
        await channel.close()
        await a.stop()
        await b.stop()
