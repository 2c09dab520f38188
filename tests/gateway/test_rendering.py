"""A search answer is serialized once per cached page; each hit appends its own arm and search_id to
those bytes. Protobuf parses concatenated messages as one merged message, so what a client decodes
must equal the whole message the servicer would have built."""

from __future__ import annotations

from dataclasses import replace

from imagesearch.v1 import gateway_pb2

from services.common.interceptors import _encoding
from services.gateway import convert
from services.gateway.domain import Asset, ModelRef, SearchPage, SearchResult, StageScores
from services.gateway.server import GatewayServicer


def _page() -> SearchPage:
    results = [
        SearchResult(Asset(f"a{i}", tenant="acme", caption=f"caption {i}", tags=["x", "y"]), StageScores())
        for i in range(3)
    ]
    return SearchPage(results, next_page_token="tok", degraded_reasons=["vector"], cached=True,
                      model=ModelRef("photo", "0.3.0"))  # fmt: skip


def _whole(page: SearchPage) -> gateway_pb2.SearchResponse:
    return gateway_pb2.SearchResponse(
        results=[convert.result_pb(r) for r in page.results],
        next_page_token=page.next_page_token,
        degraded=page.degraded,
        degraded_reasons=page.degraded_reasons,
        cached=page.cached,
        model=convert.model_ref_pb(page.model),
        arm=page.arm,
        search_id=page.search_id,
    )


def test_each_hit_decodes_as_the_whole_message_with_its_own_names() -> None:
    cached = _page()
    renders = []

    def render() -> gateway_pb2.SearchResponse:
        renders.append(1)
        return _whole(cached)  # the cached page has no arm or search_id

    for arm, search_id in (("control", "k.n1.s1"), ("treatment", "k.n2.s2"), ("", "")):
        # the gateway hands out copies of the cached page that share its renderings
        hit = replace(cached, arm=arm, search_id=search_id, rendered=cached.rendered)
        wire = GatewayServicer._named(gateway_pb2.SearchResponse, hit, render)
        decoded = gateway_pb2.SearchResponse.FromString(wire)
        assert decoded == _whole(hit)
        assert (decoded.arm, decoded.search_id) == (arm, search_id)
        assert len(decoded.results) == 3 and decoded.results[0].asset.caption == "caption 0"
    assert len(renders) == 1  # serialized once for the page, not per hit


def test_the_response_serializer_sends_serialized_bytes_as_they_are() -> None:
    serialize = _encoding(gateway_pb2.SearchResponse.SerializeToString)
    assert serialize is not None
    message = gateway_pb2.SearchResponse(arm="control", next_page_token="t")
    assert serialize(message) == message.SerializeToString()
    assert serialize(b"\x12\x01t") == b"\x12\x01t"
    assert _encoding(None) is None
