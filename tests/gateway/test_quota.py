"""Daily ingest quotas per tenant and per caller: counted per item against the UTC day, all or nothing,
answered RESOURCE_EXHAUSTED naming the quota with retry-after until 00:00 UTC; in process, on the real
Redis (shared by replicas), and through the real gateway process (the item fails, not the stream)."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import Iterator

import grpc
import pytest
from imagesearch.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc

from devstack import Stack, StackInfo
from services.common.errors import status_number
from services.gateway.ratelimit import (
    RETRY_AFTER_HEADER,
    Limits,
    MemoryLimiter,
    Quota,
    RateLimited,
    RateLimits,
    RedisLimiter,
    seconds_to_utc_midnight,
)
from tests.gateway.suite import KEYRING
from tests.service_process import REPO_ROOT, ServiceProcess, free_port

NOON = 1_764_979_200.0 + 12 * 3600  # 2025-12-06 12:00:00 UTC


class WallClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_seconds_to_utc_midnight() -> None:
    assert seconds_to_utc_midnight(NOON) == 12 * 3600
    assert seconds_to_utc_midnight(NOON - 12 * 3600) == 24 * 3600


def test_memory_count_is_all_or_nothing() -> None:
    async def go() -> None:
        lim = MemoryLimiter()
        a, b = Quota("a", 2), Quota("b", 1)
        assert await lim.count([a, b], ttl_s=60) == -1
        assert await lim.count([a, b], ttl_s=60) == 1  # b is full: a is not counted either
        assert await lim.count([a], ttl_s=60) == -1  # a had room for exactly one more
        assert await lim.count([a], ttl_s=60) == 0

    asyncio.run(go())


def test_the_daily_quota_names_whose_quota_and_resets_at_utc_midnight() -> None:
    async def go() -> None:
        clock = WallClock(NOON)
        gate = RateLimits(MemoryLimiter(), Limits(ingest_daily_tenant=3, ingest_daily_caller=2), clock)
        await gate.ingest_item("acme", "alice")
        await gate.ingest_item("acme", "alice")
        with pytest.raises(RateLimited) as refused:
            await gate.ingest_item("acme", "alice")
        assert refused.value.code is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "daily ingest quota of 2 items for caller 'alice' of tenant 'acme' is used up" in (
            refused.value.message
        )
        assert (RETRY_AFTER_HEADER, str(12 * 3600 * 1000)) in refused.value.trailing_metadata
        await gate.ingest_item("acme", "bob")  # the tenant's third item of the day
        with pytest.raises(RateLimited, match="daily ingest quota of 3 items for tenant 'acme'"):
            await gate.ingest_item("acme", "carol")
        await gate.ingest_item("globex", "gus")  # another tenant counts apart
        clock.now += 12 * 3600  # a new UTC day
        await gate.ingest_item("acme", "alice")

    asyncio.run(go())


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    if os.environ.get("IMAGESEARCH_SKIP_STACK", "") not in ("", "0"):
        pytest.skip("IMAGESEARCH_SKIP_STACK is set")
    manager = Stack(REPO_ROOT)
    info: StackInfo = manager.up(only="redis")
    try:
        assert info.redis_url
        yield info.redis_url
    finally:
        manager.down(only=info.started)


@pytest.mark.integration
def test_two_replicas_share_the_daily_quota_in_redis(redis_url: str) -> None:
    prefix = f"test-quota:{uuid.uuid4().hex}:"

    async def go() -> None:
        limits = Limits(ingest_daily_tenant=3)
        replicas = [
            RateLimits(RedisLimiter(redis_url, prefix, 1.0, 1.0), limits, WallClock(NOON)) for _ in range(2)
        ]
        try:
            await replicas[0].ingest_item("acme", "alice")
            await replicas[1].ingest_item("acme", "bob")
            await replicas[0].ingest_item("acme", "carol")
            for gate in replicas:
                with pytest.raises(RateLimited, match="daily ingest quota of 3 items for tenant 'acme'"):
                    await gate.ingest_item("acme", "dave")
        finally:
            for gate in replicas:
                await gate.limiter.close()

    asyncio.run(go())


def test_an_ingest_item_over_the_daily_quota_fails_that_item_not_the_stream() -> None:
    env = {
        "IMAGESEARCH_GATEWAY_ENCODER_ADDRESS": f"127.0.0.1:{free_port()}",
        "IMAGESEARCH_GATEWAY_SEARCH_ADDRESS": f"127.0.0.1:{free_port()}",
        "IMAGESEARCH_GATEWAY_API_KEYS_JSON": json.dumps(KEYRING),
        "IMAGESEARCH_GATEWAY_SAFETY_ENABLED": "false",
        "IMAGESEARCH_GATEWAY_OCR_ENABLED": "false",
        "IMAGESEARCH_GATEWAY_RETRY_ATTEMPTS": "1",
        "IMAGESEARCH_GATEWAY_INGEST_DAILY_QUOTA_PER_CALLER": "2",
    }
    with ServiceProcess("services.gateway", env, wait_serving=False) as proc:
        with grpc.insecure_channel(proc.address) as channel:
            stub = gateway_pb2_grpc.GatewayServiceStub(channel)
            reqs = [
                gateway_pb2.IngestRequest(
                    asset_id=f"q{i}", image=b"not an image", license=common_pb2.License(name="MIT")
                )
                for i in range(4)
            ]
            acks = list(
                stub.Ingest(iter(reqs), metadata=[("authorization", "Bearer globex-gus")], timeout=60)
            )
    assert sorted(a.asset_id for a in acks) == [f"q{i}" for i in range(4)]
    over = [a for a in acks if a.error.code == status_number(grpc.StatusCode.RESOURCE_EXHAUSTED)]
    assert len(over) == 2
    assert (
        "daily ingest quota of 2 items for caller 'gus' of tenant 'globex' is used up"
        in over[0].error.message
    )
    assert all(a.outcome == gateway_pb2.IngestOutcome.INGEST_OUTCOME_FAILED for a in acks)
