"""End to end: the real encoder, search and gateway processes, on embedded defaults and on the real
stack (Triton, Weaviate, Redis), over an ingested open-data sample.

Asserted here: every search mode finds the expected assets; rerank is applied and explained; policy
(authentication, roles, tenant isolation through search / more-like-this / get / the cache, licences,
expiry, safety); ingest is idempotent on retry; encoder loss degrades text search to keyword-only.
"""

from __future__ import annotations

import datetime as dt
import io
import itertools
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from imagesearch.v1 import common_pb2, encoder_pb2, encoder_pb2_grpc, gateway_pb2, search_pb2
from PIL import Image, ImageDraw, ImageFont

from services.gateway.auth import sign_token
from tests.gateway.suite import (
    ACME_LICENSES,
    TOKEN_SECRET,
    SampleItem,
    Suite,
    missing_prerequisites,
    open_data_sample,
)

FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf")
ALICE = [("authorization", "Bearer acme-alice")]
READER = [("authorization", "Bearer acme-reader")]
URSULA = [("authorization", "Bearer acme-ursula")]
GUS = [("authorization", "Bearer globex-gus")]
OUT = gateway_pb2.IngestOutcome


def ts(when: dt.datetime) -> Timestamp:
    t = Timestamp()
    t.FromDatetime(when.astimezone(dt.UTC).replace(tzinfo=None))
    return t


def request(item: SampleItem, **over: Any) -> gateway_pb2.IngestRequest:
    fields: dict[str, Any] = {
        "asset_id": item.asset_id,
        "image": item.data,
        "caption": item.caption,
        "tags": [item.group, item.source],
        "license": common_pb2.License(name=item.license),
        "source": item.source,
        "uri": f"file://{item.path}",
    }
    fields.update(over)
    return gateway_pb2.IngestRequest(**fields)


def text_image(text: str) -> bytes:
    img = Image.new("RGB", (480, 160), "white")
    font = ImageFont.truetype(str(FONT), 56) if FONT.exists() else ImageFont.load_default(size=56)
    ImageDraw.Draw(img).text((20, 50), text, fill="black", font=font)
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def resized_jpeg(data: bytes) -> bytes:
    img = Image.open(io.BytesIO(data)).convert("RGB")
    img = img.resize((int(img.width * 0.9), int(img.height * 0.9)))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=92)
    return buf.getvalue()


def ingest(stub: Any, requests: list[gateway_pb2.IngestRequest], md: Any = ALICE) -> dict[str, Any]:
    acks = {a.asset_id: a for a in stub.Ingest(iter(requests), metadata=md, timeout=300)}
    assert len(acks) == len({r.asset_id for r in requests})
    return acks


def search(stub: Any, md: Any = ALICE, **kw: Any) -> Any:
    rerank = kw.pop("rerank", None)
    req = gateway_pb2.SearchRequest(**kw)
    if rerank is not None:
        req.rerank.CopyFrom(rerank)
    return stub.Search(req, metadata=md, timeout=30)


def ids(resp: Any) -> list[str]:
    return [r.asset.asset_id for r in resp.results]


# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=["embedded", pytest.param("stack", marks=pytest.mark.integration)])
def suite(request: pytest.FixtureRequest, suite_certs: Path) -> Iterator[Suite]:
    why = missing_prerequisites()
    if why:
        pytest.skip(why)
    stack = request.getfixturevalue("stack") if request.param == "stack" else None
    # internal hops over mutual TLS, as `make run` runs them
    s = Suite(request.param, stack, tls_dir=suite_certs).start()
    try:
        yield s
    finally:
        s.stop()


class World:
    def __init__(self, suite: Suite) -> None:
        self.suite = suite
        self.gw = suite.gateway_stub()
        self.sample = open_data_sample()
        self.allowed = [i for i in self.sample if i.license in ACME_LICENSES]
        self.first_acks: dict[str, Any] = {}


@pytest.fixture(scope="module")
def world(suite: Suite) -> World:
    w = World(suite)
    now = dt.datetime.now(dt.UTC)
    reqs = [request(i) for i in w.sample]
    base = w.allowed[0]
    reqs += [
        request(base, asset_id="near-dup", image=resized_jpeg(base.data), caption=base.caption),
        gateway_pb2.IngestRequest(
            asset_id="sign-exit",
            image=text_image("EXIT 42"),
            caption="a white board",
            license=common_pb2.License(name="MIT"),
        ),
        request(
            w.allowed[1],
            asset_id="expired-copy",
            image=resized_jpeg(w.allowed[1].data),
            license=common_pb2.License(name="MIT", expires_at=ts(now - dt.timedelta(days=1))),
        ),
    ]
    w.first_acks = ingest(w.gw, reqs)
    secret = gateway_pb2.IngestRequest(
        asset_id="globex-secret",
        image=text_image("ZEPHYR"),
        caption="zephyrine blueprint",
        license=common_pb2.License(name="MIT"),
    )
    assert ingest(w.gw, [secret], md=GUS)["globex-secret"].outcome == OUT.INGEST_OUTCOME_CREATED
    return w


# --- ingest ---------------------------------------------------------------------------------------


def test_ingest_acknowledges_every_item(world: World) -> None:
    acks = world.first_acks
    assert {a.outcome for a in acks.values()} == {OUT.INGEST_OUTCOME_CREATED}, {
        k: (a.outcome, a.error.message) for k, a in acks.items() if a.outcome != OUT.INGEST_OUTCOME_CREATED
    }
    assert all(len(a.content_sha256) == 64 for a in acks.values())
    assert "EXIT" in acks["sign-exit"].ocr_text.upper()
    stored = world.gw.GetAsset(
        gateway_pb2.GetAssetRequest(asset_id=world.allowed[0].asset_id), metadata=ALICE
    )
    assert stored.asset.tenant == "acme" and stored.asset.width > 0 and stored.asset.embedding_model.name


def test_ingest_retries_create_no_duplicates(world: World) -> None:
    count = world.suite.search_stub().GetStats(search_pb2.GetStatsRequest(tenant="acme")).asset_count
    again = ingest(world.gw, [request(i) for i in world.sample])
    assert {a.outcome for a in again.values()} == {OUT.INGEST_OUTCOME_UNCHANGED}
    # a stream cut off by the client, then re-sent whole
    call = world.gw.Ingest(iter([request(i) for i in world.sample[:10]]), metadata=ALICE, timeout=60)
    next(call)
    call.cancel()
    again = ingest(world.gw, [request(i) for i in world.sample[:10]])
    assert {a.outcome for a in again.values()} == {OUT.INGEST_OUTCOME_UNCHANGED}
    item = world.allowed[2]
    dup = ingest(world.gw, [request(item, asset_id="same-bytes-new-id")])["same-bytes-new-id"]
    assert dup.outcome == OUT.INGEST_OUTCOME_DUPLICATE and dup.duplicate_of == item.asset_id
    assert world.suite.search_stub().GetStats(search_pb2.GetStatsRequest(tenant="acme")).asset_count == count
    bad = ingest(
        world.gw, [gateway_pb2.IngestRequest(asset_id="bad", image=b"nope", license={"name": "MIT"})]
    )
    assert bad["bad"].outcome == OUT.INGEST_OUTCOME_FAILED and bad["bad"].error.code == 3


def test_a_duplicate_never_names_an_asset_the_caller_cannot_see(world: World) -> None:
    hidden = next(i for i in world.sample if i.license not in ACME_LICENSES)  # stored, not allowed
    with pytest.raises(grpc.RpcError) as err:
        world.gw.GetAsset(gateway_pb2.GetAssetRequest(asset_id=hidden.asset_id), metadata=ALICE)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    own = request(hidden, asset_id="own-copy", license=common_pb2.License(name="MIT"))
    ack = ingest(world.gw, [own])["own-copy"]
    assert ack.outcome == OUT.INGEST_OUTCOME_CREATED and ack.duplicate_of == ""
    again = ingest(world.gw, [request(hidden, asset_id="own-copy-2", license=common_pb2.License(name="MIT"))])
    assert again["own-copy-2"].duplicate_of == "own-copy"


def test_an_out_of_range_field_fails_only_its_item(world: World) -> None:
    def item(asset_id: str, text: str, **kw: Any) -> gateway_pb2.IngestRequest:
        return gateway_pb2.IngestRequest(
            asset_id=asset_id, image=text_image(text), caption=text.lower(), **kw
        )

    far = common_pb2.License(name="MIT", expires_at=Timestamp(seconds=253402300800))
    stream = [
        item("w4-ok-1", "ALPHA 11", license=common_pb2.License(name="MIT")),
        item("w4-far-expiry", "BETA 12", license=far),
        item("w5-nan", "GAMMA 13", license=common_pb2.License(name="MIT"), popularity=float("nan")),
        item("w5-negative", "DELTA 14", license=common_pb2.License(name="MIT"), popularity=-2.0),
        item("w4-ok-2", "EPSILON 15", license=common_pb2.License(name="MIT")),
    ]
    acks = ingest(world.gw, stream)  # every item acknowledged: the stream survives the bad ones
    assert acks["w4-ok-1"].outcome == acks["w4-ok-2"].outcome == OUT.INGEST_OUTCOME_CREATED
    for bad in ("w4-far-expiry", "w5-nan", "w5-negative"):
        assert acks[bad].outcome == OUT.INGEST_OUTCOME_FAILED and acks[bad].error.code == 3, bad
        with pytest.raises(grpc.RpcError) as err:
            world.gw.GetAsset(gateway_pb2.GetAssetRequest(asset_id=bad), metadata=ALICE)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND


# --- search modes ---------------------------------------------------------------------------------


def test_text_search_finds_the_captioned_assets(world: World) -> None:
    groups = sorted({i.group for i in world.allowed if i.source == "fluent3d"})
    for group in groups[:6]:
        expected = {i.asset_id for i in world.allowed if i.group == group}
        caption = next(i.caption for i in world.allowed if i.group == group)
        resp = search(world.gw, text=caption, page_size=10)
        assert expected & set(ids(resp)[:5]), (caption, ids(resp))
        top = resp.results[0]
        assert top.scores.first_stage_rank >= 1 and top.scores.text_cosine != 0
        assert top.policy.reasons[0] == "tenant acme" and resp.model.name


def test_ocr_text_is_keyword_searchable(world: World) -> None:
    assert "sign-exit" in ids(search(world.gw, text="exit", page_size=5))


def test_image_search_finds_the_image(world: World) -> None:
    for item in world.allowed[3:8]:
        resp = search(world.gw, image=item.data, page_size=5)
        assert ids(resp)[0] == item.asset_id, (item.asset_id, ids(resp))
        assert resp.results[0].scores.image_cosine > 0.99


def test_text_and_image_search(world: World) -> None:
    item = world.allowed[4]
    resp = search(world.gw, text=item.caption, image=item.data, page_size=5)
    assert ids(resp)[0] == item.asset_id
    top = resp.results[0].scores
    assert top.text_cosine != 0 and top.image_cosine > 0.99


def test_more_like_this(world: World) -> None:
    fluent = [i for i in world.allowed if i.source == "fluent3d"][:5]
    for item in fluent:
        resp = world.gw.SearchSimilar(
            gateway_pb2.SearchSimilarRequest(asset_id=item.asset_id), metadata=ALICE
        )
        siblings = {
            i.asset_id for i in world.allowed if i.group == item.group and i.asset_id != item.asset_id
        }
        assert item.asset_id not in ids(resp)
        assert siblings & set(ids(resp)[:5]), (item.asset_id, ids(resp))


def test_each_search_names_the_vector_it_searched(world: World) -> None:
    """Text searches "semantic"; an example image and more-like-this search "visual" when the model
    stores one (the encoder's model decides: a one-vector model has only "semantic")."""
    stats = world.suite.search_stub().GetStats(search_pb2.GetStatsRequest(tenant="acme"))
    stored = {v.name for v in stats.vectors}
    assert "semantic" in stored and [v.name for v in stats.vectors if v.primary] == ["semantic"]
    for_images = "visual" if "visual" in stored else "semantic"
    item = world.allowed[3]
    by_image = search(world.gw, image=item.data, page_size=5)
    assert ids(by_image)[0] == item.asset_id
    assert {r.scores.vector_name for r in by_image.results} == {for_images}
    by_text = search(world.gw, text=item.caption, page_size=5)
    assert {r.scores.vector_name for r in by_text.results} == {"semantic"}
    both = search(world.gw, text=item.caption, image=item.data, page_size=5)
    assert {r.scores.vector_name for r in both.results} == {"semantic"}
    similar = world.gw.SearchSimilar(gateway_pb2.SearchSimilarRequest(asset_id=item.asset_id), metadata=ALICE)
    assert similar.results and {r.scores.vector_name for r in similar.results} == {for_images}


def test_pagination_walks_the_window_once(world: World) -> None:
    seen: list[str] = []
    token = ""
    for _ in range(20):
        resp = search(world.gw, text="flag", page_size=7, page_token=token)
        seen += ids(resp)
        token = resp.next_page_token
        if not token:
            break
    assert len(seen) == len(set(seen)) > 7
    with pytest.raises(grpc.RpcError) as err:
        search(
            world.gw,
            text="keycap",
            page_size=7,
            page_token=search(world.gw, text="flag", page_size=7).next_page_token,
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_repeat_is_cached_and_a_write_is_visible_to_the_next_search(world: World) -> None:
    first = search(world.gw, text="a purple octopus", page_size=5)
    again = search(world.gw, text="a purple octopus", page_size=5)
    assert again.cached and [r.asset.asset_id for r in again.results] == [
        r.asset.asset_id for r in first.results
    ]
    # Ingest and delete both advance the tenant's index generation: no stale page survives either.
    new = gateway_pb2.IngestRequest(
        asset_id="octopus-quokka",
        image=text_image("QUOKKA 7"),
        caption="a purple octopus quokka",
        license=common_pb2.License(name="MIT"),
    )
    assert ingest(world.gw, [new])["octopus-quokka"].outcome == OUT.INGEST_OUTCOME_CREATED
    after = search(world.gw, text="quokka", alpha=0.0, page_size=5)  # keyword-only: exact expectation
    assert not after.cached and ids(after) == ["octopus-quokka"]
    assert search(world.gw, text="quokka", alpha=0.0, page_size=5).cached
    world.gw.DeleteAsset(gateway_pb2.DeleteAssetRequest(asset_id="octopus-quokka"), metadata=ALICE)
    gone = search(world.gw, text="quokka", alpha=0.0, page_size=5)
    assert not gone.cached and ids(gone) == []


def test_an_empty_filter_gets_the_search_services_answer_at_the_gateway(world: World) -> None:
    empty = common_pb2.Filter()
    with pytest.raises(grpc.RpcError) as direct:
        world.suite.search_stub().Query(search_pb2.QueryRequest(tenant="acme", text="flag", filter=empty))
    with pytest.raises(grpc.RpcError) as err:
        search(world.gw, text="flag", filter=empty)
    assert err.value.code() == direct.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "has none of condition, all_of, any_of, negate" in err.value.details()
    unknown = common_pb2.Filter(condition=common_pb2.Condition(field="tags", operator=99))
    with pytest.raises(grpc.RpcError) as err:
        search(world.gw, text="flag", filter=unknown)
    assert (
        err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        and "operator 99 is unknown" in err.value.details()
    )


def _truncated_png() -> bytes:
    data = text_image("TRUNCATED")
    return data[: len(data) // 2]  # a valid header, half the pixel data


def _filter(field: str, op: int, **operand: Any) -> common_pb2.Filter:
    return common_pb2.Filter(condition=common_pb2.Condition(field=field, operator=op, **operand))


def test_no_message_names_an_exception_class_or_a_backend(world: World) -> None:
    class_name = re.compile(r"[A-Z][a-z]+(Error|Exception)")
    internals = re.compile(r"\w+(Error|Exception)\b|ipv4:|grpc|PIL|Pillow|Traceback|^(search|encoder): ")
    eq = common_pb2.FILTER_OPERATOR_EQUAL
    bad_searches = [
        {"text": "flag", "filter": _filter("colour", eq, value=common_pb2.Value(string_value="red"))},
        {"text": "flag", "filter": _filter("width", eq, value=common_pb2.Value(string_value="wide"))},
        {
            "text": "flag",
            "filter": _filter(
                "created_at", eq, value=common_pb2.Value(timestamp_value=Timestamp(seconds=10**13))
            ),
        },
        {"text": "flag", "filter": _filter("tags", 99, value=common_pb2.Value(string_value="x"))},
        {"text": "flag", "filter": common_pb2.Filter()},
        {"image": b"GIF89a not really"},
        {"image": b"\x00" * 64},
        {"image": _truncated_png()},
        {"text": "flag", "page_size": 1000},
        {"text": "flag", "page_token": "not-a-token"},
        {"text": "flag", "alpha": 7.0},
        {"text": "x" * 5000},
    ]
    messages = []
    for kw in bad_searches:
        with pytest.raises(grpc.RpcError) as err:
            search(world.gw, **kw)
        assert err.value.code() not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN), kw
        messages.append(err.value.details())
    for call, req in [
        (world.gw.GetAsset, gateway_pb2.GetAssetRequest(asset_id="x" * 300)),
        (world.gw.SearchSimilar, gateway_pb2.SearchSimilarRequest(asset_id="no-such-asset")),
    ]:
        with pytest.raises(grpc.RpcError) as err:
            call(req, metadata=ALICE)
        messages.append(err.value.details())
    mit = common_pb2.License(name="MIT")
    far = common_pb2.License(name="MIT", expires_at=Timestamp(seconds=-(10**12)))
    bad_items = [
        gateway_pb2.IngestRequest(asset_id="s4-truncated", image=_truncated_png(), license=mit),
        gateway_pb2.IngestRequest(asset_id="s4-garbage", image=b"\x89PNG\r\n\x1a\n garbage", license=mit),
        gateway_pb2.IngestRequest(asset_id="s4-empty", image=b"", license=mit),
        gateway_pb2.IngestRequest(asset_id="s4-far", image=text_image("S4 FAR"), license=far),
        gateway_pb2.IngestRequest(
            asset_id="s4-nan", image=text_image("S4 NAN"), license=mit, popularity=float("nan")
        ),
        gateway_pb2.IngestRequest(asset_id="s4-nolicence", image=text_image("S4 NOLICENCE")),
        gateway_pb2.IngestRequest(asset_id="y" * 300, image=text_image("S4 LONG"), license=mit),
    ]
    acks = ingest(world.gw, bad_items)
    assert all(a.outcome == OUT.INGEST_OUTCOME_FAILED for a in acks.values()), acks
    messages += [a.error.message for a in acks.values()]
    for message in messages:
        assert message and not class_name.search(message) and not internals.search(message), message


# --- rerank ---------------------------------------------------------------------------------------


def test_near_duplicates_collapse_and_are_explained(world: World) -> None:
    base = world.allowed[0]
    loose = gateway_pb2.RerankOptions(duplicate_threshold=0.9)
    resp = search(world.gw, image=base.data, page_size=10, rerank=loose)
    assert ids(resp)[0] == base.asset_id and "near-dup" not in ids(resp)
    assert any("near-dup" in n and n.startswith("collapsed") for n in resp.results[0].rerank_notes)
    off = search(
        world.gw, image=base.data, page_size=10, rerank=gateway_pb2.RerankOptions(duplicate_threshold=1.0)
    )
    assert {"near-dup", base.asset_id} <= set(ids(off))


def test_mmr_and_disabled_rerank(world: World) -> None:
    plain = search(world.gw, text="flag", page_size=10, rerank=gateway_pb2.RerankOptions(mmr_lambda=1.0))
    diverse = search(world.gw, text="flag", page_size=10, rerank=gateway_pb2.RerankOptions(mmr_lambda=0.3))
    assert ids(plain) != ids(diverse)
    assert any(n.startswith("mmr penalty") for r in diverse.results for n in r.rerank_notes)
    first = search(world.gw, text="flag", page_size=10, rerank=gateway_pb2.RerankOptions(disable=True))
    assert [r.scores.first_stage_rank for r in first.results] == list(range(1, len(first.results) + 1))
    assert all(r.scores.final == r.scores.fused for r in first.results)


# --- policy ---------------------------------------------------------------------------------------


def test_authentication_and_roles(world: World) -> None:
    for md in ([], [("authorization", "Bearer wrong")], [("authorization", "Basic acme-alice")]):
        with pytest.raises(grpc.RpcError) as err:
            search(world.gw, md=md, text="flag")
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.RpcError) as err:
        ingest(world.gw, [request(world.allowed[0])], md=READER)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.RpcError) as err:
        world.gw.DeleteAsset(gateway_pb2.DeleteAssetRequest(asset_id="sign-exit"), metadata=READER)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    token = sign_token(
        {"sub": "svc", "tenant": "acme", "roles": ["search"], "aud": "imagesearch", "exp": time.time() + 60},
        TOKEN_SECRET.encode(),
    )
    assert ids(search(world.gw, md=[("authorization", f"Bearer {token}")], text="exit", page_size=3))


def test_tenant_isolation(world: World) -> None:
    globex = search(world.gw, md=GUS, text="zephyrine blueprint", page_size=5)  # caches in globex
    assert ids(globex)[0] == "globex-secret"
    acme = search(world.gw, md=ALICE, text="zephyrine blueprint", page_size=50)
    assert "globex-secret" not in ids(acme) and all(r.asset.tenant == "acme" for r in acme.results)
    for call, req in [
        (world.gw.GetAsset, gateway_pb2.GetAssetRequest(asset_id="globex-secret")),
        (world.gw.SearchSimilar, gateway_pb2.SearchSimilarRequest(asset_id="globex-secret")),
        (world.gw.DeleteAsset, gateway_pb2.DeleteAssetRequest(asset_id="globex-secret")),
    ]:
        with pytest.raises(grpc.RpcError) as err:
            call(req, metadata=ALICE)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert ids(search(world.gw, md=GUS, text="zephyrine blueprint", page_size=5))[0] == "globex-secret"


def test_licences_and_expiry(world: World) -> None:
    found = set()
    for query in ("flag", "keycap", "button", "face"):
        for r in search(world.gw, text=query, page_size=50).results:
            assert r.asset.license.name in ACME_LICENSES
            found.add(r.asset.asset_id)
    assert "expired-copy" not in found
    assert not any(i.source == "openmoji" for i in world.sample if i.asset_id in found)  # CC-BY-SA-4.0
    mit = search(world.gw, text="flag", page_size=50, licenses=["MIT"])
    assert mit.results and {r.asset.license.name for r in mit.results} == {"MIT"}
    with pytest.raises(grpc.RpcError) as err:
        search(world.gw, text="flag", licenses=["CC-BY-SA-4.0"])
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.RpcError) as err:
        world.gw.GetAsset(gateway_pb2.GetAssetRequest(asset_id="expired-copy"), metadata=ALICE)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_unsafe_assets_only_for_callers_who_opted_in(world: World) -> None:
    # NudeNet scores every ingested asset; no test image may be explicit, so an unsafe-scored record is
    # written straight into the search service (as a buggy or legacy writer could) and the gateway's
    # policy must keep it away from callers who did not opt in.
    assert all(a.safety_labels == [] or a.safety_labels[0].score <= 1 for a in world.first_acks.values())
    item = world.allowed[5]
    enc = encoder_pb2_grpc.EncoderServiceStub(world.suite.channel(world.suite.encoder.address))  # type: ignore[union-attr]
    emb = enc.EncodeImages(
        encoder_pb2.EncodeImagesRequest(images=[encoder_pb2.ImageInput(data=item.data)])
    ).results[0]
    unsafe = common_pb2.Asset(
        asset_id="unsafe-1",
        caption="quokka unsafe",
        license=common_pb2.License(name="MIT"),
        safety_labels=[common_pb2.SafetyLabel(label="BUTTOCKS_EXPOSED", score=0.93)],
        safety_score=0.93,
        content_sha256="0" * 64,
    )
    world.suite.search_stub().UpsertAssets(
        search_pb2.UpsertAssetsRequest(
            tenant="acme", assets=[search_pb2.AssetRecord(asset=unsafe, image_embedding=emb.embedding)]
        )
    )
    # unsafe-1 shares its embedding with `item`: keep near-duplicates apart to see both
    keep_dups = gateway_pb2.RerankOptions(duplicate_threshold=1.0)
    assert "unsafe-1" not in ids(search(world.gw, text="quokka unsafe", page_size=20, rerank=keep_dups))
    hidden = search(world.gw, image=item.data, page_size=20, rerank=keep_dups)
    assert ids(hidden)[0] == item.asset_id and "unsafe-1" not in ids(hidden)
    with pytest.raises(grpc.RpcError) as err:
        world.gw.GetAsset(gateway_pb2.GetAssetRequest(asset_id="unsafe-1"), metadata=ALICE)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as err:
        search(world.gw, image=item.data, include_unsafe=True)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    opted = search(world.gw, md=URSULA, image=item.data, page_size=5, include_unsafe=True, rerank=keep_dups)
    assert set(ids(opted)[:2]) == {"unsafe-1", item.asset_id}
    unsafe_result = next(r for r in opted.results if r.asset.asset_id == "unsafe-1")
    assert any("opted in" in reason for reason in unsafe_result.policy.reasons)


# --- CLI ------------------------------------------------------------------------------------------


def test_cli_ingests_a_folder_and_searches_it(
    world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from services import cli

    assert world.suite.gateway is not None
    common = ["--gateway", world.suite.gateway.address, "--api-key", "acme-alice"]
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    (folder / "lighthouse.png").write_bytes(text_image("LIGHTHOUSE"))
    (folder / "lighthouse.txt").write_text("A striped lighthouse.\nUn phare.\n")
    (folder / "sub" / "meadow.png").write_bytes(text_image("MEADOW"))
    (folder / "sub" / "meadow.json").write_text(
        '{"caption": "a quiet meadow", "tags": ["grass"], "license": "CC0-1.0"}'
    )
    (folder / "notes.md").write_text("not an image")
    assert cli.main(["ingest", str(folder), "--license", "MIT", "--quiet", *common]) == 0
    out = capsys.readouterr().out
    assert "ingested 2/2 images" in out and "created 2" in out
    assert cli.main(["ingest", str(folder), "--license", "MIT", "--quiet", *common]) == 0
    assert "unchanged 2" in capsys.readouterr().out
    assert cli.main(["search", "striped lighthouse", "--limit", "3", "-v", *common]) == 0
    out = capsys.readouterr().out
    assert "lighthouse.png" in out and "A striped lighthouse." in out and "policy: tenant acme" in out
    assert cli.main(["search", "--image", str(folder / "sub" / "meadow.png"), *common]) == 0
    assert capsys.readouterr().out.splitlines()[1].split()[6] == "sub/meadow.png"
    assert cli.main(["search", "x", "--gateway", world.suite.gateway.address, "--api-key", "nope"]) == 2
    assert "UNAUTHENTICATED" in capsys.readouterr().err


# --- resilience (last: it stops a backend) --------------------------------------------------------


def test_encoder_loss_degrades_to_keyword_only(world: World) -> None:
    suite = world.suite
    if suite.mode == "stack":
        from devstack import Stack
        from tests.service_process import REPO_ROOT

        manager = Stack(REPO_ROOT)
        manager.stop("triton")
        restart = lambda: manager.start("triton")  # noqa: E731
    else:
        assert suite.encoder is not None
        suite.encoder.stop()
        restart = suite.restart_encoder
    try:
        for attempt in itertools.count():
            resp = search(
                world.gw, text=f"exit board {attempt}", page_size=5
            )  # new text: not in the vector LRU
            if resp.degraded or attempt > 5:
                break
            time.sleep(0.5)
        assert resp.degraded and any("keyword-only" in r for r in resp.degraded_reasons)
        assert "sign-exit" in ids(resp)
        with pytest.raises(grpc.RpcError) as err:
            search(world.gw, image=text_image("NEVER QUERIED"))  # not in the gateway's vector LRU
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        restart()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        resp = search(world.gw, text="exit board again", page_size=5)
        if not resp.degraded:
            break
        time.sleep(0.5)
    assert not resp.degraded
    assert np.isfinite(resp.results[0].scores.text_cosine)
