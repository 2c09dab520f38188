"""Rate limits: the token-bucket arithmetic on a fake clock, the in-process limiter, the gate's
messages, and the real gateway process answering RESOURCE_EXHAUSTED with `retry-after-ms`.

The Redis limiter (shared buckets, fail open) is tested in test_ratelimit_redis.py.
"""

from __future__ import annotations

import asyncio
import json

import grpc
import pytest
from imagesearch.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc
from prometheus_client import REGISTRY

from services.common.errors import status_number
from services.gateway.ratelimit import (
    RETRY_AFTER_HEADER,
    Bucket,
    Limits,
    MemoryLimiter,
    Rate,
    RateLimited,
    RateLimits,
    RedisLimiter,
    refill,
    settle,
)
from services.gateway.server import limits_from_settings
from services.gateway.settings import GatewaySettings
from tests.gateway.suite import KEYRING
from tests.service_process import ServiceProcess, free_port


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


# ---- arithmetic ----------------------------------------------------------------------------------


def test_a_new_bucket_is_full_and_refills_at_its_rate_up_to_its_burst() -> None:
    r = Rate(per_second=4, burst=10)
    assert refill(None, None, 5.0, r) == 10
    assert refill(0.0, 5.0, 5.25, r) == pytest.approx(1.0)
    assert refill(0.0, 5.0, 100.0, r) == 10  # never above burst
    assert refill(3.0, 5.0, 4.0, r) == 3.0  # a clock that went back adds nothing


def test_settle_is_all_or_nothing_and_names_the_longest_wait() -> None:
    fast, slow = Rate(10, 10), Rate(2, 5)
    assert settle([1.0, 1.0], [fast, slow], 1).allowed
    d = settle([0.5, 0.0], [fast, slow], 1)
    assert not d.allowed and d.denied == 1 and d.retry_after_s == pytest.approx(0.5)
    d = settle([0.0, 5.0], [fast, slow], 1)
    assert d.denied == 0 and d.retry_after_s == pytest.approx(0.1)


def test_rate_from_settings() -> None:
    assert Rate.of(0, 100) is None
    assert Rate.of(5, 0) == Rate(5, 5)
    assert Rate.of(0.2, 0) == Rate(0.2, 1)  # at least one call
    assert Rate.of(5, 20) == Rate(5, 20)
    s = GatewaySettings()
    assert limits_from_settings(s) == Limits()  # off by default


def test_memory_limiter_burst_then_rate_on_a_fake_clock() -> None:
    clock = FakeClock()
    lim = MemoryLimiter(clock=clock)
    b = [Bucket("k", Rate(per_second=4, burst=2))]

    async def go() -> None:
        assert (await lim.acquire(b)).allowed
        assert (await lim.acquire(b)).allowed
        d = await lim.acquire(b)
        assert not d.allowed and d.retry_after_s == pytest.approx(0.25)
        clock.now += 0.25
        assert (await lim.acquire(b)).allowed
        assert not (await lim.acquire(b)).allowed
        clock.now += 10  # refills to the burst, not beyond
        assert (await lim.acquire(b)).allowed
        assert (await lim.acquire(b)).allowed
        assert not (await lim.acquire(b)).allowed

    run(go())


def test_memory_limiter_takes_nothing_when_one_bucket_refuses() -> None:
    clock = FakeClock()
    lim = MemoryLimiter(clock=clock)
    tenant, caller = Bucket("t", Rate(1, 1)), Bucket("c", Rate(100, 100))

    async def go() -> None:
        assert (await lim.acquire([tenant, caller])).allowed
        d = await lim.acquire([tenant, caller])
        assert not d.allowed and d.denied == 0
        # the refused call took nothing from the caller's bucket: 99 remain, not 98
        for _ in range(99):
            assert (await lim.acquire([caller])).allowed
        assert not (await lim.acquire([caller])).allowed

    run(go())


def test_the_gate_says_whose_limit_how_much_and_when_to_retry() -> None:
    clock = FakeClock()
    gate = RateLimits(
        MemoryLimiter(clock=clock),
        Limits(search_tenant=Rate(4, 1), search_caller=Rate(100, 100), ingest_caller=Rate(2, 1)),
    )

    def refused(kind: str, scope: str) -> float:
        return REGISTRY.get_sample_value("gateway_rate_limited_total", {"kind": kind, "scope": scope}) or 0.0

    before = refused("search", "tenant")

    async def go() -> None:
        await gate.search("acme", "alice")
        with pytest.raises(RateLimited) as e:
            await gate.search("acme", "bob")  # the tenant's bucket is shared by its callers
        assert e.value.message == (
            "rate limit of 4 searches/s (burst 1) for tenant 'acme' exceeded; retry after 0.25 s"
        )
        assert e.value.code is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert e.value.trailing_metadata == ((RETRY_AFTER_HEADER, "250"),)
        await gate.search("globex", "gus")  # another tenant has its own bucket
        await gate.ingest_item("acme", "alice")  # ingest is counted apart from searches
        with pytest.raises(RateLimited, match="2 ingest items/s .* caller 'alice' of tenant 'acme'"):
            await gate.ingest_item("acme", "alice")
        await gate.ingest_item("acme", "bob")
        clock.now += 0.5
        await gate.ingest_item("acme", "alice")

    run(go())
    assert refused("search", "tenant") == before + 1


def test_unlimited_by_default_never_asks_the_limiter() -> None:
    # A Redis limiter on a port where nothing listens would fail open anyway; with no limits
    # configured it is not even called.
    gate = RateLimits(RedisLimiter(f"redis://127.0.0.1:{free_port()}/0", "t:", 0.1, 1.0), Limits())

    async def go() -> None:
        for _ in range(100):
            await gate.search("acme", "alice")
            await gate.ingest_item("acme", "alice")
        await gate.limiter.close()

    run(go())


# ---- through the real gateway process -------------------------------------------------------------


@pytest.fixture(scope="module")
def limited_gateway():  # type: ignore[no-untyped-def]
    """The gateway process with tight in-process limits. Its backends are absent (nothing listens on
    their ports): a call the limiter admits fails UNAVAILABLE, one it refuses is RESOURCE_EXHAUSTED,
    which is all these tests tell apart."""
    env = {
        "IMAGESEARCH_GATEWAY_ENCODER_ADDRESS": f"127.0.0.1:{free_port()}",
        "IMAGESEARCH_GATEWAY_SEARCH_ADDRESS": f"127.0.0.1:{free_port()}",
        "IMAGESEARCH_GATEWAY_API_KEYS_JSON": json.dumps(KEYRING),
        "IMAGESEARCH_GATEWAY_SAFETY_ENABLED": "false",
        "IMAGESEARCH_GATEWAY_OCR_ENABLED": "false",
        "IMAGESEARCH_GATEWAY_RETRY_ATTEMPTS": "1",
        "IMAGESEARCH_GATEWAY_SEARCH_RATE_PER_CALLER": "0.01",
        "IMAGESEARCH_GATEWAY_SEARCH_BURST_PER_CALLER": "2",
        "IMAGESEARCH_GATEWAY_INGEST_RATE_PER_TENANT": "0.01",
        "IMAGESEARCH_GATEWAY_INGEST_BURST_PER_TENANT": "3",
    }
    proc = ServiceProcess("services.gateway", env, wait_serving=False).start(timeout_s=120)
    channel = grpc.insecure_channel(proc.address)
    try:
        yield gateway_pb2_grpc.GatewayServiceStub(channel)
    finally:
        channel.close()
        proc.stop()


def test_searches_over_the_callers_limit_are_resource_exhausted_with_retry_after(limited_gateway) -> None:  # type: ignore[no-untyped-def]
    md = [("authorization", "Bearer acme-reader")]
    codes = []
    for _ in range(2):
        with pytest.raises(grpc.RpcError) as e:
            limited_gateway.Search(gateway_pb2.SearchRequest(text="red car"), metadata=md, timeout=10)
        codes.append(e.value.code())
    assert grpc.StatusCode.RESOURCE_EXHAUSTED not in codes  # the burst is admitted (and finds no backend)
    with pytest.raises(grpc.RpcError) as e:
        limited_gateway.SearchSimilar(gateway_pb2.SearchSimilarRequest(asset_id="a"), metadata=md, timeout=10)
    err = e.value
    assert err.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert (
        "rate limit of 0.01 searches/s (burst 2) for caller 'reader' of tenant 'acme' exceeded"
        in err.details()
    )
    trailing = dict(err.trailing_metadata())
    assert 99_000 < int(trailing[RETRY_AFTER_HEADER]) <= 100_000  # one token at 0.01/s
    assert trailing.get("x-request-id")  # the request id still goes out with it
    # another caller of the same tenant has a bucket of its own
    with pytest.raises(grpc.RpcError) as e:
        limited_gateway.Search(
            gateway_pb2.SearchRequest(text="x"), metadata=[("authorization", "Bearer acme-alice")], timeout=10
        )
    assert e.value.code() is not grpc.StatusCode.RESOURCE_EXHAUSTED


def test_an_ingest_item_over_the_limit_fails_that_item_not_the_stream(limited_gateway) -> None:  # type: ignore[no-untyped-def]
    reqs = [
        gateway_pb2.IngestRequest(
            asset_id=f"a{i}", image=b"not an image", license=common_pb2.License(name="MIT")
        )
        for i in range(5)
    ]
    acks = list(
        limited_gateway.Ingest(iter(reqs), metadata=[("authorization", "Bearer globex-gus")], timeout=60)
    )
    assert sorted(a.asset_id for a in acks) == [f"a{i}" for i in range(5)]
    limited = [a for a in acks if a.error.code == status_number(grpc.StatusCode.RESOURCE_EXHAUSTED)]
    assert len(limited) == 2  # burst 3 of 5
    assert all(a.outcome == gateway_pb2.IngestOutcome.INGEST_OUTCOME_FAILED for a in acks)
    assert "ingest items/s (burst 3) for tenant 'globex' exceeded; retry after" in limited[0].error.message
