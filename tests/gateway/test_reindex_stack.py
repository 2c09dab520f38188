"""Issue 18's end-to-end test on the real stack: Weaviate and Redis (devstack), MinIO for the originals,
two encoder processes (the "demo" and "photo" packages). A sample is ingested, re-indexed to the photo
package while searches and ingests run, activated, rolled back and re-activated, with no failed or
empty search during the switch, and every asset findable under both versions (docs/LIFECYCLE.md)."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import numpy as np
import pytest
from imagesearch.v1 import admin_pb2, gateway_pb2, search_pb2

from devstack import Stack, StackInfo
from devstack.weaviate import weaviate_api_key
from tests.gateway.suite import Suite, open_data_sample
from tests.gateway.test_reindex import (
    DEMO_REF,
    GUS,
    PHOTO_REF,
    REPO_ROOT,
    admin,
    models_of,
    request,
    start_suite,
    wait_for,
)
from tests.gateway.test_reindex import pytestmark as prerequisites

pytestmark = prerequisites


@pytest.fixture(scope="module")
def stack_suite(object_store: StackInfo) -> Iterator[Suite]:
    manager = Stack(REPO_ROOT)
    info = manager.up(only="redis,weaviate")
    search_env = {
        "IMAGESEARCH_SEARCH_BACKEND": "weaviate",
        "IMAGESEARCH_SEARCH_WEAVIATE_HOST": info.host,
        "IMAGESEARCH_SEARCH_WEAVIATE_HTTP_PORT": str(info.weaviate_http_port),
        "IMAGESEARCH_SEARCH_WEAVIATE_GRPC_PORT": str(info.weaviate_grpc_port),
        "IMAGESEARCH_SEARCH_WEAVIATE_API_KEY": weaviate_api_key(),
        "IMAGESEARCH_SEARCH_WEAVIATE_COLLECTION": f"Reindex{uuid.uuid4().hex[:10]}",
        "IMAGESEARCH_SEARCH_CACHE": "redis",
        "IMAGESEARCH_SEARCH_REDIS_URL": info.redis_url or "",
        "IMAGESEARCH_SEARCH_CACHE_KEY_PREFIX": f"reindex-{uuid.uuid4().hex[:8]}:",
    }
    s, photo = start_suite(
        {
            **dict(object_store.service_env),
            "IMAGESEARCH_GATEWAY_BLOB_S3_BUCKET": f"reindex-{uuid.uuid4().hex[:10]}",
            "IMAGESEARCH_GATEWAY_REINDEX_RATE_PER_S": "20",
            "IMAGESEARCH_GATEWAY_REINDEX_PAGE_SIZE": "5",
            "IMAGESEARCH_GATEWAY_REINDEX_BATCH": "5",
            "IMAGESEARCH_GATEWAY_MODEL_STATE_TTL_S": "0.5",
        },
        search_env,
    )
    try:
        yield s
    finally:
        s.stop()
        photo.stop()
        manager.down(only=info.started)


class Searcher(threading.Thread):
    """Searches without pause (text, and example images: the latter use only the vector leg, so they
    depend on the active version's vectors alone); records failures, empty answers and models seen."""

    def __init__(self, s: Suite, items: list[Any]) -> None:
        super().__init__(daemon=True)
        self.stub = s.gateway_stub()
        self.items = items
        self.stop = threading.Event()
        self.failures: list[str] = []
        self.empty: list[str] = []
        self.models: list[str] = []
        self.count = 0

    def run(self) -> None:
        i = 0
        while not self.stop.is_set():
            item = self.items[i % len(self.items)]
            req = (
                gateway_pb2.SearchRequest(image=item.data, page_size=5)
                if i % 2
                else gateway_pb2.SearchRequest(text=item.caption, page_size=5)
            )
            try:
                resp = self.stub.Search(req, metadata=GUS, timeout=30)
                if not resp.results:
                    self.empty.append(item.asset_id)
                self.models.append(resp.model.name)
            except grpc.RpcError as exc:
                self.failures.append(f"{exc.code().name}: {exc.details()}")
            self.count += 1
            i += 1


def findable_under(s: Suite, asset_ids: list[str], model_name: str) -> list[str]:
    """The assets a vector query with their own stored vector of `model_name` does not find first."""
    stub = s.search_stub()
    lost = []
    for aid in asset_ids:
        got = stub.GetAssets(
            search_pb2.GetAssetsRequest(tenant="globex", asset_ids=[aid], include_vectors=True)
        )
        rec = got.assets[0]
        vecs = [rec.image_embedding, *rec.vectors]
        mine = next(e for e in vecs if e.model.name == model_name and e.vector_name in ("", "semantic"))
        resp = stub.Query(search_pb2.QueryRequest(tenant="globex", vector=mine, limit=3))
        if aid not in [h.asset.asset_id for h in resp.hits]:
            lost.append(aid)
        assert np.isclose(resp.hits[0].scores.cosine_similarity, 1.0, atol=1e-3) or aid in lost
    return lost


def similar_model(s: Suite, asset_id: str) -> str:
    """The model version whose vectors a SearchSimilar from `asset_id` compared (it must find others)."""
    resp = s.gateway_stub().SearchSimilar(
        gateway_pb2.SearchSimilarRequest(asset_id=asset_id, page_size=5), metadata=GUS, timeout=30
    )
    assert resp.results, f"more like {asset_id} came back empty"
    return resp.model.name


def test_reindex_switch_and_rollback_under_load_on_the_real_stack(stack_suite: Suite) -> None:
    s = stack_suite
    items = open_data_sample(groups=6, extra=6)  # 24 held-out items
    first, during = items[:20], items[20:]
    s.ingest_all_created([request(i) for i in first], GUS)
    st = admin(s)
    source = first[0].asset_id
    assert similar_model(s, source) == DEMO_REF.name

    searcher = Searcher(s, first)
    searcher.start()
    try:
        st.StartReindex(admin_pb2.StartReindexRequest(target=PHOTO_REF), metadata=GUS, timeout=30)
        s.ingest_all_created([request(i) for i in during], GUS)  # while the job runs: both versions
        done = wait_for(s, lambda j: j.state != admin_pb2.REINDEX_STATE_RUNNING, timeout_s=150)
        assert done.state == admin_pb2.REINDEX_STATE_SUCCEEDED and done.missing_originals == 0, done
        activate = admin_pb2.ActivateModelRequest(model=PHOTO_REF)
        versions = st.ActivateModel(activate, metadata=GUS, timeout=30).versions
        assert versions.active == PHOTO_REF
        assert {v.model.name: v.assets_covered for v in versions.versions} == {
            DEMO_REF.name: 24,
            PHOTO_REF.name: 24,
        }
        time.sleep(2.0)
        assert (
            st.RollbackModel(admin_pb2.RollbackModelRequest(), metadata=GUS, timeout=30).versions.active
            == DEMO_REF
        )
        time.sleep(2.0)
        assert similar_model(s, source) == DEMO_REF.name  # more-like-this follows the rollback too
        assert st.ActivateModel(activate, metadata=GUS, timeout=30).versions.active == PHOTO_REF
        time.sleep(2.0)
    finally:
        searcher.stop.set()
        searcher.join(timeout=60)
    assert searcher.count > 20
    assert not searcher.failures, searcher.failures[:5]
    assert not searcher.empty, searcher.empty[:5]
    # Queries followed the switches: demo first, photo after activation, and photo at the end.
    assert searcher.models[0] == DEMO_REF.name and searcher.models[-1] == PHOTO_REF.name
    assert PHOTO_REF.name in searcher.models
    held = models_of(s)
    assert len(held) == 24 and all(ms == {DEMO_REF.name, PHOTO_REF.name} for ms in held.values()), held
    ids = sorted(held)
    assert findable_under(s, ids, DEMO_REF.name) == []
    assert findable_under(s, ids, PHOTO_REF.name) == []
    assert similar_model(s, source) == PHOTO_REF.name
