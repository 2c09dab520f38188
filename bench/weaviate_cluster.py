"""A node of a replicated Weaviate cluster dies under load: what is lost, how searches fare, how long
the node takes to catch up (issue 20; figures in docs/SCALING.md, section "Weaviate cluster").

    python -m bench.weaviate_cluster                       # 3 nodes, RF 3, each node killed in turn
    python -m bench.weaviate_cluster --victims 0 --outage-s 10 --read-consistency ONE

For each victim: the search service (real process, talking to a node that survives) takes a stream of
upserts (one writer) while two searchers query it; after a warm-up the victim gets SIGKILL, stays down
for the outage, and is started again on its data and ports. Then the stream stops and the run checks:
- every acknowledged asset is found through the service by its vector (top hit of a query with its
  own vector) and by its keyword (a caption token only it has);
- the restarted node holds every acknowledged asset by itself: its node status reports the tenant's
  object count, and a consistency-ONE read on that node finds every acknowledged id (catch-up time:
  from the restart until both hold);
- search failures and latency quantiles (p50/p99) before and during the outage.
The cluster (devstack/weaviate_cluster.py) runs in a temporary directory and is stopped at the end;
the shared stack is not touched. Bounded: every phase has a duration or a timeout.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import threading
import time
import urllib.request
import uuid
import zlib
from collections.abc import Mapping
from pathlib import Path

import grpc
import numpy as np
import weaviate
from imagesearch.v1 import common_pb2, search_pb2, search_pb2_grpc
from weaviate.classes.config import ConsistencyLevel
from weaviate.classes.init import Auth
from weaviate.classes.query import Filter

from devstack.weaviate import auth_headers, weaviate_api_key
from devstack.weaviate_cluster import NodePorts, WeaviateCluster
from services.search.backends.weaviate.schema import VECTOR_NAME, object_uuid

DIM = 32
MODEL = common_pb2.ModelRef(name="cluster-bench", version="1")
BATCH = 20


@dataclasses.dataclass
class OutageReport:
    victim: int
    collection: str = ""
    acknowledged: int = 0
    write_failures: int = 0
    lost_vector: list[str] = dataclasses.field(default_factory=list)
    lost_keyword: list[str] = dataclasses.field(default_factory=list)
    searches_before: int = 0
    failed_before: int = 0
    p50_before_ms: float = 0.0
    p99_before_ms: float = 0.0
    searches_during: int = 0
    failed_during: int = 0
    p50_during_ms: float = 0.0
    p99_during_ms: float = 0.0
    restart_ready_s: float = 0.0
    # Seconds after the restarted node was ready until a consistency-ONE read on it (its own replica)
    # found every acknowledged asset: the catch-up.
    catch_up_s: float | None = None
    victim_missing_at_end: int = -1
    # Acknowledged assets the restarted node stores (a read by id returns them) but its id filter does
    # not find at the end: like its vector index (F1), an inverted index may lose the tail of its
    # write-ahead log to a kill -9, and async replication, which compares object stores, cannot tell.
    victim_unfilterable: list[str] = dataclasses.field(default_factory=list)
    # Seconds until the node status API's object count showed them all (None: not waited for, or not
    # within the limit). Weaviate refreshes that count lazily, about a minute behind the data here.
    status_count_s: float | None = None
    # Acknowledged assets the restarted node stores but its own vector index does not return.
    victim_unindexed: list[str] = dataclasses.field(default_factory=list)
    # Assets acknowledged when the node was killed (ids are numbered in write order: a0, a1, ...).
    acked_at_kill: int = 0

    def line(self) -> str:
        catch_up = "never" if self.catch_up_s is None else f"{self.catch_up_s:.1f}s"
        status = "not seen" if self.status_count_s is None else f"{self.status_count_s:.1f}s"
        return (
            f"node{self.victim}: acked {self.acknowledged} (write failures {self.write_failures}); lost: "
            f"vector {len(self.lost_vector)}, keyword {len(self.lost_keyword)}; searches before "
            f"{self.searches_before} (failed {self.failed_before}, p50 {self.p50_before_ms:.1f} ms, p99 "
            f"{self.p99_before_ms:.1f} ms); during outage {self.searches_during} (failed "
            f"{self.failed_during}, p50 {self.p50_during_ms:.1f} ms, p99 {self.p99_during_ms:.1f} ms); "
            f"restart ready {self.restart_ready_s:.1f}s; caught up {catch_up} after it was ready "
            f"(node status count after {status}; missing on it at the end: {self.victim_missing_at_end}; "
            f"stored but not found by its id filter: {len(self.victim_unfilterable)}; "
            "not in its vector index: "
            f"{len(self.victim_unindexed)}{self._unindexed_when()})"
        )

    def _unindexed_when(self) -> str:
        """Were the assets missing from the node's vector index written before or during its outage?"""
        if not self.victim_unindexed:
            return ""
        numbers = sorted(int(a[1:]) for a in self.victim_unindexed)
        before = sum(1 for n in numbers if n < self.acked_at_kill)
        span = f"a{numbers[0]}..a{numbers[-1]}"
        return f", {before} written before the kill ({span}; kill at about a{self.acked_at_kill})"


def _vector(asset_id: str) -> np.ndarray:
    """A fixed random unit vector per asset (so the checker can rebuild it)."""
    rng = np.random.default_rng(zlib.crc32(asset_id.encode()))
    v = rng.standard_normal(DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def _token(asset_id: str) -> str:
    """A caption word only this asset has."""
    return "kw" + asset_id.replace("-", "")


def _embedding(v: np.ndarray) -> common_pb2.Embedding:
    return common_pb2.Embedding(values=np.asarray(v, dtype="<f4").tobytes(), model=MODEL)


class Load:
    """One writer and some searchers against the service, recording acks, failures and latencies."""

    def __init__(self, stub: search_pb2_grpc.SearchServiceStub, tenant: str, searchers: int = 2) -> None:
        self.stub, self.tenant = stub, tenant
        self.acked: list[str] = []
        self.write_failures = 0
        self.searches: list[tuple[float, float, bool]] = []  # (start, seconds, ok)
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._write, daemon=True)] + [
            threading.Thread(target=self._search, args=(i,), daemon=True) for i in range(searchers)
        ]
        self._lock = threading.Lock()

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=150)

    def _write(self) -> None:
        n = 0
        while not self._stop.is_set():
            ids = [f"a{n + i}" for i in range(BATCH)]
            n += BATCH
            assets = [
                search_pb2.AssetRecord(
                    asset=common_pb2.Asset(asset_id=a, caption=f"photo {_token(a)}"),
                    image_embedding=_embedding(_vector(a)),
                )
                for a in ids
            ]
            try:
                resp = self.stub.UpsertAssets(
                    search_pb2.UpsertAssetsRequest(tenant=self.tenant, assets=assets), timeout=30
                )
            except grpc.RpcError:
                self.write_failures += len(ids)
                continue
            with self._lock:
                for a, r in zip(ids, resp.results, strict=True):
                    if r.HasField("error"):
                        self.write_failures += 1
                    else:
                        self.acked.append(a)

    def _search(self, seed: int) -> None:
        rng = np.random.default_rng(seed)
        while not self._stop.is_set():
            with self._lock:
                known = len(self.acked)
                target = self.acked[int(rng.integers(known))] if known else "a0"
            req = search_pb2.QueryRequest(
                tenant=self.tenant, vector=_embedding(_vector(target)), text=_token(target), limit=10,
                skip_cache=True,
            )  # fmt: skip
            t0 = time.monotonic()
            try:
                self.stub.Query(req, timeout=10)
                ok = True
            except grpc.RpcError as exc:
                # Before the first write the tenant does not exist yet: not a failure of the cluster.
                ok = exc.code() == grpc.StatusCode.NOT_FOUND
            self.searches.append((t0, time.monotonic() - t0, ok))


def _quantiles(rows: list[tuple[float, float, bool]]) -> tuple[int, int, float, float]:
    lat = [d for _, d, ok in rows if ok]
    failed = sum(1 for *_, ok in rows if not ok)
    if not lat:
        return len(rows), failed, 0.0, 0.0
    return len(rows), failed, float(np.percentile(lat, 50) * 1e3), float(np.percentile(lat, 99) * 1e3)


def lost_assets(
    stub: search_pb2_grpc.SearchServiceStub, tenant: str, ids: list[str]
) -> tuple[list[str], list[str]]:
    """(not the top hit for their own vector, not found by their own keyword), through the service."""
    by_vector, by_keyword = [], []
    for a in ids:
        hits = stub.Query(
            search_pb2.QueryRequest(tenant=tenant, vector=_embedding(_vector(a)), limit=1, skip_cache=True),
            timeout=30,
        ).hits
        if not hits or hits[0].asset.asset_id != a:
            by_vector.append(a)
        hits = stub.Query(
            search_pb2.QueryRequest(tenant=tenant, text=_token(a), limit=1, skip_cache=True), timeout=30
        ).hits
        if not hits or hits[0].asset.asset_id != a:
            by_keyword.append(a)
    return by_vector, by_keyword


def node_object_count(http_port: int, collection: str, tenant: str, node: str) -> int | None:
    """The tenant's object count on ``node`` by the node status API (None when it does not say)."""
    url = f"http://127.0.0.1:{http_port}/v1/nodes/{collection}?output=verbose"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=auth_headers()), timeout=5) as resp:
            nodes = json.load(resp)["nodes"]
    except (OSError, ValueError, KeyError):
        return None
    for n in nodes:
        if n.get("name") == node:
            for shard in n.get("shards") or []:
                if shard.get("name") == tenant:
                    return int(shard.get("objectCount", 0))
    return None


def missing_on_node(ports: NodePorts, collection: str, tenant: str, ids: list[str]) -> list[str]:
    """Acknowledged ids a consistency-ONE read on this node does not find (it reads its own replica)."""
    client = weaviate.connect_to_local(
        port=ports.http, grpc_port=ports.grpc, auth_credentials=Auth.api_key(weaviate_api_key())
    )
    try:
        col = client.collections.get(collection).with_tenant(tenant)
        col = col.with_consistency_level(ConsistencyLevel.ONE)
        found: set[str] = set()
        for i in range(0, len(ids), 500):
            chunk = [object_uuid(tenant, a) for a in ids[i : i + 500]]
            res = col.query.fetch_objects(filters=Filter.by_id().contains_any(chunk), limit=len(chunk))
            found |= {str(o.uuid) for o in res.objects}
        return [a for a in ids if str(object_uuid(tenant, a)) not in found]
    finally:
        client.close()


def readable_by_id_on_node(ports: NodePorts, collection: str, tenant: str, ids: list[str]) -> list[str]:
    """Of `ids`, those the node returns by a consistency-ONE read by id (its object store), whatever
    its id filter (an inverted index) says."""
    readable = []
    for a in ids:
        url = (
            f"http://127.0.0.1:{ports.http}/v1/objects/{collection}/{object_uuid(tenant, a)}"
            f"?tenant={tenant}&consistency_level=ONE"
        )
        try:
            with urllib.request.urlopen(
                urllib.request.Request(url, headers=auth_headers()), timeout=5
            ) as resp:
                if resp.status == 200:
                    readable.append(a)
        except OSError:
            pass
    return readable


def unindexed_on_node(ports: NodePorts, collection: str, tenant: str, ids: list[str]) -> list[str]:
    """Acknowledged ids that this node's own vector index does not return (consistency ONE).

    A near-vector query restricted to a short id list is answered by a flat search over those ids'
    graph nodes, so with limit = len(ids) it returns exactly the listed objects the node's HNSW graph
    holds, whatever the query vector (docs/DURABILITY.md, F1).
    """
    client = weaviate.connect_to_local(
        port=ports.http, grpc_port=ports.grpc, auth_credentials=Auth.api_key(weaviate_api_key())
    )
    try:
        col = client.collections.get(collection).with_tenant(tenant)
        col = col.with_consistency_level(ConsistencyLevel.ONE)
        missing: list[str] = []
        for i in range(0, len(ids), 100):
            chunk = ids[i : i + 100]
            res = col.query.near_vector(
                near_vector=_vector(chunk[0]).tolist(),
                target_vector=VECTOR_NAME,
                filters=Filter.by_id().contains_any([object_uuid(tenant, a) for a in chunk]),
                limit=len(chunk),
            )
            found = {str(o.uuid) for o in res.objects}
            missing += [a for a in chunk if str(object_uuid(tenant, a)) not in found]
        return missing
    finally:
        client.close()


def run_outage(
    cluster: WeaviateCluster,
    victim: int,
    *,
    warmup_s: float = 8.0,
    outage_s: float = 15.0,
    after_s: float = 5.0,
    catch_up_timeout_s: float = 120.0,
    await_node_status: bool = True,
    extra_env: Mapping[str, str] | None = None,
) -> OutageReport:
    """Kill -9 node ``victim`` during an ingest stream and searches; restart it; check (module doc)."""
    from tests.service_process import ServiceProcess  # the same runner the tests use

    collection = f"Cluster{uuid.uuid4().hex[:10]}"
    tenant = f"t{uuid.uuid4().hex[:8]}"
    # The service talks to one node; a search replica whose node dies is taken out by the gateway's
    # health-checked balancing (its health turns NOT_SERVING), so here it talks to a surviving node.
    contact = next(n for n in range(cluster.size) if n != victim)
    env = {
        **cluster.service_env(contact),
        "IMAGESEARCH_SEARCH_WEAVIATE_COLLECTION": collection,
        "IMAGESEARCH_SEARCH_WEAVIATE_REPLICATION_FACTOR": str(cluster.size),
        "IMAGESEARCH_SEARCH_WEAVIATE_ASYNC_REPLICATION": "true",
        # The repair pass watches a one-node Weaviate's lifetime (docs/DURABILITY.md); here replicas
        # repair, and the restarted node's own vector index is checked below instead.
        "IMAGESEARCH_SEARCH_WEAVIATE_REPAIR_INTERVAL_S": "0",
        "IMAGESEARCH_SEARCH_CACHE": "none",
        **(extra_env or {}),
    }
    report = OutageReport(victim, collection)
    with ServiceProcess("services.search", env=env) as svc, svc.channel() as channel:
        stub = search_pb2_grpc.SearchServiceStub(channel)
        load = Load(stub, tenant)
        load.start()
        try:
            time.sleep(warmup_s)
            killed_at = time.monotonic()
            report.acked_at_kill = len(load.acked)
            cluster.kill(victim)
            time.sleep(outage_s)
            restart_at = time.monotonic()
            cluster.restart(victim)  # same ports and data
            ready_at = time.monotonic()
            report.restart_ready_s = ready_at - restart_at
            time.sleep(after_s)
        finally:
            load.stop()
        before = [r for r in load.searches if r[0] < killed_at]
        during = [r for r in load.searches if killed_at <= r[0] < ready_at]
        report.searches_before, report.failed_before, report.p50_before_ms, report.p99_before_ms = _quantiles(
            before
        )
        report.searches_during, report.failed_during, report.p50_during_ms, report.p99_during_ms = _quantiles(
            during
        )
        acked = list(load.acked)
        report.acknowledged, report.write_failures = len(acked), load.write_failures
        report.catch_up_s, missing, report.status_count_s = _catch_up(
            cluster, victim, collection, tenant, acked, ready_at, catch_up_timeout_s, await_node_status
        )
        report.victim_missing_at_end = len(missing)
        final = missing_on_node(cluster.ports[victim], collection, tenant, acked)
        report.victim_unfilterable = [a for a in final if a not in set(missing)]
        report.lost_vector, report.lost_keyword = lost_assets(stub, tenant, acked)
    report.victim_unindexed = unindexed_on_node(cluster.ports[victim], collection, tenant, acked)
    return report


def _catch_up(
    cluster: WeaviateCluster,
    node: int,
    collection: str,
    tenant: str,
    acked: list[str],
    since: float,
    timeout_s: float,
    await_node_status: bool,
) -> tuple[float | None, list[str], float | None]:
    """(seconds from ``since`` until ``node``'s own replica holds every acknowledged asset, or None;
    those it still does not hold; seconds until its node-status object count shows them, or None).

    The replica check is a consistency-ONE read through the node, which reads its local copy (seen
    here: right after the restart it misses the outage's writes, then the count falls to 0 as async
    replication pushes them). An asset its id filter does not find but a read by id returns is held
    (the filter's index lost it: see OutageReport.victim_unfilterable). The node status count is only
    waited for when asked: Weaviate refreshes it lazily, so it trails the data by about a minute
    whatever the load.
    """
    ports = cluster.ports[node]
    deadline = since + timeout_s
    caught_up: float | None = None
    status_at: float | None = None
    missing = list(acked)
    while True:
        now = time.monotonic()
        if caught_up is None:
            missing = missing_on_node(ports, collection, tenant, acked)
            if missing and len(missing) <= 200:  # a few: stored but unfiltered, or not there yet?
                stored = set(readable_by_id_on_node(ports, collection, tenant, missing))
                missing = [a for a in missing if a not in stored]
            if not missing:
                caught_up = time.monotonic() - since
        if status_at is None and await_node_status:
            count = node_object_count(ports.http, collection, tenant, cluster.node_name(node))
            if count is not None and count >= len(acked):
                status_at = time.monotonic() - since
        if caught_up is not None and (status_at is not None or not await_node_status):
            return caught_up, [], status_at
        if now > deadline:
            return caught_up, missing, status_at
        time.sleep(0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--victims", default="", help="comma-separated node numbers (default: every node)")
    parser.add_argument("--warmup-s", type=float, default=8.0)
    parser.add_argument("--outage-s", type=float, default=15.0)
    parser.add_argument("--catch-up-timeout-s", type=float, default=150.0)
    parser.add_argument("--write-consistency", default="QUORUM", choices=("ONE", "QUORUM", "ALL"))
    parser.add_argument("--read-consistency", default="QUORUM", choices=("ONE", "QUORUM", "ALL"))
    parser.add_argument(
        "--async-s",
        type=float,
        default=30.0,
        help="async replication frequency and propagation delay, seconds (Weaviate's default: 30)",
    )
    args = parser.parse_args()
    victims = [int(v) for v in args.victims.split(",") if v] or list(range(args.nodes))
    extra = {
        "IMAGESEARCH_SEARCH_WEAVIATE_WRITE_CONSISTENCY": args.write_consistency,
        "IMAGESEARCH_SEARCH_WEAVIATE_READ_CONSISTENCY": args.read_consistency,
        "IMAGESEARCH_SEARCH_WEAVIATE_ASYNC_REPLICATION_FREQUENCY_S": str(args.async_s),
        "IMAGESEARCH_SEARCH_WEAVIATE_ASYNC_REPLICATION_DELAY_S": str(args.async_s),
    }
    print(
        f"{args.nodes} nodes, RF {args.nodes}, write {args.write_consistency}, "
        f"read {args.read_consistency}, async replication every {args.async_s:g}s",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="weaviate-cluster-") as tmp:
        with WeaviateCluster(Path(tmp), nodes=args.nodes) as cluster:
            for victim in victims:
                report = run_outage(
                    cluster,
                    victim,
                    warmup_s=args.warmup_s,
                    outage_s=args.outage_s,
                    catch_up_timeout_s=args.catch_up_timeout_s,
                    extra_env=extra,
                )
                print(report.line(), flush=True)


if __name__ == "__main__":
    main()
