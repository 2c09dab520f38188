"""The bounded CI version of `make chaos` (tools/chaos, docs/CHAOS.md): one run each of kill -9 of Weaviate,
the search service and the encoder in the middle of an ingest stream with searches under load, on the real
stack. Every acknowledged item must be stored and findable (vector and keyword) exactly once, FAILED must
mean not stored, UNCERTAIN must be safe to resend, searches must fail fast during the outage, and the suite
must serve normally within 10 s of the component's return.

One run per component (a module-scoped fixture); each test asserts one promise of it, so a known defect
is marked on exactly its own assertion.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from typing import Any

import grpc
import numpy as np
import pytest
from imagesearch.v1 import common_pb2, search_pb2, search_pb2_grpc

from devstack import REPO_ROOT, Stack, StackInfo
from tests.search.conftest import weaviate_env
from tests.search.helpers import embedding, record, unit, value
from tests.service_process import ServiceProcess
from tools.chaos.harness import RunConfig, run_once

pytestmark = pytest.mark.integration

COMPONENTS = {"weaviate": 101, "search": 102, "encoder": 103}  # component -> seed
FAILING_SEARCH_P99_MS = 250.0
RECOVERY_S = 10.0
F1 = pytest.mark.xfail(
    strict=True,
    reason="F1: kill -9 of Weaviate right after acknowledged writes leaves some in the object store but "
    "not in the vector index, until branch crash lands",
)

# In the mixed run F1 shows in about 2 runs of 5 (one item each), so there it cannot be strict; the
# probe below hits it every time.
F1_SOMETIMES = pytest.mark.xfail(strict=False, reason=F1.kwargs["reason"])
# F5 showed in 1 run of 5 (one item): not strict either.
F5_SOMETIMES = pytest.mark.xfail(
    strict=False,
    reason="F5: after kill -9 of the search service an item acknowledged FAILED can be stored, until branch "
    "crash lands",
)


@pytest.fixture(scope="module", params=list(COMPONENTS))
def run(request: pytest.FixtureRequest, stack: StackInfo) -> dict[str, Any]:
    component = request.param
    config = RunConfig(
        component=component, items=80, outage_s=2.0, run_deadline_s=150.0, seed=COMPONENTS[component]
    )
    return run_once(Stack(REPO_ROOT), stack, config)


def brief(result: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in result.items() if k != "config"}


def test_every_item_ends_acknowledged_and_stored_once(run: dict[str, Any]) -> None:
    assert run["killed"], brief(run)
    # The client resends what failed for a passing reason: every item ends acknowledged.
    assert run["acknowledged"] == run["sent"], brief(run)
    assert run["lost_not_stored"] == 0, brief(run)
    assert run["duplicated"] == 0, brief(run)


def test_acknowledged_items_are_found_by_keyword(run: dict[str, Any]) -> None:
    assert run["lost_not_in_keyword_index"] == 0, brief(run)


def test_acknowledged_items_are_found_by_vector(run: dict[str, Any], request: pytest.FixtureRequest) -> None:
    if run["component"] == "weaviate":
        request.applymarker(F1_SOMETIMES)
    assert run["lost_not_in_vector_index"] == 0, brief(run)


def test_failed_means_not_stored(run: dict[str, Any], request: pytest.FixtureRequest) -> None:
    if run["component"] == "search":
        request.applymarker(F5_SOMETIMES)
    assert run["failed_but_stored"] == 0, brief(run)


def test_uncertain_is_safe_to_resend(run: dict[str, Any]) -> None:
    assert run["uncertain_resend_not_stored_once"] == 0, brief(run)


def test_searches_fail_fast_during_the_outage_and_recover_within_10_s(run: dict[str, Any]) -> None:
    outage = run["outage_searches"]
    assert outage["count"] > 0, brief(run)
    assert set(outage["codes"]) <= {"OK", "UNAVAILABLE"}, brief(run)
    failing_p99 = outage["failing_p99_ms"]
    assert failing_p99 is None or failing_p99 <= FAILING_SEARCH_P99_MS, brief(run)
    assert run["recovery_s"] is not None and run["recovery_s"] <= RECOVERY_S, brief(run)


def _only(asset_id: str) -> common_pb2.Filter:
    return common_pb2.Filter(
        condition=common_pb2.Condition(
            field="asset_id", operator=common_pb2.FILTER_OPERATOR_EQUAL, value=value(asset_id)
        )
    )


@F1
def test_weaviate_kill_right_after_acknowledged_writes_keeps_them_in_the_vector_index(
    stack: StackInfo,
) -> None:
    """The F1 probe, without the gateway: batches upserted into the search service as fast as it takes
    them, kill -9 of Weaviate the moment the last is acknowledged, then every acknowledged asset must be
    found by its own vector once Weaviate is back."""
    manager = Stack(REPO_ROOT)
    rng = np.random.default_rng(5)
    env = {**weaviate_env(stack, f"ChaosF1x{uuid.uuid4().hex[:10]}"), "IMAGESEARCH_SEARCH_CACHE": "memory"}
    vectors = {f"f1-{i:04d}": unit(rng) for i in range(320)}
    with ServiceProcess("services.search", env=env) as svc, grpc.insecure_channel(svc.address) as channel:
        search = search_pb2_grpc.SearchServiceStub(channel)
        ids = sorted(vectors)
        for start in range(0, len(ids), 40):
            batch = [record(a, vectors[a], caption=f"probe {a}") for a in ids[start : start + 40]]
            resp = search.UpsertAssets(search_pb2.UpsertAssetsRequest(tenant="f1", assets=batch), timeout=30)
            assert not any(r.HasField("error") for r in resp.results)
        pid = manager.status()["weaviate"].pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        manager.stop("weaviate")
        manager.start("weaviate")
        deadline = time.monotonic() + 60
        while True:
            try:
                stored = search.GetAssets(search_pb2.GetAssetsRequest(tenant="f1", asset_ids=ids), timeout=5)
                break
            except grpc.RpcError:
                assert (
                    time.monotonic() < deadline
                ), "the search service did not answer after Weaviate's restart"
                time.sleep(0.25)
        assert not stored.missing_asset_ids
        unfindable = []
        for asset_id in ids:
            hits = search.Query(
                search_pb2.QueryRequest(
                    tenant="f1",
                    vector=embedding(vectors[asset_id]),
                    filter=_only(asset_id),
                    limit=1,
                    skip_cache=True,
                ),
                timeout=10,
            ).hits
            if [h.asset.asset_id for h in hits] != [asset_id]:
                unfindable.append(asset_id)
    assert unfindable == [], f"{len(unfindable)} of {len(ids)} acknowledged assets not in the vector index"
