"""The hostile corpus against the running gateway (issue 17 item 6): see tests/hostile/__init__.py."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from imagesearch.v1 import gateway_pb2, search_pb2

from tests.gateway.suite import Suite
from tests.hostile import corpus
from tests.hostile.corpus import CASES, LAST_CASES, Case, assert_no_leak

GATEWAY = "/imagesearch.v1.GatewayService/"
# Status codes that are never the answer to a client's mistake.
IMPRECISE = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL}


class Ledger:
    """What the corpus's Ingest calls were acknowledged (acme's tenant)."""

    def __init__(self) -> None:
        self.created: set[str] = set()
        self.failed: set[str] = set()


@pytest.fixture(scope="module")
def ledger() -> Ledger:
    return Ledger()


@pytest.fixture(scope="module")
def gateway_channel(hostile_suite: Suite) -> Iterator[grpc.Channel]:
    assert hostile_suite.gateway is not None
    yield hostile_suite.channel(hostile_suite.gateway.address)


def _raw_unary(channel: grpc.Channel, method: str, response: Any) -> Any:
    return channel.unary_unary(
        GATEWAY + method, request_serializer=None, response_deserializer=response.FromString
    )


RESPONSES = {
    "Search": gateway_pb2.SearchResponse,
    "SearchSimilar": gateway_pb2.SearchSimilarResponse,
    "GetAsset": gateway_pb2.GetAssetResponse,
    "DeleteAsset": gateway_pb2.DeleteAssetResponse,
}


def run(channel: grpc.Channel, case: Case) -> tuple[grpc.StatusCode, str, Any]:
    """(status, details, response or list of acks) of one case."""
    stub_call: Any
    md = list(case.md)
    raw = case.rpc.startswith("raw:")
    method = case.rpc.removeprefix("raw:")
    if method == "Ingest":
        stub_call = channel.stream_stream(
            GATEWAY + "Ingest",
            request_serializer=None if raw else gateway_pb2.IngestRequest.SerializeToString,
            response_deserializer=gateway_pb2.IngestResponse.FromString,
        )
        acks: list[gateway_pb2.IngestResponse] = []
        try:
            for ack in stub_call(iter(case.request), metadata=md, timeout=120):
                acks.append(ack)
        except grpc.RpcError as err:
            return err.code(), err.details() or "", acks
        return grpc.StatusCode.OK, "", acks
    if raw:
        stub_call = _raw_unary(channel, method, RESPONSES[method])
    else:
        stub_call = channel.unary_unary(
            GATEWAY + method,
            request_serializer=type(case.request).SerializeToString,
            response_deserializer=RESPONSES[method].FromString,
        )
    try:
        return grpc.StatusCode.OK, "", stub_call(case.request, metadata=md, timeout=60)
    except grpc.RpcError as err:
        return err.code(), err.details() or "", None


def _param(case: Case) -> Any:
    marks = [pytest.mark.xfail(strict=True, reason=case.xfail)] if case.xfail else []
    return pytest.param(case, id=case.id, marks=marks)


def test_the_corpus_is_large_and_covers_every_family() -> None:
    families = Counter(c.family for c in CASES + LAST_CASES)
    assert set(families) == {"images", "texts", "numbers", "filters", "auth", "streams"}, families
    assert len(CASES) >= 200, families
    assert len({c.id for c in CASES + LAST_CASES}) == len(CASES + LAST_CASES), "case ids must be unique"


@pytest.mark.parametrize("case", [_param(c) for c in CASES])
def test_case(case: Case, gateway_channel: grpc.Channel, ledger: Ledger) -> None:
    check_case(case, gateway_channel, ledger)


def check_case(case: Case, gateway_channel: grpc.Channel, ledger: Ledger) -> None:
    start = time.perf_counter()
    code, details, response = run(gateway_channel, case)
    elapsed = time.perf_counter() - start
    assert elapsed < case.max_s, f"answered {code.name} after {elapsed:.1f} s"
    assert code not in IMPRECISE, f"{code.name}: {details}"
    assert (
        code in case.codes
    ), f"got {code.name} ({details!r}), expected one of {[c.name for c in case.codes]}"
    assert_no_leak(details, "status details")
    if case.rpc.endswith("Ingest"):
        acks: list[gateway_pb2.IngestResponse] = response
        for ack in acks:
            if ack.outcome == corpus.CREATED:
                ledger.created.add(ack.asset_id)
            if ack.outcome == corpus.FAILED:
                ledger.failed.add(ack.asset_id)
                assert ack.error.code not in (0, 2, 13), (ack.asset_id, ack.error.code, ack.error.message)
                assert ack.error.message, ack.asset_id
                assert_no_leak(ack.error.message, f"item {ack.asset_id!r}")
        if code == grpc.StatusCode.OK:
            got = Counter((a.asset_id, a.outcome) for a in acks)
            want = Counter((i.asset_id, i.outcome) for i in case.items)
            named = lambda c: {(i, gateway_pb2.IngestOutcome.Name(o)): n for (i, o), n in c.items()}  # noqa: E731
            assert got == want, (named(got), [(a.asset_id, a.error.message) for a in acks if a.error.message])
            codes = {i.asset_id: i.codes for i in case.items if i.codes}
            for ack in acks:
                if ack.outcome == corpus.FAILED and ack.asset_id in codes:
                    assert ack.error.code in codes[ack.asset_id], (
                        ack.asset_id,
                        ack.error.code,
                        ack.error.message,
                    )
        return
    if code == grpc.StatusCode.OK:
        for reason in getattr(response, "degraded_reasons", ()):
            assert_no_leak(reason, "degraded reason")
        if case.check is not None:
            case.check(response)


# ---- after the corpus: the suite still serves, and stores exactly what was acknowledged ------------------


def test_a_normal_search_still_works(hostile_suite: Suite) -> None:
    gw = hostile_suite.gateway_stub()
    resp = gw.Search(
        gateway_pb2.SearchRequest(
            text="seed picture number",
            page_size=50,
            filter=corpus.cond("tags", "any", ["seed"]),
            # the seeds are noise pictures, near-duplicates to the model: keep them all
            rerank=gateway_pb2.RerankOptions(duplicate_threshold=1.0),
        ),
        metadata=corpus.ALICE,
        timeout=30,
    )
    assert not resp.degraded, resp.degraded_reasons
    assert {r.asset.asset_id for r in resp.results} == {s.asset_id for s in corpus.SEEDS}
    similar = gw.SearchSimilar(
        gateway_pb2.SearchSimilarRequest(asset_id="seed-0"), metadata=corpus.ALICE, timeout=30
    )
    assert similar.results
    got = gw.GetAsset(gateway_pb2.GetAssetRequest(asset_id="seed-1"), metadata=corpus.ALICE, timeout=30).asset
    assert (got.caption, list(got.tags), got.tenant) == ("seed picture number 1", ["seed"], "acme")


def test_stored_is_exactly_what_was_acknowledged(hostile_suite: Suite, ledger: Ledger) -> None:
    ran = [c for c in CASES if c.rpc.endswith("Ingest")]
    assert ledger.created, "the corpus's Ingest cases did not run before this test"
    search = hostile_suite.search_stub()
    seeds = {s.asset_id for s in corpus.SEEDS}
    expected = seeds | ledger.created
    count = search.GetStats(search_pb2.GetStatsRequest(tenant="acme"), timeout=30).asset_count
    assert count == len(expected), (count, len(expected))
    asked = sorted(expected | ledger.failed | {i.asset_id for c in ran for i in c.items})
    asked = [a for a in asked if 1 <= len(a) <= 256]
    stored = search.GetAssets(search_pb2.GetAssetsRequest(tenant="acme", asset_ids=asked), timeout=30).assets
    assert {a.asset.asset_id for a in stored} == expected
    assert not (ledger.failed - ledger.created) & {
        a.asset.asset_id for a in stored
    }, "a FAILED item was stored"
    # globex still holds exactly its secret; acme's copy of its bytes is acme's own.
    assert search.GetStats(search_pb2.GetStatsRequest(tenant="globex"), timeout=30).asset_count == 1
    for a in stored:
        assert a.asset.tenant == "acme" and len(a.asset.content_sha256) == 64, a.asset.asset_id
        assert a.asset.width > 0 and a.asset.height > 0, a.asset.asset_id


# ---- last: cases that may leave a service busy ---------------------------------------------------------


@pytest.fixture
def serving_again(hostile_suite: Suite) -> Iterator[None]:
    """After the case: wait (up to 120 s) until a plain search is answered again."""
    yield
    gw = hostile_suite.gateway_stub()
    deadline = time.monotonic() + 120
    while True:
        try:
            gw.Search(gateway_pb2.SearchRequest(text="seed"), metadata=corpus.ALICE, timeout=5)
            return
        except grpc.RpcError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


@pytest.mark.parametrize("case", [_param(c) for c in LAST_CASES])
def test_last_case(case: Case, gateway_channel: grpc.Channel, serving_again: None) -> None:
    check_case(case, gateway_channel, Ledger())
