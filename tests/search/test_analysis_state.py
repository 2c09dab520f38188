"""Analysis states on both backends (embedded, and the real Weaviate with Redis): an asset whose
safety analysis is not done (PENDING or FAILED) is never a query hit nor a GetAssets answer, unless the
caller asks for unanalysed assets (the gateway's ingest flow and analysis worker do); ListPendingAnalysis
is the durable analysis queue; an asset stored without a state counts as analysed."""

from __future__ import annotations

import uuid
from unittest import mock

import grpc
import numpy as np
import pytest
from imagesearch.v1 import common_pb2, search_pb2

from devstack import StackInfo
from devstack.weaviate import weaviate_api_key
from services.search.domain import ANALYSIS_HIDDEN, AssetDoc, AssetRecord, Fusion, ModelRef, QueryPlan
from services.search.filters import analysed_only
from tests.search.conftest import Service
from tests.search.helpers import DIM, MODEL, cond, embedding, record, unit

RNG = np.random.default_rng(19)
STATE = common_pb2.AnalysisState
SHA = {name: f"{i:064x}" for i, name in enumerate(["pending", "analysed", "legacy", "failed", "other"], 1)}


def _upsert(svc: Service, tenant: str, recs: list[search_pb2.AssetRecord]) -> search_pb2.UpsertAssetsResponse:
    return svc.stub.UpsertAssets(search_pb2.UpsertAssetsRequest(tenant=tenant, assets=recs))


def _rec(asset_id: str, v: np.ndarray, state: int, **fields: object) -> search_pb2.AssetRecord:
    r = record(asset_id, v, caption="zebra crossing", content_sha256=SHA[asset_id], **fields)
    r.asset.analysis_state = state  # type: ignore[assignment]
    return r


def _ids(resp: search_pb2.QueryResponse) -> set[str]:
    return {h.asset.asset_id for h in resp.hits}


@pytest.fixture()
def states(search_service: Service) -> tuple[str, dict[str, np.ndarray]]:
    tenant = f"t{uuid.uuid4().hex[:10]}"
    vecs = {name: unit(RNG) for name in SHA}
    recs = [
        _rec("pending", vecs["pending"], STATE.ANALYSIS_STATE_PENDING),
        _rec("analysed", vecs["analysed"], STATE.ANALYSIS_STATE_ANALYSED, ocr_text="open daily"),
        _rec("legacy", vecs["legacy"], STATE.ANALYSIS_STATE_UNSPECIFIED),
        _rec("failed", vecs["failed"], STATE.ANALYSIS_STATE_FAILED),
    ]
    resp = _upsert(search_service, tenant, recs)
    assert not any(r.HasField("error") for r in resp.results), resp
    return tenant, vecs


def test_unanalysed_assets_are_never_hits_of_any_query(
    search_service: Service, states: tuple[str, dict[str, np.ndarray]]
) -> None:
    tenant, vecs = states
    visible = {"analysed", "legacy"}
    for skip_cache in (False, True, False):  # the third call is answered from the cache
        keyword = search_service.stub.Query(
            search_pb2.QueryRequest(tenant=tenant, text="zebra", limit=10, skip_cache=skip_cache)
        )
        assert _ids(keyword) == visible
        for name in SHA:
            if name == "other":
                continue
            # The vector nearest to each asset, with and without a caller filter.
            near = search_service.stub.Query(
                search_pb2.QueryRequest(tenant=tenant, vector=embedding(vecs[name]), limit=10)
            )
            assert _ids(near) == visible
            filtered = search_service.stub.Query(
                search_pb2.QueryRequest(
                    tenant=tenant,
                    text="zebra",
                    vector=embedding(vecs[name]),
                    filter=cond("content_sha256", "eq", SHA[name]),
                    limit=10,
                )
            )
            assert _ids(filtered) == ({name} & visible)


def test_get_assets_reports_unanalysed_assets_missing_unless_asked(
    search_service: Service, states: tuple[str, dict[str, np.ndarray]]
) -> None:
    tenant, _ = states
    ids = ["pending", "analysed", "legacy", "failed"]
    resp = search_service.stub.GetAssets(search_pb2.GetAssetsRequest(tenant=tenant, asset_ids=ids))
    assert [a.asset.asset_id for a in resp.assets] == ["analysed", "legacy"]
    assert list(resp.missing_asset_ids) == ["pending", "failed"]
    inner = search_service.stub.GetAssets(
        search_pb2.GetAssetsRequest(
            tenant=tenant, asset_ids=ids, include_unanalysed=True, include_vectors=True
        )
    )
    assert [(a.asset.asset_id, a.asset.analysis_state) for a in inner.assets] == [
        ("pending", STATE.ANALYSIS_STATE_PENDING),
        ("analysed", STATE.ANALYSIS_STATE_ANALYSED),
        ("legacy", STATE.ANALYSIS_STATE_UNSPECIFIED),
        ("failed", STATE.ANALYSIS_STATE_FAILED),
    ]
    assert all(a.image_embedding.values for a in inner.assets)


def test_pending_list_is_the_queue_and_recording_the_analysis_makes_the_asset_visible(
    search_service: Service, states: tuple[str, dict[str, np.ndarray]]
) -> None:
    tenant, vecs = states
    listed = search_service.stub.ListPendingAnalysis(search_pb2.ListPendingAnalysisRequest(tenant=tenant))
    assert [(p.tenant, p.asset_id, p.content_sha256) for p in listed.assets] == [
        (tenant, "pending", SHA["pending"])
    ]
    assert listed.assets[0].HasField("updated_at")
    everywhere = search_service.stub.ListPendingAnalysis(search_pb2.ListPendingAnalysisRequest(limit=1000))
    assert (tenant, "pending") in {(p.tenant, p.asset_id) for p in everywhere.assets}
    before = search_service.stub.Query(search_pb2.QueryRequest(tenant=tenant, text="tuesday", limit=10))
    assert _ids(before) == set()  # cached now
    done = _rec(
        "pending",
        vecs["pending"],
        STATE.ANALYSIS_STATE_ANALYSED,
        ocr_text="closed on tuesday",
        safety_labels=[("FACE_FEMALE", 0.5)],
    )
    assert not _upsert(search_service, tenant, [done]).results[0].HasField("error")
    after = search_service.stub.Query(search_pb2.QueryRequest(tenant=tenant, text="tuesday", limit=10))
    assert _ids(after) == {"pending"}  # the write invalidated the cached empty answer
    got = search_service.stub.GetAssets(search_pb2.GetAssetsRequest(tenant=tenant, asset_ids=["pending"]))
    assert [lb.label for lb in got.assets[0].asset.safety_labels] == ["FACE_FEMALE"]
    listed = search_service.stub.ListPendingAnalysis(search_pb2.ListPendingAnalysisRequest(tenant=tenant))
    assert list(listed.assets) == []


def test_bad_states_and_filters_are_refused_precisely(search_service: Service) -> None:
    tenant = f"t{uuid.uuid4().hex[:10]}"
    bad = record("odd", unit(RNG))
    bad.asset.analysis_state = 9  # type: ignore[assignment]
    resp = _upsert(search_service, tenant, [bad, record("fine", unit(RNG))])
    assert resp.results[0].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "analysis_state is 9" in resp.results[0].error.message
    assert not resp.results[1].HasField("error")
    # The state is the service's own filter: a caller cannot name it (nor undo it).
    with pytest.raises(grpc.RpcError) as err:
        search_service.stub.Query(
            search_pb2.QueryRequest(
                tenant=tenant, text="x", filter=cond("analysis_state", "eq", "pending"), limit=10
            )
        )
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "unknown filter field 'analysis_state'" in (err.value.details() or "")
    for limit in (-1, 1001):
        with pytest.raises(grpc.RpcError) as err:
            search_service.stub.ListPendingAnalysis(search_pb2.ListPendingAnalysisRequest(limit=limit))
        assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert f"limit must be 1 to 1000 (0: 1000), got {limit}" in (err.value.details() or "")


@pytest.mark.integration
async def test_a_weaviate_collection_made_before_analysis_states_gets_the_state_and_stays_visible(
    search_stack: StackInfo,
) -> None:
    """Upgrade: a collection (and objects) from before analysis states; the next start adds the property;
    the old objects, which have no state, count as analysed, and new pending objects are hidden."""
    from services.search.backends.weaviate import backend as wb
    from services.search.backends.weaviate import schema

    name = f"Old{uuid.uuid4().hex[:12]}"
    args = ("127.0.0.1", search_stack.weaviate_http_port, search_stack.weaviate_grpc_port, name, 10.0, 10.0)
    hnsw = {"max_connections": 16, "ef_construction": 64, "ef": 64}
    old_props = [p for p in schema.collection_properties() if p.name != "analysis_state"]

    async def _unchanged(self: object, client: object) -> None:
        return None

    with (
        mock.patch.object(wb, "collection_properties", lambda: old_props),
        mock.patch.object(wb.WeaviateBackend, "_add_analysis_state", _unchanged),
    ):
        old = wb.WeaviateBackend(*args, hnsw, api_key=weaviate_api_key())
        await old.start()
        model = ModelRef(*MODEL)
        await old.set_collection_model(model, DIM)
        legacy = AssetRecord(AssetDoc("legacy", caption="zebra", embedding_model=model), unit(RNG))
        assert await old.upsert("t1", [legacy]) == [None]
        await old.close()
    new = wb.WeaviateBackend(*args, hnsw, api_key=weaviate_api_key())
    await new.start()
    try:
        # Added at start (not left to Weaviate's auto-schema on the first write, which would tokenize
        # it by words), and filterable before any object has a value.
        assert new._client is not None
        config = await new._client.collections.get(name).config.get()
        prop = next(p for p in config.properties if p.name == "analysis_state")
        assert prop.tokenization is not None and prop.tokenization.value == "field"
        assert prop.index_filterable
        pending = AssetRecord(
            AssetDoc("pending", caption="zebra", embedding_model=ModelRef(*MODEL), analysis_state="pending"),
            unit(RNG),
        )
        assert await new.upsert("t1", [pending]) == [None]
        plan = QueryPlan(
            text="zebra",
            vector=None,
            alpha=0.0,
            fusion=Fusion.RELATIVE_SCORE,
            filter=analysed_only(None, ANALYSIS_HIDDEN),
            limit=10,
            offset=0,
            window=100,
            keyword_fields=(("caption", 1.0),),
            include_vectors=False,
        )
        assert [h.doc.asset_id for h in await new.query("t1", plan)] == ["legacy"]
        assert [p.asset_id for p in await new.assets_in_state(None, "pending", 10)] == ["pending"]
    finally:
        await new.close()
