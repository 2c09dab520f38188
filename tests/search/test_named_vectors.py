"""Two vectors per asset (the primary "semantic" and a "visual" one) on both backends, over gRPC:
stored, searched by name, read back, listed in stats; bad named vectors fail their item only."""

from __future__ import annotations

import uuid
from pathlib import Path

import grpc
import numpy as np
import pytest
from imagesearch.v1 import common_pb2, search_pb2
from imagesearch.v1.search_pb2_grpc import SearchServiceStub

from devstack import StackInfo
from services.search.backends.embedded import EmbeddedBackend, HnswParams
from services.search.cache import MemoryCache
from services.search.core import SearchCore
from services.search.domain import AssetDoc, AssetRecord, Fusion, ModelRef
from services.search.settings import SearchSettings
from tests.search.conftest import Service, weaviate_env
from tests.search.helpers import DIM, MODEL, embedding, record, unit
from tests.service_process import ServiceProcess

VISUAL_DIM = 24
RNG = np.random.default_rng(7)
SEMANTIC = {f"n{i}": unit(RNG) for i in range(6)}
VISUAL = {f"n{i}": unit(RNG, VISUAL_DIM) for i in range(6)}


def named(v: np.ndarray, name: str, model: tuple[str, str] = MODEL) -> common_pb2.Embedding:
    e = embedding(v, model)
    e.vector_name = name
    return e


def two_vector_record(
    asset_id: str, *extra: common_pb2.Embedding, **fields: object
) -> search_pb2.AssetRecord:
    r = record(asset_id, SEMANTIC[asset_id], **fields)
    r.vectors.append(named(VISUAL[asset_id], "visual"))
    r.vectors.extend(extra)
    return r


def decoded(e: common_pb2.Embedding) -> np.ndarray:
    return np.frombuffer(e.values, dtype="<f4")


@pytest.fixture(scope="module")
def tenant(search_service: Service) -> str:
    name = f"t{uuid.uuid4().hex[:10]}"
    recs = [two_vector_record(a, caption=f"photo {a}") for a in SEMANTIC]
    resp = search_service.stub.UpsertAssets(search_pb2.UpsertAssetsRequest(tenant=name, assets=recs))
    assert [r.HasField("error") for r in resp.results] == [False] * len(recs), resp
    return name


def query(svc: Service, tenant: str, **kw: object) -> search_pb2.QueryResponse:
    return svc.stub.Query(search_pb2.QueryRequest(tenant=tenant, **kw))  # type: ignore[arg-type]


def test_each_named_vector_is_searched_by_its_name(search_service: Service, tenant: str) -> None:
    # The "visual" query vector is n3's visual vector: n3 ranks first on "visual", with cosine 1.
    visual = query(search_service, tenant, vector=named(VISUAL["n3"], "visual"), include_vectors=True)
    assert visual.hits[0].asset.asset_id == "n3"
    assert visual.hits[0].scores.vector_name == "visual"
    assert visual.hits[0].scores.cosine_similarity == pytest.approx(1.0, abs=1e-5)
    got = decoded(visual.hits[0].image_embedding)
    assert len(got) == VISUAL_DIM and np.allclose(got, VISUAL["n3"], atol=1e-6)
    expected = sorted(VISUAL, key=lambda a: -float(VISUAL[a] @ VISUAL["n3"]))
    assert [h.asset.asset_id for h in visual.hits] == expected
    # The primary: by empty name and by "semantic" alike.
    for name in ("", "semantic"):
        sem = query(search_service, tenant, vector=named(SEMANTIC["n1"], name))
        assert sem.hits[0].asset.asset_id == "n1"
        assert sem.hits[0].scores.vector_name == "semantic"


def test_hybrid_on_the_visual_vector(search_service: Service, tenant: str) -> None:
    resp = query(search_service, tenant, text="photo n2", vector=named(VISUAL["n2"], "visual"), alpha=0.5)
    assert resp.hits[0].asset.asset_id == "n2"
    assert resp.hits[0].scores.vector_name == "visual"
    assert resp.hits[0].scores.cosine_similarity == pytest.approx(1.0, abs=1e-5)


def test_keyword_only_query_names_no_vector(search_service: Service, tenant: str) -> None:
    resp = query(search_service, tenant, text="photo n2")
    assert resp.hits and resp.hits[0].scores.vector_name == ""


def test_cache_keys_include_the_vector_name(search_service: Service, tenant: str) -> None:
    # The same query values searched on two names must not share a cached answer: the first
    # 16 values of a visual vector as a "semantic" query are a different query.
    probe = VISUAL["n4"][:DIM] / np.linalg.norm(VISUAL["n4"][:DIM])
    sem = query(search_service, tenant, vector=named(probe, "semantic"))
    sem_again = query(search_service, tenant, vector=named(probe, "semantic"))
    assert sem_again.cached and sem_again.hits[0].scores.vector_name == "semantic"
    vis = query(search_service, tenant, vector=named(VISUAL["n4"], "visual"))
    vis_again = query(search_service, tenant, vector=named(VISUAL["n4"], "visual"))
    assert not vis.cached and vis_again.cached
    assert vis_again.hits[0].scores.vector_name == "visual"
    assert [h.asset.asset_id for h in sem.hits] == [h.asset.asset_id for h in sem_again.hits]


def test_get_returns_the_primary_and_the_others(search_service: Service, tenant: str) -> None:
    resp = search_service.stub.GetAssets(
        search_pb2.GetAssetsRequest(tenant=tenant, asset_ids=["n0", "n5"], include_vectors=True)
    )
    for rec, aid in zip(resp.assets, ["n0", "n5"], strict=True):
        assert np.allclose(decoded(rec.image_embedding), SEMANTIC[aid], atol=1e-6)
        assert [v.vector_name for v in rec.vectors] == ["visual"]
        assert np.allclose(decoded(rec.vectors[0]), VISUAL[aid], atol=1e-6)
        assert rec.vectors[0].model.name == MODEL[0]
    bare = search_service.stub.GetAssets(search_pb2.GetAssetsRequest(tenant=tenant, asset_ids=["n0"]))
    assert not bare.assets[0].vectors and not bare.assets[0].image_embedding.values


def test_stats_list_the_stored_vectors(search_service: Service, tenant: str) -> None:
    st = search_service.stub.GetStats(search_pb2.GetStatsRequest(tenant=tenant))
    specs = {v.name: (v.dimension, v.primary) for v in st.vectors}
    assert specs == {"semantic": (DIM, True), "visual": (VISUAL_DIM, False)}


def test_bad_named_vectors_fail_their_item_only(search_service: Service, tenant: str) -> None:
    ok = two_vector_record("n0")
    wrong_dim = record("x1", SEMANTIC["n1"])
    wrong_dim.vectors.append(named(unit(RNG, VISUAL_DIM + 1), "visual"))
    duplicate = record("x2", SEMANTIC["n2"])
    duplicate.vectors.extend([named(VISUAL["n2"], "visual"), named(VISUAL["n1"], "visual")])
    not_finite = record("x3", SEMANTIC["n3"])
    nan = VISUAL["n3"].copy()
    nan[5] = np.nan
    not_finite.vectors.append(named(nan, "visual"))
    other_model = record("x4", SEMANTIC["n4"])
    other_model.vectors.append(named(VISUAL["n4"], "visual", ("other-model", "1")))
    primary_again = record("x5", SEMANTIC["n5"])
    primary_again.vectors.append(named(SEMANTIC["n5"], "semantic"))
    resp = search_service.stub.UpsertAssets(
        search_pb2.UpsertAssetsRequest(
            tenant=tenant, assets=[ok, wrong_dim, duplicate, not_finite, other_model, primary_again]
        )
    )
    errors = [r.error for r in resp.results]
    assert not resp.results[0].HasField("error")
    invalid = grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert all(e.code == invalid for e in errors[1:]), errors
    assert "'visual' has dimension 25" in errors[1].message and "24" in errors[1].message
    assert "repeats" in errors[2].message
    assert "non-finite" in errors[3].message and "'visual'" in errors[3].message
    # A vector of another model is that model version's (docs/LIFECYCLE.md): without its primary it
    # is refused, naming the model.
    assert "other-model:1" in errors[4].message and "primary" in errors[4].message
    assert "image_embedding" in errors[5].message
    got = search_service.stub.GetAssets(
        search_pb2.GetAssetsRequest(tenant=tenant, asset_ids=["x1", "x2", "x3", "x4", "x5"])
    )
    assert not got.assets and set(got.missing_asset_ids) == {"x1", "x2", "x3", "x4", "x5"}


def test_unknown_query_vector_name_is_invalid(search_service: Service, tenant: str) -> None:
    with pytest.raises(grpc.RpcError) as err:
        query(search_service, tenant, vector=named(VISUAL["n1"], "colour"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "'colour'" in (err.value.details() or "") and "visual" in (err.value.details() or "")
    with pytest.raises(grpc.RpcError) as err:
        query(search_service, tenant, vector=named(SEMANTIC["n1"], "visual"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "'visual' vector has 24" in (err.value.details() or "")


def test_an_asset_without_the_visual_vector_is_found_by_semantic_only(
    search_service: Service, tenant: str
) -> None:
    v = unit(RNG)
    resp = search_service.stub.UpsertAssets(
        search_pb2.UpsertAssetsRequest(tenant=tenant, assets=[record("plain", v)])
    )
    assert not resp.results[0].HasField("error")
    sem = query(search_service, tenant, vector=named(v, ""), limit=1)
    assert sem.hits[0].asset.asset_id == "plain"
    vis = query(search_service, tenant, vector=named(VISUAL["n0"], "visual"), limit=100)
    assert "plain" not in {h.asset.asset_id for h in vis.hits}
    # Replacing a two-vector asset by a one-vector version drops its visual vector too.
    resp = search_service.stub.UpsertAssets(
        search_pb2.UpsertAssetsRequest(tenant=tenant, assets=[record("n5", SEMANTIC["n5"])])
    )
    assert not resp.results[0].HasField("error")
    vis = query(search_service, tenant, vector=named(VISUAL["n5"], "visual"), limit=100)
    assert "n5" not in {h.asset.asset_id for h in vis.hits}


# ---- the embedded backend's named vectors across restarts (in process) ---------------------------


async def test_embedded_named_vectors_survive_restart_and_join_an_older_collection(tmp_path: Path) -> None:
    """A collection first written with the primary alone takes "visual" at a later write; the visual
    graph is saved on shutdown, rebuilt from the records after a crash, and searched by name."""
    rng = np.random.default_rng(11)
    model = ModelRef("m", "1")
    settings = SearchSettings(data_dir=str(tmp_path))
    sem = rng.standard_normal((300, 8)).astype(np.float32)
    vis = rng.standard_normal((300, 12)).astype(np.float32)
    sem /= np.linalg.norm(sem, axis=1, keepdims=True)
    vis /= np.linalg.norm(vis, axis=1, keepdims=True)

    async def open_core() -> SearchCore:
        backend = EmbeddedBackend(tmp_path, HnswParams(16, 64, 64, 10, "i8"))
        await backend.start()
        return SearchCore(settings, backend, MemoryCache(60, 10))

    def rec(i: int, with_visual: bool) -> AssetRecord:
        doc = AssetDoc(asset_id=f"p{i}", embedding_model=model)
        return AssetRecord(doc, sem[i], {"visual": vis[i]} if with_visual else {})

    core = await open_core()
    await core.upsert("t", [rec(i, False) for i in range(100)])  # the older, one-vector collection
    assert [s.name for s in (await core.stats("t"))[0].vectors] == ["semantic"]
    summary = await core.upsert("t", [rec(i, True) for i in range(100, 300)])
    assert all(o.error is None for o in summary.outcomes)
    plan = await core.plan(**_plan(vis[150], "visual"))  # type: ignore[arg-type]

    async def visual_ids() -> list[str]:
        return [h.doc.asset_id for h in (await core.query("t", plan, skip_cache=True)).hits]

    before = await visual_ids()
    assert before[0] == "p150" and all(int(a[1:]) >= 100 for a in before)  # only assets with "visual"
    await core.backend.close()
    core = await open_core()
    assert await visual_ids() == before
    specs = {(s.name, s.dimension) for s in (await core.stats("t"))[0].vectors}
    assert specs == {("semantic", 8), ("visual", 12)}
    got = await core.get("t", ["p150", "p5"], include_vectors=True)
    assert got[0] is not None and np.allclose(got[0].named["visual"], vis[150], atol=1e-6)
    assert got[1] is not None and got[1].named == {}
    # A stale snapshot (as after a crash): the visual graph is rebuilt from the records.
    await core.upsert("t", [rec(7, True)])
    await core.backend.close()
    (tmp_path / "tenants" / "t" / "vectors.visual.seq").unlink()
    core = await open_core()
    plan7 = await core.plan(**_plan(vis[7], "visual"))  # type: ignore[arg-type]
    assert (await core.query("t", plan7, skip_cache=True)).hits[0].doc.asset_id == "p7"
    with_visual = [7, *range(100, 300)]  # p7 joined the "visual" assets with its rewrite
    exact = sorted(with_visual, key=lambda i: -float(vis[i] @ vis[150]))[:10]
    assert await visual_ids() == [f"p{i}" for i in exact]


def _plan(vector: np.ndarray, name: str) -> dict[str, object]:
    return dict(
        text="", vector=vector, vector_model=ModelRef("m", "1"), vector_name=name, alpha=None,
        fusion=Fusion.RELATIVE_SCORE, filter=None, limit=10, offset=0, window=0, keyword_fields=[],
        include_vectors=False,
    )  # fmt: skip


def test_a_replica_sees_a_vector_name_another_replica_added(search_stack: StackInfo) -> None:
    """Two search services on one Weaviate collection: the one that never wrote still serves the model
    and the "visual" vector the other recorded (it re-reads the collection for an unknown name)."""
    env = {**weaviate_env(search_stack, f"Test{uuid.uuid4().hex[:12]}"), "IMAGESEARCH_SEARCH_CACHE": "none"}
    with (
        ServiceProcess("services.search", env=env) as writer,
        ServiceProcess("services.search", env=env) as reader,
        grpc.insecure_channel(writer.address) as w_channel,
        grpc.insecure_channel(reader.address) as r_channel,
    ):
        w_stub, r_stub = SearchServiceStub(w_channel), SearchServiceStub(r_channel)
        r_stub.GetStats(search_pb2.GetStatsRequest())  # the reader has looked at the empty collection
        resp = w_stub.UpsertAssets(
            search_pb2.UpsertAssetsRequest(tenant="t", assets=[two_vector_record(a) for a in SEMANTIC])
        )
        assert not any(r.HasField("error") for r in resp.results)
        hits = r_stub.Query(search_pb2.QueryRequest(tenant="t", vector=named(VISUAL["n2"], "visual"))).hits
        assert hits[0].asset.asset_id == "n2" and hits[0].scores.vector_name == "visual"
