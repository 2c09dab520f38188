"""The search service over gRPC, on both backends: the embedded one (with the in-process cache) and
the real Weaviate (with the real Redis)."""

from __future__ import annotations

import uuid
from datetime import timedelta

import grpc
import numpy as np
import pytest
from imagesearch.v1 import common_pb2, search_pb2

from tests.search.conftest import Service
from tests.search.helpers import (
    DIM,
    MODEL,
    T0,
    all_of,
    any_of,
    cond,
    embedding,
    negate,
    record,
    unit,
)

RNG = np.random.default_rng(7)
VECS = {f"a{i}": unit(RNG) for i in range(12)}
# A small corpus with known field values: each filter test compares against a Python evaluation.
CORPUS = [
    dict(
        asset_id="a0",
        caption="red vintage car",
        tags=["car", "red"],
        owner="ann",
        width=100,
        height=50,
        safety_score=0.1,
        popularity=5.0,
        source="feed",
        license_name="CC-BY-4.0",
        license_expires_at=T0 + timedelta(days=30),
        created_at=T0,
        safety_labels=[("FACE", 0.9)],
    ),
    dict(
        asset_id="a1",
        caption="blue boat on a lake",
        tags=["boat", "blue"],
        owner="bob",
        width=200,
        height=100,
        safety_score=0.5,
        popularity=1.0,
        source="upload",
        created_at=T0 + timedelta(days=1),
    ),
    dict(
        asset_id="a2",
        caption="red boat at sunset",
        tags=["boat", "red", "sunset"],
        owner="ann",
        width=300,
        height=200,
        safety_score=0.9,
        popularity=0.0,
        source="feed",
        license_name="editorial-only",
        created_at=T0 + timedelta(days=2),
        safety_labels=[("FEMALE_BREAST_EXPOSED", 0.8), ("FACE", 0.5)],
    ),
    dict(
        asset_id="a3",
        caption="green tree",
        tags=["tree"],
        owner="cid",
        width=400,
        height=300,
        safety_score=0.0,
        popularity=9.5,
        source="feed",
        created_at=T0 + timedelta(days=3),
        ocr_text="keep calm and carry on",
    ),
    dict(
        asset_id="a4",
        caption="vintage camera",
        tags=[],
        owner="bob",
        width=500,
        height=400,
        safety_score=0.2,
        popularity=2.0,
        source="dataset",
        created_at=T0 + timedelta(days=4),
        content_sha256="ab" * 32,
    ),
    dict(
        asset_id="a5",
        caption="",
        tags=["abstract"],
        owner="",
        width=600,
        height=500,
        safety_score=0.3,
        popularity=3.0,
        source="",
        created_at=T0 + timedelta(days=5),
    ),
]
IDS = [d["asset_id"] for d in CORPUS]


def code_of(fn, *args, **kw) -> grpc.StatusCode:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as err:
        fn(*args, **kw)
    return err.value.code()  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def tenant(search_service: Service) -> str:
    name = f"t{uuid.uuid4().hex[:10]}"
    recs = [
        record(
            str(d["asset_id"]), VECS[str(d["asset_id"])], **{k: v for k, v in d.items() if k != "asset_id"}
        )
        for d in CORPUS
    ]
    resp = search_service.stub.UpsertAssets(search_pb2.UpsertAssetsRequest(tenant=name, assets=recs))
    assert [r.HasField("error") for r in resp.results] == [False] * len(CORPUS), resp
    return name


def query(svc: Service, tenant: str, **kw: object) -> search_pb2.QueryResponse:
    kw.setdefault("skip_cache", True)
    return svc.stub.Query(search_pb2.QueryRequest(tenant=tenant, **kw))  # type: ignore[arg-type]


def ids_matching(svc: Service, tenant: str, f: common_pb2.Filter) -> set[str]:
    resp = query(svc, tenant, vector=embedding(VECS["a0"]), filter=f, limit=100)
    return {h.asset.asset_id for h in resp.hits}


# ---- writes ------------------------------------------------------------------------------------------


def test_upsert_is_idempotent_and_get_round_trips(search_service: Service) -> None:
    stub, t = search_service.stub, f"t{uuid.uuid4().hex[:10]}"
    v = unit(RNG)
    rec = record(
        "x1",
        v,
        caption="a red car",
        tags=["car"],
        license_name="CC0",
        license_expires_at=T0,
        safety_labels=[("FACE", 0.25)],
        safety_score=0.25,
        width=10,
        height=20,
        uri="s3://b/x1",
        owner="o",
        source="s",
        content_sha256="cd" * 32,
        popularity=1.5,
    )
    first = stub.UpsertAssets(search_pb2.UpsertAssetsRequest(tenant=t, assets=[rec]))
    got1 = stub.GetAssets(search_pb2.GetAssetsRequest(tenant=t, asset_ids=["x1"], include_vectors=True))
    second = stub.UpsertAssets(
        search_pb2.UpsertAssetsRequest(tenant=t, assets=[rec, record("x2", unit(RNG))])
    )
    assert not first.results[0].HasField("error") and not second.results[0].HasField("error")
    assert second.index_generation > first.index_generation
    stats = stub.GetStats(search_pb2.GetStatsRequest(tenant=t))
    assert stats.asset_count == 2 and stats.dimension == DIM and stats.model.name == MODEL[0]
    got = stub.GetAssets(
        search_pb2.GetAssetsRequest(tenant=t, asset_ids=["x1", "nope"], include_vectors=True)
    )
    assert list(got.missing_asset_ids) == ["nope"]
    a = got.assets[0].asset
    assert (a.asset_id, a.tenant, a.caption, list(a.tags), a.uri, a.owner, a.source) == (
        "x1",
        t,
        "a red car",
        ["car"],
        "s3://b/x1",
        "o",
        "s",
    )
    assert a.license.name == "CC0" and a.license.expires_at.ToDatetime().year == 2024
    assert [(s.label, round(s.score, 2)) for s in a.safety_labels] == [("FACE", 0.25)]
    assert (a.width, a.height, a.content_sha256, a.popularity) == (10, 20, "cd" * 32, 1.5)
    assert a.embedding_model.name == MODEL[0] and a.embedding_model.version == MODEL[1]
    vec = np.frombuffer(got.assets[0].image_embedding.values, dtype="<f4")
    assert np.allclose(vec, v, atol=1e-6)
    # created_at is kept from the first write; updated_at moves.
    a1 = got1.assets[0].asset
    assert a.created_at == a1.created_at and a.updated_at.ToDatetime() >= a1.updated_at.ToDatetime()


def test_bad_items_fail_alone_and_leave_nothing(search_service: Service) -> None:
    stub, t = search_service.stub, f"t{uuid.uuid4().hex[:10]}"
    nan = unit(RNG)
    nan[3] = np.nan
    inf = unit(RNG)
    inf[0] = np.inf
    items = [
        record("ok", unit(RNG)),
        record("short", unit(RNG, DIM - 1)),
        record("nan", nan),
        record("inf", inf),
        record("other-model", unit(RNG), model=("test-model", "2")),
        record("", unit(RNG)),
        record("ok", unit(RNG)),
        search_pb2.AssetRecord(asset=common_pb2.Asset(asset_id="novec")),
        search_pb2.AssetRecord(
            asset=common_pb2.Asset(asset_id="odd-bytes"),
            image_embedding=common_pb2.Embedding(
                values=b"\x00" * 7, model=common_pb2.ModelRef(name="m", version="1")
            ),
        ),
    ]
    resp = stub.UpsertAssets(search_pb2.UpsertAssetsRequest(tenant=t, assets=items))
    codes = [r.error.code if r.HasField("error") else 0 for r in resp.results]
    assert codes == [0, 3, 3, 3, 9, 3, 3, 3, 3], [r.error.message for r in resp.results]
    assert "dimension 15" in resp.results[1].error.message
    assert "non-finite" in resp.results[2].error.message
    assert "test-model:2" in resp.results[4].error.message
    got = stub.GetAssets(
        search_pb2.GetAssetsRequest(tenant=t, asset_ids=["ok", "short", "nan", "inf", "other-model"])
    )
    assert [a.asset.asset_id for a in got.assets] == ["ok"]
    assert stub.GetStats(search_pb2.GetStatsRequest(tenant=t)).asset_count == 1


def test_delete_reports_each_id_and_removes_from_results(search_service: Service) -> None:
    stub, t = search_service.stub, f"t{uuid.uuid4().hex[:10]}"
    v = unit(RNG)
    stub.UpsertAssets(
        search_pb2.UpsertAssetsRequest(
            tenant=t, assets=[record("d1", v, caption="zebra"), record("d2", unit(RNG))]
        )
    )
    before = query(search_service, t, text="zebra", skip_cache=False)
    assert [h.asset.asset_id for h in before.hits] == ["d1"]
    resp = stub.DeleteAssets(search_pb2.DeleteAssetsRequest(tenant=t, asset_ids=["d1", "missing"]))
    assert [(r.asset_id, r.deleted) for r in resp.results] == [("d1", True), ("missing", False)]
    assert resp.index_generation > before.index_generation
    after = query(search_service, t, text="zebra", skip_cache=False)
    assert not after.cached and after.hits == []
    assert [h.asset.asset_id for h in query(search_service, t, vector=embedding(v)).hits] == ["d2"]


def test_stream_upsert_answers_every_item(search_service: Service) -> None:
    t = f"t{uuid.uuid4().hex[:10]}"
    reqs = [
        search_pb2.StreamUpsertAssetsRequest(tenant=t, asset=record(f"s{i}", unit(RNG))) for i in range(25)
    ]
    reqs.append(search_pb2.StreamUpsertAssetsRequest(tenant="bad tenant!", asset=record("s-bad", unit(RNG))))
    out = list(search_service.stub.StreamUpsertAssets(iter(reqs)))
    assert [o.result.asset_id for o in out] == [f"s{i}" for i in range(25)] + ["s-bad"]
    assert [o.result.HasField("error") for o in out] == [False] * 25 + [True]
    assert search_service.stub.GetStats(search_pb2.GetStatsRequest(tenant=t)).asset_count == 25


def test_stream_writes_a_repeated_asset_in_arrival_order(search_service: Service) -> None:
    t = f"t{uuid.uuid4().hex[:10]}"
    versions = ["first", "second", "third"]
    reqs = [
        search_pb2.StreamUpsertAssetsRequest(tenant=t, asset=record("same", unit(RNG), caption=c))
        for c in versions
    ]
    out = list(search_service.stub.StreamUpsertAssets(iter(reqs)))
    assert [o.result.HasField("error") for o in out] == [False, False, False]
    got = search_service.stub.GetAssets(search_pb2.GetAssetsRequest(tenant=t, asset_ids=["same"]))
    assert got.assets[0].asset.caption == "third"


# ---- query modes -------------------------------------------------------------------------------------


def test_pure_vector_query_ranks_by_cosine(search_service: Service, tenant: str) -> None:
    q = VECS["a3"]
    resp = query(search_service, tenant, vector=embedding(q), alpha=1.0, limit=6)
    sims = {i: float(VECS[i] @ q) for i in IDS}
    assert [h.asset.asset_id for h in resp.hits] == sorted(IDS, key=lambda i: -sims[i])
    top = resp.hits[0].scores
    assert top.fused == pytest.approx(1.0) and top.keyword_contribution == 0 and top.bm25 == 0
    for h in resp.hits:
        assert h.scores.cosine_similarity == pytest.approx(sims[h.asset.asset_id], abs=1e-4)


def test_pure_keyword_query_needs_no_vector(search_service: Service, tenant: str) -> None:
    resp = query(search_service, tenant, text="vintage")
    assert {h.asset.asset_id for h in resp.hits} == {"a0", "a4"}
    for h in resp.hits:
        assert h.scores.bm25 > 0 and h.scores.vector_contribution == 0
        assert h.scores.fused == pytest.approx(h.scores.keyword_contribution)
    # OCR text is searchable; a field list restricts the keyword leg.
    assert [h.asset.asset_id for h in query(search_service, tenant, text="calm").hits] == ["a3"]
    only_caption = [search_pb2.KeywordField(name="caption", boost=1.0)]
    assert query(search_service, tenant, text="calm", keyword_fields=only_caption).hits == []
    tags_only = [search_pb2.KeywordField(name="tags", boost=2.0)]
    assert {
        h.asset.asset_id for h in query(search_service, tenant, text="red", keyword_fields=tags_only).hits
    } == {"a0", "a2"}


@pytest.mark.parametrize(
    "fusion",
    [search_pb2.FUSION_TYPE_RELATIVE_SCORE, search_pb2.FUSION_TYPE_RANKED, search_pb2.FUSION_TYPE_ADAPTIVE],
)
def test_hybrid_query_explains_each_leg(search_service: Service, tenant: str, fusion: int) -> None:
    resp = query(
        search_service, tenant, text="red boat", vector=embedding(VECS["a2"]), alpha=0.5, fusion=fusion
    )
    assert resp.hits[0].asset.asset_id == "a2"  # best on both legs
    for h in resp.hits:
        s = h.scores
        assert s.fused == pytest.approx(s.keyword_contribution + s.vector_contribution, abs=1e-5)
        if fusion == search_pb2.FUSION_TYPE_RANKED:  # weight / (0-based rank + 60)
            assert s.keyword_contribution <= 0.5 / 60 + 1e-6 and s.vector_contribution <= 0.5 / 60 + 1e-6
        elif fusion == search_pb2.FUSION_TYPE_ADAPTIVE:  # "red boat": an asset holds both words
            assert s.vector_weight == pytest.approx(0.5)
            assert 0 <= s.keyword_contribution <= 0.5 + 1e-6 and 0 <= s.vector_contribution <= 0.5 + 1e-6
            assert (s.keyword_contribution > 0) == (s.bm25 > 0)  # no min-max: every match keeps a share
        else:
            assert s.vector_weight == pytest.approx(0.5)
            assert 0 <= s.keyword_contribution <= 0.5 + 1e-6 and 0 <= s.vector_contribution <= 0.5 + 1e-6
            assert s.keyword_contribution == 0 or s.bm25 > 0  # the leg minimum normalises to 0
    fused = [h.scores.fused for h in resp.hits]
    assert fused == sorted(fused, reverse=True)


def test_alpha_moves_weight_between_legs(search_service: Service, tenant: str) -> None:
    vec = embedding(VECS["a3"])
    text_heavy = query(search_service, tenant, text="vintage", vector=vec, alpha=0.1)
    vector_heavy = query(search_service, tenant, text="vintage", vector=vec, alpha=0.9)
    assert text_heavy.hits[0].asset.asset_id in {"a0", "a4"}
    assert vector_heavy.hits[0].asset.asset_id == "a3"
    default = query(search_service, tenant, text="vintage", vector=vec)  # alpha 0.75
    top = default.hits[0].scores
    assert top.vector_contribution <= 0.75 + 1e-6 and top.keyword_contribution <= 0.25 + 1e-6


def test_limit_offset_and_window_page_through_one_ranking(search_service: Service, tenant: str) -> None:
    vec = embedding(VECS["a1"])
    full = [h.asset.asset_id for h in query(search_service, tenant, vector=vec, limit=6).hits]
    page = [h.asset.asset_id for h in query(search_service, tenant, vector=vec, limit=2, offset=2).hits]
    assert page == full[2:4]
    wide = query(search_service, tenant, vector=vec, limit=3, candidate_window=500)
    assert [h.asset.asset_id for h in wide.hits] == full[:3]
    with_vectors = query(search_service, tenant, vector=vec, limit=1, include_vectors=True)
    assert np.allclose(
        np.frombuffer(with_vectors.hits[0].image_embedding.values, "<f4"), VECS["a1"], atol=1e-6
    )


# ---- filters -----------------------------------------------------------------------------------------


def _has(d: dict, k: str) -> bool:  # type: ignore[type-arg]
    return bool(d.get(k))


FILTER_CASES = [
    ("eq string", cond("owner", "eq", "ann"), lambda d: d["owner"] == "ann"),
    ("ne string (matches no value)", cond("owner", "ne", "ann"), lambda d: d["owner"] != "ann"),
    (
        "in string",
        cond("source", "in", ["upload", "dataset"]),
        lambda d: d["source"] in ("upload", "dataset"),
    ),
    ("like", cond("caption", "like", "*boat*"), lambda d: "boat" in d["caption"]),
    ("like ?", cond("owner", "like", "b?b"), lambda d: d["owner"] == "bob"),
    ("eq caption exact", cond("caption", "eq", "green tree"), lambda d: d["caption"] == "green tree"),
    ("is null string", cond("owner", "null", True), lambda d: not d["owner"]),
    ("not null string", cond("license_name", "null", False), lambda d: _has(d, "license_name")),
    ("tags equal = contains", cond("tags", "eq", "red"), lambda d: "red" in d["tags"]),
    (
        "contains any",
        cond("tags", "any", ["sunset", "tree"]),
        lambda d: bool({"sunset", "tree"} & set(d["tags"])),
    ),
    ("contains all", cond("tags", "all", ["boat", "red"]), lambda d: {"boat", "red"} <= set(d["tags"])),
    ("tags null", cond("tags", "null", True), lambda d: not d["tags"]),
    (
        "safety labels",
        cond("safety_labels", "any", ["FACE"]),
        lambda d: "FACE" in [lb for lb, _ in d.get("safety_labels", [])],
    ),
    ("int gt", cond("width", "gt", 300), lambda d: d["width"] > 300),
    ("int gte", cond("width", "gte", 300), lambda d: d["width"] >= 300),
    ("int lt", cond("height", "lt", 200), lambda d: d["height"] < 200),
    ("int lte", cond("height", "lte", 200), lambda d: d["height"] <= 200),
    ("int eq", cond("width", "eq", 200), lambda d: d["width"] == 200),
    ("int ne", cond("width", "ne", 200), lambda d: d["width"] != 200),
    ("int in", cond("width", "in", [100, 600]), lambda d: d["width"] in (100, 600)),
    ("float range", cond("safety_score", "lt", 0.25), lambda d: d["safety_score"] < 0.25),
    ("float from int", cond("popularity", "gte", 3), lambda d: d["popularity"] >= 3),
    (
        "date range",
        cond("created_at", "gte", T0 + timedelta(days=2)),
        lambda d: d["created_at"] >= T0 + timedelta(days=2),
    ),
    (
        "date lt",
        cond("created_at", "lt", T0 + timedelta(days=1)),
        lambda d: d["created_at"] < T0 + timedelta(days=1),
    ),
    (
        "licence expiry null",
        cond("license_expires_at", "null", True),
        lambda d: "license_expires_at" not in d,
    ),
    ("licence expiry gt", cond("license_expires_at", "gt", T0), lambda d: "license_expires_at" in d),
    (
        "and",
        all_of(cond("owner", "eq", "ann"), cond("width", "gt", 150)),
        lambda d: d["owner"] == "ann" and d["width"] > 150,
    ),
    (
        "or",
        any_of(cond("owner", "eq", "cid"), cond("tags", "eq", "blue")),
        lambda d: d["owner"] == "cid" or "blue" in d["tags"],
    ),
    ("not", negate(cond("source", "eq", "feed")), lambda d: d["source"] != "feed"),
    (
        "nested",
        all_of(
            negate(any_of(cond("owner", "eq", "ann"), cond("owner", "eq", "bob"))), cond("width", "lt", 1000)
        ),
        lambda d: d["owner"] not in ("ann", "bob"),
    ),
    (
        "not range includes nothing extra",
        negate(cond("created_at", "gt", T0 + timedelta(days=3))),
        lambda d: not d["created_at"] > T0 + timedelta(days=3),
    ),
]


@pytest.mark.parametrize(("name", "f", "expect"), FILTER_CASES, ids=[c[0] for c in FILTER_CASES])
def test_filter_operator(
    search_service: Service, tenant: str, name: str, f: common_pb2.Filter, expect
) -> None:  # type: ignore[no-untyped-def]
    expected = {d["asset_id"] for d in CORPUS if expect(d)}
    assert ids_matching(search_service, tenant, f) == expected
    # The keyword leg is pre-filtered too.
    kw = query(
        search_service, tenant, text="red boat vintage tree camera abstract car lake", filter=f, limit=100
    )
    assert {h.asset.asset_id for h in kw.hits} <= expected


# ---- cache -------------------------------------------------------------------------------------------


def test_repeat_is_a_cache_hit_and_a_write_invalidates_it(search_service: Service) -> None:
    stub, t = search_service.stub, f"t{uuid.uuid4().hex[:10]}"
    stub.UpsertAssets(
        search_pb2.UpsertAssetsRequest(tenant=t, assets=[record("c1", unit(RNG), caption="owl")])
    )
    f1 = all_of(cond("width", "gte", 0), cond("owner", "null", True))
    f2 = all_of(cond("owner", "null", True), cond("width", "gte", 0))  # same filter, other order
    first = query(search_service, t, text="owl", filter=f1, skip_cache=False)
    second = query(search_service, t, text="owl", filter=f2, skip_cache=False)
    assert not first.cached and second.cached
    assert [h.asset.asset_id for h in second.hits] == ["c1"]
    assert second.index_generation == first.index_generation
    assert query(search_service, t, text="owl", filter=f1, skip_cache=True).cached is False
    w = stub.UpsertAssets(
        search_pb2.UpsertAssetsRequest(tenant=t, assets=[record("c2", unit(RNG), caption="owl owl")])
    )
    third = query(search_service, t, text="owl", filter=f1, skip_cache=False)
    assert not third.cached and third.index_generation == w.index_generation > first.index_generation
    assert {h.asset.asset_id for h in third.hits} == {"c1", "c2"}
    assert query(search_service, t, text="owl", filter=f1, skip_cache=False).cached
    # The generation alone (what the gateway's page cache validates against) tracks the same writes.
    gen = stub.GetIndexGeneration(search_pb2.GetIndexGenerationRequest(tenant=t))
    assert gen.consistent and gen.index_generation == w.index_generation
    stub.DeleteAssets(search_pb2.DeleteAssetsRequest(tenant=t, asset_ids=["c2"]))
    after = stub.GetIndexGeneration(search_pb2.GetIndexGenerationRequest(tenant=t))
    assert after.consistent and after.index_generation > gen.index_generation
    with pytest.raises(grpc.RpcError) as err:
        stub.GetIndexGeneration(search_pb2.GetIndexGenerationRequest(tenant="no spaces allowed"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


# ---- bad input ---------------------------------------------------------------------------------------


def _bad_queries() -> list[tuple[str, dict, grpc.StatusCode]]:  # type: ignore[type-arg]
    v = embedding(VECS["a0"])
    inv = grpc.StatusCode.INVALID_ARGUMENT
    nan = VECS["a0"].copy()
    nan[1] = np.nan
    return [
        ("wrong dimension", dict(vector=embedding(unit(RNG, DIM + 1))), inv),
        ("nan in vector", dict(vector=embedding(nan)), inv),
        ("inf in vector", dict(vector=embedding(np.full(DIM, np.inf, np.float32))), inv),
        ("bytes not float32", dict(vector=common_pb2.Embedding(values=b"\x00" * 5, model=v.model)), inv),
        (
            "other model",
            dict(vector=embedding(VECS["a0"], ("test-model", "9"))),
            grpc.StatusCode.FAILED_PRECONDITION,
        ),
        ("alpha > 1", dict(text="car", vector=v, alpha=1.5), inv),
        ("alpha < 0", dict(text="car", vector=v, alpha=-0.1), inv),
        ("alpha nan", dict(text="car", vector=v, alpha=float("nan")), inv),
        ("no text, no vector", dict(), inv),
        ("keyword-only without text", dict(vector=v, alpha=0.0), inv),
        ("vector-only without vector", dict(text="car", alpha=1.0), inv),
        ("limit too large", dict(text="car", limit=100000), inv),
        ("negative offset", dict(text="car", offset=-1), inv),
        ("offset too large", dict(text="car", offset=20000), inv),
        ("window too large", dict(text="car", candidate_window=10**6), inv),
        ("unknown filter field", dict(text="car", filter=cond("colour", "eq", "red")), inv),
        ("type mismatch", dict(text="car", filter=cond("width", "eq", "wide")), inv),
        ("operator not for field", dict(text="car", filter=cond("tags", "gt", "a")), inv),
        ("is null needs bool", dict(text="car", filter=cond("owner", "null", "yes")), inv),
        (
            "unknown keyword field",
            dict(text="car", keyword_fields=[search_pb2.KeywordField(name="uri")]),
            inv,
        ),
        (
            "negative boost",
            dict(text="car", keyword_fields=[search_pb2.KeywordField(name="caption", boost=-1)]),
            inv,
        ),
    ]


@pytest.mark.parametrize(("name", "kw", "code"), _bad_queries(), ids=[c[0] for c in _bad_queries()])
def test_bad_query_gets_precise_status(
    search_service: Service, tenant: str, name: str, kw: dict, code
) -> None:  # type: ignore[no-untyped-def,type-arg]
    with pytest.raises(grpc.RpcError) as err:
        search_service.stub.Query(search_pb2.QueryRequest(tenant=tenant, **kw))
    assert err.value.code() == code, err.value.details()
    assert err.value.details()


def test_unknown_field_message_names_allowed_fields(search_service: Service, tenant: str) -> None:
    with pytest.raises(grpc.RpcError) as err:
        query(search_service, tenant, text="car", filter=cond("colour", "eq", "red"))
    assert "colour" in err.value.details() and "safety_score" in err.value.details()


def test_batch_limits_and_bad_tenants(search_service: Service) -> None:
    stub = search_service.stub
    inv = grpc.StatusCode.INVALID_ARGUMENT
    too_many = [record(f"b{i}", unit(RNG)) for i in range(1001)]
    assert code_of(stub.UpsertAssets, search_pb2.UpsertAssetsRequest(tenant="tb", assets=too_many)) == inv
    assert code_of(stub.UpsertAssets, search_pb2.UpsertAssetsRequest(tenant="tb", assets=[])) == inv
    assert code_of(stub.GetAssets, search_pb2.GetAssetsRequest(tenant="tb", asset_ids=["x"] * 1001)) == inv
    assert (
        code_of(stub.UpsertAssets, search_pb2.UpsertAssetsRequest(tenant="bad/tenant", assets=too_many[:1]))
        == inv
    )
    assert code_of(stub.Query, search_pb2.QueryRequest(tenant="", text="x")) == inv


def test_unknown_tenant_is_not_found(search_service: Service, tenant: str) -> None:
    stub, nobody = search_service.stub, f"nobody{uuid.uuid4().hex[:8]}"
    nf = grpc.StatusCode.NOT_FOUND
    assert code_of(stub.Query, search_pb2.QueryRequest(tenant=nobody, text="car")) == nf
    assert code_of(stub.Query, search_pb2.QueryRequest(tenant=nobody, vector=embedding(VECS["a0"]))) == nf
    assert code_of(stub.GetAssets, search_pb2.GetAssetsRequest(tenant=nobody, asset_ids=["a0"])) == nf
    assert code_of(stub.DeleteAssets, search_pb2.DeleteAssetsRequest(tenant=nobody, asset_ids=["a0"])) == nf
    assert code_of(stub.GetStats, search_pb2.GetStatsRequest(tenant=nobody)) == nf


def test_tenants_are_isolated(search_service: Service, tenant: str) -> None:
    stub, other = search_service.stub, f"t{uuid.uuid4().hex[:10]}"
    # Same asset ids, other content: each tenant sees only its own.
    stub.UpsertAssets(
        search_pb2.UpsertAssetsRequest(tenant=other, assets=[record("a0", unit(RNG), caption="penguin")])
    )
    assert query(search_service, other, text="vintage").hits == []
    assert [h.asset.asset_id for h in query(search_service, tenant, text="vintage").hits] != []
    assert query(search_service, tenant, text="penguin").hits == []
    got = stub.GetAssets(search_pb2.GetAssetsRequest(tenant=other, asset_ids=["a0", "a1"]))
    assert [a.asset.caption for a in got.assets] == ["penguin"] and list(got.missing_asset_ids) == ["a1"]
    hits = query(search_service, other, vector=embedding(VECS["a0"]), limit=100).hits
    assert [(h.asset.asset_id, h.asset.tenant, h.asset.caption) for h in hits] == [("a0", other, "penguin")]
    assert stub.GetStats(search_pb2.GetStatsRequest(tenant=other)).asset_count == 1
    assert stub.GetStats(search_pb2.GetStatsRequest(tenant=tenant)).asset_count == len(CORPUS)
