"""The Redis rate limiter against the real Redis of the local stack (devstack): two limiter instances
(two gateway replicas) share one bucket on Redis's clock; with Redis unreachable the limiter fails open
and reports itself unhealthy, and enforces again once Redis answers.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator

import pytest

from devstack import Stack, StackInfo
from services.gateway.ratelimit import Bucket, Limits, Rate, RateLimited, RateLimits, RedisLimiter
from tests.service_process import REPO_ROOT, free_port


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


def _prefix() -> str:
    return f"test-ratelimit:{uuid.uuid4().hex}:"


@pytest.mark.integration
def test_two_replicas_share_one_bucket(redis_url: str) -> None:
    prefix = _prefix()
    a = RedisLimiter(redis_url, prefix, 1.0, 1.0)
    b = RedisLimiter(redis_url, prefix, 1.0, 1.0)
    bucket = [Bucket("search:t:acme", Rate(per_second=0.5, burst=4))]

    async def go() -> None:
        try:
            results = [await (a if i % 2 else b).acquire(bucket) for i in range(6)]
            assert [r.allowed for r in results] == [True] * 4 + [False] * 2
            assert 1.9 < results[-1].retry_after_s <= 2.0  # one token at 0.5/s, on Redis's clock
            assert results[-1].denied == 0
            assert await a.healthy()
        finally:
            await a.close()
            await b.close()

    asyncio.run(go())


@pytest.mark.integration
def test_tenant_and_caller_buckets_are_taken_together(redis_url: str) -> None:
    prefix = _prefix()
    gates = [
        RateLimits(
            RedisLimiter(redis_url, prefix, 1.0, 1.0),
            Limits(search_tenant=Rate(0.01, 3), search_caller=Rate(0.01, 2)),
        )
        for _ in range(2)
    ]

    async def go() -> None:
        try:
            await gates[0].search("acme", "alice")
            await gates[1].search("acme", "alice")
            with pytest.raises(RateLimited, match="for caller 'alice' of tenant 'acme'"):
                await gates[0].search("acme", "alice")
            await gates[1].search("acme", "bob")  # the tenant's third token (alice's refusal took none)
            with pytest.raises(RateLimited, match="for tenant 'acme' exceeded; retry after"):
                await gates[0].search("acme", "carol")
        finally:
            for g in gates:
                await g.limiter.close()

    asyncio.run(go())


@pytest.mark.integration
def test_buckets_expire_once_full_again(redis_url: str) -> None:
    import redis

    prefix = _prefix()
    lim = RedisLimiter(redis_url, prefix, 1.0, 1.0)

    async def go() -> None:
        try:
            assert (await lim.acquire([Bucket("k", Rate(per_second=2, burst=4))])).allowed
        finally:
            await lim.close()

    asyncio.run(go())
    ttl_ms = redis.Redis.from_url(redis_url).pttl(prefix + "k")
    assert 0 < ttl_ms <= 3000  # full after 2 s, plus 1 s


def test_redis_down_fails_open_and_reports_unhealthy() -> None:
    lim = RedisLimiter(f"redis://127.0.0.1:{free_port()}/0", _prefix(), 0.2, 60.0)
    bucket = [Bucket("k", Rate(per_second=0.001, burst=1))]

    async def go() -> None:
        try:
            for _ in range(5):  # far over the limit: let through
                assert (await lim.acquire(bucket)).allowed
            assert not await lim.healthy()
        finally:
            await lim.close()

    asyncio.run(go())
