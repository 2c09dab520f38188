"""The search service on a 3-node Weaviate cluster on loopback (devstack/weaviate_cluster.py), replication
factor 3, QUORUM writes and reads: kill -9 of one node during an upsert stream and concurrent searches
loses no acknowledged asset (every one is found after the node returns), searches keep answering, and
the returned node catches up (its copy of the tenant holds every object again).

The node killed is one the search service does not talk to: the service reaches the cluster through one
node's address (behind a Kubernetes Service that name resolves to any ready node); killing that node is
an outage of the address, not of the cluster. Figures are printed; docs/SCALING.md quotes a run."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections.abc import Iterator

import grpc
import numpy as np
import pytest
from imagesearch.v1 import search_pb2, search_pb2_grpc

from devstack.weaviate import auth_headers, weaviate_binary
from devstack.weaviate_cluster import WeaviateCluster
from tests.search.helpers import embedding, record, unit
from tests.service_process import ServiceProcess

pytestmark = pytest.mark.integration

TENANT = "cluster"
PHASE_S = 6.0
KILLED = 2
CATCH_UP_LIMIT_S = 180.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WeaviateCluster]:
    if not weaviate_binary().is_file():
        pytest.skip("Weaviate is not built: `python -m devstack prepare` (make test does it)")
    with WeaviateCluster(tmp_path_factory.mktemp("weaviate-cluster"), nodes=3) as c:
        yield c


def _tenant_objects_per_node(cluster: WeaviateCluster) -> dict[str, int]:
    """Objects of TENANT in each node's copy (Weaviate's verbose node status)."""
    url = f"http://127.0.0.1:{cluster.ports[0].http}/v1/nodes?output=verbose"
    with urllib.request.urlopen(urllib.request.Request(url, headers=auth_headers()), timeout=5) as reply:
        nodes = json.load(reply)["nodes"]
    return {
        n["name"]: sum(s.get("objectCount", 0) for s in n.get("shards") or [] if s.get("name") == TENANT)
        for n in nodes
    }


def test_kill_9_of_a_node_loses_no_acknowledged_asset_and_the_node_catches_up(
    cluster: WeaviateCluster,
) -> None:
    env = {
        **cluster.service_env(0),
        "IMAGESEARCH_SEARCH_WEAVIATE_COLLECTION": "ClusterTest",
        "IMAGESEARCH_SEARCH_WEAVIATE_REPLICATION_FACTOR": "3",
        "IMAGESEARCH_SEARCH_WEAVIATE_ASYNC_REPLICATION": "true",
        "IMAGESEARCH_SEARCH_WEAVIATE_WRITE_CONSISTENCY": "QUORUM",
        "IMAGESEARCH_SEARCH_WEAVIATE_READ_CONSISTENCY": "QUORUM",
        # The repair pass watches a one-node cluster's lifetime (docs/DURABILITY.md); replicas repair here.
        "IMAGESEARCH_SEARCH_WEAVIATE_REPAIR_INTERVAL_S": "0",
        "IMAGESEARCH_SEARCH_CACHE": "memory",
    }
    acknowledged: list[str] = []
    write_errors: list[str] = []
    searches: list[tuple[float, float, bool]] = []
    stop = threading.Event()
    with ServiceProcess("services.search", env=env) as svc, svc.channel() as channel:
        stub = search_pb2_grpc.SearchServiceStub(channel)

        def writer() -> None:
            rng = np.random.default_rng(1)
            batch = 0
            while not stop.is_set():
                ids = [f"a{batch}-{i}" for i in range(10)]
                batch += 1
                try:
                    reply = stub.UpsertAssets(
                        search_pb2.UpsertAssetsRequest(
                            tenant=TENANT, assets=[record(a, unit(rng)) for a in ids]
                        ),
                        timeout=30,
                    )
                except grpc.RpcError as exc:
                    write_errors.append(exc.code().name)
                    continue
                for asset_id, result in zip(ids, reply.results, strict=True):
                    if result.HasField("error"):
                        write_errors.append(result.error.message)
                    else:
                        acknowledged.append(asset_id)

        def reader() -> None:
            rng = np.random.default_rng(2)
            while not stop.is_set():
                request = search_pb2.QueryRequest(tenant=TENANT, vector=embedding(unit(rng)), limit=10)
                start = time.monotonic()
                try:
                    stub.Query(request, timeout=10)
                    ok = True
                except grpc.RpcError as exc:
                    ok = exc.code() == grpc.StatusCode.NOT_FOUND  # before the first write made the tenant
                searches.append((start, time.monotonic(), ok))

        threads = [threading.Thread(target=f, daemon=True) for f in (writer, reader)]
        for t in threads:
            t.start()
        try:
            time.sleep(PHASE_S)
            killed_at = time.monotonic()
            cluster.kill(KILLED)
            time.sleep(PHASE_S)
            restart_at = time.monotonic()
            cluster.restart(KILLED)
            back_at = time.monotonic()
            time.sleep(PHASE_S)
        finally:
            stop.set()
            for t in threads:
                t.join(60)

        # Every acknowledged asset is there (read at QUORUM, all three nodes up again).
        missing: list[str] = []
        for i in range(0, len(acknowledged), 100):
            chunk = acknowledged[i : i + 100]
            got = stub.GetAssets(search_pb2.GetAssetsRequest(tenant=TENANT, asset_ids=chunk), timeout=30)
            missing += list(got.missing_asset_ids)

        # The returned node catches up: its copy of the tenant holds every object again (as the node
        # status reports it; async replication compares the copies periodically).
        caught_up_s = None
        deadline = time.monotonic() + CATCH_UP_LIMIT_S
        while time.monotonic() < deadline:
            counts = _tenant_objects_per_node(cluster)
            if counts.get(cluster.node_name(KILLED), 0) >= len(acknowledged):
                caught_up_s = time.monotonic() - back_at
                break
            time.sleep(1)

    outage = [(s, e, ok) for s, e, ok in searches if killed_at < s and e <= restart_at]
    failed = [x for x in searches if not x[2]]
    latencies = np.array([(e - s) * 1000 for s, e, _ in outage]) if outage else np.array([np.nan])
    caught = f"never ({CATCH_UP_LIMIT_S:.0f} s)"
    if caught_up_s is not None:
        caught = f"{caught_up_s:.1f} s after it was ready"
    print(
        f"\ncluster: {len(acknowledged)} assets acknowledged, {len(write_errors)} write errors "
        f"({sorted(set(write_errors))[:3]}), {len(missing)} missing after the node returned; "
        f"{len(searches)} searches, {len(failed)} failed; during the outage {len(outage)} searches, "
        f"p50 {np.percentile(latencies, 50):.1f} ms, p99 {np.percentile(latencies, 99):.1f} ms; "
        f"node restart {back_at - restart_at:.1f} s; caught up {caught}; "
        f"copies per node {counts}"
    )
    assert acknowledged and not missing, f"acknowledged assets lost: {missing[:10]}"
    assert outage and not failed, f"{len(failed)} searches failed"
    assert caught_up_s is not None, f"the returned node did not catch up: {counts}"
