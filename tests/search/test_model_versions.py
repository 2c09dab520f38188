"""Versioned vectors in the search service, on both backends over gRPC: a tenant's assets hold the
vectors of two model versions at once; vectors-only writes (a re-index) keep metadata and the other
version's vectors; activate needs full coverage; queries without a model use the active version;
rollback and gc; the active pointer survives a restart (docs/LIFECYCLE.md)."""

from __future__ import annotations

import signal
import time
import uuid
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from imagesearch.v1 import common_pb2, search_pb2
from imagesearch.v1.search_pb2_grpc import SearchServiceStub

from tests.search.conftest import Service, weaviate_env
from tests.search.helpers import MODEL, embedding, record, unit
from tests.service_process import ServiceProcess

NEW = ("test-model-b", "2")
NEW_DIM = 12
RNG = np.random.default_rng(18)
IDS = [f"a{i}" for i in range(6)]
OLD_VECS = {a: unit(RNG) for a in IDS}
NEW_VECS = {a: unit(RNG, NEW_DIM) for a in IDS}


def ref(model: tuple[str, str]) -> common_pb2.ModelRef:
    return common_pb2.ModelRef(name=model[0], version=model[1])


def new_only(asset_id: str, v: np.ndarray | None = None) -> search_pb2.AssetRecord:
    """A vectors-only record of the new version (what a re-index writes)."""
    return search_pb2.AssetRecord(
        asset=common_pb2.Asset(asset_id=asset_id),
        image_embedding=embedding(NEW_VECS[asset_id] if v is None else v, NEW),
    )


def both(asset_id: str, old: np.ndarray, new: np.ndarray, **fields: Any) -> search_pb2.AssetRecord:
    """A record carrying both versions' vectors (what ingest writes during a re-index)."""
    r = record(asset_id, old, **fields)
    r.vectors.append(embedding(new, NEW))
    return r


def errors(resp: search_pb2.UpsertAssetsResponse) -> list[tuple[int, str]]:
    return [(r.error.code, r.error.message) for r in resp.results if r.HasField("error")]


def versions(
    stub: SearchServiceStub, tenant: str, coverage: bool = True
) -> search_pb2.GetModelVersionsResponse:
    return stub.GetModelVersions(search_pb2.GetModelVersionsRequest(tenant=tenant, include_coverage=coverage))


def covered(view: search_pb2.GetModelVersionsResponse) -> dict[tuple[str, str], int]:
    return {(v.model.name, v.model.version): v.assets_covered for v in view.versions}


def top(
    stub: SearchServiceStub, tenant: str, vec: np.ndarray, model: tuple[str, str] | None
) -> search_pb2.QueryHit:
    e = embedding(vec, model or ("", ""))
    resp = stub.Query(search_pb2.QueryRequest(tenant=tenant, vector=e, include_vectors=True))
    assert resp.hits, "a search during the switch came back empty"
    return resp.hits[0]


def code_of(call, *args) -> tuple[grpc.StatusCode, str]:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as err:
        call(*args)
    return err.value.code(), err.value.details()


def test_two_versions_activate_rollback_gc(search_service: Service) -> None:
    stub = search_service.stub
    tenant = f"t{uuid.uuid4().hex[:10]}"
    resp = stub.UpsertAssets(
        search_pb2.UpsertAssetsRequest(
            tenant=tenant,
            assets=[
                record(a, OLD_VECS[a], caption=f"photo {a}", content_sha256=f"{i:064x}")
                for i, a in enumerate(IDS)
            ],
        )
    )
    assert not errors(resp)

    # Before the version is added for the tenant, its vectors are refused (item by item).
    resp = stub.UpsertAssets(
        search_pb2.UpsertAssetsRequest(tenant=tenant, assets=[new_only("a0")], vectors_only=True)
    )
    assert resp.results[0].error.code == grpc.StatusCode.FAILED_PRECONDITION.value[0], resp
    assert "test-model-b:2" in resp.results[0].error.message

    added = stub.AddModelVersion(search_pb2.AddModelVersionRequest(tenant=tenant, model=ref(NEW))).versions
    assert [(v.model.name, v.held, v.active, v.primary_slot) for v in added.versions] == [
        ("test-model", True, True, True),
        ("test-model-b", True, False, False),
    ]
    assert added.active == ref(MODEL) and not added.HasField("previous")

    ghost = search_pb2.AssetRecord(
        asset=common_pb2.Asset(asset_id="ghost"), image_embedding=embedding(NEW_VECS["a1"], NEW)
    )
    # A re-index writes the new version's vectors only: metadata and the old vectors are kept; an
    # asset that does not exist fails its item only.
    resp = stub.UpsertAssets(
        search_pb2.UpsertAssetsRequest(
            tenant=tenant, assets=[new_only(a) for a in IDS[:3]] + [ghost], vectors_only=True
        )
    )
    assert [r.HasField("error") for r in resp.results] == [False, False, False, True]
    assert resp.results[3].error.code == grpc.StatusCode.NOT_FOUND.value[0]
    # Vectors computed from an image the asset no longer holds are refused (ABORTED), nothing changes.
    stale = new_only("a4")
    stale.asset.content_sha256 = f"{77:064x}"
    resp = stub.UpsertAssets(search_pb2.UpsertAssetsRequest(tenant=tenant, assets=[stale], vectors_only=True))
    assert resp.results[0].error.code == grpc.StatusCode.ABORTED.value[0], resp
    got = stub.GetAssets(
        search_pb2.GetAssetsRequest(tenant=tenant, asset_ids=["a1", "a4"], include_vectors=True)
    )
    a1, a4 = got.assets
    assert a1.asset.caption == "photo a1" and a1.asset.content_sha256 == f"{1:064x}"
    assert np.allclose(np.frombuffer(a1.image_embedding.values, "<f4"), OLD_VECS["a1"], atol=1e-6)
    assert a1.image_embedding.model == ref(MODEL)
    new_vec = [v for v in a1.vectors if v.model == ref(NEW)]
    assert len(new_vec) == 1 and new_vec[0].vector_name == ""
    assert np.allclose(np.frombuffer(new_vec[0].values, "<f4"), NEW_VECS["a1"], atol=1e-6)
    assert [(m.name, m.version) for m in a1.models] == [MODEL, NEW]
    assert [(m.name, m.version) for m in a4.models] == [MODEL]
    assert covered(versions(stub, tenant)) == {MODEL: 6, NEW: 3}

    # Activation needs every asset covered.
    code, details = code_of(
        stub.ActivateModelVersion, search_pb2.ActivateModelVersionRequest(tenant=tenant, model=ref(NEW))
    )
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "3 of the tenant's 6 assets" in details

    resp = stub.UpsertAssets(
        search_pb2.UpsertAssetsRequest(
            tenant=tenant, assets=[new_only(a) for a in IDS[3:]], vectors_only=True
        )
    )
    assert not errors(resp)
    # Ingest while both are held writes both versions of a new asset.
    extra_old, extra_new = unit(RNG), unit(RNG, NEW_DIM)
    assert not errors(
        stub.UpsertAssets(
            search_pb2.UpsertAssetsRequest(tenant=tenant, assets=[both("a6", extra_old, extra_new)])
        )
    )
    gen_before = stub.GetIndexGeneration(search_pb2.GetIndexGenerationRequest(tenant=tenant)).index_generation
    # A query without a model searches the active (old) version; the new one by name.
    assert top(stub, tenant, OLD_VECS["a2"], None).asset.asset_id == "a2"
    cached = stub.Query(
        search_pb2.QueryRequest(
            tenant=tenant, vector=embedding(OLD_VECS["a2"], ("", "")), include_vectors=True
        )
    )
    assert cached.cached
    hit = top(stub, tenant, NEW_VECS["a5"], NEW)
    assert hit.asset.asset_id == "a5" and hit.image_embedding.model == ref(NEW)
    assert hit.scores.vector_name == "semantic"

    view = stub.ActivateModelVersion(
        search_pb2.ActivateModelVersionRequest(tenant=tenant, model=ref(NEW))
    ).versions
    assert view.active == ref(NEW) and view.previous == ref(MODEL)
    assert view.index_generation > gen_before  # cached results and pages are invalidated
    # Now a query without a model is the new version's; the old one stays searchable by name.
    hit = top(stub, tenant, NEW_VECS["a4"], None)
    assert hit.asset.asset_id == "a4" and hit.image_embedding.model == ref(NEW)
    assert top(stub, tenant, extra_new, None).asset.asset_id == "a6"
    assert top(stub, tenant, OLD_VECS["a3"], MODEL).asset.asset_id == "a3"
    code, _ = code_of(
        stub.Query, search_pb2.QueryRequest(tenant=tenant, vector=embedding(OLD_VECS["a3"], ("", "")))
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT  # the old version's dimension on the new version

    # A metadata update with the same image keeps the other version's vectors; a new image drops them.
    same = record("a0", OLD_VECS["a0"], caption="renamed a0", content_sha256=f"{0:064x}")
    changed = record("a1", unit(RNG), caption="new image a1", content_sha256=f"{99:064x}")
    assert not errors(
        stub.UpsertAssets(search_pb2.UpsertAssetsRequest(tenant=tenant, assets=[same, changed]))
    )
    assert covered(versions(stub, tenant)) == {MODEL: 7, NEW: 6}
    assert top(stub, tenant, NEW_VECS["a0"], None).asset.caption == "renamed a0"

    # Rollback returns to the old version (its vectors were kept), re-activation needs coverage again.
    view = stub.RollbackModelVersion(search_pb2.RollbackModelVersionRequest(tenant=tenant)).versions
    assert view.active == ref(MODEL) and view.previous == ref(NEW)
    assert top(stub, tenant, OLD_VECS["a5"], None).asset.asset_id == "a5"
    code, details = code_of(
        stub.ActivateModelVersion, search_pb2.ActivateModelVersionRequest(tenant=tenant, model=ref(NEW))
    )
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "1 of the tenant's 7 assets" in details
    assert not errors(
        stub.UpsertAssets(
            search_pb2.UpsertAssetsRequest(tenant=tenant, assets=[new_only("a1")], vectors_only=True)
        )
    )
    view = stub.ActivateModelVersion(
        search_pb2.ActivateModelVersionRequest(tenant=tenant, model=ref(NEW))
    ).versions
    assert view.active == ref(NEW)

    # gc: refused for the active version and for the first model; unknown versions are NOT_FOUND.
    def gc(model: tuple[str, str]) -> search_pb2.RemoveModelVersionResponse:
        return stub.RemoveModelVersion(search_pb2.RemoveModelVersionRequest(tenant=tenant, model=ref(model)))

    assert code_of(gc, NEW)[0] == grpc.StatusCode.FAILED_PRECONDITION
    assert code_of(gc, MODEL)[0] == grpc.StatusCode.FAILED_PRECONDITION
    assert code_of(gc, ("nope", "1"))[0] == grpc.StatusCode.NOT_FOUND
    assert code_of(gc, ("", "1"))[0] == grpc.StatusCode.INVALID_ARGUMENT
    stub.RollbackModelVersion(search_pb2.RollbackModelVersionRequest(tenant=tenant))
    removed = gc(NEW)
    assert removed.assets_changed == 7
    assert covered(removed.versions) == {MODEL: 7, NEW: 0}
    assert not removed.versions.HasField("previous")
    code, _ = code_of(
        stub.Query, search_pb2.QueryRequest(tenant=tenant, vector=embedding(NEW_VECS["a2"], NEW))
    )
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    code, _ = code_of(stub.RollbackModelVersion, search_pb2.RollbackModelVersionRequest(tenant=tenant))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    got = stub.GetAssets(search_pb2.GetAssetsRequest(tenant=tenant, asset_ids=["a2"], include_vectors=True))
    assert [(m.name, m.version) for m in got.assets[0].models] == [MODEL] and got.assets[
        0
    ].asset.caption == "photo a2"
    assert top(stub, tenant, OLD_VECS["a2"], None).asset.asset_id == "a2"
    stats = stub.GetStats(search_pb2.GetStatsRequest(tenant=tenant))
    assert [(m.name, m.version) for m in stats.models] == [MODEL, NEW]
    assert {v.name for v in stats.vectors} == {"semantic"}  # the later version's slots are not listed


def test_scan_pages_every_asset_once_with_its_models(search_service: Service) -> None:
    stub = search_service.stub
    tenant = f"t{uuid.uuid4().hex[:10]}"
    ids = [f"s{i:02d}" for i in range(23)]
    assert not errors(
        stub.UpsertAssets(
            search_pb2.UpsertAssetsRequest(tenant=tenant, assets=[record(a, unit(RNG)) for a in ids])
        )
    )
    seen: list[str] = []
    token = ""
    while True:
        page = stub.ScanAssets(search_pb2.ScanAssetsRequest(tenant=tenant, page_token=token, page_size=5))
        assert len(page.assets) <= 5
        seen += [r.asset.asset_id for r in page.assets]
        assert all([(m.name, m.version) for m in r.models] == [MODEL] for r in page.assets)
        assert all(not r.image_embedding.values for r in page.assets)
        token = page.next_page_token
        if not token:
            break
    assert sorted(seen) == ids and len(seen) == len(ids)
    code, _ = code_of(stub.ScanAssets, search_pb2.ScanAssetsRequest(tenant=tenant, page_size=100000))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    code, _ = code_of(stub.ScanAssets, search_pb2.ScanAssetsRequest(tenant="no/such"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    code, _ = code_of(stub.ScanAssets, search_pb2.ScanAssetsRequest(tenant="nosuchtenant"))
    assert code == grpc.StatusCode.NOT_FOUND


def test_active_pointer_survives_a_kill(tmp_path: Path) -> None:
    """Embedded: the pointer is in the tenant's own files (fsync + rename); SIGKILL, restart, same state."""
    env = {"IMAGESEARCH_SEARCH_DATA_DIR": str(tmp_path), "IMAGESEARCH_SEARCH_CACHE": "memory"}
    proc = ServiceProcess("services.search", env=env).start()
    try:
        stub = SearchServiceStub(proc.channel())
        assert not errors(
            stub.UpsertAssets(search_pb2.UpsertAssetsRequest(tenant="k", assets=[record("x", unit(RNG))]))
        )
        stub.AddModelVersion(search_pb2.AddModelVersionRequest(tenant="k", model=ref(NEW)))
        assert not errors(
            stub.UpsertAssets(
                search_pb2.UpsertAssetsRequest(
                    tenant="k", assets=[new_only("x", unit(RNG, NEW_DIM))], vectors_only=True
                )
            )
        )
        stub.ActivateModelVersion(search_pb2.ActivateModelVersionRequest(tenant="k", model=ref(NEW)))
    finally:
        proc.stop(signal.SIGKILL)
    proc = ServiceProcess("services.search", env=env).start()
    try:
        view = versions(SearchServiceStub(proc.channel()), "k")
        assert view.active == ref(NEW) and view.previous == ref(MODEL)
        assert covered(view) == {MODEL: 1, NEW: 1}
    finally:
        proc.stop()


@pytest.mark.integration
def test_a_second_replica_sees_another_replicas_version_changes(search_stack: Any) -> None:
    """Two search processes over one Weaviate collection (replicas): B read the tenant's state before A
    registered a version, re-indexed into it and activated it. B's writes must neither be refused nor
    drop the version's vectors, and B must answer queries in it."""
    env = {
        **weaviate_env(search_stack, f"Test{uuid.uuid4().hex[:12]}"),
        "IMAGESEARCH_SEARCH_CACHE": "none",
        "IMAGESEARCH_SEARCH_MODEL_STATE_TTL_S": "1.0",
    }
    a = ServiceProcess("services.search", env=env).start()
    b = ServiceProcess("services.search", env=env).start()
    try:
        sa, sb = SearchServiceStub(a.channel()), SearchServiceStub(b.channel())
        old = {i: unit(RNG) for i in IDS[:2]}
        assert not errors(sa.UpsertAssets(search_pb2.UpsertAssetsRequest(
            tenant="r", assets=[record(i, v) for i, v in old.items()])))  # fmt: skip
        assert top(sb, "r", old["a0"], None).asset.asset_id == "a0"  # B has read the state now
        sa.AddModelVersion(search_pb2.AddModelVersionRequest(tenant="r", model=ref(NEW)))
        assert not errors(sa.UpsertAssets(search_pb2.UpsertAssetsRequest(
            tenant="r", assets=[new_only(i) for i in old], vectors_only=True)))  # fmt: skip
        sa.ActivateModelVersion(search_pb2.ActivateModelVersionRequest(tenant="r", model=ref(NEW)))
        # B: a query naming no version follows A's activation once B's cached state expires ...
        time.sleep(1.2)
        assert top(sb, "r", NEW_VECS["a0"], None).asset.asset_id == "a0"
        # ... a write carrying both versions (ingest during a re-index) is accepted ...
        assert not errors(sb.UpsertAssets(search_pb2.UpsertAssetsRequest(
            tenant="r", assets=[both("a1", old["a1"], NEW_VECS["a1"], caption="renamed")])))  # fmt: skip
        # ... a metadata-only rewrite of a0 with the first model's vector keeps a0's new-version vectors ...
        assert not errors(sb.UpsertAssets(search_pb2.UpsertAssetsRequest(
            tenant="r", assets=[record("a0", old["a0"], caption="renamed")])))  # fmt: skip
        assert covered(versions(sa, "r")) == {MODEL: 2, NEW: 2}
        # ... and B answers in the version A activated.
        for i in old:
            assert top(sb, "r", NEW_VECS[i], NEW).asset.asset_id == i
    finally:
        a.stop()
        b.stop()
